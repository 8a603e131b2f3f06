//! A node's name is a lease in Redis: `rmulti.node.<name>` holds
//! `{"host", "pid", "token"}` of the main process that owns the name, with a
//! TTL the main loop renews. Two live nodes with one name would share one set
//! of held lists (each restoring the other's reservations as its own), so a
//! second one is refused at start (exit 73, as for a held pidfile). A lease
//! whose holder was SIGKILLed on this very host (its pid is gone) is taken
//! over at once, so a restart is not kept waiting for the TTL; one held from
//! another host is waited out (at most `TTL`).

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use redis::Connection;
use serde_json::{json, Value};

use crate::broker::BrokerError;

/// How long a lease outlives its last renewal (a node cut off from Redis
/// longer than this may see its name taken).
pub const TTL: Duration = Duration::from_secs(30);
/// How often the main loop renews it.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How soon a failed renewal is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(3);

pub struct Lease {
    key: String,
    node: String,
    value: String,
    host: String,
    held: bool,
    next_renew: Instant,
}

impl Lease {
    /// Not held yet: `acquire` takes it.
    pub fn new(node: &str) -> Lease {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let value = json!({
            "host": host,
            "pid": std::process::id(),
            "token": uuid::Uuid::new_v4().to_string(),
        })
        .to_string();
        Lease {
            key: crate::broker::keys::node_lease(node),
            node: node.to_string(),
            value,
            host,
            held: false,
            next_renew: Instant::now(),
        }
    }

    /// Takes the name. `Ok(Some(why))`: another live node holds it.
    pub fn acquire(&mut self, con: &mut Connection) -> Result<Option<String>, BrokerError> {
        // A value written by this process before (a reconnect) is ours.
        for _ in 0..3 {
            if self.set_nx(con)? {
                return Ok(None);
            }
            let Some(old) = redis::cmd("GET")
                .arg(&self.key)
                .query::<Option<String>>(con)?
            else {
                continue; // expired meanwhile: try again
            };
            if old == self.value || self.holder_is_dead_here(&old) {
                if self.swap(con, &old)? {
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some(format!(
                "Error: another node named {} is running ({}): refusing to start a second one (two nodes with one name would share their held tasks)",
                self.node,
                describe(&old)
            )));
        }
        Err(BrokerError::Reply(format!(
            "the lease {} kept changing while it was taken",
            self.key
        )))
    }

    /// Renews the lease when due (the main loop calls this often); a lease
    /// lost meanwhile (Redis unreachable past the TTL) is taken again if free.
    /// `con` is only called (it may connect) when a renewal is due.
    pub fn renew_when_due<'c>(
        &mut self,
        con: impl FnOnce() -> Result<&'c mut Connection, BrokerError>,
    ) {
        if !self.held || Instant::now() < self.next_renew {
            return;
        }
        let renewed = con().and_then(|con| {
            if self.swap(con, &self.value.clone())? {
                return Ok(None);
            }
            self.acquire(con)
        });
        match renewed {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::error!("The lease on this node's name was lost: {why}");
                self.next_renew = Instant::now() + RENEW_EVERY;
            }
            // Retried soon, but not at every turn of the loop: each try
            // may wait for a connect timeout.
            Err(e) => {
                tracing::warn!("Cannot renew the lease on {}: {e}", self.node);
                self.next_renew = Instant::now() + RETRY_EVERY;
            }
        }
    }

    /// Gives the name up (a clean shutdown), if still ours.
    pub fn release<'c>(&mut self, con: impl FnOnce() -> Result<&'c mut Connection, BrokerError>) {
        if !self.held {
            return;
        }
        self.held = false;
        let released = con().and_then(|con| {
            crate::broker::lua::release_if_owner()
                .key(&self.key)
                .arg(&self.value)
                .invoke::<i64>(con)
                .map_err(BrokerError::from)
        });
        if let Err(e) = released {
            tracing::warn!("Cannot release the lease on {}: {e}", self.node);
        }
    }

    fn set_nx(&mut self, con: &mut Connection) -> Result<bool, BrokerError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.value)
            .arg("NX")
            .arg("PX")
            .arg(TTL.as_millis() as u64)
            .query(con)?;
        Ok(self.took(set.is_some()))
    }

    fn swap(&mut self, con: &mut Connection, old: &str) -> Result<bool, BrokerError> {
        let swapped: i64 = crate::broker::lua::swap_if_owner()
            .key(&self.key)
            .arg(old)
            .arg(&self.value)
            .arg(TTL.as_millis() as u64)
            .invoke(con)?;
        Ok(self.took(swapped == 1))
    }

    fn took(&mut self, taken: bool) -> bool {
        if taken {
            self.held = true;
            self.next_renew = Instant::now() + RENEW_EVERY;
        }
        taken
    }

    /// The holder ran on this host and its pid is gone (SIGKILLed).
    fn holder_is_dead_here(&self, old: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(old) else {
            return false;
        };
        let pid = v.get("pid").and_then(Value::as_i64).unwrap_or(0);
        let same_host = v.get("host").and_then(Value::as_str) == Some(self.host.as_str());
        same_host && pid > 0 && i32::try_from(pid).is_ok_and(is_gone)
    }
}

/// No such process, or a zombie (killed, not reaped yet by whoever adopted it).
fn is_gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    // /proc/<pid>/stat: `pid (comm) S ...`; comm may hold spaces and parens.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state == "Z" || state == "X")
        })
        .unwrap_or(false)
}

/// `pid 123 on host h` from a lease value.
fn describe(value: &str) -> String {
    match serde_json::from_str::<Value>(value) {
        Ok(v) => format!(
            "pid {} on host {}",
            v.get("pid").cloned().unwrap_or(Value::Null),
            v.get("host").and_then(Value::as_str).unwrap_or("?")
        ),
        Err(_) => format!("lease value {value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_holder_on_this_host_is_recognised() {
        let lease = Lease::new("w1@h");
        let host = lease.host.clone();
        // pid 1 is alive; an absurd pid is not
        let alive = json!({"host": host, "pid": 1, "token": "x"}).to_string();
        let dead = json!({"host": host, "pid": 2_000_000_000, "token": "x"}).to_string();
        let elsewhere = json!({"host": "other-host", "pid": 2_000_000_000}).to_string();
        assert!(!lease.holder_is_dead_here(&alive));
        assert!(lease.holder_is_dead_here(&dead));
        assert!(!lease.holder_is_dead_here(&elsewhere));
        assert!(!lease.holder_is_dead_here("garbage"));
        assert_eq!(describe(&alive), format!("pid 1 on host {host}"));
    }
}
