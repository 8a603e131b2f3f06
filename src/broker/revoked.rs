//! Revoked task ids, kept in Redis (`keys::REVOKED`, id → expiry) rather
//! than in a process's memory: every node sees a revoke, including one
//! started after it, and it survives restarts. Entries live Celery's 3 hours
//! (`REVOKES_MAX_AGE`); the set is trimmed on every write. The reserving
//! script checks the id of each message it hands out against the same set
//! (`lua/next.lua`), so a revoked message is never run.

use redis::{Connection, Script};

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
        let args = RevokeAddArgs {
            until: now + REVOKES_MAX_AGE,
            now,
            max_size: REVOKES_MAX,
            ids,
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
