//! The outcomes a pool child decides itself (an expired or revoked message,
//! an unregistered task, a task a dead child had started, a host failing
//! around its task) when the app's results are only Python's to write
//! (`AppConfig::results_in_python`: `django-db`, `db+...`): handed to the
//! node's template, which stores them through the app's own backend, and
//! taken out of what the child stores on Redis.

use std::time::Duration;

use super::triage::{Refusal, Verdict};
use crate::app::AppConfig;
use crate::protocol::ResultMeta;
use crate::tasks::python::template::{self, Record, Template};

/// How long a child waits for a template that is still loading the app.
const PATIENCE: Duration = Duration::from_secs(30);

/// `meta` for the child to store on Redis, or `None` once handed to the
/// template (the app's results are Python's).
pub fn for_redis(
    app: &AppConfig,
    meta: Option<ResultMeta>,
    task: Option<&str>,
    raw: Option<&str>,
) -> Option<ResultMeta> {
    let meta = meta?;
    if !app.results_in_python() {
        return Some(meta);
    }
    hand_over(&meta, task, raw);
    None
}

/// Takes the record out of `verdict` and hands it to the template, when
/// the app's results are Python's; `raw` is the verdict's message.
pub fn take_from_verdict(app: &AppConfig, verdict: &mut Verdict, raw: &str) {
    if !app.results_in_python() {
        return;
    }
    let (meta, task) = match verdict {
        Verdict::DeadLetter {
            failure, refusal, ..
        } => {
            let task = match refusal {
                Refusal::Unregistered(t) => Some(t.task.clone()),
                Refusal::Invalid { .. } => None,
            };
            (failure, task)
        }
        Verdict::RecordLost { task, meta, .. }
        | Verdict::Expired { task, meta }
        | Verdict::Revoked { task, meta } => (meta, Some(task.task.clone())),
        _ => return,
    };
    *meta = for_redis(app, meta.take(), task.as_deref(), Some(raw));
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
