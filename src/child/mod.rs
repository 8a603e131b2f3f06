//! A pool child: its own Redis connections, the consume loop (reserve one
//! message when idle, execute, store the result, ack), and status reports to
//! the main process over a pipe.

pub mod boot;
pub mod consume;
pub mod execute;
pub mod report;

use std::path::PathBuf;
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
}

impl ChildSpec {
    pub fn process_name(&self) -> String {
        format!("ForkPoolWorker-{}", self.process_number)
    }
}
