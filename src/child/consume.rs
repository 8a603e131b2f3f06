//! The consume loop of a pool child: reserve a message only when idle,
//! triage it, carry the verdict out (run, finish, park, dead-letter), repeat;
//! reconnect with back-off when Redis goes away; leave at a safe point when
//! the main process asks (SIGTERM) or a per-child limit (max tasks, max
//! memory) is reached. This is the only place a pool child exits early
//! (`exit_now`); everything below returns what to do.

use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::Signal;

use super::events;
use super::in_hand::InHand;
use super::records;
use super::report::{Report, Reporter, Started};
use super::run::{Outcome, Runner};
use super::slot::{Got, Slot, SLOW_TASK};
use super::triage::{triage, Plan, Refusal, Verdict};
use super::{ChildSpec, Leave};
use crate::broker::keys;
use crate::broker::reserve::{Batch, BatchFinish};
use crate::broker::revoked::Revocation;
use crate::broker::{BrokerError, Reserved};
use crate::plumbing::progress::{now_ms, Mark, Stage};
use crate::protocol::event::TaskEvent;
use crate::protocol::pyrepr::{python_repr, python_str_repr};
use crate::protocol::{DecodeError, ResultMeta, TaskMessage};
use crate::signals;
use crate::tasks::TaskSpec;

/// Broker and backend connections, re-opened after a failure.
pub use crate::broker::Connections as Conns;

/// How long a stopping child keeps trying to store its last task's outcome.
const FINISH_PATIENCE: Duration = Duration::from_secs(30);

/// How often Redis may refuse to process one message before it is dead-lettered.
const MAX_REFUSALS: u32 = 3;

/// True once the main process asked this child to leave (SIGTERM).
pub fn stop_requested() -> bool {
    signals::is_pending(Signal::SIGTERM) || signals::peek(Signal::SIGTERM) > 0
}

/// Sleeps up to `total`, waking early when a stop is requested.
pub fn nap(total: Duration) {
    let end = Instant::now() + total;
    while Instant::now() < end && !stop_requested() {
        std::thread::sleep(
            Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
        );
    }
}

/// Runs until asked to stop; returns the child's exit status.
pub fn run(spec: &ChildSpec, reporter: &mut Reporter) -> i32 {
    let mut conns = Conns::new(&spec.app.broker_url, spec.app.redis_backend_url());
    let mut child = Child {
        spec,
        slot: Slot::new(spec),
        runner: Runner::new(spec),
    };

    if !wait_connected(&mut conns) {
        return 0;
    }
    if let Err(message) = child.runner.start_host() {
        tracing::error!("{message}");
        let _ = reporter.send(&Report::Fatal { message });
        return 1;
    }
    if reporter.send(&Report::Ready).is_err() {
        return 1;
    }
    let code = consume(&mut child, &mut conns, reporter);
    let _ = reporter.flush();
    code
}

/// One pool child's parts: the Redis side of its slot, and its task runner.
struct Child<'a> {
    spec: &'a ChildSpec,
    slot: Slot<'a>,
    runner: Runner<'a>,
}

/// Why handling a message stopped short.
enum Trouble {
    /// Redis failed; the message is still held and is handled again.
    Redis(BrokerError),
    /// The child must leave now (see `exit_now`).
    Leave(Leave),
}

impl From<BrokerError> for Trouble {
    fn from(e: BrokerError) -> Trouble {
        Trouble::Redis(e)
    }
}

