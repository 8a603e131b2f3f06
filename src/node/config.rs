//! The node's resolved configuration: the command line merged with the app
//! file, names and file templates expanded. Everything is checked here,
//! before anything detaches, so a bad value is an error on the terminal.

use std::path::PathBuf;
use std::sync::Arc;

use tracing_subscriber::filter::LevelFilter;

use super::names;
use crate::app::{AppConfig, Overrides};
use crate::cli::WorkerArgs;
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
        let level = crate::logging::parse_level(&args.loglevel)
            .map_err(|e| StartError::new(exit::USAGE, e.to_string()))?;
        if let Some(pool) = &args.pool {
            if pool != "prefork" {
                return Err(StartError::new(
                    exit::USAGE,
                    format!("pool {pool:?} is not supported: rmulti only has the prefork pool"),
                ));
            }
        }
        let app = load_app(args)?;
        let host = crate::protocol::task::local_hostname();
        let node = names::node_name(args.hostname.as_deref(), &host);
        let queues: Vec<String> = match &args.queues {
            Some(q) => q
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            None => vec![app.task_default_queue.clone()],
        };
        if queues.is_empty() {
            return Err(StartError::new(exit::USAGE, "-Q/--queues names no queue"));
        }
        let concurrency = args
            .concurrency
            .or(app.worker_concurrency)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
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
    let config_error = |e: &dyn std::fmt::Display| {
        StartError::new(
            exit::CONFIG,
            format!("Error: Unable to load app {name}: {e}"),
        )
    };
    let file = AppConfig::resolve(name, &cwd);
    // A Python app is described before the command line's settings apply,
    // so what they change can be handed to its hosts (`python_conf`).
    let mut described: Option<(AppConfig, python::Description)> = None;
    let mut app = if name.ends_with(".toml") || file.exists() {
        let mut app =
            AppConfig::load(name, &cwd, &env, &overrides).map_err(|e| config_error(&e))?;
        if let Some(py) = app.python.clone() {
            let desc = python::describe(&python, &py.module, &cwd).map_err(|e| config_error(&e))?;
            app.merge_python(&desc, false);
            if let Some(p) = app.python.as_mut() {
                p.python = python.clone();
            }
            described = Some((app.clone(), desc));
        }
        app
    } else {
        let desc = python::describe(&python, name, &cwd).map_err(|e| {
            // Neither kind of app: say so about both, the file first.
            let not_found = |why: String| {
                config_error(&format!(
                    "{} not found (-A {name}, relative to {}), and {why}",
                    file.display(),
                    cwd.display(),
                ))
            };
            match e {
                python::PythonError::NoModule(..) => not_found(e.to_string()),
                python::PythonError::Spawn(..) => {
                    not_found(format!("it cannot be a Python app: {e}"))
                }
                other => config_error(&other),
            }
        })?;
        let mut app = AppConfig::from_python(name, &cwd, &desc, &python);
        let before = app.clone();
        if let Some(b) = &overrides.broker {
            app.broker_url = b.clone();
        }
        if let Some(b) = &overrides.result_backend {
            app.result_backend = b.clone();
        }
        app.fold_sentinel_options(&desc);
        described = Some((before, desc));
        app
    };
    for setting in &args.config {
        app.apply_override(setting).map_err(|e| {
            StartError::new(exit::CONFIG, format!("Error: bad setting after `--`: {e}"))
        })?;
    }
    if let Some((before, desc)) = described {
        let mut conf = app.python_conf(&before);
        // The hosts publish (retries, subtasks) and store results: always
        // to the broker and backend this node uses.
        conf.insert("broker_url".into(), app.broker_url.clone().into());
        if desc.result_backend.is_some() || app.python.as_ref().is_some_and(|p| p.module != name) {
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
    crate::broker::connection::validate_url(&app.broker_url)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    crate::broker::connection::validate_url(&app.result_backend)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    Ok(app)
}
