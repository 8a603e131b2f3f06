//! Redis key names: kombu's (queue lists, priority sub-lists, bindings,
//! `unacked`) and rmulti's own (held slots, ETA park, dead letters).

/// kombu's separator between a queue name and its priority step.
pub const SEP: &str = "\x06\x16";
/// kombu's default priority steps; 0 is served first on Redis.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

pub const UNACKED: &str = "unacked";
pub const UNACKED_INDEX: &str = "unacked_index";
pub const UNACKED_MUTEX: &str = "unacked_mutex";

/// Sorted set: delivery tag → due time (POSIX seconds) of parked ETA messages.
pub const ETA_INDEX: &str = "rmulti.eta";
/// Hash: delivery tag → `<queue key>\n<raw envelope>` of parked ETA messages.
pub const ETA_MESSAGES: &str = "rmulti.eta.messages";
/// Set of delivery tags promoted from the ETA park and not yet taken again.
pub const ETA_PROMOTED: &str = "rmulti.eta.promoted";
/// List of JSON records of messages that could not be run (documented in the README).
pub const DEAD_LETTER: &str = "rmulti.deadletter";
/// Sorted set: revoked task id → when its revocation expires (POSIX seconds).
pub const REVOKED: &str = "rmulti.revoked";

/// Sorted set: a stamp value (JSON) revoked for stamped header `header`
/// (`revoke_by_stamped_headers`) → when that revocation expires.
pub fn revoked_stamp(header: &str) -> String {
    format!("rmulti.revoked.stamp.{header}")
}

/// String `0`/`1`: whether node `node`'s children send task events
/// (`-E`, `enable_events`, `disable_events`).
pub fn task_events(node: &str) -> String {
    format!("rmulti.events.{node}")
}

/// The list key of `queue` for a message priority (largest step ≤ priority).
pub fn priority_key(queue: &str, priority: u8) -> String {
    let step = PRIORITY_STEPS
        .iter()
        .rev()
        .find(|s| **s <= priority.min(9))
        .copied()
        .unwrap_or(0);
    if step == 0 {
        queue.to_string()
    } else {
        format!("{queue}{SEP}{step}")
    }
}

/// The list a message goes back to: its routing key's list for its
/// priority (the anonymous exchange routes by queue name), or
/// `default_queue`'s when it has no routing key.
pub fn return_key(routing_key: &str, priority: u8, default_queue: &str) -> String {
    let queue = if routing_key.is_empty() {
        default_queue
    } else {
        routing_key
    };
    priority_key(queue, priority)
}

/// Keys in kombu's consume order: priority step outer, queue inner.
pub fn consume_order(queues: &[String]) -> Vec<String> {
    PRIORITY_STEPS
        .iter()
        .flat_map(|step| queues.iter().map(move |q| priority_key(q, *step)))
        .collect()
}

/// The queue name of a list key (strips a trailing `SEP<digits>`).
pub fn queue_of_key(key: &str) -> &str {
    match key.rfind(SEP) {
        Some(i) if key[i + SEP.len()..].chars().all(|c| c.is_ascii_digit()) => &key[..i],
        _ => key,
    }
}

/// A pool child's slot in Redis: its held list (the one message it works on,
/// so a message is never only in a process's memory) and the state of that
/// message: `registered` once it is in kombu's unacked, `started:<task id>`
/// while its task runs under early ack. Built once per child, not per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub held: String,
    pub state: String,
    /// The batch a child of the slot reserved (`lua/batch.lua`), in order.
    pub batch: String,
    /// The batch's `<generation> <queue key>`.
    pub batch_state: String,
}

impl Slot {
    pub fn new(node: &str, slot: usize) -> Slot {
        Slot::from_held(format!("rmulti.held.{node}.{slot}"))
    }

    /// The slot of a held-list key found in Redis.
    pub fn from_held(held: String) -> Slot {
        let (state, batch, batch_state) = match held.strip_prefix("rmulti.held.") {
            Some(rest) => (
                format!("rmulti.state.{rest}"),
                format!("rmulti.batch.{rest}"),
                format!("rmulti.batchstate.{rest}"),
            ),
            None => (
                format!("{held}.state"),
                format!("{held}.batch"),
                format!("{held}.batchstate"),
            ),
        };
        Slot {
            held,
            state,
            batch,
            batch_state,
        }
    }
}

/// Set of the delivery tags node `node`'s children parked in `ETA_INDEX`
/// (`inspect scheduled`); tags promoted since are pruned when it is read.
pub fn eta_parked_by(node: &str) -> String {
    format!("rmulti.eta.node.{node}")
}

impl Slot {
    /// `eta_parked_by` of the node this slot belongs to.
    pub fn eta_parked_by(&self) -> String {
        let rest = self.held.strip_prefix("rmulti.held.").unwrap_or(&self.held);
        let node = rest.rsplit_once('.').map_or(rest, |(node, _)| node);
        eta_parked_by(node)
    }
}

/// Pattern matching every held list of a node.
pub fn held_pattern(node: &str) -> String {
    slot_pattern("rmulti.held.", node)
}

/// Pattern matching every batch state of a node.
pub fn batch_state_pattern(node: &str) -> String {
    slot_pattern("rmulti.batchstate.", node)
}

fn slot_pattern(prefix: &str, node: &str) -> String {
    // The node name is literal text in a glob.
    let mut escaped = String::with_capacity(node.len());
    for c in node.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("{prefix}{escaped}.*")
}

pub fn binding(exchange: &str) -> String {
    format!("_kombu.binding.{exchange}")
}

pub fn binding_permanent(exchange: &str) -> String {
    format!("_kombu.binding_permanent.{exchange}")
}

/// `routing_key SEP pattern SEP queue`, kombu's binding member.
pub fn binding_member(routing_key: &str, queue: &str) -> String {
    format!("{routing_key}{SEP}{SEP}{queue}")
}

pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

/// The lease on a node's name (`node::lease`).
pub fn node_lease(node: &str) -> String {
    format!("rmulti.node.{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_buckets_follow_kombu() {
        assert_eq!(priority_key("celery", 0), "celery");
        assert_eq!(priority_key("celery", 2), "celery");
        assert_eq!(priority_key("celery", 5), "celery\x06\x163");
        assert_eq!(priority_key("celery", 9), "celery\x06\x169");
        assert_eq!(priority_key("celery", 200), "celery\x06\x169");
    }

    #[test]
    fn consume_order_is_step_outer_queue_inner() {
        let order = consume_order(&["celery".into(), "hipri".into()]);
        assert_eq!(order[0], "celery");
        assert_eq!(order[1], "hipri");
        assert_eq!(order[2], "celery\x06\x163");
        assert_eq!(order.len(), 8);
    }

    #[test]
    fn queue_of_key_strips_step() {
        assert_eq!(queue_of_key("celery\x06\x163"), "celery");
        assert_eq!(queue_of_key("celery"), "celery");
    }
}
