//! `revoke(terminate=True)`: signalling whatever runs a task, now or when
//! it starts here after the revoke (`LateTerminates`). The revoked set
//! itself is `broker::revoked`; the children's reserving script skips
//! revoked ids, and the children look stamped messages up themselves.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::broker::revoked::{stamp_values, REVOKES_MAX_AGE};
use crate::child::report::Started;

/// Signals the task running in pool child `pid`: the child is SIGKILLed
/// first (it blocks TERM and would otherwise record the task's death as its
/// outcome), then `signal` goes to its process group (its Python host) and
/// to the group of each process it started (an exec task's command).
pub fn terminate(pid: i32, signal: Signal) {
    let kids = crate::plumbing::process::children_of(pid);
    let pool_child = Pid::from_raw(pid);
    let _ = kill(pool_child, Signal::SIGKILL);
    let _ = killpg(pool_child, signal);
    let own_group = nix::unistd::getpgrp();
    for kid in kids.into_iter().map(Pid::from_raw) {
        if nix::unistd::getpgid(Some(kid)) == Ok(kid) && kid != own_group {
            let _ = killpg(kid, signal);
        }
        let _ = kill(kid, signal);
    }
}

/// Terminating revokes waiting for their task to start on this node: by
/// id (used once) or by stamp (any task carrying it). Kept as long as the
/// revoke itself, at most `MAX_LATE` of them.
#[derive(Debug, Default)]
pub struct LateTerminates {
    entries: VecDeque<Late>,
}

#[derive(Debug)]
struct Late {
    target: Target,
    signal: Signal,
    until: Instant,
}

#[derive(Debug, PartialEq)]
enum Target {
    Id(String),
    Stamp(String, Value),
}

/// Oldest dropped beyond this: a bound on memory, not on correctness (the
/// revoked task is still never started from its queue).
const MAX_LATE: usize = 10_000;

impl LateTerminates {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add_ids(&mut self, ids: impl Iterator<Item = String>, signal: Signal) {
        for id in ids {
            self.push(Target::Id(id), signal);
        }
    }

    pub fn add_stamps(&mut self, headers: &[(String, Vec<Value>)], signal: Signal) {
        for (header, values) in headers {
            for value in values {
                self.push(Target::Stamp(header.clone(), value.clone()), signal);
            }
        }
    }

    fn push(&mut self, target: Target, signal: Signal) {
        let until = Instant::now() + Duration::from_secs_f64(REVOKES_MAX_AGE);
        self.entries.retain(|e| e.target != target);
        self.entries.push_back(Late {
            target,
            signal,
            until,
        });
        while self.entries.len() > MAX_LATE {
            self.entries.pop_front();
        }
    }

    /// The signal for `started` if a waiting revoke names it (an id entry
    /// is used up), dropping expired entries.
    pub fn take_match(&mut self, started: &Started) -> Option<Signal> {
        let now = Instant::now();
        self.entries.retain(|e| e.until > now);
        let hit = self.entries.iter().position(|e| match &e.target {
            Target::Id(id) => *id == started.id,
            Target::Stamp(header, value) => started
                .stamps
                .get(header)
                .is_some_and(|stamp| stamp_values(stamp).contains(&value)),
        })?;
        let signal = self.entries[hit].signal;
        if matches!(self.entries[hit].target, Target::Id(_)) {
            self.entries.remove(hit);
        }
        Some(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn started(id: &str, stamps: Value) -> Started {
        Started {
            id: id.into(),
            task: "t.add".into(),
            time_limit: None,
            acks_late: false,
            reject_on_worker_lost: false,
            ignore_result: false,
            group: None,
            parent_id: None,
            args: Value::Null,
            kwargs: Value::Null,
            delivery_info: Value::Null,
            stamps: stamps.as_object().cloned().unwrap_or_default(),
            batched: false,
        }
    }

    #[test]
    fn an_id_is_terminated_once_a_stamp_every_time() {
        let mut late = LateTerminates::default();
        late.add_ids(["a".to_string()].into_iter(), Signal::SIGKILL);
        late.add_stamps(&[("m".into(), vec![json!("x")])], Signal::SIGTERM);
        assert_eq!(late.take_match(&started("b", json!({}))), None);
        assert_eq!(
            late.take_match(&started("a", json!({}))),
            Some(Signal::SIGKILL)
        );
        assert_eq!(late.take_match(&started("a", json!({}))), None);
        let stamped = started("c", json!({"m": ["y", "x"]}));
        assert_eq!(late.take_match(&stamped), Some(Signal::SIGTERM));
        assert_eq!(late.take_match(&stamped), Some(Signal::SIGTERM));
        assert_eq!(late.take_match(&started("d", json!({"m": "y"}))), None);
    }
}
