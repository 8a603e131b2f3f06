//! Moving one message through Redis without ever having it only in a
//! process's memory.
//!
//! A pool child owns a *held* list (`keys::held`). Reserving moves a message
//! from a queue into the held list and records it in kombu's `unacked` hash
//! and `unacked_index` in one Lua script, so a Python worker's visibility
//! sweep can restore it too. Acking, parking (ETA), dead-lettering and
//! restoring each clear the held list in the same transaction as their own
//! write. A child killed at any instant therefore leaves its message either in
//! a queue, in its held list (picked up by the next child of that slot or by
//! the node's start-up recovery), or acknowledged after its outcome was stored.

use redis::{Connection, Script};

use super::connection::{BrokerError, BLOCK_TIMEOUT};
use super::keys::{self, Slot};
use super::lua;
use crate::protocol::{DecodeError, TaskMessage};

/// A message taken by a child.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    pub raw: String,
    /// The message's bytes when they are not UTF-8 (`raw` is then their
    /// lossy text): it cannot be a task, and is dead-lettered as it was.
    pub invalid_utf8: Option<Vec<u8>>,
    /// The list it came from; empty when it was found in the held list.
    pub source: String,
    /// It was parked for its ETA and is now due (it was received before).
    pub from_eta_park: bool,
    /// Its task had started under early ack when its child died: the outcome
    /// is to be recorded as lost, not the task run again.
    pub started: bool,
    /// Early-acked in the reserving step itself: its task runs now.
    pub acked: bool,
    /// Its task id is revoked: it is not to be run.
    pub revoked: bool,
}

impl Reserved {
    /// Its task message, or why it is none (see `TaskMessage::decode_bytes`).
    pub fn decode(&self) -> Result<TaskMessage, DecodeError> {
        match &self.invalid_utf8 {
            Some(bytes) => TaskMessage::decode_bytes(bytes),
            None => TaskMessage::decode(&self.raw),
        }
    }
}

/// What is fixed for one child's reservations: which tasks are early-acked in
/// the reserving step, the child's owner token, and where results go.
#[derive(Debug, Clone)]
pub struct Reservations {
    /// A random token of this child process, written into the `started:`
    /// state it sets, so it knows a message it reserved but never got the
    /// reply for (a lost connection) from one a dead child had started.
    pub token: String,
    /// Whether tasks ack early unless listed in `exceptions`.
    pub early_by_default: bool,
    /// Task names whose ack policy is the opposite of the default.
    pub exceptions: Vec<String>,
    /// `Some((backend db, broker db))` when the result backend is the
    /// broker's Redis server: results are then stored in the same script as
    /// the ack. `None`: a separate server, stored on its own connection.
    pub result_dbs: Option<(i64, i64)>,
    /// `result_expires` in seconds (`None`: no expiry).
    pub result_expires: Option<u64>,
    /// The node's task-events flag, read by `next.lua` with each call.
    pub events_key: String,
}

/// What `Scripts::next` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct NextReply {
    /// The message reserved, if one was.
    pub reserved: Option<Reserved>,
    /// Whether the node's task events are on.
    pub events_on: bool,
    /// Messages left on the queue the message came from.
    pub depth: usize,
}

/// The end of a handled message, done in the same script as the next
/// reservation: its result stored (if any, and if the backend is the same
/// server), and the message forgotten (acked).
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// The task id and name, for logs and the result key.
    pub task_id: String,
    pub task: String,
    /// The delivery tag; the held message is recognised by it.
    pub tag: Option<String>,
    /// The message (recognises a held message without a tag; kept in the
    /// dead-letter record when its result cannot be stored).
    pub msg: Reserved,
    /// The result meta to store first, as JSON.
    pub result: Option<String>,
    /// The message may be in kombu's `unacked` (registered, not acked
    /// since): remove it from there too.
    pub in_unacked: bool,
}

/// Messages a child reserved in one call (`batch.lua`), all acked early;
/// the batch list in Redis holds them until their batch is finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The generation the child gave it (also in Redis and in the child's
    /// progress word).
    pub gen: u32,
    pub messages: Vec<Reserved>,
}

/// The end of a batch, done with the next `batch.lua` call: the results of
/// its tasks stored, the batch forgotten.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchFinish {
    pub gen: u32,
    /// (task id, result meta JSON) of each message; `None` stores nothing.
    pub results: Vec<(String, Option<String>)>,
}

/// What `Scripts::batch` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReply {
    pub batch: Option<Batch>,
    pub events_on: bool,
}

