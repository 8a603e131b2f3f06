//! The Redis side of one pool child's slot: reserving into its held list,
//! finishing the handled message (result, ack) with the next reservation,
//! early ack at start, parking ETA messages, requeues, and dead-letter
//! records. What the child has in hand (`InHand`) lives here, because the
//! finish and ack are what move it.
//!
//! On a deep queue with fast tasks the slot reserves batches instead
//! (`lua/batch.lua`): `batch` (how many to ask for) grows from 2 by doubling
//! while the queue stays deep and tasks fast, and falls back to 1 (the
//! one-message path, unchanged) when the queue is shallow or a task was slow.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::events::TaskEvents;
use super::in_hand::InHand;
use super::report::{Report, Reporter};
use super::ChildSpec;
use crate::broker::backend::Backend;
use crate::broker::keys::{self, Slot as SlotKeys};
use crate::broker::reserve::{
    now_secs, Batch, BatchCall, BatchFinish, Finish, Reservations, Reserved, Scripts, Then,
    ETA_PROMOTE_EVERY,
};
use crate::broker::revoked::{self, Revocation};
use crate::broker::{BrokerError, Connections};
use crate::plumbing::progress::{Mark, ProgressHandle};
use crate::protocol::envelope::delivery_tag_of;
use crate::protocol::{pyjson, ResultMeta, TaskMessage};

/// How long a finished task's result is retried across reconnects.
const STORE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a finish waits for replicas (`wait_replicas`).
const REPLICA_WAIT: Duration = Duration::from_secs(1);
/// A task that takes longer than this ends batching (and the batch it is
/// in): its siblings must not wait behind it.
pub const SLOW_TASK: Duration = Duration::from_millis(2);
/// The most messages one batch takes: as many as the main process can
/// mark not to start (`progress::SKIP_POSITIONS`).
const MAX_BATCH: usize = crate::plumbing::progress::SKIP_POSITIONS;
/// How long the child that ran last is waited for after it last said it
/// waits idle: three of its blocking waits, so a dead or busy one holds
/// due work back that long at most.
const AFFINITY_FRESH: Duration = Duration::from_millis(300);

/// What a reservation got.
#[derive(Debug)]
pub enum Got {
    One(Reserved),
    Batch(Batch),
}

pub struct Slot<'a> {
    spec: &'a ChildSpec,
    backend: Backend,
    scripts: Scripts,
    keys: SlotKeys,
    /// The queue keys in consume order.
    queue_keys: Vec<String>,
    how: Reservations,
    /// When this child last promoted due ETA messages.
    promoted_at: Option<Instant>,
    /// The message in hand and how far this child got with it.
    pub in_hand: InHand,
    /// Task events; their on/off flag comes back with each reservation.
    pub events: TaskEvents,
    /// How many messages the next reservation asks for (1: one, as always).
    batch: usize,
    /// Messages left on the queue after the last one-message reservation.
    depth: usize,
    /// The generation of the last batch reserved.
    gen: u32,
    /// The batch handled, to finish with the next reservation.
    batch_finish: Option<BatchFinish>,
    progress: Option<ProgressHandle>,
}

