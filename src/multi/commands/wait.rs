//! Signalling running nodes and waiting for all of them at once, shared by
//! `stop`, `stopwait` and `restart` (spec §9.2–§9.4).
//!
//! Differences from Celery, on purpose: nodes are signalled in command-line
//! order, then polled together every 50 ms (Celery: one node at a time, 2 s
//! sleeps); the "Waiting for" line counts and lists the nodes still running
//! (Celery re-prints stale counts and `None` pids); an optional timeout
//! SIGKILLs what is left, together with its pool children.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{pluralize, remove_stale_pidfile, Ctx, Probe};
use crate::multi::error::MultiError;
use crate::multi::nodes::NodeList;
use crate::multi::output::Colour;
use crate::multi::signal::signal_name;
use crate::node::identity::node_process_gone;
use crate::plumbing::process::children_of;

const POLL: Duration = Duration::from_millis(50);
const DOT_EVERY: Duration = Duration::from_secs(1);
/// How long a SIGKILLed node may take to disappear before we give up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A node that was signalled and is being waited for.
#[derive(Debug, Clone)]
pub struct Target {
    pub idx: usize,
    pub name: String,
    pub pid: i32,
    pub pidfile: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Nodes SIGKILLed because the timeout ran out.
    pub killed: Vec<String>,
    /// Nodes still there after SIGKILL (uninterruptible sleep, other user).
    pub stuck: Vec<String>,
}

pub fn parse_timeout(list: &NodeList) -> Result<Option<Duration>, MultiError> {
    let Some(raw) = &list.timeout else {
        return Ok(None);
    };
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| MultiError::BadTimeout(raw.clone()))?;
    if secs == 0.0 {
        return Ok(Some(Duration::ZERO));
    }
    crate::protocol::time::duration_secs(secs)
        .map(Some)
        .ok_or_else(|| MultiError::BadTimeout(raw.clone()))
}

/// Takes the signal token out of argv (spec §8) so it never reaches a worker.
pub fn strip_signal(args: &[String]) -> Result<(Signal, Vec<String>), MultiError> {
    let k = crate::multi::argv::parse(args)?.values.len();
    let (sig, at) = crate::multi::signal::find_signal(args, k)?;
    let mut rest = args.to_vec();
    if let Some(i) = at {
        rest.remove(i);
    }
    Ok((sig, rest))
}

/// Sends `sig` to every running node, in command-line order. A node that
/// vanished in the meantime is handed to `on_gone`; returns the signalled
/// targets and whether a running node could not be signalled.
pub fn signal_nodes(
    ctx: &Ctx,
    list: &NodeList,
    probes: &[Probe],
    sig: Signal,
    on_gone: &mut dyn FnMut(usize),
) -> (Vec<Target>, bool) {
    let out = &ctx.out;
    let mut targets = Vec::new();
    let mut failed = false;
    if !probes.iter().any(|p| matches!(p, Probe::Running(_))) {
        return (targets, failed);
    }
    out.note(&out.paint(Colour::Blue, "> Stopping nodes..."));
    for (idx, (node, probe)) in list.nodes.iter().zip(probes).enumerate() {
        let Probe::Running(pid) = *probe else {
            continue;
        };
        out.note(&format!("\t> {}: {} -> {pid}", node.name, signal_name(sig)));
        match kill(Pid::from_raw(pid), sig) {
            Ok(()) => targets.push(Target {
                idx,
                name: node.name.clone(),
                pid,
                pidfile: ctx.pidfile(node),
            }),
            Err(Errno::ESRCH) => {
                out.note(&format!(
                    "Could not signal {} ({pid}): No such process",
                    node.name
                ));
                on_gone(idx);
            }
            Err(e) => {
                out.note(&format!(
                    "Could not signal {} ({pid}): {}",
                    node.name,
                    e.desc()
                ));
                failed = true;
            }
        }
    }
    (targets, failed)
}

fn print_waiting(ctx: &Ctx, remaining: &[Target]) {
    let pids: Vec<String> = remaining.iter().map(|t| t.pid.to_string()).collect();
    let line = format!(
        "> Waiting for {} -> {}...",
        pluralize(remaining.len(), "node"),
        pids.join(", ")
    );
    ctx.out.note_partial(&ctx.out.paint(Colour::Blue, &line));
}

/// SIGKILLs a node's pool children and the node itself.
fn kill_node(t: &Target) {
    let children = children_of(t.pid);
    let _ = kill(Pid::from_raw(t.pid), Signal::SIGKILL);
    for child in children {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
}

/// Waits until every target is gone, calling `on_gone` for each as soon as it
/// is (a `restart` starts it again right there).
pub fn wait_all(
    ctx: &Ctx,
    targets: Vec<Target>,
    timeout: Option<Duration>,
    on_gone: &mut dyn FnMut(&Target),
) -> Outcome {
    let out = &ctx.out;
    let mut outcome = Outcome::default();
    let mut remaining = targets;
    if remaining.is_empty() {
        return outcome;
    }
    print_waiting(ctx, &remaining);
    let started = Instant::now();
    let mut last_dot = Instant::now();
    let mut killed_at: Option<Instant> = None;
    loop {
        let mut i = 0;
        while i < remaining.len() {
            if !node_process_gone(remaining[i].pid, &remaining[i].name) {
                i += 1;
                continue;
            }
            let t = remaining.remove(i);
            // A worker that was killed, or is a zombie nobody reaped yet,
            // leaves a pidfile that would make the next start think it runs.
            if let Some(path) = &t.pidfile {
                remove_stale_pidfile(path, t.pid);
            }
            if killed_at.is_some() {
                out.note(&format!("\t> {}: KILLED", t.name));
            } else {
                out.note(&format!("\n\t> {}: {}", t.name, out.ok()));
            }
            on_gone(&t);
            if !remaining.is_empty() && killed_at.is_none() {
                print_waiting(ctx, &remaining);
            }
        }
        if remaining.is_empty() {
            return outcome;
        }
        match (timeout, killed_at) {
            (Some(limit), None) if started.elapsed() >= limit => {
                out.note("");
                for t in &remaining {
                    out.note(&format!(
                        "Sending KILL to node {} ({}): still running after {}s",
                        t.name,
                        t.pid,
                        limit.as_secs_f64()
                    ));
                    kill_node(t);
                    outcome.killed.push(t.name.clone());
                }
                killed_at = Some(Instant::now());
            }
            (_, Some(at)) if at.elapsed() >= KILL_GRACE => {
                for t in &remaining {
                    out.note(&format!(
                        "> {}: still running after KILL (pid {}): giving up",
                        t.name, t.pid
                    ));
                    outcome.stuck.push(t.name.clone());
                }
                return outcome;
            }
            _ => {}
        }
        std::thread::sleep(POLL);
        if killed_at.is_none() && last_dot.elapsed() >= DOT_EVERY {
            out.note_partial(".");
            last_dot = Instant::now();
        }
    }
}
