//! Celery's wire formats on Redis, as pure data: the kombu envelope, task
//! messages (protocol 1 and 2), result metas, and the Python-compatible JSON
//! and `repr` text that Celery clients and log readers expect, and the `%`
//! templates of node names and log/pid files.
//!
//! Nothing here touches a socket or a process; `broker` moves these bytes and
//! `child` decides what to do with them.

pub mod envelope;
pub mod event;
#[cfg(test)]
mod fuzz;
pub mod pidbox;
pub mod pyjson;
pub mod pyrepr;
pub mod result;
pub mod task;
pub mod template;
pub mod time;

pub use envelope::Envelope;
pub use result::{ExceptionInfo, ResultMeta, State};
pub use task::{DecodeError, DeliveryInfo, NewTask, TaskMessage};

/// Loads a captured Celery 5.7 fixture from `tests/fixtures/celery-5.7/`.
#[cfg(test)]
pub(crate) fn test_fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/celery-5.7/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
