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

use redis::{Connection, Script, ScriptInvocation};

use super::backend::STORE_RESULT_FN;
use super::connection::{BrokerError, BLOCK_TIMEOUT};
use super::keys::{self, Slot};
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

// Every script's first keys: held list, kombu's unacked, unacked_index, slot state.
//
// NEXT: KEYS 5-7 the ETA index, messages and promoted set, 8 the result key,
// then the queue keys in consume order. ARGV: 1 now, 2 ETA promote batch,
// 3 owner token, 4 early ack by default ('1'/'0'), 5 finish ('1'/'0'),
// 6 finish delivery tag, 7 finish raw (untagged messages), 8 result JSON
// ('' none), 9 result expiry seconds (0 none), 10 backend db ('' when the
// same db), 11 broker db, 12 reserve ('1'/'0'), 13 the finished message may be
// in unacked ('1'/'0'), 14.. task names whose ack policy is not the default.
// ARGV 2 = '0' skips the ETA promotion (a child promotes a few times a second,
// not on every task).
//
// It first finishes the handled message: stores its result (never over a
// stored SUCCESS; SETEX and PUBLISH together so a waiting client wakes), and
// forgets the held message if it is still the finished one (a retry after a
// lost reply must not drop the next message). Then it reserves: promotes due
// ETA messages, returns the held message if any, else pops the first
// non-empty queue key into the held list. A fresh protocol-2 message without
// an ETA whose task acks early is acked right there (state `started:<id>
// <token>`); any other message with a delivery tag is registered in kombu's
// unacked structures (state `registered`).
// Reply: {message, source list, was promoted from the ETA park, had started
// under another child, acked now, its id is revoked (`broker::revoked`)}.
const NEXT: &str = r#"
if ARGV[8] ~= '' then
  if ARGV[10] ~= '' then redis.call('SELECT', ARGV[10]) end
  store_result(KEYS[8], ARGV[8], ARGV[9])
  if ARGV[10] ~= '' then redis.call('SELECT', ARGV[11]) end
end
local emptied = false
if ARGV[5] == '1' then
  local held = redis.call('LINDEX', KEYS[1], -1)
  if held and ((ARGV[6] ~= '' and string.find(held, ARGV[6], 1, true)) or (ARGV[6] == '' and held == ARGV[7])) then
    if ARGV[13] == '1' then
      unregister(ARGV[6])
    end
    empty_slot()
    emptied = true
  end
end
if ARGV[12] ~= '1' then
  return false
end
local now = ARGV[1]
local due = {}
if ARGV[2] ~= '0' then
  due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
end
for _, tag in ipairs(due) do
  local entry = redis.call('HGET', KEYS[6], tag)
  if entry then
    local nl = string.find(entry, '\n', 1, true)
    if nl then
      redis.call('RPUSH', string.sub(entry, 1, nl - 1), string.sub(entry, nl + 1))
      redis.call('SADD', KEYS[7], tag)
    end
  end
  redis.call('ZREM', KEYS[5], tag)
  redis.call('HDEL', KEYS[6], tag)
end
local msg = false
if not emptied then
  msg = redis.call('LINDEX', KEYS[1], -1)
