//! Handling one reserved message in a pool child: decode it, refuse what
//! cannot run (dead-letter + FAILURE where the id is known), park ETA
//! messages, revoke expired ones, run the task, store its result, ack.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use super::consume::Conns;
use super::report::{Report, Reporter, Started};
use super::ChildSpec;
use crate::broker::backend::Backend;
use crate::broker::keys::{self, Slot};
use crate::broker::reserve::{
    now_secs, Finish, Reservations, Reserved, Scripts, Then, ETA_PROMOTE_EVERY,
};
use crate::broker::BrokerError;
use crate::protocol::envelope::delivery_tag_of;
use crate::protocol::time::duration_secs;
use crate::protocol::{pyjson, pyrepr, Envelope, ExceptionInfo, ResultMeta, TaskMessage};
use crate::tasks::python::{self, Host, RunError};
use crate::tasks::{Executor as TaskExecutor, Invocation, TaskSpec};

/// How far in the future an ETA must be to park the message rather than run it.
const ETA_SLACK: Duration = Duration::from_millis(5);

pub struct Executor<'a> {
    spec: &'a ChildSpec,
    backend: Backend,
    scripts: Scripts,
    slot: Slot,
    /// The queue keys in consume order.
    queue_keys: Vec<String>,
    how: Reservations,
    /// The handled message's end, done with the next reservation (`next`).
    finish: Option<Finish>,
    /// The handled message was acked for kombu (out of `unacked`): in the
    /// reserving step, by START, or by the child that started it.
    acked: bool,
    /// When this child last promoted due ETA messages.
    promoted_at: Option<Instant>,
    pid: u32,
    /// This child's Python host, when the app has Python tasks.
    host: Option<Host>,
    /// How far this child got with the task in its held list (its id): when
    /// a Redis error sends the message back from the held list, this says
    /// whether to run it, finish it, or (if it is not ours) record it lost.
    in_flight: Option<(String, Stage)>,
}

/// See `Executor::in_flight`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Early-acked, not run yet: run it.
    Acked,
    /// Run; its finish (result, ack) is pending.
    Ran,
}

impl<'a> Executor<'a> {
    pub fn new(spec: &'a ChildSpec) -> Executor<'a> {
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
            result_dbs: crate::broker::url::same_server(&app.broker_url, &app.result_backend),
            result_expires: app.result_expires,
        };
        Executor {
            spec,
            backend: Backend::new(app.result_expires),
            scripts: Scripts::default(),
            slot: Slot::new(&spec.node, spec.slot),
            queue_keys: keys::consume_order(&spec.queues),
            how,
            finish: None,
            acked: false,
            promoted_at: None,
            pid: std::process::id(),
            host: None,
            in_flight: None,
        }
    }

    /// The first queue key, the one an idle child blocks on.
    pub fn first_key(&self) -> &str {
        self.queue_keys.first().map_or("", String::as_str)
    }

    /// Blocks briefly for a message on the first queue (see `Scripts::wait`).
    pub fn wait(&self, conns: &mut Conns) -> Result<bool, BrokerError> {
        let first = self.first_key();
        self.scripts.wait(conns.broker()?, first, &self.slot)
    }

    /// Whether a handled message still waits for its finish.
    pub fn finishing(&self) -> bool {
        self.finish.is_some()
    }

