//! Commands whose reply is read later, so a pool child's task events ride a
//! round trip it already makes instead of adding one.
//!
//! `Connections::send_later` writes a command (a `PUBLISH` of task events)
//! and counts the reply it owes. The next use of the broker connection reads
//! the owed replies first: `Connections::broker` right away (the reply has
//! long arrived when a task ran in between), `Connections::piggyback` *after*
//! writing its own command, so the write of the next reservation is not held
//! up by them.

use redis::{Connection, ConnectionLike, RedisResult, Value};

/// A broker connection whose next request settles the owed replies after
/// writing its own.
pub struct Piggyback<'a> {
    pub(super) con: &'a mut Connection,
    pub(super) owed: &'a mut usize,
}

impl<'a> Piggyback<'a> {
    pub(super) fn new(con: &'a mut Connection, owed: &'a mut usize) -> Piggyback<'a> {
        Piggyback { con, owed }
    }
}

impl ConnectionLike for Piggyback<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let owed = std::mem::take(self.owed);
        // Skipped replies (the owed PUBLISHes) are read and dropped.
        let mut replies = self.con.req_packed_commands(cmd, owed, 1)?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let owed = std::mem::take(self.owed);
        self.con.req_packed_commands(cmd, offset + owed, count)
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.con.check_connection()
    }

    fn is_open(&self) -> bool {
        self.con.is_open()
    }
}
