//! The main process's Redis duties when a child can no longer speak for its
//! message: record the outcome of a task whose child died (WorkerLostError,
//! TimeLimitExceeded) or requeue it (`acks_late` + `reject_on_worker_lost`),
//! and put back the held messages of a slot that will not run again.
//!
//! A slot's batch (`lua/batch.lua`, all acked early) is settled by how far
//! its child got: with the child's progress word (only the child died) the
//! tasks it ran or was running are recorded lost and the rest requeued;
//! with Redis alone (the node died) every listed message is recorded lost,
//! since any of them may have run.

use redis::Connection;
use serde_json::{json, Value};

use crate::app::AppConfig;
use crate::broker::backend::Backend;
use crate::broker::keys::{self, Slot};
use crate::broker::reserve::{self, Scripts};
use crate::broker::{self, BrokerError, Connections};
use crate::child::records;
use crate::child::report::Started;
use crate::plumbing::progress::{Mark, Stage};
use crate::protocol::envelope::{self, delivery_tag_of};
use crate::protocol::result::{worker_lost, NODE_KILLED};
use crate::protocol::{ExceptionInfo, ResultMeta, TaskMessage};
use crate::tasks::python::template::Record;

/// Why a child's running task ended without the child reporting it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lost {
    /// Killed by the main process at the hard time limit (seconds).
    TimeLimit(f64),
    /// Died on its own (or was killed by someone else); the text is Celery's
    /// `signal 9 (SIGKILL)` / `exitcode 1`.
    Died(String),
    /// Killed by a cold shutdown.
    ColdShutdown,
    /// Found started (early ack) in a held list after the node itself died.
    NodeKilled,
    /// Killed by a `revoke(terminate=True)`: REVOKED `terminated`.
    Terminated,
}

pub struct Recovery {
    conns: Connections,
    scripts: Scripts,
    store: Backend,
    default_queue: String,
    /// The app's results are only Python's to write (`django-db`, ...):
    /// outcomes go to `records`, which the supervisor hands to the template.
    results_in_python: bool,
    /// A Python app: outcomes of messages with follow-ups (a chord part,
    /// errbacks, a chain) go to `records` too, after the Redis write.
    python_app: bool,
    records: Vec<Record>,
}

impl Recovery {
    pub fn new(app: &AppConfig, default_queue: &str) -> Recovery {
        Recovery {
            conns: Connections::new(&app.broker_url, app.redis_backend_url()),
            scripts: Scripts::default(),
            store: Backend::new(app.result_expires),
            default_queue: default_queue.to_string(),
            results_in_python: app.results_in_python(),
            python_app: app.python.is_some(),
            records: Vec::new(),
        }
    }

    /// The outcomes waiting for the Python template to store them.
    pub fn records(&mut self) -> &mut Vec<Record> {
        &mut self.records
    }

    pub fn broker(&mut self) -> Result<&mut Connection, BrokerError> {
        self.conns.broker()
    }

    /// Connects to the result backend (if not connected): whether it takes
    /// our credentials is known before the pool starts.
    pub fn check_backend(&mut self) -> Result<(), BrokerError> {
        if self.results_in_python {
            return Ok(());
        }
        self.conns.backend().map(|_| ())
    }

    /// Drops the connections (the next use reconnects).
    pub fn reset(&mut self) {
        self.conns.reset();
    }

    fn reset_on(&mut self, e: &BrokerError) {
        if e.is_connection_problem() {
            self.conns.reset();
        }
    }