    /// Finishes the handled message, if any, and when `reserve` takes the
    /// next one: one round trip per task when the backend is the broker's
    /// server. After a connection error the finish stays pending.
    pub fn next(
        &mut self,
        conns: &mut Conns,
        reporter: &mut Reporter,
        reserve: bool,
    ) -> Result<Option<Reserved>, BrokerError> {
        // A backend on another server cannot be written by the script.
        if let (None, Some(f)) = (self.how.result_dbs, self.finish.as_mut()) {
            if let Some(json) = &f.result {
                store_retrying(&self.backend, conns, &f.task_id, json)?;
                f.result = None;
            }
        }
        let promote = reserve
            && self
                .promoted_at
                .is_none_or(|at| at.elapsed() >= ETA_PROMOTE_EVERY);
        let reply = conns.broker().and_then(|con| {
            self.scripts.next(
                con,
                &self.slot,
                &self.queue_keys,
                &self.how,
                self.finish.as_ref(),
                match (reserve, promote) {
                    (false, _) => Then::Stop,
                    (true, false) => Then::Reserve,
                    (true, true) => Then::PromoteAndReserve,
                },
            )
        });
        match reply {
            Ok(reserved) => {
                if promote {
                    self.promoted_at = Some(Instant::now());
                }
                if self.finish.take().is_some() {
                    self.in_flight = None;
                    reporter.queue(&Report::Done);
                }
                Ok(reserved)
            }
            // Redis answers but refuses the script (e.g. the result write):
            // finish the old way, step by step, so a refused result write
            // is kept in the dead-letter list rather than blocking the ack.
            Err(e) if !e.is_connection_problem() && self.finish.is_some() => {
                tracing::error!(
                    "Cannot finish and reserve in one step: {e}; finishing step by step"
                );
                self.finish_apart(conns, reporter)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// `next`'s fallback: store the result on its own (dead-lettering it if
    /// Redis refuses it), then ack on its own.
    fn finish_apart(
        &mut self,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<(), BrokerError> {
        let Some(mut f) = self.finish.take() else {
            return Ok(());
        };
        match self.finish_apart_steps(&mut f, conns) {
            Ok(()) => {
                self.in_flight = None;
                reporter.queue(&Report::Done);
                Ok(())
            }
            Err(e) => {
                self.finish = Some(f);
                Err(e)
            }
        }
    }

    fn finish_apart_steps(&self, f: &mut Finish, conns: &mut Conns) -> Result<(), BrokerError> {
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
                    self.keep(conns, &f.msg, &reason, &f.task_id, &f.task)?;
                }
            }
            f.result = None;
        }
        self.scripts
            .ack(conns.broker()?, &self.slot, f.tag.as_deref())
    }

    /// Sets the handled message's finish: ack it, storing `meta` first.
    fn finish_with(&mut self, msg: &Reserved, task: &TaskMessage, meta: Option<&ResultMeta>) {
        self.finish = Some(Finish {
            task_id: task.id.clone(),
            task: task.task.clone(),
            tag: task.delivery_tag.clone(),
            msg: msg.clone(),
            result: meta.map(ResultMeta::to_json),
            in_unacked: !(msg.acked || msg.started || self.acked),
        });
    }

    /// Starts the Python host if the app has Python tasks. The error is
    /// the message for the launcher's terminal (the traceback's end).
    pub fn start_host(&mut self) -> Result<(), String> {
        let Some(app) = &self.spec.app.python else {
            return Ok(());
        };
        let host = Host::start(&app.host_config(), &self.spec.node).map_err(|e| e.to_string())?;
        tracing::debug!("Python host pid:{} ready", host.pid);
        self.host = Some(host);
        Ok(())
    }

    /// Runs a task in the Python host. Returns only with the host's answer:
    /// when the host dies mid-task this child leaves the same way, so the
    /// main process records the task's loss (WorkerLostError, or a requeue
    /// under acks_late + reject_on_worker_lost) and starts a new child,
    /// which starts a new host.
    fn run_in_host(&mut self, raw: &str, soft_limit: Option<Duration>) -> python::Done {
        for attempt in 0..2 {
            if self.host.is_none() || attempt > 0 {
                if let Err(e) = self.start_host() {
                    tracing::error!("Cannot restart the Python host: {e}");
                    leave(1);
                }
            }
            let Some(host) = self.host.as_mut() else {
                leave(1);
            };
            match host.run(raw, soft_limit) {
                Ok(done) => return done,
                Err(RunError::NotRunning) => {
                    tracing::error!(
                        "Python host pid:{} had exited; starting a new one",
                        host.pid
                    );
                    self.host = None;
                }
                Err(RunError::Died(status)) => {
                    tracing::error!(
                        "Python host pid:{} exited with '{}' while running a task",
                        host.pid,
                        python::describe_status(status)
                    );
                    self.host = None;
                    leave_like(status);
                }
                Err(RunError::Io(e)) => {
                    tracing::error!("Python host pid:{}: {e}", host.pid);
                    leave(1);
                }
                Err(RunError::Protocol(e)) => {
                    tracing::error!("Python host pid:{}: {e}", host.pid);
                    leave(1);
                }
            }
        }
        tracing::error!("The Python host keeps exiting before it gets a task");
        leave(1)
    }

    /// Handles one message; what is left to do with it (store its result,
    /// ack) is the pending finish, done by the next `next`. An error means
    /// Redis failed; the message is still held and is handled again after
    /// reconnecting.
    pub fn handle(
        &mut self,
        msg: &Reserved,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<(), BrokerError> {
        self.acked = false;
        let task = match msg.decode() {
            Ok(t) => t,
            Err(e) => {
                let content_type = Envelope::parse(&msg.raw)
                    .map(|env| env.content_type)
                    .unwrap_or_default();
                let exc_type = if e.reason.contains("not accepted") {
                    "ContentDisallowed"
                } else {
                    "DecodeError"
                };
                let exc =
                    ExceptionInfo::new(exc_type, Some("kombu.exceptions"), vec![json!(e.reason)]);
                tracing::error!(
                    "Received invalid task message ({}): {}; kept in {}",
                    content_type,
                    e.reason,
                    keys::DEAD_LETTER
                );
                if let Some(id) = &e.task_id {
                    self.store(
                        conns,
                        &ResultMeta::failure_for_id(id, exc, None, Utc::now()),
                    )?;
                }
                return self.dead_letter(
                    msg,
                    conns,
                    &e.reason,
                    e.task_id.as_deref(),
                    e.task.as_deref(),
                );
            }
        };
        let ours = |stage: Stage| matches!(&self.in_flight, Some((id, s)) if *id == task.id && *s == stage);
        if ours(Stage::Ran) {
            // Ran here already; only its finish is left.
            self.finish_with(msg, &task, None);
            return Ok(());
        }
        if msg.started && !ours(Stage::Acked) {
            self.record_lost(msg, &task);
            return Ok(());
        }
        // A due ETA message was logged as received when it arrived.
        if !msg.from_eta_park {
            reporter.queue(&Report::Received {
                id: task.id.clone(),
                task: task.display_name().to_string(),
            });
        }

        // Borrowed from the child's spec, not from `self`, so `run` may take `&mut self`.
        let child: &'a ChildSpec = self.spec;
        let Some(spec) = child.app.tasks.get(&task.task) else {
            tracing::error!(
                "Received unregistered task of type '{}'.\nThe message has been ignored and discarded.\n\nDid you remember to import the module containing this task?\nOr maybe you're using relative imports?\n\nThe full contents of the message body was:\n{} (kept in {})",
                task.task,
                msg.raw,
                keys::DEAD_LETTER
            );
            let exc = ExceptionInfo::not_registered(&task.task);
            self.store(conns, &ResultMeta::failure(&task, exc, None, Utc::now()))?;
            let reason = format!("unregistered task {:?}", task.task);
            return self.dead_letter(msg, conns, &reason, Some(&task.id), Some(&task.task));
        };

        let now = Utc::now();
        if task.expires.is_some_and(|exp| exp <= now) {
            tracing::info!(
                "Discarding expired task: {}[{}]",
                task.display_name(),
                task.id
            );
            let meta = (!task.ignore_result && !spec.ignore_result)
                .then(|| ResultMeta::revoked(&task.id, "expired", now).with_request(&task));
            self.finish_with(msg, &task, meta.as_ref());
            return Ok(());
        }
        // Revoked (checked by the reserving script): stored, acked, never run.
        if msg.revoked {
            tracing::info!(
                "Discarding revoked task: {}[{}]",
                task.display_name(),
                task.id
            );
            let meta = (!task.ignore_result && !spec.ignore_result)
                .then(|| ResultMeta::revoked(&task.id, "revoked", now).with_request(&task));
            self.finish_with(msg, &task, meta.as_ref());
            return Ok(());
        }
        if let Some(eta) = task.eta {
            if eta > now + chrono::Duration::from_std(ETA_SLACK).unwrap_or_default() {
                let queue_key = self.queue_key(msg, &task);
                let tag = task.delivery_tag.clone().unwrap_or_else(|| task.id.clone());
                let due = eta.timestamp_micros() as f64 / 1e6;
                self.scripts
                    .park(conns.broker()?, &self.slot, &tag, due, &queue_key, &msg.raw)?;
                tracing::info!(
                    "Task {}[{}] scheduled for {} (parked in {})",
                    task.display_name(),
                    task.id,
                    eta.to_rfc3339(),
                    keys::ETA_INDEX
                );
                return Ok(());
            }
        }
        self.run(msg, &task, spec, conns, reporter)
    }

    fn run(
        &mut self,
        msg: &Reserved,
        task: &TaskMessage,
        spec: &TaskSpec,
        conns: &mut Conns,
        reporter: &mut Reporter,
    ) -> Result<(), BrokerError> {
        let app = &self.spec.app;
        let acks_late = spec.acks_late.unwrap_or(app.task_acks_late);
        let ignore_result = task.ignore_result || spec.ignore_result;
        let time_limit = task
            .time_limit
            .or(spec.time_limit)
            .or(self.spec.time_limit)
            .or(app.task_time_limit)
            .filter(|l| duration_secs(*l).is_some());
        let soft_limit = task
            .soft_time_limit
            .or(spec.soft_time_limit)
            .or(self.spec.soft_time_limit)
            .or(app.task_soft_time_limit);
        let started = Started {
            id: task.id.clone(),
            task: task.display_name().to_string(),
            time_limit,
            acks_late,
            reject_on_worker_lost: app.task_reject_on_worker_lost,
            ignore_result,
            group: task.group.clone(),
            parent_id: task.parent_id.clone(),
            args: json!(task.args),
            kwargs: json!(task.kwargs),
            delivery_info: json!({
                "exchange": task.delivery_info.exchange,
                "routing_key": task.delivery_info.routing_key,
                "priority": task.delivery_info.priority,
                "redelivered": task.delivery_info.redelivered,
            }),
        };
        // Reported before the ack (unless the reserving step acked it): if
        // this child dies from here on, the main process knows the task had
        // started and records its outcome.
        if reporter.send(&Report::Started(started)).is_err() {
            leave(1);
        }
        self.in_flight = Some((task.id.clone(), Stage::Acked));
        if !acks_late && !msg.acked {
            self.scripts.start(
                conns.broker()?,
                &self.slot,
                task.delivery_tag.as_deref(),
                &task.id,
            )?;
            self.acked = true;
        }
        let in_host = matches!(spec.executor, TaskExecutor::Python);
        // Celery's tracer in the host stores STARTED itself (per task).
        if app.task_track_started && !ignore_result && !in_host {
            self.store(
                conns,
                &ResultMeta::started(&task.id, self.pid, &self.spec.node).with_request(task),
            )?;
        }
        // From here on the task runs: coming back, it is to be finished.
        self.set_stage(Stage::Ran);
        if in_host {
            let soft = soft_limit.and_then(duration_secs);
            let done = self.run_in_host(&msg.raw, soft);
            // The host's tracer stored the outcome and logged it; what is
            // left here is the message.
            let mut meta = None;
            if let Some(error) = &done.error {
                tracing::error!(
                    "Python host failed around task {}[{}]:\n{}",
                    task.display_name(),
                    task.id,
                    error.trim_end()
                );
                if !ignore_result {
                    let last = error
                        .trim_end()
                        .lines()
                        .last()
                        .unwrap_or("error")
                        .to_string();
                    let exc =
                        ExceptionInfo::new("RuntimeError", Some("builtins"), vec![json!(last)]);
                    meta = Some(ResultMeta::failure(
                        task,
                        exc,
                        Some(error.clone()),
                        Utc::now(),
                    ));
                }
            }
            // Reject(requeue=True) puts the message back only under
            // acks_late: with early ack Celery had acked it at the start.
            if acks_late && done.state == "REJECTED" && done.requeue {
                let queue_key = self.queue_key(msg, task);
                self.scripts.restore(
                    conns.broker()?,
                    &self.slot,
                    task.delivery_tag.as_deref(),
                    &queue_key,
                    &msg.raw,
                    true,
                )?;
                self.in_flight = None;
                reporter.queue(&Report::Done);
            } else {
                self.finish_with(msg, task, meta.as_ref());
                if let (Some(f), Some(json)) = (self.finish.as_mut(), done.meta) {
                    f.result.get_or_insert(json);
                }
            }
            return Ok(());
        }
        let inv = Invocation {
            id: &task.id,
            task: &task.task,
            args: &task.args,
            kwargs: &task.kwargs,
            soft_time_limit: soft_limit.and_then(duration_secs),
        };
        let begun = Instant::now();
        let result = spec.executor.run(&inv);
        let runtime = begun.elapsed().as_secs_f64();
        let meta = match &result {
            Ok(value) => {
                tracing::info!(
                    "Task {}[{}] succeeded in {}s: {}",
                    task.display_name(),
                    task.id,
                    runtime,
                    pyrepr::repr(value)
                );
                ResultMeta::success(task, value.clone(), Utc::now())
            }
            Err(err) => {
                tracing::error!(
                    "Task {}[{}] raised unexpected: {}\n{}",
                    task.display_name(),
                    task.id,
                    err.exc.repr(),
                    err.traceback.trim_end()
                );
                ResultMeta::failure(
                    task,
                    err.exc.clone(),
                    Some(err.traceback.clone()),
                    Utc::now(),
                )
            }
        };
        // A builtin called with the wrong arguments is bad input, not a task
        // that ran and failed: keep the message for the operator too.
        if let (Err(err), TaskExecutor::Builtin(_)) = (&result, &spec.executor) {
            if err.exc.exc_type == "TypeError" {
                let reason = format!(
                    "wrong arguments for builtin {}: {}",
                    task.task,
                    err.exc.repr()
                );
                if let Err(e) = self.keep(conns, msg, &reason, &task.id, &task.task) {
                    // The task ran; its outcome still goes to the backend.
                    tracing::error!("Cannot keep the message in {}: {e}", keys::DEAD_LETTER);
                }
            }
        }
        self.finish_with(msg, task, (!ignore_result).then_some(&meta));
        Ok(())
    }

    /// Moves the task in flight to `stage`.
    fn set_stage(&mut self, stage: Stage) {
        if let Some((_, current)) = self.in_flight.as_mut() {
            *current = stage;
        }
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

    fn store(&self, conns: &mut Conns, meta: &ResultMeta) -> Result<(), BrokerError> {
        let json = meta.to_json();
        self.backend
            .store(conns.backend()?, &meta.task_id, &json)
            .map(|_| ())
    }

    fn dead_letter(
        &self,
        msg: &Reserved,
        conns: &mut Conns,
        reason: &str,
        task_id: Option<&str>,
        task: Option<&str>,
    ) -> Result<(), BrokerError> {
        let tag = delivery_tag_of(&msg.raw);
        let record = self.dead_letter_record(msg, reason, task_id, task);
        self.scripts
            .dead_letter(conns.broker()?, &self.slot, tag.as_deref(), &record)
    }

    /// The held message's task had started (early ack) under a child that
    /// died, and nobody recorded that yet (the node itself was killed, or the
    /// child died before it said so): record it as Celery would have, rather
    /// than run it a second time.
    fn record_lost(&mut self, msg: &Reserved, task: &TaskMessage) {
        let exc = worker_lost(NODE_KILLED);
        tracing::error!(
            "Task {}[{}] raised unexpected: {}",
            task.display_name(),
            task.id,
            exc.repr()
        );
        let ignore = task.ignore_result
            || self
                .spec
                .app
                .tasks
                .get(&task.task)
                .is_some_and(|t| t.ignore_result);
        let meta = (!ignore).then(|| ResultMeta::failure(task, exc, None, Utc::now()));
        self.finish_with(msg, task, meta.as_ref());
    }

    /// Dead-letters a message that cannot be handled at all.
    pub fn give_up(
        &self,
        msg: &Reserved,
        conns: &mut Conns,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let task = msg.decode().ok();
        let id = task.as_ref().map(|t| t.id.as_str());
        let name = task.as_ref().map(|t| t.task.as_str());
        self.dead_letter(msg, conns, reason, id, name)
    }

    /// Keeps a record of `msg` in the dead-letter list without touching its
    /// state (the task ran; its message is acked as usual).
    fn keep(
        &self,
        conns: &mut Conns,
        msg: &Reserved,
        reason: &str,
        task_id: &str,
        task: &str,
    ) -> Result<(), BrokerError> {
        let record = self.dead_letter_record(msg, reason, Some(task_id), Some(task));
        crate::broker::reserve::push_dead_letter(conns.broker()?, &record)
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

/// A finished task's result is retried across reconnects for a while: the
/// message may already be acked (early ack), so this is its only record.
fn store_retrying(
    backend: &Backend,
    conns: &mut Conns,
    task_id: &str,
    json: &str,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0u32;
    loop {
        match conns
            .backend()
            .and_then(|con| backend.store(con, task_id, json))
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_connection_problem() && Instant::now() < deadline => {
                attempt += 1;
                tracing::error!("Cannot store result of task {task_id}: {e}; retrying ({attempt})");
                conns.reset();
                // A real sleep: during a warm shutdown `nap` returns at once.
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a task whose pool process died is recorded as (billiard's error).
pub fn worker_lost(message: &str) -> ExceptionInfo {
    ExceptionInfo::new(
        "WorkerLostError",
        Some("billiard.exceptions"),
        vec![json!(message)],
    )
}

/// The WorkerLostError text for a task found started after its node died.
pub const NODE_KILLED: &str = "Worker exited prematurely: its node was killed while the task ran";

/// Leaves this pool child at once (it is a forked process: no destructors
/// that belong to the main process may run).
fn leave(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Leaves this pool child the way its Python host ended (killed by signal
/// N, or exit code N), so the main process reports the loss as Celery does:
/// `Worker exited prematurely: signal 9 (SIGKILL)`.
fn leave_like(status: std::process::ExitStatus) -> ! {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(sig) = status.signal() {
        // The child keeps TERM blocked (see `consume`); a raised TERM must land.
        if let Ok(signal) = nix::sys::signal::Signal::try_from(sig) {
            let _ = crate::signals::unblock(signal);
        }
        // SAFETY: restoring the default action, then raising the signal on
        // this process; both are plain libc calls.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    leave(status.code().unwrap_or(1))
}