fn consume(child: &mut Child, conns: &mut Conns, reporter: &mut Reporter) -> i32 {
    let spec = child.spec;
    let mut failures: u32 = 0;
    let mut done: u64 = 0;
    let mut refused: u32 = 0;
    let mut last_refused: Option<String> = None;
    // The key a BLMOVE took a message from, so the message keeps its queue.
    let mut moved_from: Option<String> = None;
    let mut finish_deadline: Option<Instant> = None;
    // A handled message is finished (result, ack) even when a stop came
    // meanwhile; so is one a BLMOVE just put in the held list: a retired slot
    // would otherwise keep it unseen.
    loop {
        let leaving = stop_requested() && moved_from.is_none();
        if leaving && !child.slot.finishing() {
            return 0;
        }
        let limit_reached = spec.max_tasks.is_some_and(|max| done >= max) || over_memory(spec);
        let reserve = !leaving && !limit_reached;
        let room = spec
            .max_tasks
            .map_or(usize::MAX, |max| max.saturating_sub(done) as usize);
        match child.slot.next(conns, reporter, reserve, room) {
            Ok(Some(Got::Batch(batch))) => {
                failures = 0;
                match child.handle_batch(batch, conns, reporter) {
                    Ok(handled) => done += handled as u64,
                    Err(how) => exit_now(how),
                }
            }
            Ok(Some(Got::One(mut msg))) => {
                if msg.source.is_empty() {
                    msg.source = moved_from.take().unwrap_or_default();
                }
                failures = 0;
                let handled = child.handle(&mut msg, conns, reporter);
                let _ = reporter.flush();
                if child.slot.events.full() {
                    child.send_events(conns);
                }
                let e = match handled {
                    Ok(()) => None,
                    Err(Trouble::Leave(how)) => exit_now(how),
                    Err(Trouble::Redis(e)) => Some(e),
                };
                if let Some(e) = e {
                    // Whatever the main process thinks this child runs, it
                    // does not run it now; the held message speaks for itself.
                    let _ = reporter.send(&Report::Done);
                    if e.is_connection_problem() {
                        tracing::error!("consumer: Connection to broker lost: {e}. Trying to re-establish the connection...");
                        conns.reset();
                        nap(Duration::from_secs(1));
                        continue;
                    }
                    // The same held message comes back on the next reserve; a
                    // message Redis keeps refusing must not loop forever.
                    refused = if last_refused.as_deref() == Some(msg.raw.as_str()) {
                        refused + 1
                    } else {
                        1
                    };
                    last_refused = Some(msg.raw.clone());
                    tracing::error!("Cannot handle message ({refused}/{MAX_REFUSALS}): {e}");
                    if refused >= MAX_REFUSALS {
                        refused = 0;
                        let reason =
                            format!("Redis refused to process it {MAX_REFUSALS} times: {e}");
                        if let Err(e) = child.slot.give_up(&msg, conns, &reason) {
                            tracing::error!("Cannot dead-letter the message either: {e}");
                        }
                    }
                    nap(Duration::from_secs(1));
                    continue;
                }
                refused = 0;
                done += 1;
            }
            Ok(None) if !reserve => {
                let _ = reporter.flush();
                child.send_events(conns);
                if limit_reached && !leaving {
                    log_limit(spec, done);
                }
                return 0;
            }
            Ok(None) => {
                // Whatever a BLMOVE moved was not there to take (a sweep
                // had requeued it): nothing holds a stop back any more.
                moved_from = None;
                child.send_events(conns);
                if reporter.flush().is_err() {
                    return 1;
                }
                // The idle wait is the one place TERM may interrupt: nothing is
                // half-done there, and an idle child then leaves at once.
                child.slot.idle();
                let _ = signals::unblock(Signal::SIGTERM);
                let waited = child.slot.wait(conns);
                let _ = signals::block(Signal::SIGTERM);
                match waited {
                    Ok(true) => moved_from = Some(child.slot.first_key().to_string()),
                    Ok(false) => {}
                    Err(e) => {
                        if !retry_later(&e, &mut failures, conns) {
                            return 0;
                        }
                    }
                }
            }
            Err(e) => {
                let _ = reporter.flush();
                if retry_later(&e, &mut failures, conns) {
                    continue;
                }
                if !child.slot.finishing() {
                    return 0;
                }
                // Stopping with a task run but not finished: its result is
                // its only record, so keep trying a while (as a store does).
                let deadline =
                    *finish_deadline.get_or_insert_with(|| Instant::now() + FINISH_PATIENCE);
                if Instant::now() >= deadline {
                    tracing::error!("Leaving with a task's finish undone: {e}; its message stays held for the next start");
                    return 0;
                }
                tracing::error!("Cannot finish the last task: {e}; retrying");
                conns.reset();
                // A real sleep: during a stop `nap` returns at once.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

impl Child<'_> {
    /// Sends the buffered task events without waiting (see `events`); a
    /// failed write keeps them for the next try.
    fn send_events(&mut self, conns: &mut Conns) {
        if let Err(e) = self.slot.events.flush(conns) {
            tracing::warn!("Cannot send task events: {e}");
        }
    }

    /// The reserving script checked the id of a protocol 2 message; stamps
    /// and protocol 1 ids are looked up here (only for such messages).
    /// Marks `msg` revoked; returns what the discard line adds.
    fn look_up_revocation(
        &mut self,
        conns: &mut Conns,
        msg: &mut Reserved,
        decoded: &Result<TaskMessage, DecodeError>,
    ) -> Result<String, BrokerError> {
        let (Ok(task), false) = (decoded, msg.revoked) else {
            return Ok(String::new());
        };
        Ok(match self.slot.revoked_unseen(conns, task)? {
            Some(Revocation::Stamp(header, value)) => {
                msg.revoked = true;
                let mut one = serde_json::Map::new();
                one.insert(header, value);
                format!(
                    " (revoked by header: {})",
                    python_repr(&serde_json::Value::Object(one))
                )
            }
            Some(Revocation::Id) => {
                msg.revoked = true;
                String::new()
            }
            None => String::new(),
        })
    }

    /// Triages one message and carries the verdict out; what is left to do
    /// with it (store its result, ack) is the pending finish, done by the
    /// slot's next `next`.
    fn handle(
        &mut self,
        msg: &mut Reserved,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<(), Trouble> {
        let decoded = msg.decode();
        let by_header = self.look_up_revocation(conns, msg, &decoded)?;
        let msg = &*msg;
        let mut verdict = triage(msg, decoded, self.spec, &self.slot.in_hand, Utc::now());
        records::take_from_verdict(&self.spec.app, &mut verdict, &msg.raw);
        // A due ETA message was logged as received when it arrived.
        self.announce(&verdict, !msg.from_eta_park, reporter);
        let slot = &mut self.slot;
        match verdict {
            Verdict::DeadLetter {
                refusal,
                reason,
                failure,
            } => refuse(slot, conns, msg, &refusal, &reason, failure.as_ref())?,
            Verdict::RecordLost { task, exc, meta } => {
                tracing::error!(
                    "Task {}[{}] raised unexpected: {}",
                    task.display_name(),
                    task.id,
                    exc.repr()
                );
                slot.finish_with(msg, &task, meta.as_ref().map(ResultMeta::to_json));
            }
            Verdict::FinishOnly(task) => slot.finish_with(msg, &task, None),
            Verdict::Expired { task, meta } => discard(slot, msg, "expired", "", &task, meta),
            Verdict::Revoked { task, meta } => {
                discard(slot, msg, "revoked", &by_header, &task, meta)
            }
            Verdict::Park { task, eta } => {
                slot.park(conns, msg, &task, eta)?;
                tracing::info!(
                    "Task {}[{}] scheduled for {} (parked in {})",
                    task.display_name(),
                    task.id,
                    eta.to_rfc3339(),
                    keys::ETA_INDEX
                );
            }
            Verdict::Run { task, spec, plan } => {
                self.run(msg, &task, spec, &plan, conns, reporter)?
            }
        }
        Ok(())
    }

    /// Runs a task as `plan` says: reported started, early-acked, STARTED
    /// stored, run, then its finish set (or its message requeued).
    fn run(
        &mut self,
        msg: &Reserved,
        task: &TaskMessage,
        spec: &TaskSpec,
        plan: &Plan,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<(), Trouble> {
        let slot = &mut self.slot;
        // Reported before the ack (unless the reserving step acked it): if
        // this child dies from here on, the main process knows the task had
        // started and records its outcome.
        if reporter
            .send(&Report::Started(plan.started.clone()))
            .is_err()
        {
            return Err(Trouble::Leave(Leave::Code(1)));
        }
        slot.in_hand = InHand::Started {
            id: task.id.clone(),
            acked_here: false,
        };
        if plan.ack_at_start {
            slot.start(conns, task)?;
        }
        if plan.track_started {
            let meta = ResultMeta::started(&task.id, std::process::id(), &self.spec.node);
            slot.store(conns, &meta.with_request(task))?;
        }
        // From here on the task runs: coming back, it is to be finished.
        slot.in_hand.to_ran();
        slot.events.push(TaskEvent::Started {
            uuid: task.id.clone(),
        });
        // Out before the task runs: a long task shows STARTED at once.
        if let Err(e) = slot.events.flush(conns) {
            tracing::warn!("Cannot send task events: {e}");
        }
        let began = Instant::now();
        let ran = self.runner.run(task, spec, plan, &msg.raw);
        let slot = &mut self.slot;
        slot.one_handled(began.elapsed());
        match ran {
            Err(how) => return Err(Trouble::Leave(how)),
            Ok(Outcome::Requeue) => {
                slot.events.push(TaskEvent::Rejected {
                    uuid: task.id.clone(),
                    requeue: true,
                });
                slot.requeue(conns, msg, task)?;
                reporter.queue(&Report::Done);
            }
            Ok(Outcome::Finish { result, keep }) => {
                slot.keep_ran(conns, msg, keep, task);
                slot.events
                    .push(events::finished(task, result.as_deref(), began.elapsed()));
                slot.finish_with(msg, task, result);
            }
        }
        Ok(())
    }

    /// Works through a batch (all acked early by the reserving script): the
    /// main process gets one report for all of it, and follows which task
    /// runs through the progress word. Stops early after a slow task or when
    /// asked to leave; the batch's finish (results, events, the rest back on
    /// the queue) goes with the next reservation. Returns how many ran.
    fn handle_batch(
        &mut self,
        mut batch: Batch,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<usize, Leave> {
        let gen = batch.gen;
        tracing::debug!(
            "Reserved a batch of {} message(s) (generation {gen})",
            batch.messages.len()
        );
        let mut verdicts = Vec::with_capacity(batch.messages.len());
        let mut tasks = Vec::with_capacity(batch.messages.len());
        for msg in &mut batch.messages {
            let decoded = msg.decode();
            if let Err(e) = self.look_up_revocation(conns, msg, &decoded) {
                tracing::warn!("Cannot look up the revoked stamps of a batched message: {e}");
            }
            let msg = &*msg;
            let mut verdict = triage(msg, decoded, self.spec, &InHand::Free, Utc::now());
            records::take_from_verdict(&self.spec.app, &mut verdict, &msg.raw);
            self.announce(&verdict, true, reporter);
            tasks.push(match &verdict {
                Verdict::Run { plan, .. } => Some(plan.started.clone()),
                _ => None,
            });
            verdicts.push(verdict);
        }
        let names: Vec<Option<String>> = tasks
            .iter()
            .map(|s| s.as_ref().map(|s| s.task.clone()))
            .collect();
        let tasks = serde_json::to_string(&tasks).unwrap_or_else(|_| "[]".into());
        if reporter.send(&Report::Batch { gen, tasks }).is_err() {
            return Err(Leave::Code(1));
        }
        let mut results = Vec::with_capacity(verdicts.len());
        let mut ran = Vec::with_capacity(verdicts.len());
        let mut slow = false;
        for (i, (msg, verdict)) in batch.messages.iter().zip(verdicts).enumerate() {
            if i > 0 && (slow || stop_requested()) {
                break;
            }
            self.slot.set_progress(Mark {
                gen,
                index: i as u16,
                stage: Stage::Running,
                since_ms: now_ms(),
            });
            let verdict = self.unless_revoked_since(verdict, gen, i, msg);
            if matches!(verdict, Verdict::Run { .. }) {
                ran.extend(names.get(i).cloned().flatten());
            }
            let began = Instant::now();
            let result = self.batch_one(msg, verdict, conns, reporter)?;
            results.push(result);
            slow |= began.elapsed() >= SLOW_TASK;
            self.slot.set_progress(Mark {
                gen,
                index: i as u16 + 1,
                stage: Stage::Between,
                since_ms: 0,
            });
        }
        let handled = results.len();
        // Counted as they ran; goes with the next write.
        reporter.queue(&Report::Ran { names: ran });
        let _ = reporter.flush();
        self.slot.batch_handled(BatchFinish { gen, results }, slow);
        Ok(handled)
    }

    /// A task of the batch that a revoke named after the batch was reserved
    /// (the main process marked its position): REVOKED, not run, as the
    /// reserving script would have decided.
    fn unless_revoked_since<'v>(
        &mut self,
        verdict: Verdict<'v>,
        gen: u32,
        index: usize,
        msg: &Reserved,
    ) -> Verdict<'v> {
        match verdict {
            Verdict::Run { task, plan, .. } if self.slot.skipped(gen, index) => {
                let meta = (!plan.started.ignore_result).then(|| {
                    ResultMeta::revoked(&task.id, "revoked", Utc::now()).with_request(&task)
                });
                let mut revoked = Verdict::Revoked { task, meta };
                records::take_from_verdict(&self.spec.app, &mut revoked, &msg.raw);
                self.push_verdict_event(&revoked);
                revoked
            }
            other => other,
        }
    }

    /// One message of a batch: (task id, result meta to store).
    fn batch_one(
        &mut self,
        msg: &Reserved,
        verdict: Verdict,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<(String, Option<String>), Leave> {
        let meta = |m: Option<ResultMeta>| m.as_ref().map(ResultMeta::to_json);
        // Revoked by the reserving script, or since (`unless_revoked_since`).
        let why = if msg.revoked || matches!(verdict, Verdict::Revoked { .. }) {
            "revoked"
        } else {
            "expired"
        };
        Ok(match verdict {
            Verdict::Run { task, spec, plan } => {
                let result = self.run_in_batch(msg, &task, spec, &plan, conns, reporter)?;
                (task.id, result)
            }
            Verdict::Expired { task, meta: m } | Verdict::Revoked { task, meta: m } => {
                tracing::info!(
                    "Discarding {why} task: {}[{}]",
                    task.display_name(),
                    task.id
                );
                (task.id, meta(m))
            }
            Verdict::DeadLetter {
                refusal,
                reason,
                failure,
            } => {
                let (id, name) = log_refusal(msg, &refusal);
                if let Err(e) = self.slot.keep(conns, msg, &reason, id, name) {
                    tracing::error!("Cannot keep the message in {}: {e}", keys::DEAD_LETTER);
                }
                (id.unwrap_or_default().to_string(), meta(failure))
            }
            // Not for a batch's messages (all fresh, acked, without an ETA):
            // recorded lost rather than run, to be safe.
            other => {
                let id = msg.decode().map(|t| t.id).unwrap_or_default();
                tracing::error!("Unexpected verdict for a batched message {id}: {other:?}");
                (id, None)
            }
        })
    }

    /// Runs one task of a batch. Only a task with a hard time limit is
    /// reported started on its own (the main process enforces the limit).
    fn run_in_batch(
        &mut self,
        msg: &Reserved,
        task: &TaskMessage,
        spec: &TaskSpec,
        plan: &Plan,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<Option<String>, Leave> {
        let limited = plan.started.time_limit.is_some();
        if limited {
            let started = Started {
                batched: true,
                ..plan.started.clone()
            };
            if reporter.send(&Report::Started(started)).is_err() {
                return Err(Leave::Code(1));
            }
        }
        if plan.track_started {
            let meta = ResultMeta::started(&task.id, std::process::id(), &self.spec.node);
            if let Err(e) = self.slot.store(conns, &meta.with_request(task)) {
                tracing::warn!("Cannot store STARTED for {}: {e}", task.id);
            }
        }
        self.slot.events.push(TaskEvent::Started {
            uuid: task.id.clone(),
        });
        let began = Instant::now();
        let ran = self.runner.run(task, spec, plan, &msg.raw)?;
        if limited {
            reporter.queue(&Report::Done);
        }
        let result = match ran {
            // Only under acks_late, which a batch never holds.
            Outcome::Requeue => None,
            Outcome::Finish { result, keep } => {
                self.slot.keep_ran(conns, msg, keep, task);
                result
            }
        };
        self.slot
            .events
            .push(events::finished(task, result.as_deref(), began.elapsed()));
        Ok(result)
    }

    /// Reports a verdict's message received (when `received`: not again for
    /// a due ETA message) and queues its task events.
    fn announce(&mut self, verdict: &Verdict, received: bool, reporter: &mut Reporter) {
        if let (Some(task), true) = (verdict.received(), received) {
            reporter.queue(&Report::Received {
                id: task.id.clone(),
                task: task.display_name().to_string(),
            });
            // Celery sends only task-failed for an unregistered task.
            if !matches!(verdict, Verdict::DeadLetter { .. }) {
                self.slot.events.push(events::received(task));
            }
        }
        self.push_verdict_event(verdict);
    }

    /// The event of a verdict that does not run the task.
    fn push_verdict_event(&mut self, verdict: &Verdict) {
        let e = match verdict {
            Verdict::Expired { task, .. } | Verdict::Revoked { task, .. } => TaskEvent::Revoked {
                uuid: task.id.clone(),
                terminated: false,
                signum: None,
                expired: matches!(verdict, Verdict::Expired { .. }),
            },
            Verdict::DeadLetter {
                refusal: Refusal::Unregistered(task),
                ..
            } => TaskEvent::Failed {
                uuid: task.id.clone(),
                exception: format!("NotRegistered({})", python_str_repr(&task.task)),
                traceback: None,
            },
            _ => return,
        };
        self.slot.events.push(e);
    }
}

/// Not run (expired or revoked): its REVOKED meta, if any, stored with the ack.
fn discard(
    slot: &mut Slot,
    msg: &Reserved,
    why: &str,
    note: &str,
    task: &TaskMessage,
    meta: Option<ResultMeta>,
) {
    tracing::info!(
        "Discarding {why} task: {}[{}]{note}",
        task.display_name(),
        task.id
    );
    slot.finish_with(msg, task, meta.as_ref().map(ResultMeta::to_json));
}

/// Dead-letters a message that cannot run, storing `failure` first.
fn refuse(
    slot: &mut Slot,
    conns: &mut Conns,
    msg: &Reserved,
    refusal: &Refusal,
    reason: &str,
    failure: Option<&ResultMeta>,
) -> Result<(), BrokerError> {
    let (task_id, task) = log_refusal(msg, refusal);
    if let Some(meta) = failure {
        slot.store(conns, meta)?;
    }
    slot.dead_letter(msg, conns, reason, task_id, task)
}

/// Logs why a message cannot run; returns its task id and name if known.
fn log_refusal<'a>(msg: &Reserved, refusal: &'a Refusal) -> (Option<&'a str>, Option<&'a str>) {
    match refusal {
        Refusal::Invalid {
            content_type,
            error,
        } => {
            tracing::error!(
                "Received invalid task message ({}): {}; kept in {}",
                content_type,
                error.reason,
                keys::DEAD_LETTER
            );
            (error.task_id.as_deref(), error.task.as_deref())
        }
        Refusal::Unregistered(task) => {
            tracing::error!(
                "Received unregistered task of type '{}'.\nThe message has been ignored and discarded.\n\nDid you remember to import the module containing this task?\nOr maybe you're using relative imports?\n\nThe full contents of the message body was:\n{} (kept in {})",
                task.task,
                msg.raw,
                keys::DEAD_LETTER
            );
            (Some(task.id.as_str()), Some(task.task.as_str()))
        }
    }
}

/// Leaves this pool child at once, as `how` says. It is a forked process: no
/// destructors that belong to the main process may run, hence `_exit`.
fn exit_now(how: Leave) -> ! {
    use std::os::unix::process::ExitStatusExt as _;
    let code = match how {
        Leave::Code(code) => code,
        Leave::Like(status) => {
            if let Some(sig) = status.signal() {
                // The child keeps TERM blocked (see `consume`); a raised TERM must land.
                if let Ok(signal) = Signal::try_from(sig) {
                    let _ = signals::unblock(signal);
                }
                // SAFETY: restoring the default action, then raising the
                // signal on this process; both are plain libc calls.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
            }
            status.code().unwrap_or(1)
        }
    };
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Logs why this child leaves to be replaced (a per-child limit).
fn log_limit(spec: &ChildSpec, done: u64) {
    if spec.max_tasks.is_some_and(|max| done >= max) {
        tracing::info!("Child reached max-tasks-per-child ({done}); exiting to be replaced");
    } else if let (Some(limit), Some(rss)) = (spec.max_memory_kib, resident_kib()) {
        tracing::warn!("Child resident memory {rss} KiB exceeds max-memory-per-child {limit} KiB; exiting to be replaced");
    }
}

/// Whether this child's resident memory is above `--max-memory-per-child`.
fn over_memory(spec: &ChildSpec) -> bool {
    spec.max_memory_kib
        .is_some_and(|limit| resident_kib().is_some_and(|rss| rss > limit))
}

/// After a broker error: false when the child should leave (a stop was
/// asked; the error is then just the interrupted wait), else reports it,
/// drops the connections and backs off.
fn retry_later(e: &BrokerError, failures: &mut u32, conns: &mut Conns) -> bool {
    if stop_requested() {
        return false;
    }
    *failures += 1;
    report_broker_error(e, *failures);
    conns.reset();
    nap(backoff(*failures));
    true
}

fn wait_connected(conns: &mut Conns) -> bool {
    let mut failures = 0;
    loop {
        let connected = conns
            .broker()
            .map(|_| ())
            .and_then(|()| conns.backend().map(|_| ()));
        match connected {
            Ok(()) => return true,
            Err(e) => {
                if !retry_later(&e, &mut failures, conns) {
                    return false;
                }
            }
        }
    }
}

fn report_broker_error(e: &BrokerError, attempt: u32) {
    let wait = backoff(attempt).as_secs_f64();
    tracing::error!(
        "consumer: Cannot connect to broker: {e}. Trying again in {wait:.2} seconds... ({attempt})"
    );
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(4)).min(4000))
}

/// Resident set size of this process in KiB, from /proc.
pub fn resident_kib() -> Option<u64> {
    crate::plumbing::process::resident_kib()
}
