//! `-A NAME` resolution and the app's configuration: `NAME.toml` with
//! Celery's setting names, overridden by the environment and the command line,
//! or a Celery project's own settings (`AppConfig::from_python`) when `NAME`
//! is a Python module (see `tasks::python`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use serde_json::{Map, Value};

use crate::tasks::python::{Description, PythonApp};
use crate::tasks::{Builtin, Executor, Registry, TaskSpec};

/// Values that override the file, strongest last: env, then flags.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-b/--broker`
    pub broker: Option<String>,
    /// `--result-backend`
    pub result_backend: Option<String>,
}

#[derive(Debug, Clone)]
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
    pub task_time_limit: Option<f64>,
    pub task_soft_time_limit: Option<f64>,
    pub worker_concurrency: Option<usize>,
    /// `broker_transport_options.visibility_timeout`, seconds.
    pub visibility_timeout: u64,
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

pub const DEFAULT_BROKER_URL: &str = "redis://localhost:6379/0";
pub const DEFAULT_RESULT_EXPIRES: u64 = 86400;
pub const DEFAULT_QUEUE: &str = "celery";
pub const DEFAULT_VISIBILITY_TIMEOUT: u64 = 3600;

/// The scalar settings `apply_override` accepts, for its error message.
pub const OVERRIDABLE: &[&str] = &[
    "broker_url",
    "result_backend",
    "result_expires",
    "task_default_queue",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_track_started",
    "task_time_limit",
    "task_soft_time_limit",
    "worker_concurrency",
    "visibility_timeout",
];

/// The file as written; `Spanned` keeps positions for errors found after parsing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    broker_url: Option<Spanned<String>>,
    result_backend: Option<Spanned<String>>,
    result_expires: Option<Spanned<f64>>,
    task_default_queue: Option<Spanned<String>>,
    task_acks_late: Option<bool>,
    task_reject_on_worker_lost: Option<bool>,
    task_track_started: Option<bool>,
    task_time_limit: Option<Spanned<f64>>,
    task_soft_time_limit: Option<Spanned<f64>>,
    worker_concurrency: Option<Spanned<i64>>,
    broker_transport_options: Option<RawTransport>,
    result_backend_transport_options: Option<RawBackendTransport>,
    /// A Celery app whose tasks are added to the file's (`python = "proj"`).
    python: Option<Spanned<String>>,
    // Not `Spanned`: toml 0.8 cannot put a span on a dotted key's implicit
    // table, so task errors are located by `locate_task` instead.
    tasks: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransport {
    visibility_timeout: Option<Spanned<f64>>,
    master_name: Option<String>,
    sentinel_kwargs: Option<std::collections::BTreeMap<String, String>>,
}

/// `result_backend_transport_options`: Celery's Sentinel options only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTransport {
    master_name: Option<String>,
    sentinel_kwargs: Option<std::collections::BTreeMap<String, String>>,
}

fn sentinel_options(
    master_name: Option<String>,
    sentinel_kwargs: Option<std::collections::BTreeMap<String, String>>,
) -> crate::broker::sentinel::Options {
    crate::broker::sentinel::Options {
        master_name,
        sentinel_kwargs: sentinel_kwargs.unwrap_or_default(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    builtin: Option<String>,
    exec: Option<Vec<String>>,
    acks_late: Option<bool>,
    time_limit: Option<f64>,
    soft_time_limit: Option<f64>,
    ignore_result: Option<bool>,
}

/// Turns byte offsets into `file: line L, column C: message`.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl std::fmt::Display) -> AppError {
        let file = self.path.display();
        match span {
            Some(span) => {
                let start = span.start.min(self.text.len());
                let before = self.text.get(..start).unwrap_or("");
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                AppError::Invalid(format!("{file}: line {line}, column {column}: {message}"))
            }
            None => AppError::Invalid(format!("{file}: {message}")),
        }
    }
}

