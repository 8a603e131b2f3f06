//! Task messages: decoding protocol 2 and protocol 1 into one `TaskMessage`,
//! and encoding new protocol 2 messages the way Celery 5.7's client does.

use super::envelope::Envelope;
use super::pyjson;
use super::pyrepr::{args_repr, kwargs_repr};
use super::time::{format_isoformat, parse_iso};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// Where the message came from, as `properties.delivery_info` says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeliveryInfo {
    pub exchange: String,
    pub routing_key: String,
    /// `properties.priority`, clamped to 0..=9.
    pub priority: u8,
    pub redelivered: bool,
}

/// One task request, whichever protocol carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// 1 or 2.
    pub protocol: u8,
    pub id: String,
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub retries: u32,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// Seconds; wire order is `[hard, soft]`.
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub group: Option<String>,
    pub group_index: Option<i64>,
    /// `ignore_result` header; null means false.
    pub ignore_result: bool,
    pub shadow: Option<String>,
    /// Python reprs of args/kwargs, from the headers or synthesised (protocol 1).
    pub argsrepr: String,
    pub kwargsrepr: String,
    pub origin: Option<String>,
    /// `embed` (protocol 2) or the body's fields (protocol 1); null when absent.
    pub callbacks: Value,
    pub errbacks: Value,
    pub chain: Value,
    pub chord: Value,
    pub delivery_info: DeliveryInfo,
    pub delivery_tag: Option<String>,
    /// Celery's `Request.stamps`: each header named in `stamped_headers`
    /// with its value in `stamps` (canvas stamping); empty for most messages,
    /// which is what keeps the revoked-stamp lookup off their path.
    pub stamps: Map<String, Value>,
}

/// Why a message could not become a `TaskMessage`. `task_id` and `task` are
/// set whenever the headers (or body) revealed them, so the caller can store
/// a FAILURE result for the id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub reason: String,
    pub task_id: Option<String>,
    pub task: Option<String>,
}

impl TaskMessage {
    /// Decodes a raw envelope as popped from a queue list. Rejects content types
    /// other than `application/json` without deserialising them.
    pub fn decode(raw: &str) -> Result<TaskMessage, DecodeError> {
        let env = Envelope::parse(raw).map_err(|e| {
            let (task_id, task) = ids_from_raw(raw);
            DecodeError {
                reason: e.to_string(),
                task_id,
                task,
            }
        })?;
        Self::from_envelope(&env)
    }

    /// Decodes a message as Redis holds it: bytes, which need not be UTF-8.
    /// A JSON document is UTF-8, so anything else is refused here; its ids
    /// are looked up in its lossy text, so a FAILURE can still be stored.
    pub fn decode_bytes(raw: &[u8]) -> Result<TaskMessage, DecodeError> {
        match std::str::from_utf8(raw) {
            Ok(text) => Self::decode(text),
            Err(e) => {
                let (task_id, task) = ids_from_raw(&String::from_utf8_lossy(raw));
                Err(DecodeError {
                    reason: format!("message is not valid UTF-8: {e}"),
                    task_id,
                    task,
                })
            }
        }
    }

    /// Decodes an already parsed envelope (see `decode`).
    pub fn from_envelope(env: &Envelope) -> Result<TaskMessage, DecodeError> {
        let header_id = str_field(&env.headers, "id");
        let header_task = str_field(&env.headers, "task");
        let fail = |reason: String| DecodeError {
            reason,
            task_id: header_id.clone(),
            task: header_task.clone(),
        };
        let media_type = env.content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(fail(format!(
                "content type '{}' is not accepted (only application/json)",
                env.content_type
            )));
        }
        let text = std::str::from_utf8(&env.body)
            .map_err(|e| fail(format!("message body is not valid UTF-8: {e}")))?;
        let body: Value = serde_json::from_str(text)
            .map_err(|e| fail(format!("message body is not valid JSON: {e}")))?;

