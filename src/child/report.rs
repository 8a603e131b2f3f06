//! Status reports from a pool child to the main process: one JSON object per
//! line on the child's status pipe, so the main process always knows what
//! each child runs (time limits, USR1, WorkerLostError, "received" log lines).

use std::io::Write;

use serde::{Deserialize, Serialize};

/// What the main process must know about a task to act if its child dies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub id: String,
    pub task: String,
    /// Hard time limit in seconds, enforced by the main process.
    pub time_limit: Option<f64>,
    pub acks_late: bool,
    pub reject_on_worker_lost: bool,
    pub ignore_result: bool,
    pub group: Option<String>,
    pub parent_id: Option<String>,
    /// What `inspect active` shows of the request: its args and kwargs
    /// (JSON) and `delivery_info` (`{exchange, routing_key, priority,
    /// redelivered}`). Null when unknown.
    #[serde(default)]
    pub args: serde_json::Value,
    #[serde(default)]
    pub kwargs: serde_json::Value,
    #[serde(default)]
    pub delivery_info: serde_json::Value,
    /// Its canvas stamps (`TaskMessage::stamps`), for a terminating
    /// `revoke_by_stamped_headers`; left out of the report when none.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub stamps: serde_json::Map<String, serde_json::Value>,
    /// Also in a batch (a task with a hard time limit, whose start the main
    /// process must see): counted once, by the batch's `ran` report.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batched: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
// A handful of reports per task, built and parsed once each: boxing
// `Started` would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Report {
    /// Connected and consuming.
    Ready,
    /// The child cannot run at all (e.g. its task host failed to load the
    /// app); the text ends up on the launcher's terminal.
    Fatal {
        message: String,
    },
    /// A task message arrived (logged by the main process as Celery does).
    Received {
        id: String,
        task: String,
    },
    Started(Started),
    Done,
    /// A batch was reserved (all acked early). `tasks` is a JSON array with
    /// one `Started` (or null: not to be run, e.g. revoked) per message, in
    /// order, kept as text: the main process parses it only when it needs
    /// it (a death, USR1, `inspect active`), since it mostly never does.
    /// Which one runs is in the child's progress word
    /// (`plumbing::progress`), not reported.
    Batch {
        gen: u32,
        tasks: String,
    },
    /// The tasks of a batch that ran, by name (`inspect stats`), sent with
    /// the next write: a batch stopped early gives the rest back.
    Ran {
        names: Vec<String>,
    },
}

/// A batch report's `tasks`, parsed.
pub fn batch_tasks(tasks: &str) -> Vec<Option<Started>> {
    serde_json::from_str(tasks).unwrap_or_default()
}

impl Report {
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        line.push('\n');
        line
    }

    pub fn parse(line: &str) -> Option<Report> {
        serde_json::from_str(line).ok()
    }
}

/// The write end of the status pipe, owned by the child.
pub struct Reporter {
    out: std::fs::File,
    /// Reports that may wait for the next write (one write, one wake-up of
    /// the main process per task instead of three).
    queued: Vec<u8>,
}

impl Reporter {
    pub fn new(out: std::fs::File) -> Reporter {
        Reporter {
            out,
            queued: Vec::new(),
        }
    }

    /// Sends a report, with any queued before it. A failure means the main
    /// process is gone; the caller exits.
    pub fn send(&mut self, report: &Report) -> std::io::Result<()> {
        self.queue(report);
        self.flush()
    }

    /// Queues a report for the next `send` or `flush`: only for reports the
    /// main process need not act on at once ("received", "done" just before
    /// the next task's "started").
    pub fn queue(&mut self, report: &Report) {
        self.queued.extend_from_slice(report.to_line().as_bytes());
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let result = self.out.write_all(&self.queued);
        self.queued.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_as_lines() {
        let r = Report::Started(Started {
            id: "a".into(),
            task: "proj.tasks.add".into(),
            time_limit: Some(2.0),
            acks_late: true,
            reject_on_worker_lost: false,
            ignore_result: false,
            group: None,
            parent_id: None,
            args: serde_json::json!([1, 2]),
            kwargs: serde_json::json!({}),
            delivery_info: serde_json::Value::Null,
            stamps: Default::default(),
            batched: false,
        });
        let mut stamped = r.clone();
        if let Report::Started(s) = &mut stamped {
            s.stamps
                .insert("monitoring_id".into(), serde_json::json!("m"));
        }
        // No `stamps` key for the usual unstamped task.
        assert!(!r.to_line().contains("stamps"));
        for report in [r, stamped, Report::Ready, Report::Done] {
            let line = report.to_line();
            assert_eq!(line.matches('\n').count(), 1);
            assert!(line.ends_with('\n'));
            assert_eq!(Report::parse(line.trim_end()), Some(report));
        }
        assert_eq!(Report::parse("{\"report\":\"do"), None);
    }
}
