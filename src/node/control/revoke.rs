//! `revoke(terminate=True)`: signalling whatever runs a task. The revoked
//! set itself is `broker::revoked`; the children's reserving script skips
//! revoked ids.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

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
