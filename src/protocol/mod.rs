//! Celery's wire formats on Redis, as pure data: the kombu envelope, task
//! messages (protocol 1 and 2), result metas, and the Python-compatible JSON
//! and `repr` text that Celery clients and log readers expect.
//!
//! Nothing here touches a socket or a process; `broker` moves these bytes and
//! `child` decides what to do with them.

pub mod envelope;
pub mod pyjson;
pub mod pyrepr;
pub mod result;
pub mod task;
pub mod time;

pub use envelope::Envelope;
pub use result::{ExceptionInfo, ResultMeta, State};
pub use task::{DecodeError, DeliveryInfo, NewTask, TaskMessage};
