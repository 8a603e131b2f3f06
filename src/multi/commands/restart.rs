//! `restart` (spec §9.4): nodes that are down are started first; running
//! nodes are signalled together and each is started again as soon as its
//! old process is gone, so the new worker never meets the old one.
//!
//! Unlike Celery, the signal argument is not part of the new command line.

use std::cell::Cell;

use super::start::start_node;
use super::wait::{parse_timeout, signal_nodes, strip_signal, wait_all};
use super::{exit_status, probe, Ctx, Probe};
use crate::multi::error::MultiError;

pub fn restart(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    ctx.out.splash();
    let (sig, args) = strip_signal(args)?;
    let list = ctx.nodes(&args)?;
    let lines = ctx.command_lines(&list)?;
    let timeout = parse_timeout(&list)?;
    let probes: Vec<Probe> = list.nodes.iter().map(|n| probe(ctx, n)).collect();
    // Both callbacks below may record a failure.
    let failed = Cell::new(false);
    let restart_one = |idx: usize| {
        if !start_node(ctx, &list.nodes[idx], &lines[idx], true) {
            failed.set(true);
        }
    };
    for (idx, p) in probes.iter().enumerate() {
        if *p == Probe::Down {
            restart_one(idx);
        }
    }
    let (targets, signal_failed) =
        signal_nodes(ctx, &list, &probes, sig, &mut |idx| restart_one(idx));
    let outcome = wait_all(ctx, targets, timeout, &mut |t| restart_one(t.idx));
    let bad =
        failed.get() || signal_failed || !outcome.killed.is_empty() || !outcome.stuck.is_empty();
    Ok(exit_status(bad))
}
