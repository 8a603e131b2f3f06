//! kombu's visibility-timeout restore: messages sitting in `unacked` longer
//! than `visibility_timeout` belong to a consumer that died; put them back on
//! their queues, marked redelivered. Run under kombu's `unacked_mutex`, so
//! rmulti nodes and Python workers sweeping the same Redis never race.

use redis::Connection;
use serde_json::Value;

use super::connection::BrokerError;
use super::keys;
use super::reserve::now_secs;
use crate::protocol::envelope::{base64_of, redelivered};
use crate::protocol::pyjson;

/// How long the mutex is held at most (kombu's value).
const MUTEX_TTL_MS: u64 = 300_000;

/// Restores every `unacked` entry older than `visibility_timeout` seconds.
/// Returns how many messages went back to a queue (0 if another sweeper
/// holds the mutex).
pub fn restore_expired(
    con: &mut Connection,
    visibility_timeout: u64,
) -> Result<usize, BrokerError> {
    let token = uuid::Uuid::new_v4().to_string();
    let locked: Option<String> = redis::cmd("SET")
        .arg(keys::UNACKED_MUTEX)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(MUTEX_TTL_MS)
        .query(con)?;
    if locked.is_none() {
        return Ok(0);
    }
    let result = restore_locked(con, visibility_timeout);
    let _: i64 = super::lua::release_if_owner()
        .key(keys::UNACKED_MUTEX)
        .arg(&token)
        .invoke(con)?;
    result
}

fn restore_locked(con: &mut Connection, visibility_timeout: u64) -> Result<usize, BrokerError> {
    let ceiling = now_secs() - visibility_timeout as f64;
    let tags: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys::UNACKED_INDEX)
        .arg("-inf")
        .arg(format!("{ceiling:.6}"))
        .query(con)?;
    let mut restored = 0;
    for tag in tags {
        // Any write to `unacked` (an ack, a reservation by any consumer)
        // voids the transaction; try again, as redis-py's `transaction()`
        // does for kombu. Giving up at once would skip the entry until the
        // next sweep, and on a busy queue at every sweep.
        for _ in 0..MAX_ATTEMPTS {
            if let Some(moved) = restore_one(con, &tag)? {
                restored += usize::from(moved);
                break;
            }
        }
    }
    Ok(restored)
}

/// How often one entry's restore is tried when other writes keep voiding it
/// (each try is one round trip; the rest waits for the next sweep).
const MAX_ATTEMPTS: usize = 100;

/// Restores (or dead-letters) the `unacked` entry of `tag`, in one
/// WATCH/MULTI/EXEC as kombu does. `None`: `unacked` changed meanwhile and
/// nothing was done; `Some(true)`: the message went back to its queue.
fn restore_one(con: &mut Connection, tag: &[u8]) -> Result<Option<bool>, BrokerError> {
    redis::cmd("WATCH").arg(keys::UNACKED).query::<()>(con)?;
    // Bytes: one entry that is not UTF-8 must not fail every sweep.
    let entry: Option<Vec<u8>> = redis::cmd("HGET").arg(keys::UNACKED).arg(tag).query(con)?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("ZREM").arg(keys::UNACKED_INDEX).arg(tag).ignore();
    pipe.cmd("HDEL").arg(keys::UNACKED).arg(tag).ignore();
    let target = entry
        .as_deref()
        .and_then(|e| std::str::from_utf8(e).ok())
        .and_then(restorable);
    match (&target, &entry) {
        (Some((queue_key, envelope)), _) => {
            pipe.cmd("RPUSH").arg(queue_key).arg(envelope).ignore();
        }
        // Not routable: keep it for the operator rather than drop it.
        (None, Some(raw)) => {
            let mut record = serde_json::json!({
                "reason": "unacked entry past the visibility timeout could not be restored",
                "message": String::from_utf8_lossy(raw),
                "unix_time": now_secs(),
            });
            if std::str::from_utf8(raw).is_err() {
                record["message_base64"] = base64_of(raw).into();
            }
            pipe.cmd("LPUSH")
                .arg(keys::DEAD_LETTER)
                .arg(pyjson::to_string(&record))
                .ignore();
        }
        (None, None) => {}
    }
    let done: Option<()> = pipe.query(con)?;
    Ok(done.map(|()| target.is_some()))
}

/// From an `unacked` value `[envelope, exchange, routing_key]`: the list to
/// push to and the envelope marked redelivered.
fn restorable(entry: &str) -> Option<(String, String)> {
    let parsed: Value = serde_json::from_str(entry).ok()?;
    let envelope = parsed.get(0)?.clone();
    let routing_key = parsed
        .get(2)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?
        .to_string();
    let priority = envelope
        .get("properties")
        .and_then(|p| p.get("priority"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(9) as u8;
    Some((
        keys::priority_key(&routing_key, priority),
        redelivered(envelope),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restorable_marks_redelivered_and_routes_by_priority() {
        let entry = r#"[{"body": "e30=", "headers": {"task": "t"}, "properties": {"priority": 5, "delivery_info": {"exchange": "", "routing_key": "celery"}, "delivery_tag": "x"}}, "", "celery"]"#;
        let (key, env) = restorable(entry).unwrap();
        assert_eq!(key, "celery\x06\x163");
        assert!(
            env.contains("\"redelivered\": true}, \"properties\""),
            "{env}"
        );
        assert!(
            env.contains("\"routing_key\": \"celery\", \"redelivered\": true}"),
            "{env}"
        );
        assert!(restorable("[]").is_none());
        assert!(restorable("nonsense").is_none());
    }
}
