//! Task messages: decoding protocol 2 and protocol 1 into one `TaskMessage`,
//! and encoding new protocol 2 messages the way Celery 5.7's client does.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Where the message came from, as `properties.delivery_info` says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeliveryInfo {
    pub exchange: String,
    pub routing_key: String,
    /// `properties.priority`, clamped to 0..=9.
    pub priority: u8,
    pub redelivered: bool,
}

/// One task request, whichever protocol carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// 1 or 2.
    pub protocol: u8,
    pub id: String,
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub retries: u32,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// Seconds; wire order is `[hard, soft]`.
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub group: Option<String>,
    pub group_index: Option<i64>,
    /// `ignore_result` header; null means false.
    pub ignore_result: bool,
    pub shadow: Option<String>,
    /// Python reprs of args/kwargs, from the headers or synthesised (protocol 1).
    pub argsrepr: String,
    pub kwargsrepr: String,
    pub origin: Option<String>,
    /// `embed` (protocol 2) or the body's fields (protocol 1); null when absent.
    pub callbacks: Value,
    pub errbacks: Value,
    pub chain: Value,
    pub chord: Value,
    pub delivery_info: DeliveryInfo,
    pub delivery_tag: Option<String>,
}

/// Why a message could not become a `TaskMessage`. `task_id` and `task` are
/// set whenever the headers (or body) revealed them, so the caller can store
/// a FAILURE result for the id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub reason: String,
    pub task_id: Option<String>,
    pub task: Option<String>,
}

impl TaskMessage {
    /// Decodes a raw envelope as popped from a queue list. Rejects content types
    /// other than `application/json` without deserialising them.
    pub fn decode(raw: &str) -> Result<TaskMessage, DecodeError> {
        let _ = raw;
        Err(DecodeError {
            reason: "not implemented".into(),
            task_id: None,
            task: None,
        })
    }

    /// The name shown in logs and events: the shadow if set, else the task.
    pub fn display_name(&self) -> &str {
        self.shadow.as_deref().unwrap_or(&self.task)
    }
}

/// A task to publish (used by `rmulti call`, the demo and tests).
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub task: String,
    pub id: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub queue: String,
    pub priority: u8,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub ignore_result: bool,
    /// Protocol 1 instead of 2.
    pub protocol1: bool,
}

impl NewTask {
    /// Encodes the envelope exactly as Celery 5.7's Python client would
    /// (protocol 2 by default), with a fresh delivery tag.
    pub fn encode(&self) -> String {
        String::new()
    }
}
