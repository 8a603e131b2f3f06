//! The Lua scripts (`*.lua` beside this file: a slot's, the revoked set's,
//! the lock and lease helpers) and one argument type per script. Each script
//! names its KEYS and ARGV at its top; the type's `invocation` is the one
//! place that builds them, in that order, so no call site assembles a
//! script's arguments by position. Shared Lua is prepended, not duplicated:
//! `store_result.lua` to the scripts that store a result, `slot.lua` to the
//! slot scripts, `task_rules.lua` (revoked? acks early?) to the reserving
//! ones.

use redis::{Script, ScriptInvocation};

use super::keys::{self, Slot};

/// `store_result(key, meta, expires)`, prepended to the scripts that store.
const STORE_RESULT_FN: &str = include_str!("store_result.lua");
/// The slot's keys and shared steps, prepended to every slot script.
const SLOT: &str = include_str!("slot.lua");
/// `is_revoked` and `acks_early`, prepended to the reserving scripts
/// (`next.lua`, `batch.lua`) so both decide a task the same way.
const TASK_RULES: &str = include_str!("task_rules.lua");

/// The backend's store script.
pub fn store() -> Script {
    Script::new(&format!("{STORE_RESULT_FN}{}", include_str!("store.lua")))
}

/// A script on a slot's keys: `slot.lua`, then `parts` in order.
fn slot_script(parts: &[&str]) -> Script {
    Script::new(&format!("{SLOT}{}", parts.concat()))
}

/// A reserving script: `store_result.lua`, `slot.lua`, `task_rules.lua`,
/// then `body` (none of the preludes uses another, so their order is free).
fn reserving_script(body: &str) -> Script {
    Script::new(&format!("{STORE_RESULT_FN}{SLOT}{TASK_RULES}{body}"))
}

/// `next.lua`: finish the handled message and reserve the next.
pub fn next() -> Script {
    reserving_script(include_str!("next.lua"))
}

/// `batch.lua`: finish a batch and reserve the next.
pub fn batch() -> Script {
    reserving_script(include_str!("batch.lua"))
}

pub fn release_batch() -> Script {
    slot_script(&[include_str!("release_batch.lua")])
}

/// Deletes a lock or lease only while it holds the caller's token (the
/// sweep's `unacked_mutex`, a node's name lease).
pub fn release_if_owner() -> Script {
    Script::new(include_str!("release_if_owner.lua"))
}

/// Renews or takes over a lease only while it holds the expected value.
pub fn swap_if_owner() -> Script {
    Script::new(include_str!("swap_if_owner.lua"))
}

/// The revoked set's scripts (`broker::revoked`).
pub fn revoke_add() -> Script {
    Script::new(include_str!("revoke_add.lua"))
}

pub fn revoke_mark() -> Script {
    Script::new(&format!(
        "{STORE_RESULT_FN}{}",
        include_str!("revoke_mark.lua")
    ))
}

pub fn ack() -> Script {
    slot_script(&[include_str!("ack.lua")])
}

pub fn start() -> Script {
    slot_script(&[include_str!("start.lua")])
}

pub fn park() -> Script {
    slot_script(&[include_str!("park.lua")])
}

pub fn dead_letter() -> Script {
    slot_script(&[include_str!("dead_letter.lua")])
}

pub fn restore() -> Script {
    slot_script(&[include_str!("restore.lua")])
}

/// KEYS 1-4 of every slot script (`slot.lua`).
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

/// `store.lua`.
pub struct StoreArgs<'a> {
    pub task_id: &'a str,
    pub meta: &'a str,
    /// Seconds; 0 for none.
    pub expires: u64,
}

impl StoreArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        inv.key(keys::result_key(self.task_id))
            .arg(self.meta)
            .arg(self.expires);
        inv
    }
}

/// `next.lua`.
pub struct NextArgs<'a> {
    pub slot: &'a Slot,
    /// The finished task's result key, when the script stores its result.
    pub result_key: Option<String>,
    pub queue_keys: &'a [String],
    /// The node's task-events flag (`rmulti.events.<node>`).
    pub events_key: &'a str,
    /// Unix seconds.
    pub now: f64,
    /// Due ETA messages to promote at most; 0 skips the promotion.
    pub promote_batch: usize,
    pub token: &'a str,
    pub early_by_default: bool,
    pub finishing: bool,
    pub finish_tag: &'a str,
    pub finish_raw: &'a str,
    /// Result meta JSON; '' none.
    pub result: &'a str,
    pub result_expires: u64,
    /// '' when the result db is the broker's.
    pub backend_db: String,
    pub broker_db: String,
    pub reserve: bool,
    pub in_unacked: bool,
    /// Task names whose ack policy is not the default.
    pub exceptions: &'a [String],
}

impl NextArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.key(keys::ETA_INDEX)
            .key(keys::ETA_MESSAGES)
            .key(keys::ETA_PROMOTED)
            .key(self.result_key.as_deref().unwrap_or(""))
            .key(keys::REVOKED)
            .key(self.events_key);
        for k in self.queue_keys {
            inv.key(k);
        }
        inv.arg(format!("{:.6}", self.now))
            .arg(self.promote_batch)
            .arg(self.token)
            .arg(flag(self.early_by_default))
            .arg(flag(self.finishing))
            .arg(self.finish_tag)
            .arg(self.finish_raw)
            .arg(self.result)
            .arg(self.result_expires)
            .arg(&self.backend_db)
            .arg(&self.broker_db)
            .arg(flag(self.reserve))
            .arg(flag(self.in_unacked));
        for name in self.exceptions {
            inv.arg(name);
        }
        inv
    }
}

