//! Result backend writes as Celery's Redis backend does them: never overwrite
//! a stored SUCCESS, then SETEX (or SET) and PUBLISH on the key's own channel
//! in one transaction, so a client blocked in `AsyncResult.get()` wakes at once.

use redis::{Connection, Script};

use super::connection::BrokerError;
use super::keys;

/// Lua: `store_result(key, meta, expires)`, the atomic form of Celery's
/// GET-then-MULTI: skip when SUCCESS is stored, else SETEX (SET when
/// `expires` is 0) and PUBLISH. Shared by every script that stores a result.
pub const STORE_RESULT_FN: &str = r#"
local function store_result(key, meta, expires)
  local old = redis.call('GET', key)
  if old and string.find(old, '"status": *"SUCCESS"') then
    return 0
  end
  if tonumber(expires) > 0 then
    redis.call('SETEX', key, expires, meta)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
  return 1
end
"#;

const STORE: &str = "return store_result(KEYS[1], ARGV[1], ARGV[2])";

pub struct Backend {
    store: Script,
    /// `result_expires` in seconds; `None` stores without expiry.
    expires: Option<u64>,
}

impl Backend {
    pub fn new(expires: Option<u64>) -> Backend {
        Backend {
            store: Script::new(&format!("{STORE_RESULT_FN}{STORE}")),
            expires,
        }
    }

    /// Stores `meta_json` for `task_id`. Returns false when a SUCCESS was
    /// already stored (a duplicate delivery must not overwrite it).
    pub fn store(
        &self,
        con: &mut Connection,
        task_id: &str,
        meta_json: &str,
    ) -> Result<bool, BrokerError> {
        let stored: i64 = self
            .store
            .key(keys::result_key(task_id))
            .arg(meta_json)
            .arg(self.expires.unwrap_or(0))
            .invoke(con)?;
        Ok(stored == 1)
    }
}