impl<'a> Slot<'a> {
    pub fn new(spec: &'a ChildSpec) -> Slot<'a> {
        let app = &spec.app;
        let early_by_default = !app.task_acks_late;
        let exceptions: Vec<String> = app
            .tasks
            .names()
            .filter(|name| {
                app.tasks
                    .get(name)
                    .is_some_and(|t| t.acks_late == Some(early_by_default))
            })
            .map(str::to_string)
            .collect();
        let how = Reservations {
            token: uuid::Uuid::new_v4().simple().to_string(),
            early_by_default,
            exceptions,
            result_dbs: crate::broker::url::same_server(&app.broker_url, app.redis_backend_url()),
            result_expires: app.result_expires,
            events_key: keys::task_events(&spec.node),
        };
        Slot {
            spec,
            backend: Backend::new(app.result_expires),
            scripts: Scripts::default(),
            keys: SlotKeys::new(&spec.node, spec.slot),
            queue_keys: keys::consume_order(&spec.queues),
            how,
            promoted_at: None,
            in_hand: InHand::Free,
            events: TaskEvents::new(&spec.node, &app.broker_url),
            batch: 1,
            depth: 0,
            // Random, so a batch left by an earlier child of this slot never
            // passes for this one's.
            gen: rand_gen(),
            batch_finish: None,
            progress: spec.progress,
        }
    }

    /// The first queue key, the one an idle child blocks on.
    pub fn first_key(&self) -> &str {
        self.queue_keys.first().map_or("", String::as_str)
    }

    /// Whether `task` is revoked where the reserving script does not look:
    /// by one of its stamps (`revoke_by_stamped_headers`), or by id for a
    /// protocol 1 message (its id is in the body; the script reads the
    /// headers). A round trip only for such messages; none for the others.
    pub fn revoked_unseen(
        &self,
        conns: &mut Connections,
        task: &TaskMessage,
    ) -> Result<Option<Revocation>, BrokerError> {
        if task.protocol != 1 && task.stamps.is_empty() {
            return Ok(None);
        }
        let con = conns.broker()?;
        let now = now_secs();
        if task.protocol == 1 && revoked::id_revoked(con, &task.id, now)? {
            return Ok(Some(Revocation::Id));
        }
        Ok(revoked::stamp_revoked(con, &task.stamps, now)?
            .map(|(header, value)| Revocation::Stamp(header, value)))
    }

    /// Blocks briefly for a message on the first queue (see `Scripts::wait`).
    pub fn wait(&self, conns: &mut Connections) -> Result<bool, BrokerError> {
        self.scripts
            .wait(conns.broker()?, self.first_key(), &self.keys)
    }

    /// Finishes what was handled (a message, or a batch), and when
    /// `reserve` takes the next message, or a batch of at most `room` when
    /// batching pays. One round trip per message (or per batch) when the
    /// backend is the broker's server. After a connection error the finish
    /// stays pending.
    pub fn next(
        &mut self,
        conns: &mut Connections,
        reporter: &mut Reporter,
        reserve: bool,
        room: usize,
    ) -> Result<Option<Got>, BrokerError> {
        let promote = reserve
            && self
                .promoted_at
                .is_none_or(|at| at.elapsed() >= ETA_PROMOTE_EVERY)
            && !self.leaves_due_work_to_another();
        let batching = self.batch > 1
            && reserve
            && !promote
            && room > 1
            && self.progress.is_some()
            && self.how.result_dbs.is_some();
        if batching && self.in_hand.finishing() {
            // From one message to batches: finish it on its own first.
            self.next_one(conns, reporter, false, false)?;
        }
        if batching || self.batch_finish.is_some() {
            let want = if batching { self.batch.min(room) } else { 0 };
            match self.next_batch(conns, want)? {
                Some(batch) => return Ok(Some(Got::Batch(batch))),
                // The queue is not deep enough (or not batchable): one at a time.
                None if want > 0 => self.batch = 1,
                None => {}
            }
            if !reserve {
                return Ok(None);
            }
        }
        Ok(self
            .next_one(conns, reporter, reserve, promote)?
            .map(Got::One))
    }

    /// `batch.lua`: finishes the pending batch, reserves up to `want`.
    fn next_batch(
        &mut self,
        conns: &mut Connections,
        want: usize,
    ) -> Result<Option<Batch>, BrokerError> {
        let gen = self.gen.wrapping_add(1).max(1);
        let events = self.events.take_publish();
        let reply = conns.piggyback().and_then(|mut con| {
            let call = BatchCall {
                finish: self.batch_finish.as_ref(),
                event: events
                    .as_ref()
                    .map(|(p, _)| (p.channel.as_str(), p.payload.as_str())),
                gen,
                want,
                share: self.spec.pool_size,
            };
            self.scripts
                .batch(&mut con, &self.keys, &self.queue_keys, &self.how, &call)
        });
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                if let Some((_, stamped)) = events {
                    self.events.put_back(stamped);
                }
                if !e.is_connection_problem() {
                    // Refused, not lost: the one-message path from here on.
                    self.batch = 1;
                    if self.batch_finish.is_some() {
                        tracing::error!(
                            "Cannot finish a batch in one step: {e}; finishing step by step"
                        );
                        self.finish_batch_apart(conns)?;
                    }
                }
                return Err(e);
            }
        };
        self.events.set_on(reply.events_on);
        if self.batch_finish.take().is_some() {
            self.set_progress(Mark::IDLE);
            self.wait_replicas(conns);
        }
        if reply.batch.is_some() {
            self.gen = gen;
            self.set_progress(Mark {
                gen,
                index: 0,
                stage: crate::plumbing::progress::Stage::Between,
                since_ms: 0,
            });
        }
        Ok(reply.batch)
    }

    /// An idle pool gives due ETA messages to the child that ran last (see
    /// `plumbing::affinity`): another child does not promote them while
    /// that one says, at every idle wake, that it still waits.
    fn leaves_due_work_to_another(&self) -> bool {
        self.spec
            .affinity
            .is_some_and(|a| a.defers(self.spec.slot, AFFINITY_FRESH))
    }

    /// This child waits idle (each wake of its blocking wait).
    pub fn idle(&self) {
        if let Some(a) = self.spec.affinity {
            a.idle(self.spec.slot);
        }
    }

    fn ran(&self) {
        if let Some(a) = self.spec.affinity {
            a.ran(self.spec.slot);
        }
    }

    /// Whether the main process asked not to start task `index` of batch
    /// `gen` (revoked after the batch was reserved).
    pub fn skipped(&self, gen: u32, index: usize) -> bool {
        self.progress.is_some_and(|p| p.skipped(gen, index))
    }

    /// The child's progress through its batch, for the main process.
    pub fn set_progress(&self, mark: Mark) {
        if let Some(p) = &self.progress {
            p.set(mark);
        }
    }

    /// The batch was handled up to its first `finish.results.len()`
    /// messages; `slow` when a task took longer than `SLOW_TASK`.
    pub fn batch_handled(&mut self, finish: BatchFinish, slow: bool) {
        self.ran();
        self.batch_finish = Some(finish);
        self.batch = if slow {
            1
        } else {
            (self.batch * 2).min(MAX_BATCH)
        };
    }

    /// A task of the one-message path took `took`: batches start when tasks
    /// are fast and the queue keeps enough for every sibling.
    pub fn one_handled(&mut self, took: Duration) {
        self.ran();
        let deep = self.depth >= 2 * self.spec.pool_size.max(1);
        // A one-message round between batches (an ETA promotion) keeps K.
        self.batch = if took < SLOW_TASK && deep {
            self.batch.max(2)
        } else {
            1
        };
    }

    /// Whether something handled still waits for its finish (a message's
    /// or a batch's): a leaving child does it first.
    pub fn finishing(&self) -> bool {
        self.in_hand.finishing() || self.batch_finish.is_some()
    }

    /// `next_batch`'s fallback when Redis refuses the script: each result on
    /// its own, then the batch released past what was handled.
    fn finish_batch_apart(&mut self, conns: &mut Connections) -> Result<(), BrokerError> {
        let Some(finish) = self.batch_finish.take() else {
            return Ok(());
        };
        for (id, meta) in &finish.results {
            let Some(json) = meta else { continue };
            if let Err(e) = store_retrying(&self.backend, conns, id, json) {
                if e.is_connection_problem() {
                    self.batch_finish = Some(finish);
                    return Err(e);
                }
                tracing::error!("Cannot store the result of {id}: {e}");
            }
        }
        let gen = finish.gen.to_string();
        match self
            .scripts
            .release_batch(conns.broker()?, &self.keys, &gen, finish.results.len())
        {
            Ok(_) => {
                self.set_progress(Mark::IDLE);
                Ok(())
            }
            Err(e) => {
                self.batch_finish = Some(finish);
                Err(e)
            }
        }
    }

    /// `next.lua`: finishes the handled message, if any, and when `reserve`
    /// takes the next one.
    fn next_one(
        &mut self,
        conns: &mut Connections,
        reporter: &mut Reporter,
        reserve: bool,
        promote: bool,
    ) -> Result<Option<Reserved>, BrokerError> {
        // A backend on another server cannot be written by the script.
        if let (None, Some(f)) = (self.how.result_dbs, self.in_hand.finish_mut()) {
            if let Some(json) = &f.result {
                store_retrying(&self.backend, conns, &f.task_id, json)?;
                f.result = None;
            }
        }
        let then = match (reserve, promote) {
            (false, _) => Then::Stop,
            (true, false) => Then::Reserve,
            (true, true) => Then::PromoteAndReserve,
        };
        let reply = conns.piggyback().and_then(|mut con| {
            self.scripts.next(
                &mut con,
                &self.keys,
                &self.queue_keys,
                &self.how,
                self.in_hand.finish(),
                then,
            )
        });
        match reply {
            Ok(reply) => {
                // The events flag comes back with every reservation (see `events`).
                self.events.set_on(reply.events_on);
                self.depth = reply.depth;
                let reserved = reply.reserved;
                if promote {
                    self.promoted_at = Some(Instant::now());
                }
                if self.in_hand.finishing() {
                    self.in_hand = InHand::Free;
                    reporter.queue(&Report::Done);
                    self.wait_replicas(conns);
                }
                Ok(reserved)
            }
            // Redis answers but refuses the script (e.g. the result write):
            // finish the old way, step by step, so a refused result write
            // is kept in the dead-letter list rather than blocking the ack.
            Err(e) if !e.is_connection_problem() && self.in_hand.finishing() => {
                tracing::error!(
                    "Cannot finish and reserve in one step: {e}; finishing step by step"
                );
                self.finish_apart(conns, reporter)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// With `wait_replicas`, waits (at most `REPLICA_WAIT`) until that many
    /// replicas have this connection's writes: the finish just made (result,
    /// ack) then survives a failover. Fewer in time is logged, not an error:
    /// the outcome is stored on the master either way.
    fn wait_replicas(&self, conns: &mut Connections) {
        let Some(want) = self.spec.app.wait_replicas.filter(|n| *n > 0) else {
            return;
        };
        let waited = conns.broker().and_then(|con| {
            redis::cmd("WAIT")
                .arg(want)
                .arg(REPLICA_WAIT.as_millis() as u64)
                .query::<usize>(con)
                .map_err(BrokerError::from)
        });
        match waited {
            Ok(got) if got < want => tracing::warn!(
                "Only {got} of {want} replicas confirmed the last finish within {:?}",
                REPLICA_WAIT
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("Cannot WAIT for replicas: {e}"),
        }
    }

    /// `next`'s fallback: store the result on its own (dead-lettering it if
    /// Redis refuses it), then ack on its own.
    fn finish_apart(
        &mut self,
        conns: &mut Connections,
        reporter: &mut Reporter,
    ) -> Result<(), BrokerError> {
        let Some(mut f) = self.in_hand.take_finish() else {
            return Ok(());
        };
        match self.finish_apart_steps(&mut f, conns) {
            Ok(()) => {
                self.in_hand = InHand::Free;
                reporter.queue(&Report::Done);
                Ok(())
            }
            Err(e) => {
                self.in_hand.restore_finish(f);
                Err(e)
            }
        }
    }

    fn finish_apart_steps(
        &self,
        f: &mut Finish,
        conns: &mut Connections,
    ) -> Result<(), BrokerError> {
        if let Some(json) = &f.result {
            match store_retrying(&self.backend, conns, &f.task_id, json) {
                Ok(()) => {}
                Err(e) if e.is_connection_problem() => return Err(e),
                Err(e) => {
                    tracing::error!(
                        "Cannot store the result of {}[{}]: {e}; kept in {}",
                        f.task,
                        f.task_id,
                        keys::DEAD_LETTER
                    );
                    let reason = format!("result could not be stored: {e}; result: {json}");
                    self.keep(conns, &f.msg, &reason, Some(&f.task_id), Some(&f.task))?;
                }
            }
            f.result = None;
        }
        self.scripts
            .ack(conns.broker()?, &self.keys, f.tag.as_deref())
    }

    /// Sets the handled message's finish: ack it, storing `result` (JSON)
    /// first. Done by the next `next`.
    pub fn finish_with(&mut self, msg: &Reserved, task: &TaskMessage, result: Option<String>) {
        let finish = Finish {
            task_id: task.id.clone(),
            task: task.task.clone(),
            tag: task.delivery_tag.clone(),
            msg: msg.clone(),
            result,
            in_unacked: !(msg.acked || msg.started || self.in_hand.acked_here()),
        };
        self.in_hand.set_finish(&task.id, finish);
    }

    /// Early ack at task start (out of kombu's `unacked`; the held list keeps
    /// the message, marked started). The task is `Started` in hand already.
    pub fn start(
        &mut self,
        conns: &mut Connections,
        task: &TaskMessage,
    ) -> Result<(), BrokerError> {
        self.scripts.start(
            conns.broker()?,
            &self.keys,
            task.delivery_tag.as_deref(),
            &task.id,
        )?;
        self.in_hand.set_acked_here();
        Ok(())
    }

    /// Parks `msg` until `eta`, out of the slot.
    pub fn park(
        &mut self,
        conns: &mut Connections,
        msg: &Reserved,
        task: &TaskMessage,
        eta: DateTime<Utc>,
    ) -> Result<(), BrokerError> {
        let queue_key = self.queue_key(msg, task);
        let tag = task.delivery_tag.clone().unwrap_or_else(|| task.id.clone());
        let due = eta.timestamp_micros() as f64 / 1e6;
        self.scripts
            .park(conns.broker()?, &self.keys, &tag, due, &queue_key, &msg.raw)?;
        self.in_hand = InHand::Free;
        Ok(())
    }

    /// Puts `msg` back at the tail of its queue (Reject with requeue),
    /// marked redelivered as kombu's restore marks it: a task can tell the
    /// second delivery from the first. At the tail, every message queued
    /// meanwhile runs before it comes back, so a task that always rejects
    /// delays the others by one reservation each time round, never holds
    /// the child (a stop is seen between two deliveries).
    pub fn requeue(
        &mut self,
        conns: &mut Connections,
        msg: &Reserved,
        task: &TaskMessage,
    ) -> Result<(), BrokerError> {
        let queue_key = self.queue_key(msg, task);
        // Marked redelivered, as kombu's requeue does: a task that rejects
        // only its first delivery must see the second as one.
        let marked = serde_json::from_str::<serde_json::Value>(&msg.raw)
            .ok()
            .filter(serde_json::Value::is_object)
            .map_or_else(|| msg.raw.clone(), crate::protocol::envelope::redelivered);
        self.scripts.restore(
            conns.broker()?,
            &self.keys,
            task.delivery_tag.as_deref(),
            &queue_key,
            &marked,
            true,
        )?;
        self.in_hand = InHand::Free;
        Ok(())
    }

    /// The list `msg` came from (and goes back to).
    fn queue_key(&self, msg: &Reserved, task: &TaskMessage) -> String {
        if !msg.source.is_empty() {
            return msg.source.clone();
        }
        let default = self.spec.queues.first().map_or("celery", String::as_str);
        let info = &task.delivery_info;
        keys::return_key(&info.routing_key, info.priority, default)
    }

    /// Stores `meta` now, on the backend connection.
    pub fn store(&self, conns: &mut Connections, meta: &ResultMeta) -> Result<(), BrokerError> {
        let json = meta.to_json();
        self.backend
            .store(conns.backend()?, &meta.task_id, &json)
            .map(|_| ())
    }

    /// Moves the held message to the dead-letter list with its record.
    pub fn dead_letter(
        &mut self,
        msg: &Reserved,
        conns: &mut Connections,
        reason: &str,
        task_id: Option<&str>,
        task: Option<&str>,
    ) -> Result<(), BrokerError> {
        let tag = delivery_tag_of(&msg.raw);
        let record = self.dead_letter_record(msg, reason, task_id, task);
        self.scripts
            .dead_letter(conns.broker()?, &self.keys, tag.as_deref(), &record)?;
        self.in_hand = InHand::Free;
        Ok(())
    }

    /// Dead-letters a message that cannot be handled at all.
    pub fn give_up(
        &mut self,
        msg: &Reserved,
        conns: &mut Connections,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let task = msg.decode().ok();
        let id = task.as_ref().map(|t| t.id.as_str());
        let name = task.as_ref().map(|t| t.task.as_str());
        self.dead_letter(msg, conns, reason, id, name)
    }

    /// Keeps a record of `msg` in the dead-letter list without touching its
    /// state: a task that ran (its message is acked as usual), or a batch's
    /// message that cannot run (its task unknown, its body undecodable; the
    /// batch's finish forgets it).
    pub fn keep(
        &self,
        conns: &mut Connections,
        msg: &Reserved,
        reason: &str,
        task_id: Option<&str>,
        task: Option<&str>,
    ) -> Result<(), BrokerError> {
        let record = self.dead_letter_record(msg, reason, task_id, task);
        crate::broker::reserve::push_dead_letter(conns.broker()?, &record)
    }

    /// What a task that ran asked to keep (`Outcome::Finish::keep`): a
    /// refusal is logged, as the task's outcome still goes to the backend.
    pub fn keep_ran(
        &self,
        conns: &mut Connections,
        msg: &Reserved,
        reason: Option<String>,
        task: &TaskMessage,
    ) {
        let Some(reason) = reason else { return };
        if let Err(e) = self.keep(conns, msg, &reason, Some(&task.id), Some(&task.task)) {
            tracing::error!("Cannot keep the message in {}: {e}", keys::DEAD_LETTER);
        }
    }

    /// The JSON record kept in the dead-letter list (documented in the README).
    fn dead_letter_record(
        &self,
        msg: &Reserved,
        reason: &str,
        task_id: Option<&str>,
        task: Option<&str>,
    ) -> String {
        let mut record = json!({
            "reason": reason,
            "task_id": task_id,
            "task": task,
            "queue": keys::queue_of_key(&msg.source),
            "node": self.spec.node,
            "time": crate::protocol::time::format_iso(Utc::now()),
            "unix_time": now_secs(),
            "message": msg.raw,
        });
        // JSON cannot hold bytes that are not UTF-8: keep them exactly, too.
        if let Some(bytes) = &msg.invalid_utf8 {
            record["message_base64"] = json!(crate::protocol::envelope::base64_of(bytes));
        }
        pyjson::to_string(&record)
    }
}

/// A random non-zero batch generation to start from.
fn rand_gen() -> u32 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).max(1)
}

/// A finished task's result is retried across reconnects for a while: the
/// message may already be acked (early ack), so this is its only record.
fn store_retrying(
    backend: &Backend,
    conns: &mut Connections,
    task_id: &str,
    json: &str,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + STORE_PATIENCE;
    let mut attempt = 0u32;
    loop {
        match conns
            .backend()
            .and_then(|con| backend.store(con, task_id, json))
        {
            Ok(_) => return Ok(()),
            // A full Redis too: its refusal is no verdict on the result, so
            // the result waits for room rather than going to the dead letters.
            Err(e)
                if (e.is_connection_problem() || e.is_out_of_memory())
                    && Instant::now() < deadline =>
            {
                attempt += 1;
                tracing::error!("Cannot store result of task {task_id}: {e}; retrying ({attempt})");
                if e.is_connection_problem() {
                    conns.reset();
                }
                // A real sleep: during a warm shutdown `nap` returns at once.
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}