impl Overrides {
    /// The broker and result backend URLs: flags, then `CELERY_BROKER_URL` /
    /// `CELERY_RESULT_BACKEND`, then the app file's (`file_*`), then the
    /// defaults. Celery stores results next to the broker unless told otherwise.
    pub fn urls(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        file_broker: Option<String>,
        file_backend: Option<String>,
    ) -> (String, String) {
        let broker_url = self
            .broker
            .clone()
            .or_else(|| from_env(env, "CELERY_BROKER_URL"))
            .or(file_broker)
            .unwrap_or_else(|| DEFAULT_BROKER_URL.to_string());
        let result_backend = self
            .result_backend
            .clone()
            .or_else(|| from_env(env, "CELERY_RESULT_BACKEND"))
            .or(file_backend)
            .unwrap_or_else(|| broker_url.clone());
        (broker_url, result_backend)
    }
}

fn from_env(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    // An empty variable is "unset", as Celery treats a falsy value.
    env(key).filter(|v| !v.is_empty())
}

impl AppConfig {
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
        let src = Source { path, text };
        let raw: RawApp =
            toml::from_str(text).map_err(|err| src.error(err.span(), err.message().trim_end()))?;

        let file_broker = checked(&src, "broker_url", raw.broker_url, non_empty)?;
        let file_backend = checked(&src, "result_backend", raw.result_backend, non_empty)?;
        let (broker_url, result_backend) = overrides.urls(env, file_broker, file_backend);
        let (broker_url, result_backend, broker_transport) = sentinel_urls(
            broker_url,
            result_backend,
            raw.broker_transport_options,
            raw.result_backend_transport_options,
        );

        let result_expires = checked(&src, "result_expires", raw.result_expires, expires)?
            .unwrap_or(Some(DEFAULT_RESULT_EXPIRES));
        let task_default_queue = checked(
            &src,
            "task_default_queue",
            raw.task_default_queue,
            non_empty,
        )?
        .unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        let task_time_limit = checked(&src, "task_time_limit", raw.task_time_limit, positive)?;
        let task_soft_time_limit = checked(
            &src,
            "task_soft_time_limit",
            raw.task_soft_time_limit,
            positive,
        )?;
        let worker_concurrency = checked(
            &src,
            "worker_concurrency",
            raw.worker_concurrency,
            concurrency,
        )?;
        let visibility_timeout = checked(
            &src,
            "visibility_timeout",
            broker_transport.and_then(|t| t.visibility_timeout),
            seconds,
        )?
        .unwrap_or(DEFAULT_VISIBILITY_TIMEOUT);

        let python = checked(&src, "python", raw.python, non_empty)?.map(|module| PythonApp {
            module,
            python: PathBuf::from("python3"),
            conf: Map::new(),
        });
        let mut tasks = Registry::default();
        for (task, entry) in raw.tasks.unwrap_or_default() {
            add_tasks(&mut tasks, task, entry).map_err(|(task, m)| {
                src.error(locate_task(text, &task), format!("task {task:?}: {m}"))
            })?;
        }

