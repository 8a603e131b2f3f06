//! What a reserved message becomes: a pure decision from the decoded
//! message (or why it did not decode), the app's tasks and limits, what this
//! child has in hand, and the time. `consume` carries the verdict out.
//!
//! The checks run in Celery's order: a message that is not a task, one this
//! child already ran or that a dead child had started, then (the message is
//! "received" from here on) an unregistered task, an expired one, a revoked
//! one (the reserving script looked its id up in `rmulti.revoked`: before the
//! ETA, so a parked or redelivered revoked task is never run either), an ETA
//! still in the future, and finally a task to run.

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
    Unregistered(Box<TaskMessage>),
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
    /// Its id is revoked (`Reserved::revoked`): REVOKED (unless ignored),
    /// then finished, never run.
    Revoked {
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
            } => Some(task),
            Verdict::Expired { task, .. }
            | Verdict::Revoked { task, .. }
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
            refusal: Refusal::Unregistered(Box::new(task)),
            reason,
            failure,
        };
    };
    if task.expires.is_some_and(|exp| exp <= now) {
        let meta = (!ignore_result)
            .then(|| ResultMeta::revoked(&task.id, "expired", now).with_request(&task));
        return Verdict::Expired { task, meta };
    }
    if msg.revoked {
        let meta = (!ignore_result)
            .then(|| ResultMeta::revoked(&task.id, "revoked", now).with_request(&task));
        return Verdict::Revoked { task, meta };
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
            reject_on_worker_lost: spec
                .reject_on_worker_lost
                .unwrap_or(app.task_reject_on_worker_lost),
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
            stamps: task.stamps.clone(),
            batched: false,
        },
        soft_limit,
        ack_at_start: !acks_late && !msg.acked,
        track_started: app.task_track_started && !ignore_result && !in_host,
        in_host,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::app::{AppConfig, Overrides};
    use crate::protocol::{NewTask, State};
    use crate::tasks::Executor;

    const APP: &str = r#"
