//! What the broker and the result backend hold after a test: messages still
//! in flight, task states and failure types.

use std::time::Duration;

use serde_json::Value;

use super::poll::{wait_for, wait_until};
use super::redis::RedisServer;

/// What is still in flight in the broker db: a non-empty `unacked` or
/// `unacked_index`, non-empty held lists, slot states. Empty when every
/// message was acked.
pub fn in_flight(redis: &RedisServer) -> Vec<String> {
    let mut busy = Vec::new();
    for key in ["unacked", "unacked_index"] {
        let n = match key {
            "unacked" => redis.cmd(&["HLEN", key]).int(),
            _ => redis.cmd(&["ZCARD", key]).int(),
        };
        if n > 0 {
            busy.push(format!("{key} ({n})"));
        }
    }
    for key in redis.cmd(&["KEYS", "rmulti.held.*"]).strings() {
        if redis.cmd(&["LLEN", &key]).int() > 0 {
            busy.push(key);
        }
    }
    busy.extend(redis.cmd(&["KEYS", "rmulti.state.*"]).strings());
    busy
}

/// Waits until nothing is in flight ([`in_flight`]). A task's result is
/// stored just before its message is acked, so a test that has seen the
/// result polls for this instead of asserting at once.
pub fn wait_nothing_in_flight(redis: &RedisServer) {
    let settled = wait_until(Duration::from_secs(5), || in_flight(redis).is_empty());
    assert!(settled, "still in flight: {:?}", in_flight(redis));
}

/// Nothing of any message is left: nothing in flight ([`in_flight`]: kombu's
/// `unacked` and `unacked_index`, non-empty held lists, slot states) and the
/// default queue `celery` empty.
pub fn assert_broker_clean(redis: &RedisServer) {
    wait_nothing_in_flight(redis);
    assert_eq!(redis.cmd(&["LLEN", "celery"]).int(), 0, "queue not empty");
}

/// Waits up to 10 s for the task's STARTED meta (needs `task_track_started`).
pub fn wait_started(redis: &RedisServer, id: &str) {
    let started = wait_for(Duration::from_secs(10), || {
        redis.result(id).filter(|m| m["status"] == "STARTED")
    });
    assert!(started.is_some(), "task {id} never STARTED");
}

/// The `exc_type` of a FAILURE meta ("" when there is none).
pub fn exc_type(meta: &Value) -> &str {
    meta["result"]["exc_type"].as_str().unwrap_or_default()
}

/// Pushes `n` messages of task `task` (args `args`, each edited by `edit`)
/// onto `celery` in the broker db; returns their ids.
pub fn push_tasks(
    redis: &RedisServer,
    task: &str,
    args: &Value,
    n: usize,
    edit: impl Fn(&mut Value),
) -> Vec<String> {
    let mut con = redis.conn(super::redis::BROKER_DB);
    (0..n)
        .map(|_| {
            let (id, mut envelope) =
                super::envelope::task_envelope("celery", task, args, &serde_json::json!({}));
            edit(&mut envelope);
            let raw = envelope.to_string();
            let r = con
                .cmd_bytes(&[b"LPUSH", b"celery", raw.as_bytes()])
                .unwrap_or_else(|e| panic!("LPUSH: {e}"));
            assert!(matches!(r, super::resp::Resp::Int(_)), "LPUSH: {r:?}");
            id
        })
        .collect()
}

/// The results stored for `ids` whose status is one of `states`, by id
/// (MGET in chunks).
pub fn results_in(
    redis: &RedisServer,
    ids: &[String],
    states: &[&str],
) -> std::collections::HashMap<String, Value> {
    let mut con = redis.conn(super::redis::RESULT_DB);
    let mut found = std::collections::HashMap::new();
    for chunk in ids.chunks(200) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|id| format!("celery-task-meta-{id}"))
            .collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let reply = con.cmd_bytes(&args).unwrap_or_else(|e| panic!("MGET: {e}"));
        let super::resp::Resp::Array(Some(items)) = reply else {
            panic!("MGET: {reply:?}");
        };
        for (id, item) in chunk.iter().zip(items) {
            let Some(raw) = item.bytes() else { continue };
            let meta: Value = serde_json::from_slice(&raw)
                .unwrap_or_else(|e| panic!("result of {id} is not JSON ({e})"));
            if meta["status"].as_str().is_some_and(|s| states.contains(&s)) {
                found.insert(id.clone(), meta);
            }
        }
    }
    found
}