        Ok(AppConfig {
            name: name.to_string(),
            path: path.to_path_buf(),
            broker_url,
            result_backend,
            result_expires,
            task_default_queue,
            task_acks_late: raw.task_acks_late.unwrap_or(false),
            task_reject_on_worker_lost: raw.task_reject_on_worker_lost.unwrap_or(false),
            task_track_started: raw.task_track_started.unwrap_or(false),
            task_time_limit,
            task_soft_time_limit,
            worker_concurrency,
            visibility_timeout,
            tasks,
            python,
        })
    }

    /// The configuration of a Celery project, from what its Python host
    /// described (`tasks::python::describe`); every task runs in the host.
    /// `-b`/`--result-backend` are applied by the caller, like the
    /// `key=value` overrides, and reach the hosts through `python_conf`.
    pub fn from_python(name: &str, cwd: &Path, desc: &Description, python: &Path) -> AppConfig {
        let mut app = AppConfig {
            name: name.to_string(),
            path: cwd.to_path_buf(),
            broker_url: String::new(),
            result_backend: String::new(),
            result_expires: Some(DEFAULT_RESULT_EXPIRES),
            task_default_queue: DEFAULT_QUEUE.to_string(),
            task_acks_late: false,
            task_reject_on_worker_lost: false,
            task_track_started: false,
            task_time_limit: None,
            task_soft_time_limit: None,
            worker_concurrency: None,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            tasks: Registry::default(),
            python: Some(PythonApp {
                module: name.to_string(),
                python: python.to_path_buf(),
                conf: Map::new(),
            }),
        };
        app.merge_python(desc, true);
        app
    }

    /// Adds the described tasks (those the app file does not define itself)
    /// and, when `settings` (a pure Python app), the described settings.
    pub fn merge_python(&mut self, desc: &Description, settings: bool) {
        if settings {
            self.broker_url = desc
                .broker_url
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_BROKER_URL.to_string());
            // Celery stores nothing without a result backend; rmulti's own
            // records (lost workers, bad messages) then go next to the broker.
            self.result_backend = desc
                .result_backend
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| self.broker_url.clone());
            // Celery's TLS dicts, which the URLs alone do not carry.
            if let Some(opts) = &desc.broker_use_ssl {
                self.broker_url = crate::broker::url::with_ssl_options(&self.broker_url, opts);
            }
            if let Some(opts) = &desc.redis_backend_use_ssl {
                self.result_backend =
                    crate::broker::url::with_ssl_options(&self.result_backend, opts);
            }
            self.fold_sentinel_options(desc);
            self.result_expires = match desc.result_expires {
                None => None,
                Some(v) => expires(v).unwrap_or(Some(DEFAULT_RESULT_EXPIRES)),
            };
            if let Some(q) = desc.task_default_queue.clone().filter(|q| !q.is_empty()) {
                self.task_default_queue = q;
            }
            self.task_acks_late = desc.task_acks_late;
            self.task_reject_on_worker_lost = desc.task_reject_on_worker_lost;
            self.task_track_started = desc.task_track_started;
            self.task_time_limit = desc.task_time_limit.and_then(|v| positive(v).ok());
            self.task_soft_time_limit = desc.task_soft_time_limit.and_then(|v| positive(v).ok());
            self.worker_concurrency = desc.worker_concurrency.filter(|n| *n > 0);
            if let Some(v) = desc.visibility_timeout.and_then(|v| seconds(v).ok()) {
                self.visibility_timeout = v;
            }
        }
        for (name, info) in &desc.tasks {
            if self.tasks.get(name).is_some() {
                continue;
            }
            self.tasks.insert(
                name.clone(),
                TaskSpec {
                    executor: Executor::Python,
                    acks_late: info.acks_late,
                    time_limit: info.time_limit.and_then(|v| positive(v).ok()),
                    soft_time_limit: info.soft_time_limit.and_then(|v| positive(v).ok()),
                    ignore_result: info.ignore_result,
                },
            );
        }
    }

    /// Folds the described Sentinel transport options into the URLs (the
    /// backend's own, else the broker's; see `sentinel_urls`).
    pub fn fold_sentinel_options(&mut self, desc: &Description) {
        use crate::broker::sentinel::with_options;
        let broker = desc
            .broker_sentinel
            .as_ref()
            .map(|s| s.options())
            .unwrap_or_default();
        let backend = desc
            .backend_sentinel
            .as_ref()
            .map(|s| s.options())
            .unwrap_or_default();
        self.broker_url = with_options(&self.broker_url, &broker);
        self.result_backend = with_options(&with_options(&self.result_backend, &backend), &broker);
    }

    /// The settings of `self` that differ from `before` (the app as Python
    /// described it), in Celery's names, for the hosts' `app.conf`: what
    /// `-b`, `--result-backend` and `-- key=value` changed.
    pub fn python_conf(&self, before: &AppConfig) -> Map<String, Value> {
        self.celery_settings()
            .into_iter()
            .zip(before.celery_settings())
            .filter(|((_, now), (_, was))| now != was)
            .map(|((key, now), _)| (key.to_string(), now))
            .collect()
    }

    /// The settings a Python host's `app.conf` can be given, in Celery's names.
    fn celery_settings(&self) -> [(&'static str, Value); 9] {
        [
            ("broker_url", self.broker_url.clone().into()),
            ("result_backend", self.result_backend.clone().into()),
            ("result_expires", self.result_expires.into()),
            ("task_default_queue", self.task_default_queue.clone().into()),
            ("task_acks_late", self.task_acks_late.into()),
            (
                "task_reject_on_worker_lost",
                self.task_reject_on_worker_lost.into(),
            ),
            ("task_track_started", self.task_track_started.into()),
            ("task_time_limit", self.task_time_limit.into()),
            ("task_soft_time_limit", self.task_soft_time_limit.into()),
        ]
    }

    /// Applies one `key=value` from the worker's command line (after `--`),
    /// e.g. `task_acks_late=true`, to a scalar setting. Optional limits take
    /// `none` to clear them.
    pub fn apply_override(&mut self, assignment: &str) -> Result<(), AppError> {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(AppError::Invalid(format!(
                "override {assignment:?}: expected key=value"
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        let bad = |m: String| AppError::Invalid(format!("override {key}={value}: {m}"));
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| bad("expected a number".to_string()))
        };
        let none = matches!(value.to_ascii_lowercase().as_str(), "none" | "null" | "");
        match key {
            "broker_url" | "result_backend" | "task_default_queue" => {
                if value.is_empty() {
                    return Err(bad("must not be empty".to_string()));
                }
                let target = match key {
                    "broker_url" => &mut self.broker_url,
                    "result_backend" => &mut self.result_backend,
                    _ => &mut self.task_default_queue,
                };
                *target = value.to_string();
            }
            "task_acks_late" | "task_reject_on_worker_lost" | "task_track_started" => {
                let flag =
                    parse_bool(value).ok_or_else(|| bad("expected true or false".to_string()))?;
                let target = match key {
                    "task_acks_late" => &mut self.task_acks_late,
                    "task_reject_on_worker_lost" => &mut self.task_reject_on_worker_lost,
                    _ => &mut self.task_track_started,
                };
                *target = flag;
            }
            "result_expires" => {
                self.result_expires = if none {
                    None
                } else {
                    expires(number()?).map_err(bad)?
                }
            }
            "task_time_limit" | "task_soft_time_limit" => {
                let limit = if none {
                    None
                } else {
                    Some(positive(number()?).map_err(bad)?)
                };
                if key == "task_time_limit" {
                    self.task_time_limit = limit;
                } else {
                    self.task_soft_time_limit = limit;
                }
            }
            "worker_concurrency" => {
                self.worker_concurrency = if none {
                    None
                } else {
                    let n = value
                        .parse::<i64>()
                        .map_err(|_| bad("expected an integer".to_string()))?;
                    Some(concurrency(n).map_err(bad)?)
                }
            }
            "visibility_timeout" | "broker_transport_options.visibility_timeout" => {
                self.visibility_timeout = seconds(number()?).map_err(bad)?
            }
            _ => {
                return Err(AppError::Invalid(format!(
                    "override {assignment:?}: unknown setting {key:?}, expected one of {}",
                    OVERRIDABLE.join(", ")
                )))
            }
        }
        Ok(())
    }
}

/// The spellings Celery's command line accepts for booleans.
/// The URLs with the Sentinel transport options folded in (the backend's
/// own, else the broker's, as a backend that defaults to the broker's URL
/// needs them); the broker's other transport options are handed back.
fn sentinel_urls(
    broker_url: String,
    result_backend: String,
    broker_transport: Option<RawTransport>,
    backend: Option<RawBackendTransport>,
) -> (String, String, Option<RawTransport>) {
    use crate::broker::sentinel::with_options;
    let broker_opts = broker_transport
        .as_ref()
        .map(|t| sentinel_options(t.master_name.clone(), t.sentinel_kwargs.clone()))
        .unwrap_or_default();
    let rest = broker_transport;
    let backend_opts = backend
        .map(|t| sentinel_options(t.master_name, t.sentinel_kwargs))
        .unwrap_or_default();
    let result_backend = with_options(&with_options(&result_backend, &backend_opts), &broker_opts);
    (
        with_options(&broker_url, &broker_opts),
        result_backend,
        rest,
    )
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// An optional setting of the file through `check`; a refusal names the
/// key and points at the value.
fn checked<T, U>(
    src: &Source,
    key: &str,
    value: Option<Spanned<T>>,
    check: impl Fn(T) -> Result<U, String>,
) -> Result<Option<U>, AppError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let span = value.span();
    check(value.into_inner())
        .map(Some)
        .map_err(|m| src.error(Some(span), format!("{key} {m}")))
}

fn non_empty(value: String) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(value)
}