/// What one `Scripts::batch` call is to do.
pub struct BatchCall<'a> {
    pub finish: Option<&'a BatchFinish>,
    /// Task events to publish: (channel, payload).
    pub event: Option<(&'a str, &'a str)>,
    /// The generation of the batch to reserve.
    pub gen: u32,
    /// Messages to reserve at most (0: finish only).
    pub want: usize,
    /// The node's pool size: a batch takes at most this share of the queue.
    pub share: usize,
}

/// The Lua scripts, loaded once per process (EVALSHA, SCRIPT LOAD on NOSCRIPT).
pub struct Scripts {
    next: Script,
    ack: Script,
    start: Script,
    park: Script,
    dead_letter: Script,
    restore: Script,
    batch: Script,
    release_batch: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            next: lua::next(),
            ack: lua::ack(),
            start: lua::start(),
            park: lua::park(),
            dead_letter: lua::dead_letter(),
            restore: lua::restore(),
            batch: lua::batch(),
            release_batch: lua::release_batch(),
        }
    }
}

/// How many due ETA messages one reserve call promotes at most.
const ETA_PROMOTE_BATCH: usize = 100;
/// How often a busy child promotes due ETA messages (an idle one does on
/// every wait): well inside the second an ETA task may be late.
pub const ETA_PROMOTE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What `Scripts::next` does after the finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing: the child is leaving.
    Stop,
    /// Reserve the next message.
    Reserve,
    /// Promote due ETA messages, then reserve.
    PromoteAndReserve,
}

impl Scripts {
    /// Finishes the handled message (`finish`), then, when `reserve`, takes
    /// the held message or the first message in `queue_keys` order: one
    /// round trip per task on a busy queue. The reply also says whether
    /// task events are on (`events_key`).
    pub fn next(
        &self,
        con: &mut dyn redis::ConnectionLike,
        slot: &Slot,
        queue_keys: &[String],
        how: &Reservations,
        finish: Option<&Finish>,
        then: Then,
    ) -> Result<NextReply, BrokerError> {
        let stored = finish
            .and_then(|f| f.result.as_ref().map(|r| (f, r)))
            .filter(|_| how.result_dbs.is_some());
        let (backend_db, broker_db) = match how.result_dbs {
            Some((b, k)) if b != k => (b.to_string(), k.to_string()),
            _ => (String::new(), String::new()),
        };
        let args = lua::NextArgs {
            slot,
            result_key: stored.map(|(f, _)| keys::result_key(&f.task_id)),
            queue_keys,
            events_key: &how.events_key,
            now: now_secs(),
            promote_batch: if then == Then::PromoteAndReserve {
                ETA_PROMOTE_BATCH
            } else {
                0
            },
            token: &how.token,
            early_by_default: how.early_by_default,
            finishing: finish.is_some(),
            finish_tag: finish.and_then(|f| f.tag.as_deref()).unwrap_or(""),
            finish_raw: finish
                .filter(|f| f.tag.is_none())
                .map_or("", |f| f.msg.raw.as_str()),
            result: stored.map_or("", |(_, json)| json.as_str()),
            result_expires: how.result_expires.unwrap_or(0),
            backend_db,
            broker_db,
            reserve: then != Then::Stop,
            in_unacked: finish.is_some_and(|f| f.in_unacked),
            exceptions: &how.exceptions,
        };
        // Bytes, not String: a message that is not UTF-8 must reach the
        // dead-letter path, not fail the reply and wedge the slot.
        let (raw, source, promoted, started, acked, revoked, events_on, depth): (
            Option<Vec<u8>>,
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            usize,
        ) = args.invocation(&self.next).invoke(con)?;
        let reserved = raw.map(|raw| {
            let (raw, invalid_utf8) = text_of(raw);
            Reserved {
                raw,
                invalid_utf8,
                source,
                from_eta_park: promoted == 1,
                started: started == 1,
                acked: acked == 1,
                revoked: revoked == 1,
            }
        });
        Ok(NextReply {
            reserved,
            events_on: events_on == 1,
            depth,
        })
    }

