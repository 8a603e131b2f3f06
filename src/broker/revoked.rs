//! Revoked task ids, kept in Redis (`keys::REVOKED`, id → expiry) rather
//! than in a process's memory: every node sees a revoke, including one
//! started after it, and it survives restarts. Entries live Celery's 3 hours
//! (`REVOKES_MAX_AGE`); the set is trimmed on every write. The reserving
//! script checks the id of each message it hands out against the same set
//! (`lua/next.lua`), so a revoked message is never run.
//!
//! Stamps revoked by `revoke_by_stamped_headers` live the same way, one set
//! per stamped header (`keys::revoked_stamp`, value as JSON → expiry). Only
//! a message that carries stamps is looked up there (`stamp_revoked`, by the
//! child after decoding), so unstamped messages pay nothing for them.

use redis::{Connection, Script};
use serde_json::{Map, Value};

use super::connection::BrokerError;
use super::keys;
use super::lua::{self, RevokeAddArgs, RevokeMarkArgs};

/// Celery's `REVOKES_MAX` and `REVOKE_EXPIRES` (`celery.worker.state`).
pub const REVOKES_MAX: usize = 50_000;
pub const REVOKES_MAX_AGE: f64 = 3.0 * 3600.0;

/// The revoked set's Redis side.
pub struct Revoked {
    add: Script,
    mark: Script,
}

impl Default for Revoked {
    fn default() -> Self {
        Revoked {
            add: lua::revoke_add(),
            mark: lua::revoke_mark(),
        }
    }
}

impl Revoked {
    /// Adds `ids` (revoked from `now` for `REVOKES_MAX_AGE`), dropping expired
    /// entries and the oldest beyond `REVOKES_MAX`.
    pub fn add(&self, con: &mut Connection, ids: &[String], now: f64) -> Result<(), BrokerError> {
        self.add_to(con, keys::REVOKED, ids, now)
    }

    /// Adds revoked stamp values, header by header, as `add` does ids: a
    /// message whose stamp under that header is one of them is not run.
    pub fn add_stamps(
        &self,
        con: &mut Connection,
        headers: &[(String, Vec<Value>)],
        now: f64,
    ) -> Result<(), BrokerError> {
        for (header, values) in headers {
            let members: Vec<String> = values.iter().map(Value::to_string).collect();
            if !members.is_empty() {
                self.add_to(con, &keys::revoked_stamp(header), &members, now)?;
            }
        }
        Ok(())
    }

    fn add_to(
        &self,
        con: &mut Connection,
        key: &str,
        members: &[String],
        now: f64,
    ) -> Result<(), BrokerError> {
        let args = RevokeAddArgs {
            key,
            until: now + REVOKES_MAX_AGE,
            now,
            max_size: REVOKES_MAX,
            ttl: REVOKES_MAX_AGE.ceil() as u64,
            members,
        };
        args.invocation(&self.add).invoke::<i64>(con)?;
        Ok(())
    }

    /// The ids revoked now, oldest first (as Celery lists them).
    pub fn list(&self, con: &mut Connection, now: f64) -> Result<Vec<String>, BrokerError> {
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(keys::REVOKED)
            .arg(format!("({now:.6}"))
            .arg("+inf")
            .query(con)?)
    }

    /// Stores `meta_json` (REVOKED) for `task_id` on the backend unless a
    /// state that is not PENDING/RECEIVED/RETRY/REJECTED is stored. Returns
    /// whether it was stored.
    pub fn mark(
        &self,
        backend: &mut Connection,
        task_id: &str,
        meta_json: &str,
        expires: Option<u64>,
    ) -> Result<bool, BrokerError> {
        let args = RevokeMarkArgs {
            task_id,
            meta: meta_json,
            expires: expires.unwrap_or(0),
        };
        let stored: i64 = args.invocation(&self.mark).invoke(backend)?;
        Ok(stored == 1)
    }
}

/// Why a message the reserving script let through is revoked after all.
#[derive(Debug, Clone, PartialEq)]
pub enum Revocation {
    /// Its id is in the revoked set.
    Id,
    /// Its stamp `(header, value)` was revoked.
    Stamp(String, Value),
}

/// Whether `id` is in the revoked set at `now` (what `next.lua` checks).
pub fn id_revoked(con: &mut Connection, id: &str, now: f64) -> Result<bool, BrokerError> {
    let until: Option<f64> = redis::cmd("ZSCORE").arg(keys::REVOKED).arg(id).query(con)?;
    Ok(until.is_some_and(|u| u > now))
}

/// The first of a message's stamps (`TaskMessage::stamps`) that is revoked
/// at `now`, as `(header, value)`: one round trip, a ZMSCORE per stamped
/// header. A stamp that is a list matches by any of its items (Celery's
/// `Request.revoked`).
pub fn stamp_revoked(
    con: &mut Connection,
    stamps: &Map<String, Value>,
    now: f64,
) -> Result<Option<(String, Value)>, BrokerError> {
    let asked: Vec<(&String, Vec<&Value>)> = stamps
        .iter()
        .map(|(header, value)| (header, stamp_values(value)))
        .filter(|(_, values)| !values.is_empty())
        .collect();
    if asked.is_empty() {
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    for (header, values) in &asked {
        pipe.cmd("ZMSCORE").arg(keys::revoked_stamp(header));
        for v in values {
            pipe.arg(v.to_string());
        }
    }
    let scores: Vec<Vec<Option<f64>>> = pipe.query(con)?;
    for ((header, values), scores) in asked.iter().zip(scores) {
        for (value, score) in values.iter().zip(scores) {
            if score.is_some_and(|until| until > now) {
                return Ok(Some(((*header).clone(), (*value).clone())));
            }
        }
    }
    Ok(None)
}

/// The values one stamp stands for: a list's items, else itself.
pub fn stamp_values(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}