task_track_started = true
task_time_limit = 30
[tasks]
"t.add" = { builtin = "add" }
"t.late" = { builtin = "add", acks_late = true, soft_time_limit = 5 }
"t.quiet" = { builtin = "add", ignore_result = true }
"#;

    fn child() -> ChildSpec {
        let none = |_: &str| None;
        let mut app = AppConfig::from_str(
            "proj",
            Path::new("proj.toml"),
            APP,
            &none,
            &Overrides::default(),
        )
        .expect("app");
        app.tasks
            .insert("t.py", crate::tasks::TaskSpec::new(Executor::Python));
        ChildSpec {
            node: "w1@host".into(),
            slot: 1,
            process_number: 1,
            app: Arc::new(app),
            queues: vec!["celery".into()],
            log_file: None,
            max_tasks: None,
            max_memory_kib: None,
            time_limit: None,
            soft_time_limit: Some(7.0),
            pool_size: 1,
            progress: None,
            affinity: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn reserved(raw: String) -> Reserved {
        Reserved {
            raw,
            invalid_utf8: None,
            source: "celery".into(),
            from_eta_park: false,
            started: false,
            acked: false,
            revoked: false,
        }
    }

    fn message(task: &str, edit: impl FnOnce(&mut NewTask)) -> Reserved {
        let mut new = NewTask {
            task: task.into(),
            id: "id-1".into(),
            args: vec![json!(1), json!(2)],
            ..NewTask::default()
        };
        edit(&mut new);
        reserved(new.encode_with(now(), "gen1@h", "reply", "tag-1"))
    }

    fn verdict<'a>(msg: &Reserved, child: &'a ChildSpec, in_hand: &InHand) -> Verdict<'a> {
        triage(msg, msg.decode(), child, in_hand, now())
    }

    #[test]
    fn bad_json_is_dead_lettered_without_a_result() {
        let child = child();
        let msg = reserved("{not json".into());
        match verdict(&msg, &child, &InHand::Free) {
            Verdict::DeadLetter {
                refusal: Refusal::Invalid { .. },
                failure: None,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_content_type_with_an_id_stores_content_disallowed() {
        let child = child();
        let good = message("t.add", |_| {});
        let raw = good
            .raw
            .replace("\"application/json\"", "\"application/x-python-serialize\"");
        let msg = reserved(raw);
        match verdict(&msg, &child, &InHand::Free) {
            Verdict::DeadLetter {
                refusal: Refusal::Invalid { content_type, .. },
                failure: Some(meta),
                ..
            } => {
                assert_eq!(content_type, "application/x-python-serialize");
                assert_eq!(meta.task_id, "id-1");
                assert!(meta.to_json().contains("ContentDisallowed"), "{meta:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unregistered_task_is_dead_lettered_with_not_registered() {
        let child = child();
        let msg = message("t.nope", |_| {});
        let v = verdict(&msg, &child, &InHand::Free);
        assert!(v.received().is_some());
        match v {
            Verdict::DeadLetter {
                refusal: Refusal::Unregistered(task),
                reason,
                failure: Some(meta),
            } => {
                assert_eq!(task.task, "t.nope");
                assert_eq!(reason, "unregistered task \"t.nope\"");
                assert_eq!(meta.status, State::Failure);
                assert!(meta.to_json().contains("NotRegistered"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn started_under_a_dead_child_is_recorded_lost() {
        let child = child();
        let mut msg = message("t.add", |_| {});
        msg.started = true;
        let v = verdict(&msg, &child, &InHand::Free);
        assert!(v.received().is_none());
        match v {
            Verdict::RecordLost {
                exc, meta: Some(m), ..
            } => {
                assert_eq!(exc, worker_lost(NODE_KILLED));
                assert_eq!(m.status, State::Failure);
            }
            other => panic!("{other:?}"),
        }
        // Its result ignored: recorded lost, nothing stored.
        let mut quiet = message("t.quiet", |_| {});
        quiet.started = true;
        assert!(matches!(
            verdict(&quiet, &child, &InHand::Free),
            Verdict::RecordLost { meta: None, .. }
        ));
    }

    #[test]
    fn started_by_this_child_and_not_run_runs() {
        let child = child();
        let mut msg = message("t.add", |_| {});
        msg.started = true;
        let hand = InHand::Started {
            id: "id-1".into(),
            acked_here: true,
        };
        assert!(matches!(verdict(&msg, &child, &hand), Verdict::Run { .. }));
    }

    #[test]
    fn run_here_already_is_only_finished() {
        let child = child();
        let mut msg = message("t.add", |_| {});
        msg.started = true;
        let hand = InHand::Ran {
            id: "id-1".into(),
            acked_here: true,
            finish: None,
        };
        assert!(matches!(
            verdict(&msg, &child, &hand),
            Verdict::FinishOnly(t) if t.id == "id-1"
        ));
        // Another task in hand says nothing about this one.
        let other = InHand::Ran {
            id: "id-2".into(),
            acked_here: true,
            finish: None,
        };
        assert!(matches!(
            verdict(&msg, &child, &other),
            Verdict::RecordLost { .. }
        ));
    }

    #[test]
    fn expired_is_revoked_unless_ignored() {
        let child = child();
        let past = Some(now() - chrono::Duration::seconds(1));
        let msg = message("t.add", |t| t.expires = past);
        match verdict(&msg, &child, &InHand::Free) {
            Verdict::Expired { meta: Some(m), .. } => assert_eq!(m.status, State::Revoked),
            other => panic!("{other:?}"),
        }
        let quiet = message("t.quiet", |t| t.expires = past);
        assert!(matches!(
            verdict(&quiet, &child, &InHand::Free),
            Verdict::Expired { meta: None, .. }
        ));
    }

    #[test]
    fn a_revoked_id_is_never_run() {
        let child = child();
        let revoked = |mut msg: Reserved| {
            msg.revoked = true;
            msg
        };
        let msg = revoked(message("t.add", |_| {}));
        let v = verdict(&msg, &child, &InHand::Free);
        assert!(v.received().is_some());
        match v {
            Verdict::Revoked {
                task,
                meta: Some(m),
            } => {
                assert_eq!(task.id, "id-1");
                assert_eq!(m.status, State::Revoked);
                assert!(m.to_json().contains("revoked"), "{m:?}");
            }
            other => panic!("{other:?}"),
        }
        // Not parked for a future ETA (it would come back to be run), not
        // run when due from the park, nor when redelivered.
        let later = now() + chrono::Duration::seconds(10);
        let eta = revoked(message("t.add", |t| t.eta = Some(later)));
        assert!(matches!(
            verdict(&eta, &child, &InHand::Free),
            Verdict::Revoked { .. }
        ));
        let mut due = revoked(message("t.add", |t| t.eta = Some(now())));
        due.from_eta_park = true;
        assert!(matches!(
            verdict(&due, &child, &InHand::Free),
            Verdict::Revoked { .. }
        ));
        let envelope = serde_json::from_str(&message("t.add", |_| {}).raw).expect("json");
        let redelivered = revoked(reserved(crate::protocol::envelope::redelivered(envelope)));
        let v = verdict(&redelivered, &child, &InHand::Free);
        let Verdict::Revoked { task, .. } = v else {
            panic!("{v:?}");
        };
        assert!(task.delivery_info.redelivered);
        // Acked by the reserving step, started here: still not run.
        let mut acked = revoked(message("t.add", |_| {}));
        acked.acked = true;
        let hand = InHand::Started {
            id: "id-1".into(),
            acked_here: true,
        };
        assert!(matches!(
            verdict(&acked, &child, &hand),
            Verdict::Revoked { .. }
        ));
        // Its result ignored: nothing stored.
        let quiet = revoked(message("t.quiet", |_| {}));
        assert!(matches!(
            verdict(&quiet, &child, &InHand::Free),
            Verdict::Revoked { meta: None, .. }
        ));
    }

    #[test]
    fn a_future_eta_is_parked_a_due_one_runs() {
        let child = child();
        let later = now() + chrono::Duration::seconds(10);
        let msg = message("t.add", |t| t.eta = Some(later));
        match verdict(&msg, &child, &InHand::Free) {
            Verdict::Park { eta, .. } => assert_eq!(eta, later),
            other => panic!("{other:?}"),
        }
        // Within the slack: run now.
        let soon = now() + chrono::Duration::milliseconds(2);
        let msg = message("t.add", |t| t.eta = Some(soon));
        assert!(matches!(
            verdict(&msg, &child, &InHand::Free),
            Verdict::Run { .. }
        ));
    }

    #[test]
    fn run_plans_limits_and_acks() {
        let child = child();
        let msg = message("t.add", |_| {});
        let Verdict::Run { plan, .. } = verdict(&msg, &child, &InHand::Free) else {
            panic!("not run");
        };
        assert_eq!(plan.started.time_limit, Some(30.0));
        assert_eq!(plan.soft_limit, Some(7.0));
        assert!(plan.ack_at_start && plan.track_started && !plan.in_host);
        assert!(!plan.started.acks_late);

        // Acked by the reserving step: no early ack at start.
        let mut acked = message("t.add", |_| {});
        acked.acked = true;
        let Verdict::Run { plan, .. } = verdict(&acked, &child, &InHand::Free) else {
            panic!("not run");
        };
        assert!(!plan.ack_at_start);

        // The task's own settings, then the message's.
        let late = message("t.late", |t| t.time_limit = Some(3.0));
        let Verdict::Run { plan, .. } = verdict(&late, &child, &InHand::Free) else {
            panic!("not run");
        };
        assert!(plan.started.acks_late && !plan.ack_at_start);
        assert_eq!(plan.started.time_limit, Some(3.0));
        assert_eq!(plan.soft_limit, Some(5.0));

        // An ignored result is not tracked; a Python task's host tracks it.
        let quiet = message("t.quiet", |_| {});
        let Verdict::Run { plan, .. } = verdict(&quiet, &child, &InHand::Free) else {
            panic!("not run");
        };
        assert!(plan.started.ignore_result && !plan.track_started);
        let py = message("t.py", |_| {});
        let Verdict::Run { plan, .. } = verdict(&py, &child, &InHand::Free) else {
            panic!("not run");
        };
        assert!(plan.in_host && !plan.track_started);
    }
}
