//! The multi commands, one file per command family, and what they share:
//! the run context, parsing argv into nodes, and probing a node's pidfile.

pub mod info;
pub mod kill;
pub mod restart;
pub mod start;
pub mod stop;
mod wait;

use std::path::{Path, PathBuf};

use super::argv;
use super::cmdline::{self, CommandLine};
use super::error::MultiError;
use super::nodes::{self, NodeList, NodeSpec};
use super::output::Output;
use crate::node::identity::{is_node_process, process_alive, read_pidfile, PidfileState};

pub struct Ctx {
    pub out: Output,
    pub cwd: PathBuf,
    pub hostname: String,
}

impl Ctx {
    pub fn new(out: Output) -> Result<Self, std::io::Error> {
        let cwd = std::env::current_dir()?;
        let hostname = nix::unistd::gethostname()
            .map_err(std::io::Error::from)?
            .to_string_lossy()
            .into_owned();
        Ok(Self { out, cwd, hostname })
    }

    pub fn nodes(&self, args: &[String]) -> Result<NodeList, MultiError> {
        nodes::build(argv::parse(args)?, &self.hostname)
    }

    /// Every node's command line, built up front so a bad template fails
    /// before any node is touched.
    pub fn command_lines(&self, list: &NodeList) -> Result<Vec<CommandLine>, MultiError> {
        let program = match &list.executable {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()
                .map_err(MultiError::CurrentExe)?
                .to_string_lossy()
                .into_owned(),
        };
        list.nodes
            .iter()
            .map(|n| cmdline::build(list, n, &program))
            .collect()
    }

    pub fn pidfile(&self, node: &NodeSpec) -> Option<PathBuf> {
        cmdline::pidfile_path(node, &self.cwd)
    }

    pub fn logfile(&self, node: &NodeSpec) -> Option<PathBuf> {
        cmdline::logfile_path(node, &self.cwd)
    }
}

/// What a node's pidfile tells about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Running(i32),
    Down,
}

/// Reads the node's pidfile and checks the pid really is this node's worker.
/// Garbage, stale and foreign pids are explained on a note line and count as
/// down; they are never signalled.
pub fn probe(ctx: &Ctx, node: &NodeSpec) -> Probe {
    let Some(path) = ctx.pidfile(node) else {
        return Probe::Down;
    };
    let shown = path.display();
    match read_pidfile(&path) {
        PidfileState::Missing => Probe::Down,
        PidfileState::Garbage => {
            ctx.out.note(&format!(
                "> {}: pidfile {shown} holds no valid pid: ignored",
                node.name
            ));
            Probe::Down
        }
        PidfileState::Pid(pid) if is_node_process(pid, &node.name) => Probe::Running(pid),
        PidfileState::Pid(pid) if process_alive(pid) => {
            ctx.out.note(&format!(
                "> {}: pidfile {shown} points at pid {pid}, a process that is not this node: left alone",
                node.name
            ));
            Probe::Down
        }
        PidfileState::Pid(pid) => {
            ctx.out.note(&format!(
                "> {}: pidfile {shown} is stale: pid {pid} is not running",
                node.name
            ));
            Probe::Down
        }
    }
}

/// Removes a pidfile left by a node we killed, if it still names that pid.
pub fn remove_stale_pidfile(path: &Path, pid: i32) {
    if read_pidfile(path) == PidfileState::Pid(pid) && !process_alive(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// The command's exit status: `FAILURE` if any node failed, else `OK`.
pub fn exit_status(failed: bool) -> i32 {
    if failed {
        crate::exit::FAILURE
    } else {
        crate::exit::OK
    }
}

/// `2`, `2 nodes`: Celery's pluralisation of the "Waiting for" line.
pub fn pluralize(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