        if env.headers.contains_key("task") {
            let Value::Array(mut parts) = body else {
                return Err(fail(
                    "protocol 2 body is not a list [args, kwargs, embed]".into(),
                ));
            };
            if !(2..=3).contains(&parts.len()) {
                return Err(fail(format!(
                    "protocol 2 body has {} items, expected [args, kwargs, embed]",
                    parts.len()
                )));
            }
            let embed = if parts.len() == 3 { parts.pop() } else { None };
            let kwargs = parts.pop().unwrap_or(Value::Null);
            let args = parts.pop().unwrap_or(Value::Null);
            let args = into_args(args).map_err(&fail)?;
            let kwargs = into_kwargs(kwargs).map_err(&fail)?;
            let embed = match embed {
                Some(Value::Object(m)) => m,
                None | Some(Value::Null) => Map::new(),
                Some(_) => {
                    return Err(fail(
                        "protocol 2 embed (third body item) is not an object".into(),
                    ))
                }
            };
            build(2, &env.headers, args, kwargs, &embed, env)
        } else {
            let Value::Object(mut fields) = body else {
                return Err(fail(
                    "unknown message: no 'task' header and the body is not a protocol 1 task object".into(),
                ));
            };
            let body_fail = |reason: String, fields: &Map<String, Value>| DecodeError {
                reason,
                task_id: str_field(fields, "id").or_else(|| header_id.clone()),
                task: str_field(fields, "task").or_else(|| header_task.clone()),
            };
            if !fields.get("task").is_some_and(Value::is_string) {
                return Err(body_fail(
                    "unknown message: protocol 1 body has no task name".into(),
                    &fields,
                ));
            }
            // `taskset` is the pre-3.0 name of `group`.
            if fields.get("group").is_none_or(Value::is_null) {
                if let Some(ts) = fields.get("taskset").filter(|v| !v.is_null()).cloned() {
                    fields.insert("group".into(), ts);
                }
            }
            for (k, v) in &env.headers {
                fields.insert(k.clone(), v.clone());
            }
            let args = into_args(fields.get("args").cloned().unwrap_or(Value::Null))
                .map_err(|r| body_fail(r, &fields))?;
            let kwargs = into_kwargs(fields.get("kwargs").cloned().unwrap_or(Value::Null))
                .map_err(|r| body_fail(r, &fields))?;
            let mut embed = Map::new();
            for key in ["callbacks", "errbacks", "chord"] {
                embed.insert(key.into(), fields.get(key).cloned().unwrap_or(Value::Null));
            }
            build(1, &fields, args, kwargs, &embed, env)
        }
    }

    /// The name shown in logs and events: the shadow if set, else the task.
    pub fn display_name(&self) -> &str {
        self.shadow.as_deref().unwrap_or(&self.task)
    }
}

/// Best effort for error reports when the envelope itself is broken.
fn ids_from_raw(raw: &str) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(raw) else {
        return (None, None);
    };
    match doc.get("headers") {
        Some(Value::Object(h)) => (str_field(h, "id"), str_field(h, "task")),
        _ => (None, None),
    }
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

fn into_args(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        other => Err(format!("task args is not a list: {}", type_name(&other))),
    }
}

fn into_kwargs(v: Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(format!(
            "task kwargs is not an object: {}",
            type_name(&other)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn opt_time(fields: &Map<String, Value>, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso(s)
            .map(Some)
            .ok_or_else(|| format!("invalid {key} {s:?}: not an ISO 8601 datetime")),
        Some(other) => Err(format!(
            "invalid {key}: expected an ISO 8601 string, got {other}"
        )),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        _ => false,
    }
}

/// `properties.priority` clamped to 0..=9 (kombu clamps the same way).
fn priority_of(v: Option<&Value>) -> u8 {
    v.and_then(Value::as_f64)
        .map_or(0, |p| p.clamp(0.0, 9.0) as u8)
}

fn build(
    protocol: u8,
    fields: &Map<String, Value>,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    embed: &Map<String, Value>,
    env: &Envelope,
) -> Result<TaskMessage, DecodeError> {
    let task_id = str_field(fields, "id");
    let task = str_field(fields, "task");
    let fail = |reason: String| DecodeError {
        reason,
        task_id: task_id.clone(),
        task: task.clone(),
    };
    let Some(name) = task.clone() else {
        return Err(fail("message has no task name".into()));
    };
    let Some(id) = task_id.clone() else {
        return Err(fail("message has no task id".into()));
    };
    let eta = opt_time(fields, "eta").map_err(&fail)?;
    let expires = opt_time(fields, "expires").map_err(&fail)?;
    let (time_limit, soft_time_limit) = match fields.get("timelimit") {
        Some(Value::Array(tl)) => (
            tl.first().and_then(Value::as_f64),
            tl.get(1).and_then(Value::as_f64),
        ),
        _ => (None, None),
    };
    let retries = fields
        .get("retries")
        .and_then(Value::as_f64)
        .map_or(0, |r| r.clamp(0.0, u32::MAX as f64) as u32);
    let argsrepr = str_field(fields, "argsrepr").unwrap_or_else(|| args_repr(&args));
    let kwargsrepr = str_field(fields, "kwargsrepr").unwrap_or_else(|| kwargs_repr(&kwargs));

    let info = match env.properties.get("delivery_info") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let priority = match env.properties.get("priority") {
        Some(p) if !p.is_null() => priority_of(Some(p)),
        _ => priority_of(info.get("priority")),
    };
    let delivery_info = DeliveryInfo {
        exchange: str_field(&info, "exchange").unwrap_or_default(),
        routing_key: str_field(&info, "routing_key").unwrap_or_default(),
        priority,
        redelivered: truthy(env.headers.get("redelivered")) || truthy(info.get("redelivered")),
    };
    let embedded = |key: &str| embed.get(key).cloned().unwrap_or(Value::Null);

    Ok(TaskMessage {
        protocol,
        id,
        task: name,
        args,
        kwargs,
        retries,
        eta,
        expires,
        time_limit,
        soft_time_limit,
        root_id: str_field(fields, "root_id"),
        parent_id: str_field(fields, "parent_id"),
        group: str_field(fields, "group"),
        group_index: fields.get("group_index").and_then(Value::as_i64),
        ignore_result: truthy(fields.get("ignore_result")),
        shadow: str_field(fields, "shadow"),
        argsrepr,
        kwargsrepr,
        origin: str_field(fields, "origin"),
        callbacks: embedded("callbacks"),
        errbacks: embedded("errbacks"),
        chain: embedded("chain"),
        chord: embedded("chord"),
        delivery_info,
        delivery_tag: env.delivery_tag().map(str::to_string),
        stamps: stamps_of(fields),
    })
}

/// `{header: stamps[header]}` for each header in `stamped_headers` (a list,
/// or one name), leaving out those without a value, as Celery's revoke
/// check skips them.
fn stamps_of(fields: &Map<String, Value>) -> Map<String, Value> {
    let names: Vec<&str> = match fields.get("stamped_headers") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => return Map::new(),
    };
    let Some(Value::Object(stamps)) = fields.get("stamps") else {
        return Map::new();
    };
    names
        .into_iter()
        .filter_map(|name| {
            let value = stamps.get(name).filter(|v| !v.is_null())?;
            Some((name.to_string(), value.clone()))
        })
        .collect()
}

/// A task to publish (used by `rmulti call`, the demo and tests).
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub task: String,
    pub id: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub queue: String,
    pub priority: u8,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    pub ignore_result: bool,
    /// Protocol 1 instead of 2.
    pub protocol1: bool,
}