    /// Finishes `call.finish` (results, events, the batch forgotten), then
    /// reserves up to `call.want` messages as one batch when the queue is
    /// deep enough (see `batch.lua`). Only for a backend on the broker's
    /// server.
    pub fn batch(
        &self,
        con: &mut dyn redis::ConnectionLike,
        slot: &Slot,
        queue_keys: &[String],
        how: &Reservations,
        call: &BatchCall,
    ) -> Result<BatchReply, BrokerError> {
        let (backend_db, broker_db) = match how.result_dbs {
            Some((b, k)) if b != k => (b.to_string(), k.to_string()),
            _ => (String::new(), String::new()),
        };
        let finish_gen = call.finish.map(|f| f.gen.to_string()).unwrap_or_default();
        let gen = call.gen.to_string();
        let args = lua::BatchArgs {
            slot,
            queue_keys,
            events_key: &how.events_key,
            now: now_secs(),
            finish_gen: &finish_gen,
            gen: &gen,
            want: call.want,
            share: call.share,
            early_by_default: how.early_by_default,
            result_expires: how.result_expires.unwrap_or(0),
            backend_db,
            broker_db,
            event: call.event,
            results: call.finish.map_or(&[][..], |f| f.results.as_slice()),
            exceptions: &how.exceptions,
        };
        let (events_on, source, raws, revoked): (i64, String, Vec<Vec<u8>>, Vec<i64>) =
            args.invocation(&self.batch).invoke(con)?;
        let batch = (!raws.is_empty()).then(|| Batch {
            gen: call.gen,
            messages: raws
                .into_iter()
                .enumerate()
                .map(|(i, raw)| {
                    // cjson takes bytes that are not UTF-8 inside strings:
                    // such a message is dead-lettered as it was.
                    let (raw, invalid_utf8) = text_of(raw);
                    Reserved {
                        raw,
                        invalid_utf8,
                        source: source.clone(),
                        from_eta_park: false,
                        started: false,
                        acked: true,
                        revoked: revoked.get(i) == Some(&1),
                    }
                })
                .collect(),
        });
        Ok(BatchReply {
            batch,
            events_on: events_on == 1,
        })
    }

    /// Puts a dead child's batch back from position `from` on and forgets
    /// it, if it is still generation `gen`. Returns how many were restored.
    pub fn release_batch(
        &self,
        con: &mut Connection,
        slot: &Slot,
        gen: &str,
        from: usize,
    ) -> Result<usize, BrokerError> {
        let args = lua::ReleaseBatchArgs { slot, gen, from };
        let restored: usize = args.invocation(&self.release_batch).invoke(con)?;
        Ok(restored)
    }

    /// Blocks up to `BLOCK_TIMEOUT` for a message on `first_key`, moving it
    /// into the held list atomically. `next` then registers it.
    /// Returns whether a message was moved.
    pub fn wait(
        &self,
        con: &mut Connection,
        first_key: &str,
        slot: &Slot,
    ) -> Result<bool, BrokerError> {
        // Bytes: the message need not be UTF-8 (`next` sorts that out).
        let moved: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(first_key)
            .arg(&slot.held)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(BLOCK_TIMEOUT.as_secs_f64())
            .query(con)?;
        Ok(moved.is_some())
    }

    /// Done with the held message: its outcome is stored (or not wanted).
    pub fn ack(
        &self,
        con: &mut Connection,
        slot: &Slot,
        tag: Option<&str>,
    ) -> Result<(), BrokerError> {
        let args = lua::AckArgs {
            slot,
            tag: tag.unwrap_or(""),
        };
        let _: i64 = args.invocation(&self.ack).invoke(con)?;
        Ok(())
    }

    /// Early ack at task start (see `START`).
    pub fn start(
        &self,
        con: &mut Connection,
        slot: &Slot,
        tag: Option<&str>,
        task_id: &str,
    ) -> Result<(), BrokerError> {
        let args = lua::StartArgs {
            slot,
            tag: tag.unwrap_or(""),
            task_id,
        };
        let _: i64 = args.invocation(&self.start).invoke(con)?;
        Ok(())
    }

    pub fn park(
        &self,
        con: &mut Connection,
        slot: &Slot,
        tag: &str,
        due: f64,
        queue_key: &str,
        raw: &str,
    ) -> Result<(), BrokerError> {
        let args = lua::ParkArgs {
            slot,
            tag,
            due,
            queue_key,
            raw,
        };
        let _: i64 = args.invocation(&self.park).invoke(con)?;
        Ok(())
    }

    pub fn dead_letter(
        &self,
        con: &mut Connection,
        slot: &Slot,
        tag: Option<&str>,
        record: &str,
    ) -> Result<(), BrokerError> {
        let args = lua::DeadLetterArgs {
            slot,
            tag: tag.unwrap_or(""),
            record,
        };
        let _: i64 = args.invocation(&self.dead_letter).invoke(con)?;
        Ok(())
    }

