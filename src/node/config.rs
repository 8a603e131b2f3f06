//! The node's resolved configuration: the command line merged with the app
//! file, names and file templates expanded. Everything is checked here,
//! before anything detaches, so a bad value is an error on the terminal.

use std::path::PathBuf;
use std::sync::Arc;

use tracing_subscriber::filter::LevelFilter;

use super::names;
use crate::app::{settings, AppConfig, Overrides};
use crate::cli::{AutoscaleArg, Concurrency, WorkerArgs};
use crate::exit;
use crate::tasks::python;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node: String,
    pub app: Arc<AppConfig>,
    pub concurrency: usize,
    pub queues: Vec<String>,
    pub level: LevelFilter,
    pub logfile_template: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub max_tasks_per_child: Option<u64>,
    pub max_memory_per_child: Option<u64>,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    /// `--autoscale`: the pool starts at `min` and moves between the two.
    pub autoscale: Option<AutoscaleArg>,
    /// `--purge`: empty the queues once Redis answers, before consuming.
    pub purge: bool,
    /// `--heartbeat-interval` in seconds (for the control plane).
    pub heartbeat_interval: Option<u64>,
    pub args: WorkerArgs,
}

/// A start-up error with the exit status it maps to.
#[derive(Debug)]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

impl StartError {
    pub fn new(code: i32, message: impl Into<String>) -> StartError {
        StartError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl NodeConfig {
    /// Resolves the node from its arguments; relative paths are against the
    /// current directory (the `--workdir` has already been entered).
    pub fn resolve(args: &WorkerArgs) -> Result<NodeConfig, StartError> {
        let level = args.loglevel;
        refuse_flags(args)?;
        let app = load_app(args)?;
        let host = crate::protocol::task::local_hostname();
        let node = names::node_name(args.hostname.as_deref(), &host);
        let queues = node_queues(&args.queues, &args.exclude_queues, &app.task_default_queue)?;
        let cpus = || {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        };
        let concurrency = match (args.autoscale, args.concurrency) {
            // Celery's autoscaler starts the pool at its minimum.
            (Some(a), _) => a.min.max(1),
            (None, Some(Concurrency::Fixed(n))) => n,
            (None, Some(Concurrency::Auto)) => cpus(),
            (None, None) => app.worker_concurrency.unwrap_or_else(cpus),
        };
        if concurrency == 0 {
            return Err(StartError::new(
                exit::USAGE,
                "-c/--concurrency must be at least 1",
            ));
        }
        for (flag, v) in [
            ("--time-limit", args.time_limit),
            ("--soft-time-limit", args.soft_time_limit),
        ] {
            if v.is_some_and(|v| v.is_nan() || v <= 0.0) {
                return Err(StartError::new(
                    exit::USAGE,
                    format!("{flag} must be a positive number of seconds"),
                ));
            }
        }
        // What a Python host's worker object says as `concurrency` (host.py).
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("RMULTI_CONCURRENCY", concurrency.to_string());
        let pidfile = args
            .pidfile
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(names::expand_file(p, &node, 0)));
        Ok(NodeConfig {
            node,
            app: Arc::new(app),
            concurrency,
            queues,
            level,
            logfile_template: args.logfile.clone().filter(|l| !l.is_empty()),
            pidfile,
            max_tasks_per_child: args.max_tasks_per_child.filter(|n| *n > 0),
            max_memory_per_child: args.max_memory_per_child.filter(|n| *n > 0),
            time_limit: args.time_limit,
            soft_time_limit: args.soft_time_limit,
            autoscale: args.autoscale,
            purge: args.purge,
            heartbeat_interval: args.heartbeat_interval,
            args: args.clone(),
        })
    }

    /// The first queue: where a message with no routing key goes back to.
    /// `resolve` guarantees there is one.
    pub fn default_queue(&self) -> &str {
        self.queues.first().map_or("celery", String::as_str)
    }

    /// The log file of pool process `index` (0 = main).
    pub fn logfile(&self, index: usize) -> Option<PathBuf> {
        self.logfile_template
            .as_deref()
            .map(|t| PathBuf::from(names::expand_file(t, &self.node, index)))
    }
}

/// The `celery worker` flags that cannot mean here what they mean there.
fn refuse_flags(args: &WorkerArgs) -> Result<(), StartError> {
    let usage = |m: String| Err(StartError::new(exit::USAGE, m));
    if args.beat {
        return usage(
            "-B/--beat is not supported: rmulti embeds no scheduler. Run `celery beat` \
             as a service of its own (one per cluster), next to the workers."
                .into(),
        );
    }
    if let Some(pool) = &args.pool {
        if pool != "prefork" && pool != "processes" {
            return usage(format!(
                "pool {pool:?} is not supported: rmulti only has the prefork pool"
            ));
        }
    }
    if let Some(method) = &args.pool_start_method {
        if method != "fork" {
            return usage(format!(
                "--pool-start-method {method:?} is not supported: pool children are always forked"
            ));
        }
    }
    if args.heartbeat_interval == Some(0) {
        return usage("--heartbeat-interval must be at least 1 second".into());
    }
    Ok(())
}

/// `-Q` minus `-X`; without `-Q`, the app's default queue minus `-X`.
pub fn node_queues(
    include: &[String],
    exclude: &[String],
    default_queue: &str,
) -> Result<Vec<String>, StartError> {
    let clean = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|q| q.trim())
            .filter(|q| !q.is_empty())
            .map(str::to_string)
            .collect()
    };
    let given = !include.is_empty();
    let (include, exclude) = (clean(include), clean(exclude));
    let mut queues: Vec<String> = if given {
        include
    } else {
        vec![default_queue.to_string()]
    };
    let mut seen = std::collections::HashSet::new();
    queues.retain(|q| !exclude.contains(q) && seen.insert(q.clone()));
    if queues.is_empty() {
        let why = if given && exclude.is_empty() {
            "-Q/--queues names no queue".to_string()
        } else {
            format!(
                "no queue left to consume: -X/--exclude-queues removed {}",
                exclude.join(", ")
            )
        };
        return Err(StartError::new(exit::USAGE, why));
    }
    Ok(queues)
}

