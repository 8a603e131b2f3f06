//! Revoked task ids, kept in Redis (`keys::REVOKED`, id → expiry) rather
//! than in a process's memory: every node sees a revoke, including one
//! started after it, and it survives restarts. Entries live Celery's 3 hours
//! (`REVOKES_MAX_AGE`); the set is trimmed on every write. The reserving
//! script checks the id of each message it hands out against the same set
//! (`is_revoked_fn`), so a revoked message is never run.

use redis::{Connection, Script};

use super::backend::STORE_RESULT_FN;
use super::connection::BrokerError;
use super::keys;

/// Celery's `REVOKES_MAX` and `REVOKE_EXPIRES` (`celery.worker.state`).
pub const REVOKES_MAX: usize = 50_000;
pub const REVOKES_MAX_AGE: f64 = 3.0 * 3600.0;

/// Lua: `is_revoked(id, now)`, whether `id` is revoked at `now` (POSIX
/// seconds). For scripts that reserve messages.
pub fn is_revoked_fn() -> String {
    format!(
        r#"
local function is_revoked(id, now)
  local until_ = redis.call('ZSCORE', '{}', id)
  return until_ ~= false and until_ ~= nil and tonumber(until_) > tonumber(now)
end
"#,
        keys::REVOKED
    )
}

// KEYS[1] the revoked set; ARGV 1 expiry, 2 now, 3 max size, 4.. ids.
const ADD: &str = r#"
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
return 1
"#;

// Celery 5.7's revoke command: REVOKED is stored for an id unless its stored
// state is ready or was set by a worker that started it — i.e. only when
// there is none, or it is PENDING, RECEIVED, RETRY or REJECTED.
// KEYS[1] result key; ARGV 1 meta, 2 expiry seconds (0 none).
const MARK: &str = r#"
local old = redis.call('GET', KEYS[1])
if old then
  local ok, meta = pcall(cjson.decode, old)
  local status = ok and type(meta) == 'table' and meta['status'] or nil
  if status ~= 'PENDING' and status ~= 'RECEIVED' and status ~= 'RETRY' and status ~= 'REJECTED' then
    return 0
  end
end
return store_result(KEYS[1], ARGV[1], ARGV[2])
"#;

/// The revoked set's Redis side.
pub struct Revoked {
    add: Script,
    mark: Script,
}

impl Default for Revoked {
    fn default() -> Self {
        Revoked {
            add: Script::new(ADD),
            mark: Script::new(&format!("{STORE_RESULT_FN}{MARK}")),
        }
    }
}

impl Revoked {
    /// Adds `ids` (revoked from `now` for `REVOKES_MAX_AGE`), dropping expired
    /// entries and the oldest beyond `REVOKES_MAX`.
    pub fn add(&self, con: &mut Connection, ids: &[String], now: f64) -> Result<(), BrokerError> {
        let mut inv = self.add.prepare_invoke();
        inv.key(keys::REVOKED)
            .arg(format!("{:.6}", now + REVOKES_MAX_AGE))
            .arg(format!("{now:.6}"))
            .arg(REVOKES_MAX);
        for id in ids {
            inv.arg(id);
        }
        inv.invoke::<i64>(con)?;
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
        let stored: i64 = self
            .mark
            .key(keys::result_key(task_id))
            .arg(meta_json)
            .arg(expires.unwrap_or(0))
            .invoke(backend)?;
        Ok(stored == 1)
    }
}