impl NewTask {
    /// Encodes the envelope exactly as Celery 5.7's Python client would
    /// (protocol 2 by default), with a fresh delivery tag.
    pub fn encode(&self) -> String {
        let origin = format!("gen{}@{}", std::process::id(), local_hostname());
        let reply_to = uuid::Uuid::new_v4().to_string();
        let delivery_tag = uuid::Uuid::new_v4().to_string();
        self.encode_with(Utc::now(), &origin, &reply_to, &delivery_tag)
    }

    /// `encode` with the varying parts given: `now` (for the relative
    /// `expiration` property), the `origin` header, `reply_to` and the
    /// delivery tag. Deterministic, for tests and for callers that need the
    /// tag before publishing.
    pub fn encode_with(
        &self,
        now: DateTime<Utc>,
        origin: &str,
        reply_to: &str,
        delivery_tag: &str,
    ) -> String {
        let id = if self.id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            self.id.clone()
        };
        let queue = if self.queue.is_empty() {
            "celery"
        } else {
            self.queue.as_str()
        };
        let eta = self
            .eta
            .map_or(Value::Null, |t| Value::String(format_isoformat(t)));
        let expires = self
            .expires
            .map_or(Value::Null, |t| Value::String(format_isoformat(t)));
        let timelimit = json!([
            seconds_value(self.time_limit),
            seconds_value(self.soft_time_limit)
        ]);
        let args = Value::Array(self.args.clone());
        let kwargs = Value::Object(self.kwargs.clone());

        let (headers, body) = if self.protocol1 {
            let body = json!({
                "task": self.task, "id": id, "args": args, "kwargs": kwargs,
                "group": null, "group_index": null, "retries": 0,
                "eta": eta, "expires": expires, "utc": true,
                "callbacks": null, "errbacks": null, "timelimit": timelimit,
                "taskset": null, "chord": null,
            });
            (json!({}), body)
        } else {
            let headers = json!({
                "lang": "py", "task": self.task, "id": id, "shadow": null,
                "eta": eta, "expires": expires, "group": null, "group_index": null,
                "retries": 0, "timelimit": timelimit, "root_id": id, "parent_id": null,
                "argsrepr": args_repr(&self.args), "kwargsrepr": kwargs_repr(&self.kwargs),
                "origin": origin, "ignore_result": self.ignore_result,
                "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {},
            });
            let embed = json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null});
            (headers, json!([args, kwargs, embed]))
        };

        let mut properties = Map::new();
        properties.insert("correlation_id".into(), json!(id));
        properties.insert("reply_to".into(), json!(reply_to));
        properties.insert("delivery_mode".into(), json!(2));
        if let Some(expires) = self.expires {
            // kombu: str(int(seconds * 1000)), "0" once already past.
            let ms = (expires - now).num_milliseconds().max(0);
            properties.insert("expiration".into(), json!(ms.to_string()));
        }
        properties.insert(
            "delivery_info".into(),
            json!({"exchange": "", "routing_key": queue}),
        );
        properties.insert("priority".into(), json!(self.priority.min(9)));
        properties.insert("body_encoding".into(), json!("base64"));
        properties.insert("delivery_tag".into(), json!(delivery_tag));

        let body = base64::engine::general_purpose::STANDARD.encode(pyjson::to_string(&body));
        let envelope = json!({
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": Value::Object(properties),
        });
        pyjson::to_string(&envelope)
    }
}

