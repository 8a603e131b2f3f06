//! Task messages built by hand in the exact shape Celery 5.7 sends
//! (`fixtures/celery-5.7/task-v2-delay.json`), and publishing them as kombu
//! does.

use base64::Engine as _;
use serde_json::{json, Value};

use super::redis::{RedisServer, BROKER_DB};
use super::resp::Resp;

/// Builds a protocol-2 task envelope in the exact shape of
/// `fixtures/celery-5.7/task-v2-delay.json` (`add.delay(2, 3)`), key order
/// included. Returns `(task_id, envelope)`; tests may edit the envelope
/// before [`publish_raw`].
pub fn task_envelope(queue: &str, name: &str, args: &Value, kwargs: &Value) -> (String, Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let body =
        json!([args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let body_b64 = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let envelope = json!({
        "body": body_b64,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": name,
            "id": id,
            "shadow": null,
            "eta": null,
            "expires": null,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": id,
            "parent_id": null,
            "argsrepr": py_args_repr(args),
            "kwargsrepr": "{}",
            "origin": format!("gen{}@127.0.0.1", std::process::id()),
            "ignore_result": false,
            "replaced_task_nesting": 0,
            "stamped_headers": null,
            "stamps": {}
        },
        "properties": {
            "correlation_id": id,
            "reply_to": uuid::Uuid::new_v4().to_string(),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string()
        }
    });
    (id, envelope)
}

/// Python's repr of an args tuple, near enough for `argsrepr`: `(2, 3)`, `(1,)`.
fn py_args_repr(args: &Value) -> String {
    let items: Vec<String> = match args {
        Value::Array(a) => a.iter().map(Value::to_string).collect(),
        other => vec![other.to_string()],
    };
    if items.len() == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}

/// LPUSHes raw bytes onto `queue` in the broker db, as kombu does.
pub fn publish_raw(redis: &RedisServer, queue: &str, raw: &[u8]) {
    let r = redis
        .conn(BROKER_DB)
        .cmd_bytes(&[b"LPUSH", queue.as_bytes(), raw])
        .unwrap_or_else(|e| panic!("LPUSH {queue}: {e}"));
    assert!(matches!(r, Resp::Int(_)), "LPUSH {queue}: {r:?}");
}

/// Sends task `name` with positional `args_json` (a JSON array, e.g.
/// `"[4, 4]"`) to `queue`, as `name.delay(*args)` would. Returns the task id.
pub fn publish_task(redis: &RedisServer, queue: &str, name: &str, args_json: &str) -> String {
    let args: Value =
        serde_json::from_str(args_json).unwrap_or_else(|e| panic!("args {args_json:?}: {e}"));
    let (id, envelope) = task_envelope(queue, name, &args, &json!({}));
    publish_raw(redis, queue, envelope.to_string().as_bytes());
    id
}