/// Loads the app named by `-A` (re-read on HUP).
pub fn load_app(args: &WorkerArgs) -> Result<AppConfig, StartError> {
    let name = args.app.as_deref().ok_or_else(|| {
        StartError::new(exit::USAGE, "no app given: use -A/--app NAME (NAME.toml)")
    })?;
    let cwd = std::env::current_dir().map_err(|e| {
        StartError::new(
            exit::FAILURE,
            format!("cannot read the working directory: {e}"),
        )
    })?;
    let overrides = Overrides {
        broker: args.broker.clone(),
        result_backend: args.result_backend.clone(),
    };
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let python = python::interpreter(args.python.as_deref(), &env);
    let config_error = |code: i32, e: &dyn std::fmt::Display| {
        StartError::new(code, format!("Error: Unable to load app {name}: {e}"))
    };
    // -I reaches describe and every host through the environment they
    // inherit (host.py adds it to the app's include). Single-threaded here.
    if !args.include.is_empty() {
        std::env::set_var("RMULTI_INCLUDE", args.include.join(","));
    }
    let file = AppConfig::resolve(name, &cwd);
    // A Python app is described before the command line's settings apply,
    // so what they change can be handed to its hosts (`python_conf`).
    let mut described: Option<(AppConfig, python::Description)> = None;
    let mut app = if name.ends_with(".toml") || file.exists() {
        let mut app = AppConfig::load(name, &cwd, &env, &overrides)
            .map_err(|e| config_error(e.exit_code(), &e))?;
        if let Some(py) = app.python.clone() {
            let desc = python::describe(&python, &py.module, &cwd, &settings::host_names())
                .map_err(|e| config_error(e.exit_code(), &e))?;
            app.merge_python(&desc, false);
            if let Some(p) = app.python.as_mut() {
                p.python = python.clone();
            }
            described = Some((app.clone(), desc));
        }
        app
    } else {
        let desc = python::describe(&python, name, &cwd, &settings::host_names()).map_err(|e| {
            // Neither kind of app: say so about both, the file first.
            let not_found = |why: String| {
                config_error(
                    e.exit_code(),
                    &format!(
                        "{} not found (-A {name}, relative to {}), and {why}",
                        file.display(),
                        cwd.display(),
                    ),
                )
            };
            match e {
                python::PythonError::NoModule(..) => not_found(e.to_string()),
                python::PythonError::Spawn(..) => {
                    not_found(format!("it cannot be a Python app: {e}"))
                }
                other => config_error(other.exit_code(), &other),
            }
        })?;
        let mut app = AppConfig::from_python(name, &cwd, &desc, &python);
        described = Some((app.clone(), desc));
        app.apply_flags(&overrides)
            .map_err(|e| config_error(e.exit_code(), &e))?;
        app
    };
    if !args.include.is_empty() && app.python.is_none() {
        return Err(StartError::new(
            exit::USAGE,
            format!(
                "-I/--include names Python modules to import, and the app {name} is not a \
                 Python app: its tasks are the [tasks] table of its file"
            ),
        ));
    }
    for setting in &args.config {
        app.apply_override(setting).map_err(|e| {
            StartError::new(e.exit_code(), format!("Error: bad setting after `--`: {e}"))
        })?;
    }
    if let Some((before, desc)) = described {
        let mut conf = app.python_conf(&before);
        // The hosts publish (retries, subtasks) and store results: always
        // to the broker and backend this node uses.
        conf.insert("broker_url".into(), app.broker_url.clone().into());
        if desc
            .settings
            .get("result_backend")
            .is_some_and(|v| !v.is_null())
            || app.python.as_ref().is_some_and(|p| p.module != name)
        {
            conf.insert("result_backend".into(), app.result_backend.clone().into());
        }
        // Celery takes the Sentinel options from its own transport options.
        for key in ["broker_url", "result_backend"] {
            if let Some(serde_json::Value::String(url)) = conf.get_mut(key) {
                *url = crate::broker::sentinel::for_celery(url);
            }
        }
        if let Some(p) = app.python.as_mut() {
            p.conf = conf;
        }
    }
    // A backend that is not Redis is a Python app's to write, through its
    // hosts; the Rust side cannot store other tasks' results there, so an
    // app file's backend is checked as a Redis URL.
    let native_tasks = app.tasks.names().any(|n| {
        app.tasks
            .get(n)
            .is_some_and(|t| !matches!(t.executor, crate::tasks::Executor::Python))
    });
    let backend = if app.python.is_some() && !native_tasks {
        app.redis_backend_url()
    } else {
        &app.result_backend
    };
    for url in [&app.broker_url, backend] {
        crate::broker::connection::validate_url(url)
            .map_err(|e| StartError::new(e.exit_code(), e.to_string()))?;
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn queues_are_q_minus_x_in_order_without_repeats() {
        let q = node_queues(&v(&["a", "b", "a", " c "]), &v(&["b"]), "celery").unwrap();
        assert_eq!(q, v(&["a", "c"]));
        assert_eq!(node_queues(&[], &[], "celery").unwrap(), v(&["celery"]));
        assert_eq!(
            node_queues(&[], &v(&["x"]), "celery").unwrap(),
            v(&["celery"])
        );
    }

    #[test]
    fn no_queue_left_is_a_usage_error() {
        let e = node_queues(&[], &v(&["celery"]), "celery").unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.message.contains("-X/--exclude-queues"), "{e}");
        let e = node_queues(&v(&[""]), &[], "celery").unwrap_err();
        assert!(e.message.contains("names no queue"), "{e}");
    }
}