fn positive(v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number of seconds, not {v}"))
    }
}

/// `result_expires`: 0 means "never expire", as in Celery.
fn expires(v: f64) -> Result<Option<u64>, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a non-negative number of seconds, not {v}"));
    }
    let secs = v.ceil() as u64;
    Ok((secs > 0).then_some(secs))
}

/// Whole seconds, rounded up so a fractional value never becomes 0.
fn seconds(v: f64) -> Result<u64, String> {
    positive(v).map(|v| v.ceil() as u64)
}

fn concurrency(n: i64) -> Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("must be at least 1, not {n}"))
}

/// Where task `name` is defined: the line starting with its quoted or bare
/// key, else (for `[tasks.a]` headers) with its last segment as a key.
fn locate_task(text: &str, name: &str) -> Option<Range<usize>> {
    let last = name.rsplit('.').next().unwrap_or(name);
    let keys = [
        format!("\"{name}\""),
        format!("'{name}'"),
        name.to_string(),
        last.to_string(),
    ];
    keys.iter().find_map(|key| {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if let Some(rest) = trimmed.strip_prefix(key.as_str()) {
                if rest.trim_start().starts_with('=') {
                    return Some(offset + indent..offset + indent + key.len());
                }
            }
            offset += line.len();
        }
        None
    })
}

