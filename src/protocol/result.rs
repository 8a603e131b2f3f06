//! Result metas as Celery's Redis backend stores them under
//! `celery-task-meta-<id>`, with Python's key order and JSON spacing.

use super::pyjson;
use super::pyrepr::python_repr;
use super::task::TaskMessage;
use super::time::format_iso;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Started => "STARTED",
            State::Retry => "RETRY",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Revoked => "REVOKED",
        }
    }
}

/// An exception as Celery serialises it (`exc_type`, `exc_message`, `exc_module`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    pub exc_type: String,
    pub exc_message: Vec<Value>,
    /// `None` → JSON null (the client then synthesises a class).
    pub exc_module: Option<String>,
}

/// One stored result. `to_json` writes Python's key order:
/// status, result, traceback, children, date_done, [group_id], [parent_id], task_id.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    pub status: State,
    pub result: Value,
    pub traceback: Option<String>,
    /// `[]` normally; `null` for a REVOKED written by the revoke command.
    pub children: Value,
    pub date_done: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    pub parent_id: Option<String>,
    pub task_id: String,
}

impl State {
    /// The state for a stored status name; `None` for custom states.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "STARTED" => State::Started,
            "RETRY" => State::Retry,
            "SUCCESS" => State::Success,
            "FAILURE" => State::Failure,
            "REVOKED" => State::Revoked,
            _ => return None,
        })
    }

    /// `celery.states.READY_STATES`.
    pub fn is_ready(self) -> bool {
        matches!(self, State::Success | State::Failure | State::Revoked)
    }
}

impl ExceptionInfo {
    pub fn new(exc_type: &str, exc_module: Option<&str>, exc_message: Vec<Value>) -> ExceptionInfo {
        ExceptionInfo {
            exc_type: exc_type.to_string(),
            exc_message,
            exc_module: exc_module.map(str::to_string),
        }
    }

    /// A Python builtin exception with one string argument (`ValueError('boom')`).
    pub fn builtin(exc_type: &str, message: &str) -> ExceptionInfo {
        Self::new(
            exc_type,
            Some("builtins"),
            vec![Value::String(message.to_string())],
        )
    }

    /// `celery.exceptions.NotRegistered(name)`, stored for unknown task names.
    pub fn not_registered(task_name: &str) -> ExceptionInfo {
        Self::new(
            "NotRegistered",
            Some("celery.exceptions"),
            vec![Value::String(task_name.to_string())],
        )
    }

    /// `celery.exceptions.TaskRevokedError(reason)`; reason is `revoked`,
    /// `terminated` or `expired`.
    pub fn task_revoked(reason: &str) -> ExceptionInfo {
        Self::new(
            "TaskRevokedError",
            Some("celery.exceptions"),
            vec![Value::String(reason.to_string())],
        )
    }

    /// `{"exc_type", "exc_message", "exc_module"}` in Celery's key order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("exc_type".into(), Value::String(self.exc_type.clone()));
        m.insert("exc_message".into(), Value::Array(self.exc_message.clone()));
        m.insert(
            "exc_module".into(),
            self.exc_module.clone().map_or(Value::Null, Value::String),
        );
        Value::Object(m)
    }

    /// Reads an exception dict back; a string `exc_message` counts as one
    /// argument, as the Python client accepts it.
    pub fn from_value(v: &Value) -> Option<ExceptionInfo> {
        let exc_type = v.get("exc_type")?.as_str()?.to_string();
        let exc_message = match v.get("exc_message") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other.clone()],
        };
        let exc_module = v
            .get("exc_module")
            .and_then(Value::as_str)
            .map(str::to_string);
        Some(ExceptionInfo {
            exc_type,
            exc_message,
            exc_module,
        })
    }

    /// Python's `repr(exc)`, as `task-failed` events carry it:
    /// `ValueError('boom')`, `MyError('custom', 42)`, `KeyError()`.
    pub fn repr(&self) -> String {
        let args: Vec<String> = self.exc_message.iter().map(python_repr).collect();
        format!("{}({})", self.exc_type, args.join(", "))
    }
}

impl ResultMeta {
    fn base(
        status: State,
        task_id: &str,
        result: Value,
        date_done: Option<DateTime<Utc>>,
    ) -> ResultMeta {
        ResultMeta {
            status,
            result,
            traceback: None,
            children: Value::Array(Vec::new()),
            date_done,
            group_id: None,
            parent_id: None,
            task_id: task_id.to_string(),
        }
    }

    /// SUCCESS for a request: `group_id`/`parent_id` come from the message.
    pub fn success(msg: &TaskMessage, result: Value, now: DateTime<Utc>) -> ResultMeta {
        Self::base(State::Success, &msg.id, result, Some(now)).with_request(msg)
    }

    /// FAILURE for a request.
    pub fn failure(
        msg: &TaskMessage,
        exc: ExceptionInfo,
        traceback: Option<String>,
        now: DateTime<Utc>,
    ) -> ResultMeta {
        Self::failure_for_id(&msg.id, exc, traceback, now).with_request(msg)
    }

