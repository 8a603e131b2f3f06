//! `rmulti call`: send one task the way a Celery client does (protocol 2
//! envelope, LPUSH on the queue's priority list) and optionally wait for its
//! result — for demos, smoke tests and scripts without a Python client.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value};

use crate::app::{AppConfig, AppError, Overrides};
use crate::broker::{self, keys, BrokerError};
use crate::cli::CallArgs;
use crate::exit;
use crate::protocol::{NewTask, State};

/// Why `rmulti call` failed; each kind has its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("loading app {app}: {source}")]
    App { app: String, source: AppError },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A bad argument clap could not check (`--kwargs`, `--priority`, ...).
    #[error("{0}")]
    Usage(String),
    #[error("reading the working directory: {0}")]
    Cwd(std::io::Error),
    #[error("stored result is not JSON: {0}")]
    BadResult(serde_json::Error),
    #[error("no result for task {id} within {wait} s")]
    NoResult { id: String, wait: f64 },
}

impl CallError {
    /// The same failure exits as it does from `rmulti worker`.
    pub fn exit_code(&self) -> i32 {
        match self {
            CallError::App { source, .. } => source.exit_code(),
            CallError::Broker(e) => e.exit_code(),
            CallError::Usage(_) => exit::USAGE,
            CallError::Redis(_)
            | CallError::Cwd(_)
            | CallError::BadResult(_)
            | CallError::NoResult { .. } => exit::FAILURE,
        }
    }
}

/// Runs `rmulti call`; returns the exit status (1 when the task failed).
pub fn run_call(args: CallArgs) -> i32 {
    match call(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            e.exit_code()
        }
    }
}

fn call(args: &CallArgs) -> Result<i32, CallError> {
    let overrides = Overrides {
        broker: args.broker.clone(),
        result_backend: args.result_backend.clone(),
    };
    let env = |key: &str| std::env::var(key).ok();
    let cfg = match &args.app {
        Some(app) => {
            let cwd = std::env::current_dir().map_err(CallError::Cwd)?;
            AppConfig::load(app, &cwd, &env, &overrides)
        }
        None => AppConfig::without_file(&env, &overrides),
    }
    .map_err(|source| CallError::App {
        app: args.app.clone().unwrap_or_default(),
        source,
    })?;
    // Both URLs are checked before anything is sent, as the worker does.
    for url in [&cfg.broker_url, &cfg.result_backend] {
        broker::connection::validate_url(url)?;
    }
    let (broker_url, backend_url, queue) =
        (cfg.broker_url, cfg.result_backend, cfg.task_default_queue);
    let task_args: Vec<Value> = args
        .args
        .iter()
        .map(|a| serde_json::from_str(a).unwrap_or_else(|_| Value::String(a.clone())))
        .collect();
    let kwargs: Map<String, Value> = match &args.kwargs {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| CallError::Usage(format!("--kwargs must be a JSON object: {e}")))?,
        None => Map::new(),
    };
    if args.priority > 9 {
        return Err(CallError::Usage(
            "--priority must be between 0 and 9".into(),
        ));
    }
    let queue = args.queue.clone().unwrap_or(queue);
    let eta = match args.countdown {
        None => None,
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(CallError::Usage(
                "--countdown must be a non-negative number of seconds".into(),
            ))
        }
        // Saturates at i64::MAX microseconds; the add then reports overflow.
        Some(s) => {
            match Utc::now().checked_add_signed(chrono::Duration::microseconds((s * 1e6) as i64)) {
                Some(eta) => Some(eta),
                None => {
                    return Err(CallError::Usage(
                        "--countdown is too large for a date".into(),
                    ))
                }
            }
        }
    };
    let task = NewTask {
        task: args.task.clone(),
        id: uuid::Uuid::new_v4().to_string(),
        args: task_args,
        kwargs,
        queue: queue.clone(),
        priority: args.priority,
        eta,
        ..NewTask::default()
    };
    let mut con = broker::connect(&broker_url)?;
    let _: i64 = redis::cmd("LPUSH")
        .arg(keys::priority_key(&queue, args.priority))
        .arg(task.encode())
        .query(&mut con)?;
    println!("{}", task.id);
    let Some(wait) = args.wait else {
        return Ok(exit::OK);
    };
    let mut backend = broker::connect(&backend_url)?;
    let deadline =
        Instant::now() + crate::protocol::time::duration_secs(wait).unwrap_or(Duration::ZERO);
    loop {
        let stored: Option<String> = redis::cmd("GET")
            .arg(keys::result_key(&task.id))
            .query(&mut backend)?;
        if let Some(meta) = stored {
            let value: Value = serde_json::from_str(&meta).map_err(CallError::BadResult)?;
            let status = value
                .get("status")
                .and_then(Value::as_str)
                .and_then(State::parse);
            if status.is_some_and(State::is_ready) {
                println!("{}", value.get("result").cloned().unwrap_or(Value::Null));
                return Ok(if status == Some(State::Success) {
                    exit::OK
                } else {
                    exit::FAILURE
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(CallError::NoResult {
                id: task.id.clone(),
                wait,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
