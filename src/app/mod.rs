//! `-A NAME` resolution and the app's configuration. Every setting is one
//! row of `settings::SETTINGS`; the sources are one file each: the app file
//! (`file.rs`), a Celery project's own settings (`python.rs`), and the
//! environment and command line (`overrides.rs`).

mod file;
mod overrides;
mod python;
pub mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use overrides::Overrides;

use crate::exit;
use crate::tasks::python::PythonApp;
use crate::tasks::Registry;

/// The app a node runs. Each setting's field is named after it and listed in
/// `settings::SETTINGS`, which says how every source sets it.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// The `-A` value as given (`proj`), shown in the banner.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    pub broker_url: String,
    pub result_backend: String,
    /// Seconds; `None` stores results without expiry.
    pub result_expires: Option<u64>,
    pub task_default_queue: String,
    pub task_acks_late: bool,
    pub task_reject_on_worker_lost: bool,
    pub task_track_started: bool,
    /// Task events on from the start, as `-E`.
    pub worker_send_task_events: bool,
    pub task_time_limit: Option<f64>,
    pub task_soft_time_limit: Option<f64>,
    pub worker_concurrency: Option<usize>,
    /// `broker_transport_options.visibility_timeout`, seconds.
    pub visibility_timeout: u64,
    /// `broker_transport_options.wait_replicas` (rmulti's own): replicas a
    /// finish waits for (`WAIT`), none by default.
    pub wait_replicas: Option<usize>,
    /// `broker_transport_options.master_name` / `.sentinel_kwargs` and the
    /// same of `result_backend_transport_options`: Redis Sentinel, folded
    /// into the URLs (`fold_sentinel_options`).
    pub broker_master_name: Option<String>,
    pub broker_sentinel_kwargs: BTreeMap<String, String>,
    pub backend_master_name: Option<String>,
    pub backend_sentinel_kwargs: BTreeMap<String, String>,
    pub tasks: Registry,
    /// Set when some tasks run in a Python host: the Celery app's module
    /// (`-A proj`, or `python = "proj"` in an app file).
    pub python: Option<PythonApp>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("app file {0} not found (-A {1}, relative to {2})")]
    NotFound(PathBuf, String, PathBuf),
    #[error("cannot read app file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

impl AppError {
    /// Every app error is a configuration error, from any command.
    pub fn exit_code(&self) -> i32 {
        exit::CONFIG
    }
}

impl AppConfig {
    /// Every setting at the table's start value, no tasks.
    pub fn with_defaults(name: &str, path: &Path) -> AppConfig {
        // Fields start at their type's default; the table then sets them.
        let mut app = AppConfig {
            name: name.to_string(),
            path: path.to_path_buf(),
            ..AppConfig::default()
        };
        for s in settings::SETTINGS {
            let value = s.initial(&app);
            s.set(&mut app, value);
        }
        app
    }

    /// Whether the result backend is one only the app's Python code can
    /// write (`django-db`, `db+sqlite:///...`: anything but Redis). Then the
    /// hosts store every outcome through the app's own backend, and what the
    /// Rust processes decide themselves (a lost task, a revoked one) is
    /// handed to the template to store (`tasks::python::template::record`).
    pub fn results_in_python(&self) -> bool {
        self.python.is_some() && !crate::broker::url::is_redis(&self.result_backend)
    }

    /// The Redis URL the Rust processes write results to: the backend's, or
    /// the broker's when the backend is Python's (`results_in_python`:
    /// nothing is meant to land there).
    pub fn redis_backend_url(&self) -> &str {
        if crate::broker::url::is_redis(&self.result_backend) {
            &self.result_backend
        } else {
            &self.broker_url
        }
    }

    /// The settings without an app file: the table's start values under the
    /// environment and the flags (`rmulti call` without `-A`).
    pub fn without_file(
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<AppConfig, AppError> {
        let mut app = AppConfig::with_defaults("", Path::new(""));
        app.settle(&serde_json::Map::new(), env, overrides)?;
        Ok(app)
    }

    /// Resolves `-A app` against `cwd`: `app.toml`, or `app` itself when it
    /// ends in `.toml`. `env` supplies `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND`.
    pub fn load(
        app: &str,
        cwd: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<AppConfig, AppError> {
        let path = AppConfig::resolve(app, cwd);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(AppError::NotFound(path, app.to_string(), cwd.to_path_buf()));
            }
            Err(err) => return Err(AppError::Io(path, err)),
        };
        AppConfig::from_str(app, &path, &text, env, overrides)
    }

