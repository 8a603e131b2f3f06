//! The ETA messages one node parked (`inspect scheduled`).
//!
//! Parked messages live in `rmulti.eta` / `rmulti.eta.messages` for every
//! node; `park.lua` also adds the tag to `rmulti.eta.node.<node>`. Promotion
//! (`next.lua`) does not touch that set: tags gone from the park are pruned
//! here, when the set is read, so the hot path stays as it was.

use redis::Connection;

use super::keys;
use super::BrokerError;

/// One parked message: its tag, due time (Unix seconds) and raw envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub tag: String,
    pub due: f64,
    pub raw: String,
}

/// At most this many are listed (a reply must stay a reasonable message).
const MAX_LISTED: usize = 1000;

/// The messages `node` parked that are still parked, soonest first.
pub fn parked_by(con: &mut Connection, node: &str) -> Result<Vec<Parked>, BrokerError> {
    let set = keys::eta_parked_by(node);
    let tags: Vec<String> = redis::cmd("SMEMBERS").arg(&set).query(con)?;
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let (entries, dues): (Vec<Option<String>>, Vec<Option<f64>>) = redis::pipe()
        .cmd("HMGET")
        .arg(keys::ETA_MESSAGES)
        .arg(&tags)
        .cmd("ZMSCORE")
        .arg(keys::ETA_INDEX)
        .arg(&tags)
        .query(con)?;
    let mut gone = Vec::new();
    let mut found = Vec::new();
    for ((tag, entry), due) in tags.into_iter().zip(entries).zip(dues) {
        match (entry, due) {
            (Some(entry), Some(due)) => {
                let raw = entry
                    .split_once('\n')
                    .map_or(entry.as_str(), |(_, raw)| raw);
                found.push(Parked {
                    raw: raw.to_string(),
                    tag,
                    due,
                });
            }
            _ => gone.push(tag),
        }
    }
    if !gone.is_empty() {
        let _: i64 = redis::cmd("SREM").arg(&set).arg(&gone).query(con)?;
    }
    found.sort_by(|a, b| a.due.total_cmp(&b.due));
    found.truncate(MAX_LISTED);
    Ok(found)
}
