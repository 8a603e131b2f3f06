//! The outcomes a pool child decides itself (an expired or revoked message,
//! an unregistered task, a task a dead child had started, a host failing
//! around its task) that Python must see: handed to the node's template,
//! whose recorder calls the app backend's `mark_as_failure` /
//! `mark_as_revoked` with the message's request. All of them when the app's
//! results are only Python's to write (`AppConfig::results_in_python`:
//! `django-db`, `db+...`; then taken out of what the child stores on Redis);
//! with a Redis backend, those of a Python app's messages that have
//! follow-ups (`has_follow_ups`: a chord part, errbacks, a chain), which the
//! child still stores itself as well.

use std::time::Duration;

use serde_json::Value;

use super::triage::{Refusal, Verdict};
use crate::app::AppConfig;
use crate::protocol::{ResultMeta, TaskMessage};
use crate::tasks::python::template::{self, Record, Template};

/// How long a child waits for a template that is still loading the app.
const PATIENCE: Duration = Duration::from_secs(30);

/// Whether Celery's backend does more than store a failure or revoke of
/// `task` (`mark_as_failure` / `mark_as_revoked` with its request): it
/// returns a chord part (`request.chord`, the body's embed), calls errbacks
/// or fails the rest of a chain. Only Python can do those.
pub fn has_follow_ups(task: &TaskMessage) -> bool {
    [&task.chord, &task.errbacks, &task.chain]
        .into_iter()
        .any(|v| !matches!(v, Value::Null | Value::Bool(false)) && !is_empty(v))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Whether an outcome of a message of `app` goes to the template even
/// though the child stores it on Redis (see the module doc).
fn also_to_python(app: &AppConfig, task: Option<&TaskMessage>) -> bool {
    app.python.is_some() && !app.results_in_python() && task.is_some_and(has_follow_ups)
}

/// `meta` for the child to store on Redis, or `None` once handed to the
/// template (the app's results are Python's).
pub fn for_redis(
    app: &AppConfig,
    meta: Option<ResultMeta>,
    task: Option<&TaskMessage>,
    raw: Option<&str>,
) -> Option<ResultMeta> {
    let meta = meta?;
    let name = task.map(|t| t.task.as_str());
    if app.results_in_python() {
        hand_over(&meta, name, raw);
        return None;
    }
    if also_to_python(app, task) {
        hand_over(&meta, name, raw);
    }
    Some(meta)
}

/// Hands the record of `verdict` to the template when Python must see it,
/// taking it out of what the child stores when the app's results are
/// Python's; `raw` is the verdict's message.
pub fn take_from_verdict(app: &AppConfig, verdict: &mut Verdict, raw: &str) {
    if app.python.is_none() {
        return;
    }
    let (meta, task) = match verdict {
        Verdict::DeadLetter {
            failure, refusal, ..
        } => {
            let task = match refusal {
                Refusal::Unregistered(t) => Some(&**t),
                Refusal::Invalid { .. } => None,
            };
            (failure, task)
        }
        Verdict::RecordLost { task, meta, .. }
        | Verdict::Expired { task, meta }
        | Verdict::Revoked { task, meta } => (meta, Some(&*task)),
        _ => return,
    };
    *meta = for_redis(app, meta.take(), task, Some(raw));
}

fn hand_over(meta: &ResultMeta, task: Option<&str>, raw: Option<&str>) {
    let record = Record {
        meta: serde_json::from_str(&meta.to_json()).unwrap_or_default(),
        task: task.map(str::to_string),
        raw: raw.map(str::to_string),
    };
    let sent = match Template::from_env() {
        Some(t) => template::record(&t, &record, PATIENCE).map_err(|e| e.to_string()),
        None => Err("no template runs".to_string()),
    };
    if let Err(e) = sent {
        tracing::error!(
            "Cannot hand the {} outcome of task {} to the Python template: {e}",
            meta.status.as_str(),
            meta.task_id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_fixture;

    fn msg(name: &str) -> TaskMessage {
        let raw = test_fixture(name)["raw"].as_str().unwrap().to_string();
        TaskMessage::decode(&raw).unwrap()
    }

    #[test]
    fn chord_parts_errbacks_and_chains_have_follow_ups() {
        for name in [
            "task-v2-chord-header.json",
            "task-v2-link-errback.json",
            "task-v2-chain-first.json",
        ] {
            assert!(has_follow_ups(&msg(name)), "{name}");
        }
        for name in [
            "task-v2-delay.json",
            "task-v2-group-member.json",
            "task-v2-link-callback-sent-by-worker.json",
            "task-v2-chord-callback-sent-by-worker.json",
        ] {
            assert!(!has_follow_ups(&msg(name)), "{name}");
        }
    }
}