end
local src = ''
local started = 0
local acked = 0
local fresh = true
if msg then
  local state = redis.call('GET', KEYS[4])
  if state then fresh = false end
  if state and string.sub(state, 1, 8) == 'started:' then
    local mine = ' ' .. ARGV[3]
    if string.sub(state, -#mine) == mine then
      -- Reserved and acked by this very child, whose reply was lost.
      acked = 1
    else
      started = 1
    end
  elseif state == 'registered' then
    local ok0, env0 = pcall(cjson.decode, msg)
    local tag0 = nil
    if ok0 and type(env0) == 'table' and type(env0['properties']) == 'table' then
      tag0 = env0['properties']['delivery_tag']
    end
    -- Registered once and gone from unacked since: a visibility sweep put it
    -- back on a queue (or it was acked). This copy must not run too.
    if type(tag0) == 'string' and redis.call('HEXISTS', KEYS[2], tag0) == 0 then
      empty_slot()
      msg = false
      fresh = true
    end
  end
end
if not msg then
  for i = 9, #KEYS do
    msg = redis.call('LMOVE', KEYS[i], KEYS[1], 'RIGHT', 'LEFT')
    if msg then
      src = KEYS[i]
      break
    end
  end
end
if not msg then
  return false
end
local promoted = 0
local ok, env = pcall(cjson.decode, msg)
if fresh and ok and type(env) == 'table' and type(env['properties']) == 'table' then
  local props = env['properties']
  local tag = props['delivery_tag']
  local headers = env['headers']
  local v2 = type(headers) == 'table' and type(headers['task']) == 'string'
  -- Only a message with an ETA can have come back from the park.
  if type(tag) == 'string' and not (v2 and type(headers['eta']) ~= 'string') then
    promoted = redis.call('SREM', KEYS[7], tag)
  end
  local early = false
  if v2 and type(headers['id']) == 'string' and type(headers['eta']) ~= 'string' then
    early = ARGV[4] == '1'
    for i = 14, #ARGV do
      if ARGV[i] == headers['task'] then
        early = not early
        break
      end
    end
  end
  if early then
    redis.call('SET', KEYS[4], 'started:' .. headers['id'] .. ' ' .. ARGV[3])
    acked = 1
  elseif type(tag) == 'string' then
    local exchange, rk = '', ''
    local di = props['delivery_info']
    if type(di) == 'table' then
      if type(di['exchange']) == 'string' then exchange = di['exchange'] end
      if type(di['routing_key']) == 'string' then rk = di['routing_key'] end
    end
    redis.call('HSET', KEYS[2], tag, '[' .. msg .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(rk) .. ']')
    redis.call('ZADD', KEYS[3], now, tag)
    redis.call('SET', KEYS[4], 'registered')
  end
end
local revoked = 0
if ok and type(env) == 'table' and type(env['headers']) == 'table'
    and type(env['headers']['id']) == 'string' and is_revoked(env['headers']['id'], now) then
  revoked = 1
end
return {msg, src, promoted, started, acked, revoked}
"#;

// Functions every slot script may use (prepended to each): out of kombu's
// unacked by delivery tag ('' when the message has none), and the slot
// emptied (held list and state).
const SLOT_FNS: &str = r#"
local function unregister(tag)
  if tag ~= '' then
    redis.call('ZREM', KEYS[3], tag)
    redis.call('HDEL', KEYS[2], tag)
  end
end
local function empty_slot()
  redis.call('DEL', KEYS[1], KEYS[4])
end
"#;

// The end of every script that is done with the held message: out of kombu's
// unacked (ARGV[1] = its delivery tag), out of the held list, no state.
const FORGET: &str = r#"
unregister(ARGV[1])
empty_slot()
return 1
"#;

// Early ack at task start: out of kombu's unacked (Celery acks here), but the
// held list keeps the message and its state says it started, so a node that
// dies now still knows the task's outcome must be recorded, not re-run.
const START: &str = r#"
unregister(ARGV[1])
redis.call('SET', KEYS[4], 'started:' .. ARGV[2])
return 1
"#;

// Park an ETA message until due: into the ETA index with the queue to return
// it to, then forgotten (so no visibility timeout redelivers it).
const PARK: &str = r#"
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[6], ARGV[1], ARGV[3] .. '\n' .. ARGV[4])
"#;

// Dead-letter: keep the record, then forget the message.
const DEAD_LETTER: &str = r#"
redis.call('LPUSH', KEYS[5], ARGV[2])
"#;

// Restore to a queue. RPUSH puts it at the head (next to be served), as
// kombu's restore does; `LPUSH` (ARGV[4] = 'tail') is reject-with-requeue.
const RESTORE: &str = r#"
if ARGV[1] ~= '' and redis.call('GET', KEYS[4]) == 'registered'
    and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  -- A visibility sweep already put it back: do not queue a second copy.
  empty_slot()
  return 0
end
if ARGV[4] == 'tail' then
  redis.call('LPUSH', ARGV[2], ARGV[3])
else
  redis.call('RPUSH', ARGV[2], ARGV[3])
end
"#;

/// The Lua scripts, loaded once per process (EVALSHA, SCRIPT LOAD on NOSCRIPT).
pub struct Scripts {
    next: Script,
    ack: Script,
    start: Script,
    park: Script,
    dead_letter: Script,
    restore: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            next: slot_script(&[STORE_RESULT_FN, &super::revoked::is_revoked_fn(), NEXT]),
            ack: slot_script(&[FORGET]),
            start: slot_script(&[START]),
            park: slot_script(&[PARK, FORGET]),
            dead_letter: slot_script(&[DEAD_LETTER, FORGET]),
            restore: slot_script(&[RESTORE, FORGET]),
        }
    }
}

