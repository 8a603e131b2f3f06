//! Task events from the child that runs the task (wire.md §7): received,
//! started, succeeded, failed, retried, revoked, rejected.
//!
//! Whether to send them is the node's flag `rmulti.events.<node>` (`-E`,
//! `enable_events`, `disable_events`), read by the reserving script itself
//! (`next.lua` returns it with every reply), so a switch reaches the children
//! at their next task without a command of its own.
//!
//! Events are buffered and sent as one Celery `task.multi` batch with
//! `Connections::send_later` (written now, the reply read with the next
//! reservation's): right before a task runs (so a long task shows STARTED at
//! once, with the previous task's outcome in the same message), and before
//! the child waits idle or leaves. One PUBLISH per task, no round trip.
//! A child working through a batch (`lua/batch.lua`) buffers the batch's
//! events instead and hands them to the script that finishes it: one
//! PUBLISH per batch, inside a round trip it makes anyway.

use std::time::Duration;

use crate::broker::{BrokerError, Connections};
use crate::protocol::event::{self, Publish, Sender, TaskEvent};
use crate::protocol::pyrepr::saferepr;
use crate::protocol::time::format_isoformat;
use crate::protocol::{ExceptionInfo, State, TaskMessage};

/// Celery's `resultrepr_maxsize`.
const RESULT_REPR_MAX: usize = 1024;
/// Celery flushes its task event buffer at this size.
const BATCH_MAX: usize = 24;

pub struct TaskEvents {
    on: bool,
    sender: Sender,
    /// `Sender::head`, made once: every event starts with it.
    head: String,
    db: i64,
    clock: u64,
    unsent: Unsent,
}

/// Buffered events, already JSON, joined with `, `.
#[derive(Debug, Default)]
pub struct Unsent {
    json: String,
    count: usize,
}

impl TaskEvents {
    pub fn new(node: &str, broker_url: &str) -> TaskEvents {
        let sender = Sender {
            hostname: node.to_string(),
            utcoffset: event::utcoffset_hours(),
            // The node's pid, as a Python worker's events carry its main pid.
            pid: std::os::unix::process::parent_id(),
        };
        TaskEvents {
            on: false,
            head: sender.head(),
            sender,
            db: crate::broker::url::parse(broker_url)
                .map(|t| t.db())
                .unwrap_or(0),
            clock: 0,
            unsent: Unsent::default(),
        }
    }

    /// Takes the node's flag, as the reserving script returned it.
    pub fn set_on(&mut self, on: bool) {
        self.on = on;
    }

    pub fn on(&self) -> bool {
        self.on
    }

    /// Buffers `e` when events are on, written out at once (no copy of its
    /// fields is kept).
    pub fn push(&mut self, e: TaskEvent) {
        if !self.on {
            return;
        }
        self.clock += 1;
        let json = &mut self.unsent.json;
        if self.unsent.count > 0 {
            json.push_str(", ");
        }
        e.write_json(
            json,
            &self.head,
            self.clock,
            crate::broker::reserve::now_secs(),
        );
        self.unsent.count += 1;
    }

    /// Whether the buffer should go out now whatever comes next.
    pub fn full(&self) -> bool {
        self.unsent.count >= BATCH_MAX
    }

    /// Takes the buffer as one `task.multi` message, for a script to
    /// publish (`batch.lua`); `None` when there is nothing to send. The
    /// caller puts it back (`put_back`) when the script failed.
    pub fn take_publish(&mut self) -> Option<(Publish, Unsent)> {
        if self.unsent.count == 0 {
            return None;
        }
        let publish = self.publish();
        Some((publish, std::mem::take(&mut self.unsent)))
    }

    /// Returns events `take_publish` took that could not be sent, ahead of
    /// any buffered since.
    pub fn put_back(&mut self, mut events: Unsent) {
        if self.unsent.count > 0 {
            events.json.push_str(", ");
            events.json.push_str(&self.unsent.json);
            events.count += self.unsent.count;
        }
        self.unsent = events;
    }

    /// Sends the buffer as one `task.multi` message, without waiting for
    /// the reply. Kept for the next flush when the write fails.
    pub fn flush(&mut self, conns: &mut Connections) -> Result<(), BrokerError> {
        if self.unsent.count == 0 {
            return Ok(());
        }
        let publish = self.publish();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&publish.channel).arg(&publish.payload);
        conns.send_later(&cmd)?;
        self.unsent = Unsent::default();
        Ok(())
    }

    fn publish(&self) -> Publish {
        let tag = uuid::Uuid::new_v4().to_string();
        Publish::task_multi(&self.sender, &self.unsent.json, self.db, &tag)
    }
}

/// `task-received` for `task`.
pub fn received(task: &TaskMessage) -> TaskEvent {
    TaskEvent::Received {
        uuid: task.id.clone(),
        name: task.display_name().to_string(),
        args: task.argsrepr.clone(),
        kwargs: task.kwargsrepr.clone(),
        root_id: task.root_id.clone(),
        parent_id: task.parent_id.clone(),
        retries: u64::from(task.retries),
        eta: task.eta.map(format_isoformat),
        expires: task.expires.map(format_isoformat),
    }
}