/// Adds one `[tasks]` entry. A table of tables with neither `builtin` nor
/// `exec` is a namespace, so both `"proj.tasks.add" = {...}` and the bare
/// dotted key `proj.tasks.add = {...}` (TOML's nested tables) name the task
/// `proj.tasks.add`. Errors carry the full task name.
fn add_tasks(
    registry: &mut Registry,
    name: String,
    value: toml::Value,
) -> Result<(), (String, String)> {
    if let toml::Value::Table(table) = &value {
        let namespace = !table.is_empty()
            && !table.contains_key("builtin")
            && !table.contains_key("exec")
            && table.values().all(toml::Value::is_table);
        if namespace {
            if let toml::Value::Table(table) = value {
                for (part, inner) in table {
                    add_tasks(registry, format!("{name}.{part}"), inner)?;
                }
            }
            return Ok(());
        }
    }
    let raw = RawTask::deserialize(value)
        .map_err(|e| (name.clone(), e.message().trim_end().to_string()))?;
    let spec = task_spec(raw).map_err(|m| (name.clone(), m))?;
    registry.insert(name, spec);
    Ok(())
}

fn task_spec(raw: RawTask) -> Result<TaskSpec, String> {
    let executor = match (raw.builtin, raw.exec) {
        (Some(_), Some(_)) => return Err("give either `builtin` or `exec`, not both".into()),
        (None, None) => return Err("needs `builtin = \"NAME\"` or `exec = [\"cmd\", ...]`".into()),
        (Some(name), None) => match Builtin::from_name(&name) {
            Some(b) => Executor::Builtin(b),
            None => {
                return Err(format!(
                    "unknown builtin {name:?}, expected one of {}",
                    Builtin::ALL.map(Builtin::name).join(", ")
                ));
            }
        },
        (None, Some(argv)) => {
            if argv.first().is_none_or(|cmd| cmd.is_empty()) {
                return Err("`exec` needs a command: exec = [\"cmd\", \"arg\", ...]".into());
            }
            Executor::Exec(argv)
        }
    };
    let time_limit = raw
        .time_limit
        .map(positive)
        .transpose()
        .map_err(|m| format!("time_limit {m}"))?;
    let soft_time_limit = raw
        .soft_time_limit
        .map(positive)
        .transpose()
        .map_err(|m| format!("soft_time_limit {m}"))?;
    Ok(TaskSpec {
        executor,
        acks_late: raw.acks_late,
        time_limit,
        soft_time_limit,
        ignore_result: raw.ignore_result.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