/// Time limits as Python clients usually pass them: whole seconds are ints.
fn seconds_value(limit: Option<f64>) -> Value {
    match limit {
        Some(s) if s.fract() == 0.0 && s.abs() < 1e15 => json!(s as i64),
        Some(s) => serde_json::Number::from_f64(s).map_or(Value::Null, Value::Number),
        None => Value::Null,
    }
}

/// This machine's host name (`socket.gethostname()`), `localhost` if unknown.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_fixture;
    use chrono::TimeZone;

    const TASK_FIXTURES: &[&str] = &[
        "task-v1-basic.json",
        "task-v1-expires-timelimit-custom-header.json",
        "task-v2-chain-first.json",
        "task-v2-chain-next-sent-by-worker.json",
        "task-v2-chord-callback-sent-by-worker.json",
        "task-v2-chord-header.json",
        "task-v2-compressed-zlib.json",
        "task-v2-countdown-expires-priority5.json",
        "task-v2-delay.json",
        "task-v2-eta.json",
        "task-v2-expires-past.json",
        "task-v2-group-member.json",
        "task-v2-ignore-result.json",
        "task-v2-link-callback-sent-by-worker.json",
        "task-v2-link-errback.json",
        "task-v2-priority9.json",
        "task-v2-restored-redelivered.json",
        "task-v2-retry-republished.json",
        "task-v2-routed-queue.json",
        "task-v2-send-task-unregistered.json",
        "task-v2-timelimit-shadow-custom-header.json",
        "task-v2-unicode.json",
    ];

    fn raw(name: &str) -> String {
        test_fixture(name)["raw"].as_str().unwrap().to_string()
    }

    #[test]
    fn stamps_are_the_stamped_headers_values() {
        let fields = |v: Value| v.as_object().cloned().unwrap();
        let stamped = fields(serde_json::json!({
            "stamped_headers": ["monitoring_id", "other", "unset"],
            "stamps": {"monitoring_id": ["a", 1], "other": "b", "unset": null, "extra": 1},
        }));
        assert_eq!(
            Value::Object(stamps_of(&stamped)),
            serde_json::json!({"monitoring_id": ["a", 1], "other": "b"})
        );
        // What every client sends when nothing is stamped.
        let plain = fields(serde_json::json!({"stamped_headers": null, "stamps": {}}));
        assert!(stamps_of(&plain).is_empty());
        for name in TASK_FIXTURES {
            let msg = TaskMessage::decode(&raw(name)).unwrap();
            assert!(msg.stamps.is_empty(), "{name}");
        }
    }

    fn opt_str(v: &Value) -> Option<String> {
        v.as_str().map(str::to_string)
    }

    /// Checks the decoded message against the fixture's `decoded` field,
    /// reading each value where the protocol puts it.
    fn check_against_decoded(name: &str) -> TaskMessage {
        let f = test_fixture(name);
        let msg = TaskMessage::decode(f["raw"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &f["decoded"];
        let (h, props) = (&d["headers"], &d["properties"]);
        let v1 = h.get("task").is_none();
        // Protocol 1 carries everything in the body, protocol 2 in the headers.
        let src = if v1 { &d["body"] } else { h };
        let (args, kwargs, embed) = if v1 {
            (&d["body"]["args"], &d["body"]["kwargs"], &d["body"])
        } else {
            (&d["body"][0], &d["body"][1], &d["body"][2])
        };
        assert_eq!(msg.protocol, if v1 { 1 } else { 2 }, "{name}");
        assert_eq!(msg.id, src["id"].as_str().unwrap(), "{name}");
        assert_eq!(msg.task, src["task"].as_str().unwrap(), "{name}");
        assert_eq!(&Value::Array(msg.args.clone()), args, "{name}");
        assert_eq!(&Value::Object(msg.kwargs.clone()), kwargs, "{name}");
        assert_eq!(
            msg.retries as u64,
            src["retries"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            msg.eta,
            src["eta"].as_str().map(|s| parse_iso(s).unwrap()),
            "{name}"
        );
        assert_eq!(
            msg.expires,
            src["expires"].as_str().map(|s| parse_iso(s).unwrap()),
            "{name}"
        );
        assert_eq!(msg.time_limit, src["timelimit"][0].as_f64(), "{name}");
        assert_eq!(msg.soft_time_limit, src["timelimit"][1].as_f64(), "{name}");
        assert_eq!(msg.group, opt_str(&src["group"]), "{name}");
        assert_eq!(msg.group_index, src["group_index"].as_i64(), "{name}");
        assert_eq!(msg.root_id, opt_str(&h["root_id"]), "{name}");
        assert_eq!(msg.parent_id, opt_str(&h["parent_id"]), "{name}");
        assert_eq!(msg.shadow, opt_str(&h["shadow"]), "{name}");
        assert_eq!(msg.origin, opt_str(&h["origin"]), "{name}");
        assert_eq!(
            msg.ignore_result,
            h["ignore_result"].as_bool().unwrap_or(false),
            "{name}"
        );
        if !v1 {
            assert_eq!(msg.argsrepr, h["argsrepr"].as_str().unwrap(), "{name}");
            assert_eq!(msg.kwargsrepr, h["kwargsrepr"].as_str().unwrap(), "{name}");
            // Our synthesised reprs must agree with what Celery wrote.
            assert_eq!(args_repr(&msg.args), msg.argsrepr, "{name}");
            assert_eq!(kwargs_repr(&msg.kwargs), msg.kwargsrepr, "{name}");
            assert_eq!(msg.chain, embed["chain"], "{name}");
        } else {
            assert_eq!(msg.chain, Value::Null);
        }
        assert_eq!(msg.callbacks, embed["callbacks"], "{name}");
        assert_eq!(msg.errbacks, embed["errbacks"], "{name}");
        assert_eq!(msg.chord, embed["chord"], "{name}");
        let di = &props["delivery_info"];
        assert_eq!(
            msg.delivery_info.exchange,
            di["exchange"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            msg.delivery_info.routing_key,
            di["routing_key"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            msg.delivery_info.priority as u64,
            props["priority"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            msg.delivery_info.redelivered,
            h["redelivered"].as_bool().unwrap_or(false)
                || di["redelivered"].as_bool().unwrap_or(false),
            "{name}"
        );
        assert_eq!(msg.delivery_tag, opt_str(&props["delivery_tag"]), "{name}");
        msg
    }

    #[test]
    fn every_task_fixture_decodes() {
        for name in TASK_FIXTURES {
            check_against_decoded(name);
        }
    }

    #[test]
    fn fixture_specifics() {
        let m = check_against_decoded("task-v2-delay.json");
        assert_eq!(
            (m.id.as_str(), m.task.as_str()),
            ("6676bcc6-64a3-4d37-899a-9c65e3ec65be", "proj.add")
        );
        assert_eq!(m.args, vec![json!(2), json!(3)]);
        assert_eq!(m.display_name(), "proj.add");

        let m = check_against_decoded("task-v2-countdown-expires-priority5.json");
        assert_eq!(
            m.eta,
            Some(
                Utc.with_ymd_and_hms(2026, 11, 23, 23, 33, 22).unwrap()
                    + chrono::Duration::microseconds(982474)
            )
        );
        assert!(m.expires.is_some());
        assert_eq!(m.delivery_info.priority, 5);
        assert_eq!(m.kwargs["y"], 10);

        let m = check_against_decoded("task-v2-eta.json");
        assert_eq!(
            m.eta,
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap())
        );

        let m = check_against_decoded("task-v2-timelimit-shadow-custom-header.json");
        assert_eq!((m.time_limit, m.soft_time_limit), (Some(10.0), Some(5.0)));
        assert_eq!(m.display_name(), "add-shadow");

        let m = check_against_decoded("task-v1-expires-timelimit-custom-header.json");
        assert_eq!((m.time_limit, m.soft_time_limit), (Some(10.0), Some(5.0)));
        assert_eq!(m.protocol, 1);

        let m = check_against_decoded("task-v1-basic.json");
        assert_eq!(m.argsrepr, "(3, 4)");
        assert_eq!(m.kwargsrepr, "{}");
        assert_eq!(m.root_id, None);

        assert!(
            check_against_decoded("task-v2-restored-redelivered.json")
                .delivery_info
                .redelivered
        );
        assert!(
            !check_against_decoded("task-v2-delay.json")
                .delivery_info
                .redelivered
        );
        assert!(check_against_decoded("task-v2-ignore-result.json").ignore_result);
        assert!(!check_against_decoded("task-v2-send-task-unregistered.json").ignore_result);
        assert_eq!(
            check_against_decoded("task-v2-priority9.json")
                .delivery_info
                .priority,
            9
        );
        assert_eq!(
            check_against_decoded("task-v2-routed-queue.json")
                .delivery_info
                .routing_key,
            "hipri"
        );
        assert_eq!(
            check_against_decoded("task-v2-group-member.json").group_index,
            Some(0)
        );
        assert_eq!(
            check_against_decoded("task-v2-retry-republished.json").retries,
            1
        );
        assert_eq!(
            check_against_decoded("task-v2-compressed-zlib.json").args,
            vec![json!(1), json!(2)]
        );
        let m = check_against_decoded("task-v2-unicode.json");
        assert_eq!(m.args, vec![json!("h\u{e9}llo \u{2603} \u{2028} \"q\"")]);
    }

    /// Replaces the base64 body of a fixture envelope with `body` (plain text).
    fn with_body(raw: &str, body: &str, content_type: &str) -> String {
        let mut env: Value = serde_json::from_str(raw).unwrap();
        env["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
        env["content-type"] = json!(content_type);
        pyjson::to_string(&env)
    }

    #[test]
    fn rejects_other_content_types_without_decoding() {
        let r = with_body(
            &raw("task-v2-delay.json"),
            "\u{80}\u{3}not pickle",
            "application/x-python-serialize",
        );
        let e = TaskMessage::decode(&r).unwrap_err();
        assert_eq!(
            e.reason,
            "content type 'application/x-python-serialize' is not accepted (only application/json)"
        );
        assert_eq!(
            e.task_id.as_deref(),
            Some("6676bcc6-64a3-4d37-899a-9c65e3ec65be")
        );
        assert_eq!(e.task.as_deref(), Some("proj.add"));
        assert!(TaskMessage::decode(&with_body(
            &raw("task-v2-delay.json"),
            "[[], {}, {}]",
            "application/json; charset=utf-8"
        ))
        .is_ok());
    }

    #[test]
    fn bad_bodies_are_decode_errors_with_ids() {
        let base = raw("task-v2-delay.json");
        for (body, needle) in [
            ("{not json", "not valid JSON"),
            ("{\"a\": 1}", "not a list"),
            ("[1, {}, {}]", "args is not a list"),
            ("[[], [], {}]", "kwargs is not an object"),
            ("[[], {}, 5]", "embed"),
            ("[[]]", "expected [args, kwargs, embed]"),
        ] {
            let e = TaskMessage::decode(&with_body(&base, body, "application/json")).unwrap_err();
            assert!(e.reason.contains(needle), "{body}: {}", e.reason);
            assert_eq!(
                e.task_id.as_deref(),
                Some("6676bcc6-64a3-4d37-899a-9c65e3ec65be"),
                "{body}"
            );
            assert_eq!(e.task.as_deref(), Some("proj.add"));
        }
        // Protocol 1 body errors report the ids found in the body.
        let v1 = raw("task-v1-basic.json");
        let e = TaskMessage::decode(&with_body(
            &v1,
            r#"{"task": "proj.add", "id": "x1", "args": 3}"#,
            "application/json",
        ))
        .unwrap_err();
        assert!(e.reason.contains("args is not a list"), "{}", e.reason);
        assert_eq!(
            (e.task_id.as_deref(), e.task.as_deref()),
            (Some("x1"), Some("proj.add"))
        );
        let e = TaskMessage::decode(&with_body(&v1, r#"{"id": "x2"}"#, "application/json"))
            .unwrap_err();
        assert!(e.reason.contains("unknown message"), "{}", e.reason);
        assert_eq!(e.task_id.as_deref(), Some("x2"));
        let e = TaskMessage::decode(&with_body(&v1, r#"[[], {}, {}]"#, "application/json"))
            .unwrap_err();
        assert!(e.reason.contains("unknown message"), "{}", e.reason);
        let e = TaskMessage::decode(&with_body(
            &v1,
            r#"{"task": "proj.add"}"#,
            "application/json",
        ))
        .unwrap_err();
        assert_eq!(e.reason, "message has no task id");
        assert_eq!(e.task.as_deref(), Some("proj.add"));
    }

    #[test]
    fn bad_headers_and_envelopes() {
        let mut env: Value = serde_json::from_str(&raw("task-v2-delay.json")).unwrap();
        env["headers"]["eta"] = json!("tomorrow");
        let e = TaskMessage::decode(&pyjson::to_string(&env)).unwrap_err();
        assert!(e.reason.contains("invalid eta"), "{}", e.reason);
        assert_eq!(
            e.task_id.as_deref(),
            Some("6676bcc6-64a3-4d37-899a-9c65e3ec65be")
        );

        env["headers"]["eta"] = Value::Null;
        env["headers"].as_object_mut().unwrap().remove("id");
        let e = TaskMessage::decode(&pyjson::to_string(&env)).unwrap_err();
        assert_eq!(e.reason, "message has no task id");
        assert_eq!(e.task.as_deref(), Some("proj.add"));

        let mut env: Value = serde_json::from_str(&raw("task-v2-delay.json")).unwrap();
        env["body"] = json!("%%%");
        let e = TaskMessage::decode(&pyjson::to_string(&env)).unwrap_err();
        assert!(e.reason.contains("base64"), "{}", e.reason);
        assert_eq!(e.task.as_deref(), Some("proj.add"));

        let e = TaskMessage::decode("garbage").unwrap_err();
        assert_eq!((e.task_id, e.task), (None, None));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_their_ids() {
        // A Latin-1 byte in a header string: the JSON is intact otherwise.
        let text = raw("task-v2-delay.json");
        let at = text.find("\"argsrepr\": \"").unwrap() + 13;
        let mut bytes = text.into_bytes();
        bytes.insert(at, 0xe9);
        let e = TaskMessage::decode_bytes(&bytes).unwrap_err();
        assert!(
            e.reason
                .starts_with("message is not valid UTF-8: invalid utf-8 sequence"),
            "{}",
            e.reason
        );
        assert_eq!(
            e.task_id.as_deref(),
            Some("6676bcc6-64a3-4d37-899a-9c65e3ec65be")
        );
        assert_eq!(e.task.as_deref(), Some("proj.add"));
        let e = TaskMessage::decode_bytes(b"\xc3\x28").unwrap_err();
        assert_eq!((e.task_id, e.task), (None, None));
        assert_eq!(
            TaskMessage::decode_bytes(raw("task-v2-delay.json").as_bytes()).unwrap(),
            TaskMessage::decode(&raw("task-v2-delay.json")).unwrap()
        );
    }

    #[test]
    fn an_oversized_body_is_a_decode_error_with_its_ids() {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"[[").unwrap();
        enc.write_all(&vec![b' '; super::super::envelope::MAX_BODY_BYTES])
            .unwrap();
        enc.write_all(b"], {}, {}]").unwrap();
        let mut env: Value = serde_json::from_str(&raw("task-v2-delay.json")).unwrap();
        env["body"] =
            json!(base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap()));
        env["headers"]["compression"] = json!("application/x-gzip");
        let e = TaskMessage::decode(&pyjson::to_string(&env)).unwrap_err();
        assert!(e.reason.contains("larger than 64 MiB"), "{}", e.reason);
        assert_eq!(
            e.task_id.as_deref(),
            Some("6676bcc6-64a3-4d37-899a-9c65e3ec65be")
        );
    }

    /// Found by `protocol::fuzz`: without serde_json's `float_roundtrip`, a
    /// float a Python client sends could arrive one bit off.
    #[test]
    fn floats_round_trip_exactly() {
        let x = 1.784_212_315_159_837_3e-40_f64;
        let t = NewTask {
            task: "t".into(),
            args: vec![json!(x)],
            soft_time_limit: Some(x),
            ..Default::default()
        };
        let m = TaskMessage::decode(&t.encode()).unwrap();
        assert_eq!(m.args[0].as_f64(), Some(x));
        assert_eq!(m.soft_time_limit, Some(x));
    }

    #[test]
    fn lenient_fields() {
        // Priority clamps, redelivered from delivery_info, null/absent headers.
        let raw = r#"{"body": "[[1], {\"k\": \"v\"}]", "content-type": "application/json",
            "headers": {"task": "t", "id": "i", "timelimit": null, "retries": null, "ignore_result": null},
            "properties": {"priority": 42, "delivery_info": {"exchange": "ex", "routing_key": "rk", "redelivered": true}}}"#;
        let m = TaskMessage::decode(raw).unwrap();
        assert_eq!(
            m.delivery_info,
            DeliveryInfo {
                exchange: "ex".into(),
                routing_key: "rk".into(),
                priority: 9,
                redelivered: true
            }
        );
        assert_eq!((m.retries, m.time_limit, m.ignore_result), (0, None, false));
        assert_eq!(
            (m.argsrepr.as_str(), m.kwargsrepr.as_str()),
            ("(1,)", "{'k': 'v'}")
        );
        assert_eq!(
            (m.callbacks.clone(), m.chord.clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(m.delivery_tag, None);
        let raw = raw.replace("42", "-3");
        assert_eq!(TaskMessage::decode(&raw).unwrap().delivery_info.priority, 0);
        // Naive and `Z` timestamps are UTC.
        let raw = r#"{"body": "[[], {}, {}]", "headers": {"task": "t", "id": "i", "eta": "2030-01-01T12:00:00", "expires": "2030-01-01T13:00:00Z"}}"#;
        let m = TaskMessage::decode(raw).unwrap();
        assert_eq!(
            m.eta,
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap())
        );
        assert_eq!(
            m.expires,
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 13, 0, 0).unwrap())
        );
    }

    /// Puts the fixture's values for the fields that vary per publish into our
    /// output, so what remains must match Celery's bytes exactly.
    fn fix_varying(ours: &str, theirs: &str, keys: &[(&str, &str)]) -> String {
        let a: Value = serde_json::from_str(ours).unwrap();
        let b: Value = serde_json::from_str(theirs).unwrap();
        let mut out = ours.to_string();
        for (section, key) in keys {
            let mine = a[section][key].as_str().unwrap();
            let want = b[section][key].as_str().unwrap();
            out = out.replace(
                &format!("\"{key}\": \"{mine}\""),
                &format!("\"{key}\": \"{want}\""),
            );
        }
        out
    }

    #[test]
    fn encode_v2_matches_celery_bytes() {
        let theirs = raw("task-v2-delay.json");
        let t = NewTask {
            task: "proj.add".into(),
            id: "6676bcc6-64a3-4d37-899a-9c65e3ec65be".into(),
            args: vec![json!(2), json!(3)],
            queue: "celery".into(),
            ..Default::default()
        };
        let ours = t.encode();
        let a: Value = serde_json::from_str(&ours).unwrap();
        assert!(a["headers"]["origin"]
            .as_str()
            .unwrap()
            .starts_with(&format!("gen{}@", std::process::id())));
        assert!(uuid::Uuid::parse_str(a["properties"]["reply_to"].as_str().unwrap()).is_ok());
        assert!(uuid::Uuid::parse_str(a["properties"]["delivery_tag"].as_str().unwrap()).is_ok());
        let fixed = fix_varying(
            &ours,
            &theirs,
            &[
                ("headers", "origin"),
                ("properties", "reply_to"),
                ("properties", "delivery_tag"),
            ],
        );
        assert_eq!(fixed, theirs);
        // Fresh delivery tag on every encode.
        assert_ne!(
            serde_json::from_str::<Value>(&t.encode()).unwrap()["properties"]["delivery_tag"],
            a["properties"]["delivery_tag"]
        );
    }

    #[test]
    fn encode_v2_options_match_celery_bytes() {
        let f = test_fixture("task-v2-countdown-expires-priority5.json");
        let theirs = f["raw"].as_str().unwrap();
        let h = &f["decoded"]["headers"];
        let eta = parse_iso(h["eta"].as_str().unwrap()).unwrap();
        let expires = parse_iso(h["expires"].as_str().unwrap()).unwrap();
        let t = NewTask {
            task: "proj.add".into(),
            id: "6b8ffc36-0280-4e1f-98d1-c37abc589685".into(),
            args: vec![json!(1)],
            kwargs: json!({"y": 10}).as_object().unwrap().clone(),
            queue: "celery".into(),
            priority: 5,
            eta: Some(eta),
            expires: Some(expires),
            ..Default::default()
        };
        // The client computed expiration 600 s before expires.
        let ours = t.encode_with(
            expires - chrono::Duration::seconds(600),
            "gen4766@vm",
            "17184614-4616-3301-9179-6558f3536692",
            "baf92875-8b50-401f-b218-979889902b0b",
        );
        assert_eq!(ours, theirs);

        let f = test_fixture("task-v2-timelimit-shadow-custom-header.json");
        let t = NewTask {
            task: "proj.add".into(),
            id: "x".into(),
            time_limit: Some(10.0),
            soft_time_limit: Some(5.0),
            ignore_result: true,
            ..Default::default()
        };
        let a: Value = serde_json::from_str(&t.encode()).unwrap();
        assert_eq!(
            a["headers"]["timelimit"],
            f["decoded"]["headers"]["timelimit"]
        );
        assert_eq!(pyjson::to_string(&a["headers"]["timelimit"]), "[10, 5]");
        assert_eq!(a["headers"]["ignore_result"], true);
        assert_eq!(a["properties"]["delivery_info"]["routing_key"], "celery");
    }

    #[test]
    fn encode_v1_matches_celery_bytes() {
        let theirs = raw("task-v1-basic.json");
        let t = NewTask {
            task: "proj.add".into(),
            id: "62469c7e-25af-4d2f-a0d2-88ec3d415e5d".into(),
            args: vec![json!(3), json!(4)],
            queue: "celery".into(),
            protocol1: true,
            ..Default::default()
        };
        let fixed = fix_varying(
            &t.encode(),
            &theirs,
            &[("properties", "reply_to"), ("properties", "delivery_tag")],
        );
        assert_eq!(fixed, theirs);
    }

    #[test]
    fn encode_decode_round_trip() {
        for protocol1 in [false, true] {
            let t = NewTask {
                task: "proj.unicode_echo".into(),
                id: String::new(),
                args: vec![json!("h\u{e9}llo \u{1F600}"), json!(1.5), json!(null)],
                kwargs: json!({"a": [1, {"b": true}]}).as_object().unwrap().clone(),
                queue: "hipri".into(),
                priority: 6,
                eta: Some(Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()),
                expires: Some(
                    Utc.with_ymd_and_hms(2030, 1, 2, 12, 0, 0).unwrap()
                        + chrono::Duration::microseconds(5),
                ),
                time_limit: Some(2.5),
                soft_time_limit: None,
                ignore_result: !protocol1,
                protocol1,
            };
            let raw = t.encode();
            assert!(raw.is_ascii());
            let m = TaskMessage::decode(&raw).unwrap();
            assert_eq!(m.protocol, if protocol1 { 1 } else { 2 });
            assert!(uuid::Uuid::parse_str(&m.id).is_ok());
            assert_eq!(m.task, t.task);
            assert_eq!(m.args, t.args);
            assert_eq!(m.kwargs, t.kwargs);
            assert_eq!((m.eta, m.expires), (t.eta, t.expires));
            assert_eq!((m.time_limit, m.soft_time_limit), (Some(2.5), None));
            assert_eq!(m.ignore_result, t.ignore_result);
            assert_eq!(m.delivery_info.priority, 6);
            assert_eq!(m.delivery_info.routing_key, "hipri");
            assert_eq!(m.argsrepr, "('h\u{e9}llo \u{1F600}', 1.5, None)");
            assert_eq!(m.kwargsrepr, "{'a': [1, {'b': True}]}");
            assert_eq!(m.retries, 0);
            if !protocol1 {
                assert_eq!(m.root_id.as_deref(), Some(m.id.as_str()));
                assert!(m.origin.is_some());
            }
        }
    }
}
