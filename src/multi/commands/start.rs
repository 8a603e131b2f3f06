//! `start` (spec §9.1), and starting one node, which `restart` shares.
//!
//! Better than Celery: `OK` means the node is ready (the launcher returns only
//! then), a node already running is reported `FAILED` without being touched,
//! and the launcher's own messages are shown on stderr, indented under the
//! node's line, whether it failed or not. Only `start` and `restart` create
//! the missing parent directories of the pid and log files.

use nix::sys::signal::Signal;

use super::{exit_status, Ctx};
use crate::multi::cmdline::CommandLine;
use crate::multi::dirs;
use crate::multi::error::MultiError;
use crate::multi::launch::launch;
use crate::multi::nodes::NodeSpec;
use crate::multi::output::Colour;
use crate::node::identity::{is_node_process, read_pidfile, PidfileState};

pub fn start(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    ctx.out.splash();
    let list = ctx.nodes(args)?;
    let lines = ctx.command_lines(&list)?;
    ctx.out.note("> Starting nodes...");
    let mut failed = false;
    for (node, line) in list.nodes.iter().zip(&lines) {
        failed |= !start_node(ctx, node, line, false);
    }
    Ok(exit_status(failed))
}

/// Indents the launcher's messages under the node's line, on stderr.
fn show_launcher_output(ctx: &Ctx, text: &str) {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("\t  {l}"))
        .collect();
    if !lines.is_empty() {
        ctx.out.error(&lines.join("\n"));
    }
}

fn running_pid(ctx: &Ctx, node: &NodeSpec) -> Option<i32> {
    match read_pidfile(&ctx.pidfile(node)?) {
        PidfileState::Pid(pid) if is_node_process(pid, &node.name) => Some(pid),
        _ => None,
    }
}

/// Starts one node and prints its `OK`/`FAILED`; true on success.
pub fn start_node(ctx: &Ctx, node: &NodeSpec, line: &CommandLine, restarting: bool) -> bool {
    let out = &ctx.out;
    if restarting {
        out.note_partial(&out.paint(Colour::Blue, &format!("> Restarting node {}: ", node.name)));
    } else {
        out.note_partial(&format!("\t> {}: ", node.name));
    }
    if let Some(pid) = running_pid(ctx, node) {
        out.note(&format!("already running (pid {pid})"));
        out.note(&out.failed());
        return false;
    }
    let owner = dirs::owner(node);
    for path in [ctx.pidfile(node), ctx.logfile(node)].into_iter().flatten() {
        let Some(dir) = path.parent() else { continue };
        if let Err(e) = dirs::create(dir, owner) {
            out.note(&out.failed());
            out.error(&format!(
                "\t  cannot create directory {}: {e}",
                dir.display()
            ));
            return false;
        }
    }
    out.info(&format!("  {}", line.display()));
    match launch(line) {
        Ok(done) => {
            let ok = done.status.success();
            if let Some(code) = done.status.code().filter(|c| *c != 0) {
                out.note(&format!("* Child terminated with exit code {code}"));
            } else if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&done.status) {
                let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
                out.note(&format!("* Child was terminated by signal {sig} ({name})"));
            }
            out.note(&if ok { out.ok() } else { out.failed() });
            show_launcher_output(ctx, &done.output);
            ok
        }
        Err(e) => {
            out.note(&out.failed());
            out.error(&format!("\t  cannot run {}: {e}", line.program));
            false
        }
    }
}
