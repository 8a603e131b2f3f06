//! Commands whose reply is read later, so a pool child's task events ride a
//! round trip it already makes instead of adding one.
//!
//! `Connections::send_later` writes a command (a `PUBLISH` of task events)
//! and counts the reply it owes. The next use of the broker connection reads
//! the owed replies first: `Connections::broker` right away (the reply has
//! long arrived when a task ran in between), `Connections::piggyback` *after*
//! writing its own command, so the write of the next reservation is not held
//! up by them. A piggyback can also carry one command of its own in the same
//! write (the child's `GET rmulti.events.<node>`), whose reply it keeps.

use redis::{Connection, ConnectionLike, RedisResult, Value};

/// A broker connection whose next request first settles the owed replies
/// and may carry one extra command (`probe`) in front of it.
pub struct Piggyback<'a> {
    pub(super) con: &'a mut Connection,
    pub(super) owed: &'a mut usize,
    /// Packed bytes of the extra command, sent with the first request only.
    probe: Option<Vec<u8>>,
    /// The extra command's reply, once the first request was made.
    pub probe_reply: Option<Value>,
}

impl<'a> Piggyback<'a> {
    pub(super) fn new(
        con: &'a mut Connection,
        owed: &'a mut usize,
        probe: Option<Vec<u8>>,
    ) -> Piggyback<'a> {
        Piggyback {
            con,
            owed,
            probe,
            probe_reply: None,
        }
    }
}

impl ConnectionLike for Piggyback<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let owed = std::mem::take(self.owed);
        let (bytes, count) = match self.probe.take() {
            Some(mut probe) => {
                probe.extend_from_slice(cmd);
                (probe, 2)
            }
            None => (cmd.to_vec(), 1),
        };
        // Skipped replies (the owed PUBLISHes) are read and dropped.
        let mut replies = self.con.req_packed_commands(&bytes, owed, count)?;
        let last = replies.pop().unwrap_or(Value::Nil);
        if count == 2 {
            self.probe_reply = replies.pop();
        }
        Ok(last)
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
