//! What a reserved message becomes: a pure decision from the decoded
//! message (or why it did not decode), the app's tasks and limits, what this
//! child has in hand, and the time. `consume` carries the verdict out.
//!
//! The checks run in Celery's order: a message that is not a task, one this
//! child already ran or that a dead child had started, then (the message is
//! "received" from here on) an unregistered task, an expired one, an ETA still
//! in the future, and finally a task to run.
//!
//! Room for revoke: the control plane's revoked ids become one more input
//! (a set of ids), checked right after the "received" point as Celery's
//! request does, giving a `Revoked` verdict that stores REVOKED (unless the
//! result is ignored) and finishes the message as `Expired` does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::in_hand::InHand;
use super::report::Started;
use super::ChildSpec;
use crate::broker::Reserved;
use crate::protocol::result::{worker_lost, NODE_KILLED};
use crate::protocol::time::duration_secs;
use crate::protocol::{DecodeError, Envelope, ExceptionInfo, ResultMeta, TaskMessage};
use crate::tasks::{Executor, TaskSpec};

/// How far in the future an ETA must be to park the message rather than run it.
pub const ETA_SLACK: Duration = Duration::from_millis(5);

/// Why a message goes to the dead-letter list.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not a task message (bad JSON, a content type not accepted, ...).
    Invalid {
        content_type: String,
        error: DecodeError,
    },
    /// A task this app does not know.
    Unregistered(TaskMessage),
}

#[derive(Debug)]
pub enum Verdict<'a> {
    /// Keep the message in the dead-letter list (and out of its slot);
    /// `failure` is stored first when the task id is known.
    DeadLetter {
        refusal: Refusal,
        reason: String,
        failure: Option<ResultMeta>,
    },
    /// A dead child had started it (early ack): record WorkerLostError as
    /// Celery would have, rather than run it a second time.
    RecordLost {
        task: TaskMessage,
        exc: ExceptionInfo,
        meta: Option<ResultMeta>,
    },
    /// This child ran it already (a Redis error came between): only its
    /// finish (ack) is left.
    FinishOnly(TaskMessage),
    /// Its `expires` has passed: REVOKED (unless ignored), then finished.
    Expired {
        task: TaskMessage,
        meta: Option<ResultMeta>,
    },
    /// Its ETA is still ahead: park it until due.
    Park {
        task: TaskMessage,
        eta: DateTime<Utc>,
    },
    /// Run it.
    Run {
        task: TaskMessage,
        spec: &'a TaskSpec,
        plan: Plan,
    },
}

impl Verdict<'_> {
    /// Whether the main process logs the message as received ("Received
    /// task: ..."): every task past the ownership checks.
    pub fn received(&self) -> Option<&TaskMessage> {
        match self {
            Verdict::DeadLetter {
                refusal: Refusal::Unregistered(task),
                ..
            }
            | Verdict::Expired { task, .. }
            | Verdict::Park { task, .. }
            | Verdict::Run { task, .. } => Some(task),
            _ => None,
        }
    }
}

/// How a task runs: what the main process is told, and the steps around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The `started` report (time limit, ack policy, ...).
    pub started: Started,
    /// Soft time limit in seconds.
    pub soft_limit: Option<f64>,
    /// Early ack at start (the reserving step did not ack it already).
    pub ack_at_start: bool,
    /// Store STARTED before running (Celery's tracer does it in the host).
    pub track_started: bool,
    /// Runs in the child's Python host.
    pub in_host: bool,
}

/// Decides what `msg` (decoded as `decoded`) becomes.
pub fn triage<'a>(
    msg: &Reserved,
    decoded: Result<TaskMessage, DecodeError>,
    child: &'a ChildSpec,
    in_hand: &InHand,
    now: DateTime<Utc>,
) -> Verdict<'a> {
    let task = match decoded {
        Ok(task) => task,
        Err(error) => return invalid(msg, error, now),
    };
    let app = &child.app;
    if in_hand.ran(&task.id) {
        return Verdict::FinishOnly(task);
    }
    let spec = app.tasks.get(&task.task);
    let ignore_result = task.ignore_result || spec.is_some_and(|s| s.ignore_result);
    if msg.started && !in_hand.started(&task.id) {
        let exc = worker_lost(NODE_KILLED);
        let meta = (!ignore_result).then(|| ResultMeta::failure(&task, exc.clone(), None, now));
        return Verdict::RecordLost { task, exc, meta };
    }
    let Some(spec) = spec else {
        let reason = format!("unregistered task {:?}", task.task);
        let exc = ExceptionInfo::not_registered(&task.task);
        let failure = Some(ResultMeta::failure(&task, exc, None, now));
        return Verdict::DeadLetter {
            refusal: Refusal::Unregistered(task),
            reason,
            failure,
        };
    };
    if task.expires.is_some_and(|exp| exp <= now) {
        let meta = (!ignore_result)
            .then(|| ResultMeta::revoked(&task.id, "expired", now).with_request(&task));
        return Verdict::Expired { task, meta };
    }
    if let Some(eta) = task.eta {
        if eta > now + chrono::Duration::from_std(ETA_SLACK).unwrap_or_default() {
            return Verdict::Park { task, eta };
        }
    }
    let plan = plan(msg, &task, spec, child, ignore_result);
    Verdict::Run { task, spec, plan }
}

/// A message that is not a task: FAILURE for its id when one can be read.
fn invalid(msg: &Reserved, error: DecodeError, now: DateTime<Utc>) -> Verdict<'static> {
    let content_type = Envelope::parse(&msg.raw)
        .map(|env| env.content_type)
        .unwrap_or_default();
    let exc_type = if error.reason.contains("not accepted") {
        "ContentDisallowed"
    } else {
        "DecodeError"
    };
    let exc = ExceptionInfo::new(
        exc_type,
        Some("kombu.exceptions"),
        vec![json!(error.reason)],
    );
    let failure = error
        .task_id
        .as_deref()
        .map(|id| ResultMeta::failure_for_id(id, exc, None, now));
    Verdict::DeadLetter {
        reason: error.reason.clone(),
        refusal: Refusal::Invalid {
            content_type,
            error,
        },
        failure,
    }
}

/// The limits and ack policy of one run: the message's own, then the task's,
/// the worker's flags, the app's settings.
fn plan(
    msg: &Reserved,
    task: &TaskMessage,
    spec: &TaskSpec,
    child: &ChildSpec,
    ignore_result: bool,
) -> Plan {
    let app = &child.app;
    let acks_late = spec.acks_late.unwrap_or(app.task_acks_late);
    let time_limit = task
        .time_limit
        .or(spec.time_limit)
        .or(child.time_limit)
        .or(app.task_time_limit)
        .filter(|l| duration_secs(*l).is_some());
    let soft_limit = task
        .soft_time_limit
        .or(spec.soft_time_limit)
        .or(child.soft_time_limit)
        .or(app.task_soft_time_limit);
    let in_host = matches!(spec.executor, Executor::Python);
    Plan {
        started: Started {
            id: task.id.clone(),
            task: task.display_name().to_string(),
            time_limit,
            acks_late,
            reject_on_worker_lost: app.task_reject_on_worker_lost,
            ignore_result,
            group: task.group.clone(),
            parent_id: task.parent_id.clone(),
        },
        soft_limit,
        ack_at_start: !acks_late && !msg.acked,
        track_started: app.task_track_started && !ignore_result && !in_host,
        in_host,
    }
}
