//! Building the result metas and log texts of a task's outcome, shared by the
//! child (normal runs) and the main process (lost children, time limits).

use chrono::Utc;
use serde_json::{json, Value};

use crate::protocol::{pyrepr, ExceptionInfo, ResultMeta, State};

pub fn exception_value(exc: &ExceptionInfo) -> Value {
    json!({
        "exc_type": exc.exc_type,
        "exc_message": exc.exc_message,
        "exc_module": exc.exc_module,
    })
}

/// `ValueError('boom')`: the exception as Celery's log lines show it.
pub fn exception_repr(exc: &ExceptionInfo) -> String {
    let args: Vec<String> = exc.exc_message.iter().map(pyrepr::repr).collect();
    format!("{}({})", exc.exc_type, args.join(", "))
}

pub fn meta(
    status: State,
    task_id: &str,
    result: Value,
    traceback: Option<String>,
    group: Option<&str>,
    parent_id: Option<&str>,
) -> ResultMeta {
    let ready = matches!(status, State::Success | State::Failure | State::Revoked);
    ResultMeta {
        status,
        result,
        traceback,
        children: json!([]),
        date_done: if ready { Some(Utc::now()) } else { None },
        group_id: group.map(str::to_string),
        parent_id: parent_id.map(str::to_string),
        task_id: task_id.to_string(),
    }
}

pub fn failure(task_id: &str, exc: &ExceptionInfo, traceback: Option<String>, group: Option<&str>, parent_id: Option<&str>) -> ResultMeta {
    meta(State::Failure, task_id, exception_value(exc), traceback, group, parent_id)
}

pub fn celery_exception(exc_type: &str, module: &str, message: Value) -> ExceptionInfo {
    ExceptionInfo { exc_type: exc_type.to_string(), exc_message: vec![message], exc_module: Some(module.to_string()) }
}