    /// FAILURE for a bare id, e.g. a message that could not be decoded.
    pub fn failure_for_id(
        task_id: &str,
        exc: ExceptionInfo,
        traceback: Option<String>,
        now: DateTime<Utc>,
    ) -> ResultMeta {
        let mut meta = Self::base(State::Failure, task_id, exc.to_value(), Some(now));
        meta.traceback = traceback;
        meta
    }

    /// RETRY: not ready (`date_done` null) and `children` holds the re-sent
    /// message, which has the same id.
    pub fn retry(msg: &TaskMessage, exc: ExceptionInfo, traceback: Option<String>) -> ResultMeta {
        let mut meta = Self::base(State::Retry, &msg.id, exc.to_value(), None).with_request(msg);
        meta.traceback = traceback;
        meta.children = Value::Array(vec![Self::child_tuple(&msg.id)]);
        meta
    }

    /// REVOKED with `TaskRevokedError(reason)` (`revoked`, `terminated`,
    /// `expired`), as the worker writes it for a message it will not run.
    /// Chain `with_request` when the message is at hand.
    pub fn revoked(task_id: &str, reason: &str, now: DateTime<Utc>) -> ResultMeta {
        Self::base(
            State::Revoked,
            task_id,
            ExceptionInfo::task_revoked(reason).to_value(),
            Some(now),
        )
    }

    /// STARTED (`task_track_started`): result `{"pid", "hostname"}`, not ready.
    pub fn started(task_id: &str, pid: u32, hostname: &str) -> ResultMeta {
        let mut result = Map::new();
        result.insert("pid".into(), Value::from(pid));
        result.insert("hostname".into(), Value::String(hostname.to_string()));
        Self::base(State::Started, task_id, Value::Object(result), None)
    }

    /// Takes `group_id`/`parent_id` from the request; Celery writes them only
    /// when truthy, so empty strings are left out too.
    pub fn with_request(mut self, msg: &TaskMessage) -> ResultMeta {
        self.group_id = msg.group.clone().filter(|g| !g.is_empty());
        self.parent_id = msg.parent_id.clone().filter(|p| !p.is_empty());
        self
    }

    /// The serialized `AsyncResult` of a task this one sent: `[[id, null], null]`.
    pub fn child_tuple(task_id: &str) -> Value {
        Value::Array(vec![
            Value::Array(vec![Value::String(task_id.to_string()), Value::Null]),
            Value::Null,
        ])
    }

    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        m.insert("status".into(), Value::String(self.status.as_str().into()));
        m.insert("result".into(), self.result.clone());
        m.insert(
            "traceback".into(),
            self.traceback.clone().map_or(Value::Null, Value::String),
        );
        m.insert("children".into(), self.children.clone());
        m.insert(
            "date_done".into(),
            self.date_done
                .map_or(Value::Null, |t| Value::String(format_iso(t))),
        );
        if let Some(g) = &self.group_id {
            m.insert("group_id".into(), Value::String(g.clone()));
        }
        if let Some(p) = &self.parent_id {
            m.insert("parent_id".into(), Value::String(p.clone()));
        }
        m.insert("task_id".into(), Value::String(self.task_id.clone()));
        pyjson::to_string(&Value::Object(m))
    }
}

/// What a task whose pool process died is recorded as (billiard's error).
pub fn worker_lost(message: &str) -> ExceptionInfo {
    ExceptionInfo::new(
        "WorkerLostError",
        Some("billiard.exceptions"),
        vec![Value::String(message.to_string())],
    )
}