/// A script on a slot's keys: `SLOT_FNS`, then `parts` in order.
fn slot_script(parts: &[&str]) -> Script {
    Script::new(&format!("{SLOT_FNS}{}", parts.concat()))
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

/// An invocation of `script` on `slot`: every script's first keys are the
/// held list, kombu's `unacked` and `unacked_index`, and the slot state.
fn on_slot<'a>(script: &'a Script, slot: &Slot) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    inv.key(&slot.held)
        .key(keys::UNACKED)
        .key(keys::UNACKED_INDEX)
        .key(&slot.state);
    inv
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
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
    /// round trip per task on a busy queue.
    pub fn next(
        &self,
        con: &mut Connection,
        slot: &Slot,
        queue_keys: &[String],
        how: &Reservations,
        finish: Option<&Finish>,
        then: Then,
    ) -> Result<Option<Reserved>, BrokerError> {
        let reserve = then != Then::Stop;
        let promote = then == Then::PromoteAndReserve;
        let mut inv = on_slot(&self.next, slot);
        inv.key(keys::ETA_INDEX)
            .key(keys::ETA_MESSAGES)
            .key(keys::ETA_PROMOTED);
        let result = finish.and_then(|f| f.result.as_ref().map(|r| (f, r)));
        match (result, how.result_dbs) {
            (Some((f, _)), Some(_)) => inv.key(keys::result_key(&f.task_id)),
            _ => inv.key(""),
        };
        for k in queue_keys {
            inv.key(k);
        }
        let (backend_db, broker_db) = match how.result_dbs {
            Some((b, k)) if b != k => (b.to_string(), k.to_string()),
            _ => (String::new(), String::new()),
        };
        inv.arg(format!("{:.6}", now_secs()))
            .arg(if promote { ETA_PROMOTE_BATCH } else { 0 })
            .arg(&how.token)
            .arg(flag(how.early_by_default))
            .arg(flag(finish.is_some()))
            .arg(finish.and_then(|f| f.tag.as_deref()).unwrap_or(""))
            .arg(
                finish
                    .filter(|f| f.tag.is_none())
                    .map_or("", |f| f.msg.raw.as_str()),
            )
            .arg(match (result, how.result_dbs) {
                (Some((_, json)), Some(_)) => json.as_str(),
                _ => "",
            })
            .arg(how.result_expires.unwrap_or(0))
            .arg(backend_db)
            .arg(broker_db)
            .arg(flag(reserve))
            .arg(flag(finish.is_some_and(|f| f.in_unacked)));
        for name in &how.exceptions {
            inv.arg(name);
        }
        // Bytes, not String: a message that is not UTF-8 must reach the
        // dead-letter path, not fail the reply and wedge the slot.
        let reply: Option<(Vec<u8>, String, i64, i64, i64, i64)> = inv.invoke(con)?;
        Ok(
            reply.map(|(raw, source, promoted, started, acked, revoked)| {
                let (raw, invalid_utf8) = match String::from_utf8(raw) {
                    Ok(text) => (text, None),
                    Err(e) => (
                        String::from_utf8_lossy(e.as_bytes()).into_owned(),
                        Some(e.into_bytes()),
                    ),
                };
                Reserved {
                    raw,
                    invalid_utf8,
                    source,
                    from_eta_park: promoted == 1,
                    started: started == 1,
                    acked: acked == 1,
                    revoked: revoked == 1,
                }
            }),
        )
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
        let _: i64 = on_slot(&self.ack, slot)
            .arg(tag.unwrap_or(""))
            .invoke(con)?;
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
        let _: i64 = on_slot(&self.start, slot)
            .arg(tag.unwrap_or(""))
            .arg(task_id)
            .invoke(con)?;
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
        let _: i64 = on_slot(&self.park, slot)
            .key(keys::ETA_INDEX)
            .key(keys::ETA_MESSAGES)
            .arg(tag)
            .arg(format!("{due:.6}"))
            .arg(queue_key)
            .arg(raw)
            .invoke(con)?;
        Ok(())
    }

    pub fn dead_letter(
        &self,
        con: &mut Connection,
        slot: &Slot,
        tag: Option<&str>,
        record: &str,
    ) -> Result<(), BrokerError> {
        let _: i64 = on_slot(&self.dead_letter, slot)
            .key(keys::DEAD_LETTER)
            .arg(tag.unwrap_or(""))
            .arg(record)
            .invoke(con)?;
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
        let restored: i64 = on_slot(&self.restore, slot)
            .arg(tag.unwrap_or(""))
            .arg(queue_key)
            .arg(raw)
            .arg(if tail { "tail" } else { "head" })
            .invoke(con)?;
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

/// Every held list of `node` (start-up recovery after a node was killed):
/// SCAN, not KEYS, and only `rmulti.held.<node>.<digits>` — not the lists of
/// a node whose name merely starts the same.
pub fn held_slots(con: &mut Connection, node: &str) -> Result<Vec<Slot>, BrokerError> {
    let prefix = format!("rmulti.held.{node}.");
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(keys::held_pattern(node))
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
                .map(Slot::from_held),
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
