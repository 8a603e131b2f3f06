//! `kill` (spec §9.5): SIGKILL to each node that really is running (identity
//! checked), and to its pool children. Unlike Celery, it then waits briefly
//! for the nodes to be gone and removes the pidfiles they could not remove.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send, Signal};
use nix::unistd::Pid;

use super::{exit_status, probe, remove_stale_pidfile, Ctx, Probe};
use crate::multi::error::MultiError;
use crate::node::identity::node_process_gone;
use crate::plumbing::process::children_of;

const GRACE: Duration = Duration::from_secs(5);

pub fn kill(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    let out = &ctx.out;
    out.splash();
    let list = ctx.nodes(args)?;
    let mut failed = false;
    let mut killed = Vec::new();
    for node in &list.nodes {
        let Probe::Running(pid) = probe(ctx, node) else {
            out.note_down(&node.name);
            continue;
        };
        out.note(&format!("Sending KILL to node {} ({pid})", node.name));
        let children = children_of(pid);
        match send(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => {
                for child in children {
                    let _ = send(Pid::from_raw(child), Signal::SIGKILL);
                }
                killed.push((node, pid));
            }
            Err(e) => {
                out.note(&format!(
                    "Could not signal {} ({pid}): {}",
                    node.name,
                    e.desc()
                ));
                failed |= e != nix::errno::Errno::ESRCH;
            }
        }
    }
    let started = Instant::now();
    while killed
        .iter()
        .any(|(n, pid)| !node_process_gone(*pid, &n.name))
        && started.elapsed() < GRACE
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (node, pid) in killed {
        if !node_process_gone(pid, &node.name) {
            out.error(&format!(
                "rmulti kill: {} ({pid}) is still running",
                node.name
            ));
            failed = true;
        } else if let Some(path) = ctx.pidfile(node) {
            remove_stale_pidfile(&path, pid);
        }
    }
    Ok(exit_status(failed))
}