/// The WorkerLostError text for a task found started after its node died.
pub const NODE_KILLED: &str = "Worker exited prematurely: its node was killed while the task ran";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::task::NewTask;
    use crate::protocol::test_fixture;
    use crate::protocol::time::parse_iso;
    use serde_json::json;

    struct Fx {
        raw: String,
        d: Value,
    }

    fn fx(name: &str) -> Fx {
        let f = test_fixture(name);
        Fx {
            raw: f["raw"].as_str().unwrap().to_string(),
            d: f["decoded"].clone(),
        }
    }

    impl Fx {
        fn now(&self) -> DateTime<Utc> {
            parse_iso(self.d["date_done"].as_str().unwrap()).unwrap()
        }
        fn id(&self) -> &str {
            self.d["task_id"].as_str().unwrap()
        }
        fn exc(&self) -> ExceptionInfo {
            ExceptionInfo::from_value(&self.d["result"]).unwrap()
        }
        fn traceback(&self) -> Option<String> {
            self.d["traceback"].as_str().map(str::to_string)
        }
    }

    /// The request a fixture's meta was stored for, from the captured message.
    fn msg_from(task_fixture: &str) -> TaskMessage {
        TaskMessage::decode(test_fixture(task_fixture)["raw"].as_str().unwrap()).unwrap()
    }

    fn plain_msg(id: &str) -> TaskMessage {
        let raw = NewTask {
            task: "proj.t".into(),
            id: id.into(),
            ..Default::default()
        }
        .encode();
        TaskMessage::decode(&raw).unwrap()
    }

    #[test]
    fn success_metas() {
        let f = fx("result-success.json");
        assert_eq!(
            ResultMeta::success(&plain_msg(f.id()), json!(42), f.now()).to_json(),
            f.raw
        );

        let f = fx("result-success-group-member.json");
        let msg = msg_from("task-v2-group-member.json");
        assert_eq!(msg.id, f.id());
        assert_eq!(
            ResultMeta::success(&msg, json!(0), f.now()).to_json(),
            f.raw
        );

        let f = fx("result-success-chord-callback.json");
        let msg = msg_from("task-v2-chord-callback-sent-by-worker.json");
        assert_eq!(
            ResultMeta::success(&msg, json!(6), f.now()).to_json(),
            f.raw
        );

        let f = fx("result-success-with-children.json");
        let msg = msg_from("task-v2-link-errback.json");
        let child = msg_from("task-v2-link-callback-sent-by-worker.json");
        let mut meta = ResultMeta::success(&msg, json!(2), f.now());
        meta.children = json!([ResultMeta::child_tuple(&child.id)]);
        assert_eq!(meta.to_json(), f.raw);
    }

    #[test]
    fn failure_metas() {
        for name in [
            "result-failure-builtin.json",
            "result-failure-custom-exception.json",
            "result-chord-error.json",
        ] {
            let f = fx(name);
            let meta = ResultMeta::failure(&plain_msg(f.id()), f.exc(), f.traceback(), f.now());
            assert_eq!(meta.to_json(), f.raw, "{name}");
        }
        let f = fx("result-failure-builtin.json");
        assert_eq!(f.exc(), ExceptionInfo::builtin("ValueError", "boom"));
        assert_eq!(f.exc().repr(), "ValueError('boom')");
        let f = fx("result-failure-custom-exception.json");
        assert_eq!(f.exc().repr(), "MyError('custom', 42)");

        let f = fx("result-failure-notregistered.json");
        let msg = msg_from("task-v2-send-task-unregistered.json");
        let meta = ResultMeta::failure(
            &msg,
            ExceptionInfo::not_registered(&msg.task),
            None,
            f.now(),
        );
        assert_eq!(meta.to_json(), f.raw);
        assert_eq!(
            ExceptionInfo::not_registered("proj.nope").repr(),
            "NotRegistered('proj.nope')"
        );
        let meta = ResultMeta::failure_for_id(
            f.id(),
            ExceptionInfo::not_registered("proj.nope"),
            None,
            f.now(),
        );
        assert_eq!(meta.to_json(), f.raw);
    }

    #[test]
    fn retry_meta() {
        let f = fx("result-retry.json");
        let meta = ResultMeta::retry(&plain_msg(f.id()), f.exc(), f.traceback());
        assert_eq!(meta.to_json(), f.raw);
        assert_eq!(ExceptionInfo::builtin("KeyError", "try again"), f.exc());
    }

    #[test]
    fn revoked_metas() {
        let f = fx("result-revoked-expired.json");
        let msg = msg_from("task-v2-expires-past.json");
        assert_eq!(
            ResultMeta::revoked(&msg.id, "expired", f.now())
                .with_request(&msg)
                .to_json(),
            f.raw
        );

        let f = fx("result-revoked-terminated.json");
        assert_eq!(
            ResultMeta::revoked(f.id(), "terminated", f.now()).to_json(),
            f.raw
        );

        // As the `revoke` control command writes it before the message was
        // seen: `children` is null.
        let f = fx("result-revoked-before-run.json");
        let mut meta = ResultMeta::revoked(f.id(), "revoked", f.now());
        meta.children = Value::Null;
        assert_eq!(meta.to_json(), f.raw);
    }

    #[test]
    fn started_meta() {
        let f = fx("result-started.json");
        assert_eq!(ResultMeta::started(f.id(), 12042, "w6@vm").to_json(), f.raw);
    }

    #[test]
    fn helpers() {
        assert_eq!(State::parse("SUCCESS"), Some(State::Success));
        assert_eq!(State::parse("PROGRESS"), None);
        for s in [
            State::Started,
            State::Retry,
            State::Success,
            State::Failure,
            State::Revoked,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert!(State::Revoked.is_ready() && !State::Retry.is_ready());
        let e = ExceptionInfo::new("Boom", None, vec![]);
        assert_eq!(
            pyjson::to_string(&e.to_value()),
            r#"{"exc_type": "Boom", "exc_message": [], "exc_module": null}"#
        );
        assert_eq!(e.repr(), "Boom()");
        let e = ExceptionInfo::from_value(&json!({"exc_type": "X", "exc_message": "one"})).unwrap();
        assert_eq!((e.exc_message, e.exc_module), (vec![json!("one")], None));
        assert!(ExceptionInfo::from_value(&json!(3)).is_none());
        let mut msg = plain_msg("i");
        msg.group = Some(String::new());
        msg.parent_id = Some("p".into());
        let meta = ResultMeta::started("i", 1, "h").with_request(&msg);
        assert_eq!(
            (meta.group_id, meta.parent_id.as_deref()),
            (None, Some("p"))
        );
    }
}