/// `batch.lua`.
pub struct BatchArgs<'a> {
    pub slot: &'a Slot,
    pub queue_keys: &'a [String],
    pub events_key: &'a str,
    /// Unix seconds.
    pub now: f64,
    /// The batch to finish; '' none.
    pub finish_gen: &'a str,
    /// The generation of the batch to reserve.
    pub gen: &'a str,
    /// Messages to reserve at most; 0 reserves none.
    pub want: usize,
    /// The node's pool size.
    pub share: usize,
    pub early_by_default: bool,
    pub result_expires: u64,
    /// '' when the result db is the broker's.
    pub backend_db: String,
    pub broker_db: String,
    /// A task-events message to PUBLISH: (channel, payload).
    pub event: Option<(&'a str, &'a str)>,
    /// (task id, result meta JSON or '') of each finished task.
    pub results: &'a [(String, Option<String>)],
    /// Task names whose ack policy is not the default.
    pub exceptions: &'a [String],
}

impl BatchArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.key(&self.slot.batch)
            .key(&self.slot.batch_state)
            .key(keys::REVOKED)
            .key(self.events_key);
        for k in self.queue_keys {
            inv.key(k);
        }
        let (channel, payload) = self.event.unwrap_or(("", ""));
        inv.arg(format!("{:.6}", self.now))
            .arg(self.finish_gen)
            .arg(self.gen)
            .arg(self.want)
            .arg(self.share.max(1))
            .arg(flag(self.early_by_default))
            .arg(self.result_expires)
            .arg(&self.backend_db)
            .arg(&self.broker_db)
            .arg(channel)
            .arg(payload)
            .arg(self.results.len());
        for (id, meta) in self.results {
            inv.arg(id).arg(meta.as_deref().unwrap_or(""));
        }
        for name in self.exceptions {
            inv.arg(name);
        }
        inv
    }
}

/// `release_batch.lua`.
pub struct ReleaseBatchArgs<'a> {
    pub slot: &'a Slot,
    pub gen: &'a str,
    /// The first position to restore.
    pub from: usize,
}

impl ReleaseBatchArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.key(&self.slot.batch)
            .key(&self.slot.batch_state)
            .arg(self.gen)
            .arg(self.from);
        inv
    }
}

/// `ack.lua`.
pub struct AckArgs<'a> {
    pub slot: &'a Slot,
    /// '' none.
    pub tag: &'a str,
}

impl AckArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.arg(self.tag);
        inv
    }
}

/// `start.lua`.
pub struct StartArgs<'a> {
    pub slot: &'a Slot,
    /// '' none.
    pub tag: &'a str,
    pub task_id: &'a str,
}

impl StartArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.arg(self.tag).arg(self.task_id);
        inv
    }
}

/// `park.lua`.
pub struct ParkArgs<'a> {
    pub slot: &'a Slot,
    pub tag: &'a str,
    /// The ETA, Unix seconds.
    pub due: f64,
    pub queue_key: &'a str,
    pub raw: &'a str,
}

impl ParkArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.key(keys::ETA_INDEX)
            .key(keys::ETA_MESSAGES)
            .key(self.slot.eta_parked_by())
            .arg(self.tag)
            .arg(format!("{:.6}", self.due))
            .arg(self.queue_key)
            .arg(self.raw);
        inv
    }
}

/// `dead_letter.lua`.
pub struct DeadLetterArgs<'a> {
    pub slot: &'a Slot,
    /// '' none.
    pub tag: &'a str,
    pub record: &'a str,
}

impl DeadLetterArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.key(keys::DEAD_LETTER).arg(self.tag).arg(self.record);
        inv
    }
}

/// `restore.lua`.
pub struct RestoreArgs<'a> {
    pub slot: &'a Slot,
    /// '' none.
    pub tag: &'a str,
    pub queue_key: &'a str,
    pub raw: &'a str,
    /// At the tail (reject with requeue) rather than the head.
    pub tail: bool,
}

impl RestoreArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = on_slot(script, self.slot);
        inv.arg(self.tag)
            .arg(self.queue_key)
            .arg(self.raw)
            .arg(if self.tail { "tail" } else { "head" });
        inv
    }
}

/// `revoke_add.lua`.
pub struct RevokeAddArgs<'a> {
    /// The set: `keys::REVOKED` or `keys::revoked_stamp(header)`.
    pub key: &'a str,
    /// When the new entries expire, Unix seconds.
    pub until: f64,
    /// Unix seconds.
    pub now: f64,
    /// Entries kept at most.
    pub max_size: usize,
    /// Seconds the key outlives this write (its newest entry's lifetime).
    pub ttl: u64,
    pub members: &'a [String],
}

impl RevokeAddArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        inv.key(self.key)
            .arg(format!("{:.6}", self.until))
            .arg(format!("{:.6}", self.now))
            .arg(self.max_size)
            .arg(self.ttl);
        for member in self.members {
            inv.arg(member);
        }
        inv
    }
}

/// `revoke_mark.lua`.
pub struct RevokeMarkArgs<'a> {
    pub task_id: &'a str,
    /// The REVOKED meta, JSON.
    pub meta: &'a str,
    /// Seconds; 0 for none.
    pub expires: u64,
}

impl RevokeMarkArgs<'_> {
    pub fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        inv.key(keys::result_key(self.task_id))
            .arg(self.meta)
            .arg(self.expires);
        inv
    }
}