    /// The file `-A app` names: `app` itself when it ends in `.toml`,
    /// else `app.toml`; relative paths are taken from `cwd`.
    pub fn resolve(app: &str, cwd: &Path) -> PathBuf {
        let file = if app.ends_with(".toml") {
            PathBuf::from(app)
        } else {
            PathBuf::from(format!("{app}.toml"))
        };
        cwd.join(file)
    }

    /// Parses an app file's text; `path` is only used in error messages and
    /// stored in the result.
    pub fn from_str(
        name: &str,
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<AppConfig, AppError> {
        let parsed = file::parse(path, text)?;
        let mut app = AppConfig::with_defaults(name, path);
        app.settle(&parsed.settings, env, overrides)?;
        app.tasks = parsed.tasks;
        app.python = parsed.python;
        Ok(app)
    }

    /// Folds the Sentinel transport options into the `sentinel://` URLs'
    /// query (`broker::sentinel::with_options`; what a URL already says
    /// wins, so folding twice changes nothing). The backend takes its own,
    /// else the broker's, as a backend that defaults to the broker's URL
    /// needs them.
    pub fn fold_sentinel_options(&mut self) {
        use crate::broker::sentinel::{with_options, Options};
        let broker = Options {
            master_name: self.broker_master_name.clone(),
            sentinel_kwargs: self.broker_sentinel_kwargs.clone(),
        };
        let backend = Options {
            master_name: self.backend_master_name.clone(),
            sentinel_kwargs: self.backend_sentinel_kwargs.clone(),
        };
        self.broker_url = with_options(&self.broker_url, &broker);
        self.result_backend = with_options(&with_options(&self.result_backend, &backend), &broker);
    }

    /// The banner's lines for settings (`transport`, `results`), URLs masked.
    pub fn banner_lines(&self) -> Vec<(&'static str, String)> {
        settings::SETTINGS
            .iter()
            .filter_map(|s| {
                let label = s.banner?;
                let shown = match s.get(self) {
                    serde_json::Value::String(text) if s.kind == settings::Kind::Url => {
                        crate::broker::url::masked(&text)
                    }
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Null => "none".to_string(),
                    other => other.to_string(),
                };
                Some((label, shown))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::python::Description;
    use crate::tasks::{Builtin, Executor};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<AppConfig, AppError> {
        AppConfig::from_str(
            "proj",
            Path::new("proj.toml"),
            text,
            &no_env,
            &Overrides::default(),
        )
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let app = parse("").unwrap();
        assert_eq!(app.name, "proj");
        assert_eq!(app.broker_url, "redis://localhost:6379/0");
        assert_eq!(app.result_backend, "redis://localhost:6379/0");
        assert_eq!(app.result_expires, Some(86400));
        assert_eq!(app.task_default_queue, "celery");
        assert!(!app.task_acks_late && !app.task_reject_on_worker_lost && !app.task_track_started);
        assert_eq!(app.task_time_limit, None);
        assert_eq!(app.task_soft_time_limit, None);
        assert_eq!(app.worker_concurrency, None);
        assert_eq!(app.visibility_timeout, 3600);
        assert!(app.tasks.is_empty());
    }

    #[test]
    fn every_setting() {
        let app = parse(
            r#"
broker_url = "redis://b:6379/1"
result_backend = "redis://r:6379/2"
result_expires = 0
task_default_queue = "q"
task_acks_late = true
task_reject_on_worker_lost = true
task_track_started = true
task_time_limit = 30
task_soft_time_limit = 2.5
worker_concurrency = 4

[broker_transport_options]
visibility_timeout = 60

[tasks]
"proj.tasks.add" = { builtin = "add" }
"proj.tasks.sh" = { exec = ["sh", "-c", "cat"], acks_late = false, time_limit = 5, soft_time_limit = 1, ignore_result = true }
"#,
        )
        .unwrap();
        assert_eq!(app.broker_url, "redis://b:6379/1");
        assert_eq!(app.result_backend, "redis://r:6379/2");
        assert_eq!(app.result_expires, None);
        assert_eq!(app.task_default_queue, "q");
        assert!(app.task_acks_late && app.task_reject_on_worker_lost && app.task_track_started);
        assert_eq!(app.task_time_limit, Some(30.0));
        assert_eq!(app.task_soft_time_limit, Some(2.5));
        assert_eq!(app.worker_concurrency, Some(4));
        assert_eq!(app.visibility_timeout, 60);
        assert_eq!(
            app.tasks.names().collect::<Vec<_>>(),
            ["proj.tasks.add", "proj.tasks.sh"]
        );
        assert!(matches!(
            app.tasks.get("proj.tasks.add").unwrap().executor,
            Executor::Builtin(Builtin::Add)
        ));
        let sh = app.tasks.get("proj.tasks.sh").unwrap();
        assert!(matches!(&sh.executor, Executor::Exec(argv) if argv == &["sh", "-c", "cat"]));
        assert_eq!(sh.acks_late, Some(false));
        assert_eq!(sh.time_limit, Some(5.0));
        assert_eq!(sh.soft_time_limit, Some(1.0));
        assert!(sh.ignore_result);
    }

    #[test]
    fn sentinel_transport_options_reach_the_urls() {
        let app = parse(
            "broker_url = \"sentinel://:pw@h1:1/0;sentinel://h2:2/0\"\n\
             [broker_transport_options]\nmaster_name = \"m\"\nvisibility_timeout = 60\n\
             sentinel_kwargs = { password = \"sp\" }\n",
        )
        .unwrap();
        assert_eq!(
            app.broker_url,
            "sentinel://:pw@h1:1/0;sentinel://h2:2/0?master_name=m&sentinel_password=sp"
        );
        assert_eq!(app.result_backend, app.broker_url);
        assert_eq!(app.visibility_timeout, 60);
        let app = parse(
            "broker_url = \"redis://h/0\"\nresult_backend = \"sentinel://h/1\"\n\
             [result_backend_transport_options]\nmaster_name = \"b\"\n",
        )
        .unwrap();
        assert_eq!(app.broker_url, "redis://h/0");
        assert_eq!(app.result_backend, "sentinel://h/1?master_name=b");
        // A flag's sentinel URL takes the file's options too.
        let flags = Overrides {
            broker: Some("sentinel://f:1/0".into()),
            result_backend: None,
        };
        let app = AppConfig::from_str(
            "proj",
            Path::new("proj.toml"),
            "[broker_transport_options]\nmaster_name = \"m\"\n",
            &no_env,
            &flags,
        )
        .unwrap();
        assert_eq!(app.broker_url, "sentinel://f:1/0?master_name=m");
        let e = err("[broker_transport_options]\nsentinel_kwargs = { password = 1 }\n");
        assert!(e.contains("line 2") && e.contains("invalid type"), "{e}");
        let e = err("[result_backend_transport_options]\nmaster = \"m\"\n");
        assert!(e.contains("`master`") && e.contains("`master_name`"), "{e}");
    }

    #[test]
    fn sentinel_options_from_python_by_their_dotted_names() {
        let mut desc = description();
        let set = |d: &mut Description, k: &str, v: serde_json::Value| {
            d.settings.insert(k.into(), v);
        };
        set(&mut desc, "broker_url", "sentinel://s:1/0".into());
        set(
            &mut desc,
            "broker_transport_options.master_name",
            "mymaster".into(),
        );
        set(
            &mut desc,
            "broker_transport_options.sentinel_kwargs",
            serde_json::json!({"password": "sp", "socket_timeout": 0.5}),
        );
        set(
            &mut desc,
            "result_backend_transport_options.master_name",
            "other".into(),
        );
        let mut app = AppConfig::from_python("pyproj", Path::new("/w"), &desc, Path::new("py"));
        assert_eq!(
            app.broker_url,
            "sentinel://s:1/0?master_name=mymaster&sentinel_password=sp"
        );
        // The backend's own name wins; the broker's password still applies.
        assert_eq!(
            app.result_backend,
            "sentinel://s:1/0?master_name=other&sentinel_password=sp"
        );
        // `-b` on a Python app: the described options follow the new URL.
        app.apply_flags(&Overrides {
            broker: Some("sentinel://t:2/0".into()),
            result_backend: None,
        })
        .unwrap();
        assert_eq!(
            app.broker_url,
            "sentinel://t:2/0?master_name=mymaster&sentinel_password=sp"
        );
    }

    #[test]
    fn result_backend_follows_broker() {
        let app = parse("broker_url = \"redis://b:1/3\"").unwrap();
        assert_eq!(app.result_backend, "redis://b:1/3");
    }

    #[test]
    fn override_order_file_env_flags() {
        let text = "broker_url = \"redis://file/0\"\nresult_backend = \"redis://file/1\"\n";
        let env = |k: &str| match k {
            "CELERY_BROKER_URL" => Some("redis://env/0".to_string()),
            "CELERY_RESULT_BACKEND" => Some("redis://env/1".to_string()),
            _ => None,
        };
        let path = Path::new("proj.toml");
        let app = AppConfig::from_str("proj", path, text, &env, &Overrides::default()).unwrap();
        assert_eq!(
            (app.broker_url.as_str(), app.result_backend.as_str()),
            ("redis://env/0", "redis://env/1")
        );

        let flags = Overrides {
            broker: Some("redis://flag/0".into()),
            result_backend: None,
        };
        let app = AppConfig::from_str("proj", path, text, &env, &flags).unwrap();
        assert_eq!(
            (app.broker_url.as_str(), app.result_backend.as_str()),
            ("redis://flag/0", "redis://env/1")
        );

        let flags = Overrides {
            broker: None,
            result_backend: Some("redis://flag/1".into()),
        };
        let app = AppConfig::from_str("proj", path, text, &no_env, &flags).unwrap();
        assert_eq!(
            (app.broker_url.as_str(), app.result_backend.as_str()),
            ("redis://file/0", "redis://flag/1")
        );

        // An env broker with no backend anywhere: results go to that broker.
        let only_broker = |k: &str| (k == "CELERY_BROKER_URL").then(|| "redis://env/0".to_string());
        let app =
            AppConfig::from_str("proj", path, "", &only_broker, &Overrides::default()).unwrap();
        assert_eq!(app.result_backend, "redis://env/0");
        // Empty variables count as unset.
        let empty = |_: &str| Some(String::new());
        let app = AppConfig::from_str("proj", path, text, &empty, &Overrides::default()).unwrap();
        assert_eq!(app.broker_url, "redis://file/0");
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let e = err("task_acks_late = true\n\nbrokr_url = \"redis://x\"\n");
        assert!(
            e.starts_with("proj.toml: line 3, column 1: unknown field `brokr_url`"),
            "{e}"
        );
        let e = err("[broker_transport_options]\nvisibility = 3\n");
        assert!(e.contains("line 2") && e.contains("`visibility`"), "{e}");
        let e = err("[tasks]\n\"t\" = { builtin = \"add\", retries = 3 }\n");
        assert!(e.contains("line 2") && e.contains("`retries`"), "{e}");
    }

    #[test]
    fn wrong_types_and_syntax() {
        let e = err("task_acks_late = \"yes\"\n");
        assert!(
            e.starts_with("proj.toml: line 1, column 18: invalid type"),
            "{e}"
        );
        let e = err("x = = 1\n");
        assert!(e.starts_with("proj.toml: line 1"), "{e}");
    }

    #[test]
    fn bad_values() {
        assert!(err("result_expires = -1").contains("result_expires must be a non-negative"));
        assert!(err("task_time_limit = 0").contains("task_time_limit must be a positive"));
        assert!(err("task_soft_time_limit = -2").contains("task_soft_time_limit"));
        assert!(err("worker_concurrency = 0").contains("worker_concurrency must be at least 1"));
        assert!(err("task_default_queue = \"\"").contains("task_default_queue must not be empty"));
        assert!(err("[broker_transport_options]\nvisibility_timeout = 0").contains("line 2"));
        assert_eq!(
            parse("result_expires = 1.5").unwrap().result_expires,
            Some(2)
        );
    }

    #[test]
    fn bad_task_entries_name_the_task_and_line() {
        let cases = [
            ("\"t\" = { builtin = \"add\", exec = [\"x\"] }", "not both"),
            ("\"t\" = { acks_late = true }", "needs `builtin"),
            ("\"t\" = { exec = [] }", "`exec` needs a command"),
            ("\"t\" = { exec = [\"\"] }", "`exec` needs a command"),
            ("\"t\" = { builtin = \"div\" }", "unknown builtin \"div\""),
            (
                "\"t\" = { builtin = \"add\", time_limit = 0 }",
                "time_limit must be a positive",
            ),
        ];
        for (entry, want) in cases {
            let e = err(&format!("[tasks]\n{entry}\n"));
            assert!(
                e.starts_with("proj.toml: line 2, column 1: task \"t\": "),
                "{e}"
            );
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let e = err("[tasks]\n\"t\" = 3\n");
        assert!(e.contains("task \"t\": invalid type"), "{e}");
        let e = err("[tasks]\na.b = { builtin = \"nope\" }\n");
        assert!(
            e.contains("line 2") && e.contains("task \"a.b\": unknown builtin"),
            "{e}"
        );
    }

    #[test]
    fn dotted_and_nested_task_names() {
        let app = parse(
            "[tasks]\nproj.tasks.add = { builtin = \"add\" }\n[tasks.proj.other]\nmul = { builtin = \"mul\" }\n",
        )
        .unwrap();
        assert_eq!(
            app.tasks.names().collect::<Vec<_>>(),
            ["proj.other.mul", "proj.tasks.add"]
        );
        let e = err("[tasks]\n\"a\" = { builtin = \"add\" }\n[tasks.proj.other]\n  mul = { builtin = \"x\" }\n");
        assert!(
            e.starts_with("proj.toml: line 4, column 3: task \"proj.other.mul\": unknown builtin"),
            "{e}"
        );
    }

    #[test]
    fn apply_override() {
        let mut app = parse("").unwrap();
        app.apply_override("task_acks_late=true").unwrap();
        app.apply_override("task_track_started=yes").unwrap();
        app.apply_override("worker_concurrency=3").unwrap();
        app.apply_override("task_soft_time_limit=1.5").unwrap();
        app.apply_override("result_expires=0").unwrap();
        app.apply_override("visibility_timeout=10").unwrap();
        app.apply_override("task_default_queue=hipri").unwrap();
        app.apply_override("broker_url=redis://o/0").unwrap();
        assert!(app.task_acks_late && app.task_track_started);
        assert_eq!(app.worker_concurrency, Some(3));
        assert_eq!(app.task_soft_time_limit, Some(1.5));
        assert_eq!(app.result_expires, None);
        assert_eq!(app.visibility_timeout, 10);
        assert_eq!(app.task_default_queue, "hipri");
        assert_eq!(app.broker_url, "redis://o/0");
        app.apply_override("task_soft_time_limit=none").unwrap();
        assert_eq!(app.task_soft_time_limit, None);

        for bad in [
            "nope=1",
            "task_acks_late=maybe",
            "worker_concurrency=0",
            "task_time_limit=-1",
            "novalue",
        ] {
            let e = app.apply_override(bad).unwrap_err().to_string();
            assert!(e.contains("override"), "{e}");
        }
        assert!(app
            .apply_override("brokr_url=x")
            .unwrap_err()
            .to_string()
            .contains("unknown setting"));
    }

    #[test]
    fn load_resolves_names_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("proj.toml"), "task_acks_late = true\n").unwrap();
        let app = AppConfig::load("proj", dir.path(), &no_env, &Overrides::default()).unwrap();
        assert!(app.task_acks_late);
        assert_eq!(app.path, dir.path().join("proj.toml"));
        let app = AppConfig::load("proj.toml", dir.path(), &no_env, &Overrides::default()).unwrap();
        assert_eq!(app.name, "proj.toml");

        let e = AppConfig::load("other", dir.path(), &no_env, &Overrides::default()).unwrap_err();
        assert!(matches!(e, AppError::NotFound(..)));
        assert!(
            e.to_string()
                .contains(&dir.path().join("other.toml").display().to_string()),
            "{e}"
        );
    }

    fn description() -> Description {
        serde_json::from_value(serde_json::json!({
            "hello": 1,
            "main": "pyproj",
            "broker_url": "redis://py/0",
            "result_backend": null,
            "result_expires": 600.0,
            "task_default_queue": "celery",
            "task_acks_late": true,
            "task_time_limit": null,
            "task_soft_time_limit": 2.0,
            "worker_concurrency": 3,
            "visibility_timeout": 30.0,
            "tasks": {
                "pyproj.add": {"acks_late": null, "time_limit": null, "soft_time_limit": null,
                               "ignore_result": false, "max_retries": 3},
                "pyproj.slow": {"acks_late": false, "time_limit": 9.0, "soft_time_limit": null,
                                "ignore_result": true, "max_retries": null},
                "proj.tasks.add": {"acks_late": null, "time_limit": null, "soft_time_limit": null,
                                   "ignore_result": false, "max_retries": null}
            }
        }))
        .unwrap()
    }

    #[test]
    fn python_app_from_description() {
        let app =
            AppConfig::from_python("pyproj", Path::new("/w"), &description(), Path::new("py"));
        assert_eq!(app.broker_url, "redis://py/0");
        // No backend in the app: rmulti's own records go next to the broker.
        assert_eq!(app.result_backend, "redis://py/0");
        assert_eq!(app.result_expires, Some(600));
        assert!(app.task_acks_late);
        assert_eq!(app.task_soft_time_limit, Some(2.0));
        assert_eq!(app.worker_concurrency, Some(3));
        assert_eq!(app.visibility_timeout, 30);
        let slow = app.tasks.get("pyproj.slow").unwrap();
        assert!(matches!(slow.executor, Executor::Python));
        assert_eq!(
            (slow.acks_late, slow.time_limit, slow.ignore_result),
            (Some(false), Some(9.0), true)
        );
        assert_eq!(app.python.as_ref().unwrap().module, "pyproj");
    }

    #[test]
    fn python_settings_by_their_dotted_name_and_unusable_values_keep_the_start() {
        let mut desc = description();
        desc.settings.insert(
            "broker_transport_options.visibility_timeout".into(),
            45.into(),
        );
        desc.settings
            .insert("task_default_queue".into(), serde_json::Value::Null);
        desc.settings.insert("result_expires".into(), (-3).into());
        let app = AppConfig::from_python("pyproj", Path::new("/w"), &desc, Path::new("py"));
        assert_eq!(app.visibility_timeout, 45);
        assert_eq!(app.task_default_queue, "celery");
        assert_eq!(app.result_expires, Some(86400));
    }

    #[test]
    fn banner_lines_mask_urls() {
        let app = parse("broker_url = \"redis://:secret@h:1/0\"\n").unwrap();
        assert_eq!(
            app.banner_lines(),
            [
                ("transport", "redis://:**@h:1/0".to_string()),
                ("results", "redis://:**@h:1/0".to_string())
            ]
        );
    }

    #[test]
    fn app_file_tasks_win_over_python_tasks_and_overrides_reach_the_host() {
        let mut app =
            parse("python = \"pyproj\"\n[tasks]\n\"proj.tasks.add\" = { builtin = \"add\" }\n")
                .unwrap();
        assert_eq!(app.python.as_ref().unwrap().module, "pyproj");
        app.merge_python(&description(), false);
        assert!(matches!(
            app.tasks.get("proj.tasks.add").unwrap().executor,
            Executor::Builtin(_)
        ));
        assert!(matches!(
            app.tasks.get("pyproj.add").unwrap().executor,
            Executor::Python
        ));
        // The file's settings stay.
        assert!(!app.task_acks_late);

        let before = app.clone();
        app.apply_override("task_track_started=true").unwrap();
        app.apply_override("result_expires=0").unwrap();
        let conf = app.python_conf(&before);
        assert_eq!(
            conf,
            serde_json::json!({"result_expires": null, "task_track_started": true})
                .as_object()
                .unwrap()
                .clone()
        );
        assert!(parse("python = \"\"").is_err());
    }

    #[test]
    fn shipped_example_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let app = AppConfig::load("etc/proj.toml", root, &no_env, &Overrides::default()).unwrap();
        assert_eq!(app.broker_url, "redis://localhost:6379/0");
        assert_eq!(app.result_backend, "redis://localhost:6379/0");
        assert_eq!(app.result_expires, Some(86400));
        assert_eq!(
            app.tasks.names().collect::<Vec<_>>(),
            ["proj.tasks.add", "proj.tasks.mul", "proj.tasks.xsum"]
        );
        assert!(matches!(
            app.tasks.get("proj.tasks.xsum").unwrap().executor,
            Executor::Builtin(Builtin::Xsum)
        ));
    }

    #[test]
    fn fixtures_load_or_fail_as_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if !name.ends_with(".toml") {
                continue;
            }
            let result = AppConfig::load(&name, &dir, &no_env, &Overrides::default());
            assert_eq!(
                result.is_err(),
                name.starts_with("bad_"),
                "{name}: {result:?}"
            );
        }
        let e = AppConfig::load("bad_unknown_key", &dir, &no_env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad_unknown_key.toml: line 3, column 1: unknown field `brokr_url`"),
            "{e}"
        );
        let e = AppConfig::load("bad_task", &dir, &no_env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad_task.toml: line 3, column 1: task \"proj.tasks.div\": unknown builtin"),
            "{e}"
        );
        let e = AppConfig::load("bad_syntax", &dir, &no_env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad_syntax.toml: line 2"), "{e}");
        let app = AppConfig::load("everything", &dir, &no_env, &Overrides::default()).unwrap();
        assert_eq!(app.tasks.len(), 10);
    }
}