/// The event of a task that ran, from the result meta it stores (`None`
/// when its result is ignored: then it counts as succeeded with `None`).
pub fn finished(task: &TaskMessage, meta_json: Option<&str>, runtime: Duration) -> TaskEvent {
    let uuid = task.id.clone();
    // Only three fields are read: the rest of the meta is skipped, not
    // built into a map (this runs for every task with events on).
    let meta: Option<MetaView> = meta_json.and_then(|j| serde_json::from_str(j).ok());
    let Some(meta) = meta else {
        return TaskEvent::Succeeded {
            uuid,
            result: "None".into(),
            runtime: runtime.as_secs_f64(),
        };
    };
    let result = &meta.result;
    let traceback = meta.traceback.as_str().map(str::to_string);
    let exception =
        || ExceptionInfo::from_value(result).map_or_else(|| saferepr(result, None), |e| e.repr());
    match meta.status.as_str().and_then(State::parse) {
        Some(State::Failure) => TaskEvent::Failed {
            uuid,
            exception: exception(),
            traceback: Some(traceback.unwrap_or_default()),
        },
        Some(State::Retry) => TaskEvent::Retried {
            uuid,
            exception: exception(),
            traceback: traceback.unwrap_or_default(),
        },
        Some(State::Revoked) => TaskEvent::Revoked {
            uuid,
            terminated: false,
            signum: None,
            expired: false,
        },
        _ => TaskEvent::Succeeded {
            uuid,
            result: saferepr(result, Some(RESULT_REPR_MAX)),
            runtime: runtime.as_secs_f64(),
        },
    }
}

/// What `finished` reads of a result meta.
#[derive(serde::Deserialize)]
struct MetaView {
    #[serde(default)]
    status: serde_json::Value,
    #[serde(default)]
    result: serde_json::Value,
    #[serde(default)]
    traceback: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskMessage {
        let raw = crate::protocol::NewTask {
            task: "proj.add".into(),
            id: "t1".into(),
            args: vec![2.into(), 3.into()],
            queue: "celery".into(),
            ..Default::default()
        }
        .encode();
        TaskMessage::decode(&raw).unwrap()
    }

    #[test]
    fn a_success_carries_the_result_repr_and_runtime() {
        let t = task();
        let meta = crate::protocol::ResultMeta::success(&t, "hi".into(), chrono::Utc::now());
        let e = finished(&t, Some(&meta.to_json()), Duration::from_millis(1500));
        assert_eq!(
            e,
            TaskEvent::Succeeded {
                uuid: t.id.clone(),
                result: "'hi'".into(),
                runtime: 1.5
            }
        );
    }

    #[test]
    fn a_failure_carries_the_exception_repr_and_traceback() {
        let t = task();
        let exc = ExceptionInfo::builtin("ValueError", "boom");
        let meta = crate::protocol::ResultMeta::failure(
            &t,
            exc,
            Some("Traceback ...".into()),
            chrono::Utc::now(),
        );
        let e = finished(&t, Some(&meta.to_json()), Duration::ZERO);
        assert_eq!(
            e,
            TaskEvent::Failed {
                uuid: t.id.clone(),
                exception: "ValueError('boom')".into(),
                traceback: Some("Traceback ...".into())
            }
        );
    }

    #[test]
    fn buffered_events_are_the_bytes_of_the_general_writer() {
        use crate::protocol::event::{Event, Stamped};
        let mut ev = TaskEvents::new("w1@h\u{e9}", "redis://localhost/0");
        ev.set_on(true);
        let t = task();
        let all = [
            received(&t),
            TaskEvent::Started { uuid: t.id.clone() },
            TaskEvent::Succeeded {
                uuid: t.id.clone(),
                result: "'x\"y'".into(),
                runtime: 0.000123,
            },
            TaskEvent::Failed {
                uuid: t.id.clone(),
                exception: "ValueError('boom')".into(),
                traceback: None,
            },
            TaskEvent::Revoked {
                uuid: t.id.clone(),
                terminated: true,
                signum: Some(15),
                expired: false,
            },
            TaskEvent::Rejected {
                uuid: t.id.clone(),
                requeue: true,
            },
        ];
        for e in all.iter().take(3) {
            ev.push(e.clone());
        }
        // A failed send puts its events back ahead of later ones.
        let (_, unsent) = ev.take_publish().unwrap();
        for e in all.iter().skip(3) {
            ev.push(e.clone());
        }
        ev.put_back(unsent);
        let (publish, _) = ev.take_publish().unwrap();

        let stamped: Vec<Stamped> = all
            .iter()
            .enumerate()
            .map(|(i, e)| {
                // The same clock; the time read back from what was written.
                let written: serde_json::Value =
                    serde_json::from_str(&format!("[{}]", ev_json(&publish.payload))).unwrap();
                Stamped {
                    event: Event::task(e.clone()),
                    clock: i as u64 + 1,
                    timestamp: written[0][i]["timestamp"].as_f64().unwrap(),
                }
            })
            .collect();
        let tag = tag_of(&publish.payload);
        assert_eq!(publish, Publish::batch(&ev.sender, &stamped, 0, &tag));
    }

    /// The events list of a `task.multi` payload, as JSON text.
    fn ev_json(payload: &str) -> String {
        let env: serde_json::Value = serde_json::from_str(payload).unwrap();
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD
            .decode(env["body"].as_str().unwrap())
            .unwrap();
        String::from_utf8(body).unwrap()
    }

    fn tag_of(payload: &str) -> String {
        let env: serde_json::Value = serde_json::from_str(payload).unwrap();
        env["properties"]["delivery_tag"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn nothing_is_buffered_while_events_are_off() {
        let mut ev = TaskEvents::new("w1@h", "redis://localhost/3");
        ev.push(TaskEvent::Started { uuid: "u".into() });
        assert_eq!(ev.unsent.count, 0);
        ev.set_on(true);
        ev.push(TaskEvent::Started { uuid: "u".into() });
        assert_eq!(ev.unsent.count, 1);
        assert_eq!(ev.db, 3);
        ev.set_on(false);
        assert!(!ev.on());
    }
}