    /// Puts `raw` back on `queue_key` (head, or tail when `tail`) and forgets
    /// the held/unacked copies. Returns false when a visibility sweep had
    /// already requeued it (only the held copy was dropped).
    pub fn restore(
        &self,
        con: &mut Connection,
        slot: &Slot,
        tag: Option<&str>,
        queue_key: &str,
        raw: &str,
        tail: bool,
    ) -> Result<bool, BrokerError> {
        let args = lua::RestoreArgs {
            slot,
            tag: tag.unwrap_or(""),
            queue_key,
            raw,
            tail,
        };
        let restored: i64 = args.invocation(&self.restore).invoke(con)?;
        Ok(restored == 1)
    }
}

/// Keeps a record in the dead-letter list without touching any message state.
pub fn push_dead_letter(con: &mut Connection, record: &str) -> Result<(), BrokerError> {
    let _: i64 = redis::cmd("LPUSH")
        .arg(keys::DEAD_LETTER)
        .arg(record)
        .query(con)?;
    Ok(())
}

/// Whether the held message of a slot had started (early ack) when its child died.
pub fn held_started(con: &mut Connection, slot: &Slot) -> Result<bool, BrokerError> {
    let state: Option<String> = redis::cmd("GET").arg(&slot.state).query(con)?;
    Ok(state.is_some_and(|s| s.starts_with("started:")))
}

/// The held message of a slot, if any (for the main process's recovery).
pub fn held_message(con: &mut Connection, slot: &Slot) -> Result<Option<String>, BrokerError> {
    Ok(redis::cmd("LINDEX").arg(&slot.held).arg(-1).query(con)?)
}

/// A slot's batch, if any: its generation and its messages in order.
pub fn batch_of(
    con: &mut Connection,
    slot: &Slot,
) -> Result<Option<(String, Vec<String>)>, BrokerError> {
    let (state, msgs): (Option<String>, Vec<String>) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(&slot.batch_state)
        .cmd("LRANGE")
        .arg(&slot.batch)
        .arg(0)
        .arg(-1)
        .query(con)?;
    Ok(state.map(|s| {
        let gen = s.split_once(' ').map_or(s.as_str(), |(g, _)| g).to_string();
        (gen, msgs)
    }))
}

/// Every held list of `node` (start-up recovery after a node was killed):
/// SCAN, not KEYS, and only `rmulti.held.<node>.<digits>` — not the lists of
/// a node whose name merely starts the same.
pub fn held_slots(con: &mut Connection, node: &str) -> Result<Vec<Slot>, BrokerError> {
    slots_by(con, node, "rmulti.held.", &keys::held_pattern(node))
}

/// Every slot of `node` with a batch state (see `held_slots`).
pub fn batch_slots(con: &mut Connection, node: &str) -> Result<Vec<Slot>, BrokerError> {
    slots_by(
        con,
        node,
        "rmulti.batchstate.",
        &keys::batch_state_pattern(node),
    )
}

fn slots_by(
    con: &mut Connection,
    node: &str,
    prefix: &str,
    pattern: &str,
) -> Result<Vec<Slot>, BrokerError> {
    let prefix = format!("{prefix}{node}.");
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)?;
        found.extend(
            batch
                .into_iter()
                .filter(|k| {
                    k.strip_prefix(&prefix).is_some_and(|slot| {
                        !slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .map(|k| {
                    let slot = &k[prefix.len()..];
                    Slot::from_held(format!("rmulti.held.{node}.{slot}"))
                }),
        );
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Declares the queues as kombu does: binding members in the exchange's
/// binding and permanent-binding sets (exchange = queue name, direct).
pub fn declare_queues(con: &mut Connection, queues: &[String]) -> Result<(), BrokerError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for q in queues {
        let member = keys::binding_member(q, q);
        pipe.cmd("SADD").arg(keys::binding(q)).arg(&member).ignore();
        pipe.cmd("SADD")
            .arg(keys::binding_permanent(q))
            .arg(&member)
            .ignore();
    }
    pipe.query::<()>(con)?;
    Ok(())
}

/// A reserved message's text, and its bytes when they are not UTF-8 (the
/// text is then their lossy form).
fn text_of(raw: Vec<u8>) -> (String, Option<Vec<u8>>) {
    match String::from_utf8(raw) {
        Ok(text) => (text, None),
        Err(e) => (
            String::from_utf8_lossy(e.as_bytes()).into_owned(),
            Some(e.into_bytes()),
        ),
    }
}
