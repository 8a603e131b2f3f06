//! One remote-control broadcast over Redis, as kombu's `Mailbox` does it:
//! bind a private reply queue, PUBLISH the request on the `celery.pidbox`
//! fanout, collect replies with our ticket until `timeout` passes with no
//! new reply (or one reply per destination), then unbind and delete the
//! reply queue. Works against Python Celery workers and rmulti nodes alike.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::broker::keys::{self, SEP};
use crate::protocol::envelope::{fanout_channel, Envelope};
use crate::protocol::pidbox::{self, NewRequest};

/// kombu's `REFRESH_BINDING`: add the member and raise the exchange's
/// deadline, so kombu's binding sweep keeps the table while we wait.
const REFRESH_BINDING: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
";
/// kombu's deadline for an expiring queue's table: max(2 × 10 s x-expires, 1 h).
const BINDING_TTL_MS: u64 = 3_600_000;
const BINDING_DEADLINES: &str = "_kombu.binding_deadlines";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Broadcast<'a> {
    pub method: &'a str,
    pub arguments: &'a Map<String, Value>,
    pub destination: Option<&'a [String]>,
    /// How long to wait for each next reply (kombu's drain timeout).
    pub timeout: Duration,
}

/// Sends `b` and returns every reply (`{"<node>": value}`) in arrival
/// order, calling `on_reply` for each as it arrives.
pub fn call(
    con: &mut redis::Connection,
    db: i64,
    b: &Broadcast,
    mut on_reply: impl FnMut(&Map<String, Value>),
) -> Result<Vec<Map<String, Value>>, ControlError> {
    let oid = uuid::Uuid::new_v4().to_string();
    let ticket = uuid::Uuid::new_v4().to_string();
    let queue = pidbox::reply_queue_name(&oid);
    let member = keys::binding_member(&oid, &queue);
    redis::Script::new(REFRESH_BINDING)
        .key(keys::binding(pidbox::REPLY_EXCHANGE))
        .key(BINDING_DEADLINES)
        .arg(&member)
        .arg(pidbox::REPLY_EXCHANGE)
        .arg(BINDING_TTL_MS)
        .invoke::<()>(con)?;
    let result = publish_and_collect(con, db, b, &oid, &ticket, &queue, &mut on_reply);
    // Leave nothing behind, even after an error (best effort, as kombu).
    let _: Result<(), _> = redis::pipe()
        .cmd("SREM")
        .arg(keys::binding(pidbox::REPLY_EXCHANGE))
        .arg(&member)
        .ignore()
        .cmd("SREM")
        .arg(keys::binding_permanent(pidbox::REPLY_EXCHANGE))
        .arg(&member)
        .ignore()
        .cmd("DEL")
        .arg(reply_keys(&queue))
        .ignore()
        .query(con);
    result
}

/// The reply queue's four priority lists, as kombu's BRPOP names them.
fn reply_keys(queue: &str) -> Vec<String> {
    keys::PRIORITY_STEPS
        .iter()
        .map(|p| match p {
            0 => queue.to_string(),
            p => format!("{queue}{SEP}{p}"),
        })
        .collect()
}

fn publish_and_collect(
    con: &mut redis::Connection,
    db: i64,
    b: &Broadcast,
    oid: &str,
    ticket: &str,
    queue: &str,
    on_reply: &mut impl FnMut(&Map<String, Value>),
) -> Result<Vec<Map<String, Value>>, ControlError> {
    let now = now_secs();
    let request = NewRequest {
        method: b.method,
        arguments: b.arguments,
        destination: b.destination,
        reply: Some((ticket, oid)),
        clock: 1,
        expires: now + b.timeout.as_secs_f64(),
        delivery_tag: &uuid::Uuid::new_v4().to_string(),
    }
    .encode();
    let channel = fanout_channel("", db, pidbox::EXCHANGE, "");
    redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(request)
        .query::<()>(con)?;
    // kombu sets the reply limit to the number of destinations.
    let limit = b.destination.map(<[String]>::len).filter(|n| *n > 0);
    let keys = reply_keys(queue);
    // BRPOP blocks up to the timeout; the socket must wait a little longer.
    con.set_read_timeout(Some(b.timeout + Duration::from_secs(2)))?;
    let mut replies = Vec::new();
    loop {
        if limit.is_some_and(|n| replies.len() >= n) {
            break;
        }
        let popped: Option<(String, String)> = redis::cmd("BRPOP")
            .arg(&keys)
            .arg(b.timeout.as_secs_f64().max(0.001))
            .query(con)?;
        let Some((_, raw)) = popped else { break };
        if let Some(reply) = accept(&raw, ticket) {
            on_reply(&reply);
            replies.push(reply);
        }
    }
    Ok(replies)
}

/// The reply's body if it answers `ticket`, has not expired and is a dict;
/// anything else (another call's reply, garbage) is skipped.
fn accept(raw: &str, ticket: &str) -> Option<Map<String, Value>> {
    let env = Envelope::parse(raw).ok()?;
    if env.headers.get("ticket").and_then(Value::as_str) != Some(ticket) {
        return None;
    }
    let expired = env
        .headers
        .get("expires")
        .and_then(Value::as_f64)
        .is_some_and(|e| e > 0.0 && now_secs() > e);
    if expired {
        return None;
    }
    match serde_json::from_slice(&env.body).ok()? {
        Value::Object(body) => Some(body),
        _ => None,
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pidbox::{Reply, ReplyTo};

    #[test]
    fn accepts_only_replies_with_our_ticket() {
        let reply_to = ReplyTo {
            exchange: pidbox::REPLY_EXCHANGE.into(),
            routing_key: "oid".into(),
        };
        let value = serde_json::json!({"ok": "pong"});
        let raw = |ticket: &str| {
            Reply {
                node_name: "w1@h",
                value: &value,
                ticket,
                clock: 1,
                reply_to: &reply_to,
                delivery_tag: "d",
            }
            .encode()
        };
        let got = accept(&raw("mine"), "mine").unwrap();
        assert_eq!(got["w1@h"], value);
        assert!(accept(&raw("other"), "mine").is_none());
        assert!(accept("garbage", "mine").is_none());
        assert!(accept("[1]", "mine").is_none());
    }

    #[test]
    fn reply_keys_are_kombus_priority_lists() {
        assert_eq!(
            reply_keys("o.reply.celery.pidbox"),
            vec![
                "o.reply.celery.pidbox".to_string(),
                "o.reply.celery.pidbox\x06\x163".into(),
                "o.reply.celery.pidbox\x06\x166".into(),
                "o.reply.celery.pidbox\x06\x169".into(),
            ]
        );
    }
}
