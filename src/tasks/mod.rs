//! Executors: where a task's code runs once a child has a request.
//!
//! A task name maps to a `TaskSpec` (executor + per-task options). Builtins
//! are Rust functions; `exec` runs a command with the request as JSON on stdin;
//! `python` tasks belong to a Celery app and run in the child's Python host.

pub mod builtin;
pub mod exec;
pub mod python;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::protocol::ExceptionInfo;

pub use builtin::Builtin;

/// A Rust function registered through the library API.
pub type NativeFn = fn(&Invocation) -> Outcome;

#[derive(Debug, Clone)]
pub enum Executor {
    Builtin(Builtin),
    /// argv of a command; request JSON on stdin, result JSON on stdout.
    Exec(Vec<String>),
    Native(NativeFn),
    /// A task of the app's Celery project, run by the pool child's Python
    /// host (`python::Host`), not through `Executor::run`.
    Python,
}

/// Per-task options from the app file; `None` means "use the app default".
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub executor: Executor,
    pub acks_late: Option<bool>,
    /// The task's own `reject_on_worker_lost` (Python apps); `None` = the app's.
    pub reject_on_worker_lost: Option<bool>,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub ignore_result: bool,
}

impl TaskSpec {
    pub fn new(executor: Executor) -> TaskSpec {
        TaskSpec {
            executor,
            acks_late: None,
            reject_on_worker_lost: None,
            time_limit: None,
            soft_time_limit: None,
            ignore_result: false,
        }
    }
}

/// What one run of a task gets.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub id: &'a str,
    pub task: &'a str,
    pub args: &'a [Value],
    pub kwargs: &'a Map<String, Value>,
    /// After this long the task should stop and fail with
    /// `SoftTimeLimitExceeded` (executors that can, do).
    pub soft_time_limit: Option<Duration>,
}

/// A task's failure: the exception Celery clients will re-raise, and a
/// Python-style traceback text.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    pub exc: ExceptionInfo,
    pub traceback: String,
}

pub type Outcome = Result<Value, TaskError>;

impl TaskError {
    /// An exception raised by `task` (the frame shown in the traceback),
    /// with one message argument, as Python's `Exc(message)` stores it.
    pub fn raised(
        task: &str,
        exc_type: &str,
        exc_module: &str,
        message: impl Into<String>,
    ) -> TaskError {
        let message = message.into();
        TaskError {
            traceback: traceback(task, exc_type, exc_module, &message),
            exc: ExceptionInfo {
                exc_type: exc_type.to_string(),
                exc_message: vec![Value::String(message)],
                exc_module: Some(exc_module.to_string()),
            },
        }
    }

    /// `TypeError(message)` from the builtins module.
    pub fn type_error(task: &str, message: impl Into<String>) -> TaskError {
        TaskError::raised(task, "TypeError", "builtins", message)
    }

    /// `ValueError(message)` from the builtins module.
    pub fn value_error(task: &str, message: impl Into<String>) -> TaskError {
        TaskError::raised(task, "ValueError", "builtins", message)
    }

    /// What Celery stores when a task outlives its soft time limit
    /// (billiard's exception, whose `str()` is `SoftTimeLimitExceeded()`).
    pub fn soft_time_limit_exceeded(task: &str) -> TaskError {
        TaskError::raised(
            task,
            "SoftTimeLimitExceeded",
            "billiard.exceptions",
            "SoftTimeLimitExceeded()",
        )
    }
}

/// A Python-looking traceback, so clients and logs that print
/// `result.traceback` show something familiar. Exceptions outside
/// `builtins` are qualified by module, as Python prints them.
pub fn traceback(task: &str, exc_type: &str, exc_module: &str, message: &str) -> String {
    let qualified = if exc_module == "builtins" {
        exc_type.to_string()
    } else {
        format!("{exc_module}.{exc_type}")
    };
    let last = if message.is_empty() {
        qualified
    } else {
        format!("{qualified}: {message}")
    };
    format!("Traceback (most recent call last):\n  File \"rmulti/builtin\", line 1, in {task}\n{last}\n")
}

impl Executor {
    pub fn run(&self, inv: &Invocation) -> Outcome {
        match self {
            Executor::Builtin(b) => b.run(inv),
            Executor::Exec(argv) => exec::run(argv, inv),
            Executor::Native(f) => f(inv),
            // The child sends these to its host; reaching this is a bug,
            // reported as a failure rather than a crash.
            Executor::Python => Err(TaskError::raised(
                inv.task,
                "RuntimeError",
                "builtins",
                "Python tasks run in the pool child's Python host",
            )),
        }
    }
}

/// Task name → spec.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<String, TaskSpec>,
}

impl Registry {
    pub fn insert(&mut self, name: impl Into<String>, spec: TaskSpec) {
        self.tasks.insert(name.into(), spec);
    }
    pub fn get(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.get(name)
    }
    /// Sorted names, for the banner and `inspect registered`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.tasks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
