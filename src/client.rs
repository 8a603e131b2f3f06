//! `rmulti call`: send one task the way a Celery client does (protocol 2
//! envelope, LPUSH on the queue's priority list) and optionally wait for its
//! result — for demos, smoke tests and scripts without a Python client.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use serde_json::{Map, Value};

use crate::app::{AppConfig, Overrides, DEFAULT_QUEUE};
use crate::broker::{self, keys};
use crate::cli::CallArgs;
use crate::exit;
use crate::protocol::{NewTask, State};

/// Runs `rmulti call`; returns the exit status (1 when the task failed).
pub fn run_call(args: CallArgs) -> i32 {
    match call(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            exit::FAILURE
        }
    }
}

fn call(args: &CallArgs) -> anyhow::Result<i32> {
    let overrides = Overrides {
        broker: args.broker.clone(),
        result_backend: args.result_backend.clone(),
    };
    let env = |key: &str| std::env::var(key).ok();
    let (broker_url, backend_url, queue) = match &args.app {
        Some(app) => {
            let cwd = std::env::current_dir().context("reading the working directory")?;
            let cfg = AppConfig::load(app, &cwd, &env, &overrides)
                .with_context(|| format!("loading app {app}"))?;
            (cfg.broker_url, cfg.result_backend, cfg.task_default_queue)
        }
        None => {
            let (broker, backend) = overrides.urls(&env, None, None);
            (broker, backend, DEFAULT_QUEUE.to_string())
        }
    };
    let task_args: Vec<Value> = args
        .args
        .iter()
        .map(|a| serde_json::from_str(a).unwrap_or_else(|_| Value::String(a.clone())))
        .collect();
    let kwargs: Map<String, Value> = match &args.kwargs {
        Some(text) => serde_json::from_str(text).context("--kwargs must be a JSON object")?,
        None => Map::new(),
    };
    if args.priority > 9 {
        bail!("--priority must be between 0 and 9");
    }
    let queue = args.queue.clone().unwrap_or(queue);
    let eta = match args.countdown {
        None => None,
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            bail!("--countdown must be a non-negative number of seconds")
        }
        // Saturates at i64::MAX microseconds; the add then reports overflow.
        Some(s) => {
            match Utc::now().checked_add_signed(chrono::Duration::microseconds((s * 1e6) as i64)) {
                Some(eta) => Some(eta),
                None => bail!("--countdown is too large for a date"),
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
            let value: Value = serde_json::from_str(&meta).context("stored result is not JSON")?;
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
            bail!("no result for task {} within {wait} s", task.id);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