    /// Runs `op`, and once more on fresh connections if it failed for a
    /// connection problem: the connections are kept from start-up, so after
    /// Redis restarted the first command on them fails although Redis is back.
    fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        match op(self) {
            Err(e) if e.is_connection_problem() => {
                self.reset_on(&e);
                op(self)
            }
            other => other,
        }
    }

    /// Records the outcome of `task`, which was running in `slot` when its child died.
    pub fn task_lost(&mut self, node: &str, slot: usize, task: &Started, why: &Lost, job: usize) {
        let slot = Slot::new(node, slot);
        let result = self.retrying(|r| r.task_lost_inner(&slot, task, why, job));
        if let Err(e) = result {
            tracing::error!(
                "Cannot record the outcome of lost task {}[{}]: {e}",
                task.task,
                task.id
            );
            self.reset_on(&e);
        }
    }

    fn task_lost_inner(
        &mut self,
        slot: &Slot,
        task: &Started,
        why: &Lost,
        job: usize,
    ) -> Result<(), BrokerError> {
        // Only the lost task's own message is acted on: the held list may
        // already hold the next one (reserved before a "started" came).
        let raw = reserve::held_message(self.broker()?, slot)?
            .filter(|r| TaskMessage::decode(r).is_ok_and(|t| t.id == task.id));
        let requeue = task.acks_late
            && !matches!(why, Lost::Terminated)
            && (task.reject_on_worker_lost || matches!(why, Lost::ColdShutdown));
        if let (true, Some(raw)) = (
            requeue && !matches!(why, Lost::TimeLimit(_)),
            raw.as_deref(),
        ) {
            self.restore(slot, raw)?;
            tracing::warn!(
                "Task {}[{}] requeued: its child was lost and it acks late",
                task.task,
                task.id
            );
            return Ok(());
        }
        self.record_lost(task, why, job, raw.as_deref())?;
        let Some(raw) = raw else {
            return Ok(());
        };
        let tag = delivery_tag_of(&raw);
        let con = self.conns.broker()?;
        self.scripts.ack(con, slot, tag.as_deref())
    }

    /// Stores the outcome of a lost task (FAILURE or REVOKED) unless its
    /// result is ignored.
    fn record_lost(
        &mut self,
        task: &Started,
        why: &Lost,
        job: usize,
        raw: Option<&str>,
    ) -> Result<(), BrokerError> {
        let exc = match why {
            Lost::TimeLimit(limit) => ExceptionInfo::new(
                "TimeLimitExceeded",
                Some("billiard.exceptions"),
                vec![json!(limit)],
            ),
            Lost::Died(how) => {
                worker_lost(&format!("Worker exited prematurely: {how} Job: {job}."))
            }
            Lost::NodeKilled => worker_lost(NODE_KILLED),
            Lost::ColdShutdown => worker_lost("Worker was terminated by a cold shutdown"),
            Lost::Terminated => ExceptionInfo::task_revoked("terminated"),
        };
        let text = exc.repr();
        tracing::error!("Task handler raised error: {text}");
        if !task.ignore_result {
            let now = chrono::Utc::now();
            let mut meta = match why {
                Lost::Terminated => ResultMeta::revoked(&task.id, "terminated", now),
                _ => ResultMeta::failure_for_id(&task.id, exc, None, now),
            };
            meta.group_id = task.group.clone();
            meta.parent_id = task.parent_id.clone();
            let json = meta.to_json();
            if !self.results_in_python {
                let con = self.conns.backend()?;
                self.store.store(con, &task.id, &json)?;
            }
            // Celery's backend completes the chord (or calls the errbacks)
            // only when it is told with the request: the template's recorder.
            let follow_ups = self.python_app
                && raw
                    .and_then(|r| TaskMessage::decode(r).ok())
                    .is_some_and(|t| records::has_follow_ups(&t));
            if self.results_in_python || follow_ups {
                // Acked below all the same: the record is the template's now.
                self.records.push(Record {
                    meta: serde_json::from_str(&json).unwrap_or_default(),
                    task: Some(task.task.clone()),
                    raw: raw.map(str::to_string),
                });
            }
        }
        Ok(())
    }

    /// Settles the batch of `slot`'s child, which died at `mark`: the tasks
    /// before the mark ran (their results went with the child) and the one
    /// at it ran too when the mark says `Running` — each recorded lost
    /// (`why.0` for the running one, `why.1` for the others), except
    /// `recorded` (already done, it had reported started); the rest never
    /// started and go back to their queue. A batch of another generation
    /// than the mark's was reserved by a call whose reply the child never
    /// read: none of it started.
    pub fn batch_lost(
        &mut self,
        node: &str,
        slot: usize,
        mark: Mark,
        recorded: Option<&str>,
        why: (&Lost, &Lost),
        job: usize,
    ) {
        let slot = Slot::new(node, slot);
        let found = match self.retrying(|r| reserve::batch_of(r.broker()?, &slot)) {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("Cannot read the batch of {}: {e}", slot.batch);
                self.reset_on(&e);
                return;
            }
        };
        let (gen, msgs) = found;
        let ours = mark.stage != Stage::Idle && mark.gen.to_string() == gen;
        let index = usize::from(mark.index);
        let from = match mark.stage {
            _ if !ours => 0,
            Stage::Running => index + 1,
            _ => index,
        };
        self.settle_batch(
            &slot,
            &gen,
            &msgs,
            from,
            |i| {
                let running = mark.stage == Stage::Running && i == index;
                (if running { why.0 } else { why.1 }).clone()
            },
            recorded,
            job,
        );
    }

    /// Records the first `from` messages of a batch lost (`why` of each
    /// position), then requeues the rest and forgets the batch.
    #[allow(clippy::too_many_arguments)]
    fn settle_batch(
        &mut self,
        slot: &Slot,
        gen: &str,
        msgs: &[String],
        from: usize,
        why: impl Fn(usize) -> Lost,
        recorded: Option<&str>,
        job: usize,
    ) {
        for (i, raw) in msgs.iter().enumerate().take(from) {
            let started = started_from(raw);
            if recorded == Some(started.id.as_str()) {
                continue;
            }
            let why = why(i);
            if let Err(e) = self.retrying(|r| r.record_lost(&started, &why, job, Some(raw))) {
                tracing::error!(
                    "Cannot record the outcome of lost task {}[{}]: {e}",
                    started.task,
                    started.id
                );
                self.reset_on(&e);
            }
        }
        let released =
            self.retrying(|r| r.scripts.release_batch(r.conns.broker()?, slot, gen, from));
        match released {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "Restored {n} message(s) of a lost child's batch that had not started"
            ),
            Err(e) => {
                tracing::error!("Cannot release the batch in {}: {e}", slot.batch);
                self.reset_on(&e);
            }
        }
    }

    /// A batch found with no child to say how far it got (the node died):
    /// any of it may have run, so all of it is recorded lost, never run twice.
    fn release_batch_unknown(&mut self, slot: &Slot) {
        match self.retrying(|r| reserve::batch_of(r.broker()?, slot)) {
            Ok(Some((gen, msgs))) => {
                let from = msgs.len();
                self.settle_batch(slot, &gen, &msgs, from, |_| Lost::NodeKilled, None, 0);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("Cannot read the batch of {}: {e}", slot.batch);
                self.reset_on(&e);
            }
        }
    }

    /// Puts back whatever `slot`'s held list holds (its child is gone and no
    /// replacement will take it). Returns how many messages were restored.
    pub fn release_held(&mut self, slot: &Slot) -> usize {
        self.release_batch_unknown(slot);
        let result = self.retrying(|r| {
            let con = r.broker()?;
            Ok((
                reserve::held_message(con, slot)?,
                reserve::held_started(con, slot)?,
            ))
        });
        match result {
            // Its task had started under early ack: record it lost, as Celery
            // would have, instead of running it a second time.
            Ok((Some(raw), true)) => {
                let started = started_from(&raw);
                if let Err(e) =
                    self.retrying(|r| r.task_lost_inner(slot, &started, &Lost::NodeKilled, 0))
                {
                    tracing::error!(
                        "Cannot record the outcome of lost task {}[{}]: {e}",
                        started.task,
                        started.id
                    );
                    self.reset_on(&e);
                }
                0
            }
            Ok((Some(raw), false)) => match self.retrying(|r| r.restore(slot, &raw)) {
                Ok(restored) => usize::from(restored),
                Err(e) => {
                    tracing::error!("Cannot restore the message held in {}: {e}", slot.held);
                    self.reset_on(&e);
                    0
                }
            },
            Ok((None, _)) => 0,
            Err(e) => {
                tracing::error!("Cannot read held list {}: {e}", slot.held);
                self.reset_on(&e);
                0
            }
        }
    }

    /// kombu's visibility-timeout restore (see `broker::sweep`); errors are logged.
    pub fn sweep(&mut self, visibility_timeout: u64) {
        let result = self
            .broker()
            .and_then(|con| broker::sweep::restore_expired(con, visibility_timeout));
        match result {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "Restored {n} unacknowledged message(s) older than the visibility timeout ({visibility_timeout} s)"
            ),
            Err(e) => {
                tracing::error!("Visibility-timeout restore failed: {e}");
                self.reset_on(&e);
            }
        }
    }

    /// Restores the held messages left by an earlier run of `node` (killed).
    pub fn recover_node(&mut self, node: &str) -> Result<usize, BrokerError> {
        for slot in reserve::batch_slots(self.broker()?, node)? {
            self.release_batch_unknown(&slot);
        }
        let slots = reserve::held_slots(self.broker()?, node)?;
        Ok(slots.iter().map(|s| self.release_held(s)).sum())
    }

    fn restore(&mut self, slot: &Slot, raw: &str) -> Result<bool, BrokerError> {
        let queue_key = match TaskMessage::decode(raw) {
            Ok(t) => {
                let info = &t.delivery_info;
                keys::return_key(&info.routing_key, info.priority, &self.default_queue)
            }
            Err(_) => self.default_queue.clone(),
        };
        let tag = delivery_tag_of(raw);
        let marked = serde_json::from_str::<Value>(raw)
            .ok()
            .filter(Value::is_object)
            .map_or_else(|| raw.to_string(), envelope::redelivered);
        let con = self.conns.broker()?;
        self.scripts
            .restore(con, slot, tag.as_deref(), &queue_key, &marked, false)
    }
}

/// What `task_lost_inner` needs, read back from a held message.
fn started_from(raw: &str) -> Started {
    let task = TaskMessage::decode(raw).ok();
    Started {
        id: task.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
        task: task.as_ref().map(|t| t.task.clone()).unwrap_or_default(),
        time_limit: None,
        acks_late: false,
        reject_on_worker_lost: false,
        // Without an id there is no result key to write.
        ignore_result: task.as_ref().is_none_or(|t| t.ignore_result),
        group: task.as_ref().and_then(|t| t.group.clone()),
        parent_id: task.as_ref().and_then(|t| t.parent_id.clone()),
        args: Value::Null,
        kwargs: Value::Null,
        delivery_info: Value::Null,
        stamps: Default::default(),
        batched: false,
    }
}
