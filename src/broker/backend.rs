//! Result backend writes as Celery's Redis backend does them: never overwrite
//! a stored SUCCESS, then SETEX (or SET) and PUBLISH on the key's own channel
//! in one transaction, so a client blocked in `AsyncResult.get()` wakes at once.

use redis::{Connection, Script};

use super::connection::BrokerError;
use super::lua::{self, StoreArgs};

pub struct Backend {
    store: Script,
    /// `result_expires` in seconds; `None` stores without expiry.
    expires: Option<u64>,
}

impl Backend {
    pub fn new(expires: Option<u64>) -> Backend {
        Backend {
            store: lua::store(),
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
        let args = StoreArgs {
            task_id,
            meta: meta_json,
            expires: self.expires.unwrap_or(0),
        };
        let stored: i64 = args.invocation(&self.store).invoke(con)?;
        Ok(stored == 1)
    }
}
