//! A pool child: its own Redis connections, the consume loop (reserve one
//! message when idle, triage it, run it, store the result, ack), and status
//! reports to the main process over a pipe.
//!
//! - `consume`: the loop, and the only place a child process exits;
//! - `triage`: what a reserved message becomes (a pure function);
//! - `in_hand`: how far this child got with the message it holds;
//! - `slot`: the Redis side of this child's slot (held list, finish, ack, park);
//! - `run`: running a task (builtin, exec, Python host) to an outcome;
//! - `report`: the status pipe to the main process;
//! - `events`: task events (`-E`), sent without a round trip of their own;
//! - `records`: outcomes handed to the Python template when only the app's
//!   Python code can write its result backend (`django-db`, `db+...`).
//!
//! Dependencies point one way: `consume` → (`triage`, `slot`, `run`) →
//! (`in_hand`, `report`).

pub mod boot;
pub mod consume;
pub mod events;
pub mod in_hand;
pub mod records;
pub mod report;
pub mod run;
pub mod slot;
pub mod triage;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

use crate::app::AppConfig;

/// Everything a child needs, fixed when it is forked.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub node: String,
    /// Slot 1..=concurrency: names the held list and the `%I` log file.
    pub slot: usize,
    /// Process number for the log name `ForkPoolWorker-<n>` (grows on replacement).
    pub process_number: usize,
    pub app: Arc<AppConfig>,
    pub queues: Vec<String>,
    pub log_file: Option<PathBuf>,
    pub max_tasks: Option<u64>,
    pub max_memory_kib: Option<u64>,
    /// `--time-limit` / `--soft-time-limit` (the app's settings when absent).
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    /// The node's pool size when the child was forked: a batch takes at
    /// most this share of a queue.
    pub pool_size: usize,
    /// Where the child says how far it got in a batch (shared with the main
    /// process); `None` disables batches.
    pub progress: Option<crate::plumbing::progress::ProgressHandle>,
    /// Which child of the node ran last (shared by all of them); `None`:
    /// no preference.
    pub affinity: Option<crate::plumbing::affinity::AffinityHandle>,
}

impl ChildSpec {
    pub fn process_name(&self) -> String {
        format!("ForkPoolWorker-{}", self.process_number)
    }
}

/// How a child must leave at once (mid-task, nothing left to finish): only
/// `consume` acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Exit with this code (the main process is gone, the host is unusable).
    Code(i32),
    /// End the way the Python host ended (killed by signal N, or exit code N),
    /// so the main process reports the loss as Celery does:
    /// `Worker exited prematurely: signal 9 (SIGKILL)`.
    Like(ExitStatus),
}
