//! `stop` and `stopwait`/`stop_verify` (spec §9.2, §9.3). `stop` signals and
//! returns; `stopwait` also waits for every node, and with `--timeout=SECONDS`
//! SIGKILLs what is still running when time is up.

use super::wait::{parse_timeout, signal_nodes, strip_signal, wait_all};
use super::{exit_status, probe, Ctx, Probe};
use crate::multi::error::MultiError;

pub fn stop(ctx: &Ctx, args: &[String], wait: bool) -> Result<i32, MultiError> {
    let out = &ctx.out;
    out.splash();
    let (sig, args) = strip_signal(args)?;
    let list = ctx.nodes(&args)?;
    let timeout = parse_timeout(&list)?;
    let probes: Vec<Probe> = list
        .nodes
        .iter()
        .map(|node| {
            let p = probe(ctx, node);
            if p == Probe::Down {
                out.note_down(&node.name);
            }
            p
        })
        .collect();
    let mut say_down = |idx: usize| out.note_down(&list.nodes[idx].name);
    let (targets, mut failed) = signal_nodes(ctx, &list, &probes, sig, &mut say_down);
    if wait {
        let outcome = wait_all(ctx, targets, timeout, &mut |t| out.note_down(&t.name));
        failed |= !outcome.killed.is_empty() || !outcome.stuck.is_empty();
    }
    Ok(exit_status(failed))
}
