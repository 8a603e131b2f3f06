//! Result backend writes as Celery's Redis backend does them: never overwrite
//! a stored SUCCESS, then SETEX (or SET) and PUBLISH on the key's own channel
//! in one transaction, so a client blocked in `AsyncResult.get()` wakes at once.

use redis::{Connection, Script};

use super::connection::BrokerError;
use super::keys;

// Atomic form of Celery's GET-then-MULTI: skip when SUCCESS is stored.
const STORE: &str = r#"
local old = redis.call('GET', KEYS[1])
if old and string.find(old, '"status": *"SUCCESS"') then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

pub struct Backend {
    store: Script,
    /// `result_expires` in seconds; `None` stores without expiry.
    expires: Option<u64>,
}

impl Backend {
    pub fn new(expires: Option<u64>) -> Backend {
        Backend {
            store: Script::new(STORE),
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
