//! Spawning one node's launcher (`rmulti worker ... --detach`) and waiting for
//! its verdict. The launcher exits 0 once the node is ready and non-zero with
//! the reason on stderr otherwise; its stdout and stderr are captured so the
//! reason can be shown under the node's line.
//!
//! The daemonized worker may keep the pipe open after the launcher exits, so
//! reading stops when the launcher is gone, not at end of file.

use std::io;
use std::os::fd::AsFd;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::cmdline::CommandLine;
use crate::plumbing::pipe::{cloexec_pipe, drain, set_nonblocking, wait_readable};

#[derive(Debug)]
pub struct Launched {
    pub status: ExitStatus,
    /// What the launcher wrote on stdout and stderr, interleaved.
    pub output: String,
}

/// How often the launcher's exit is checked while its pipe stays open: a
/// fallback, for a worker program that keeps its stdout after detaching.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub fn launch(cmd: &CommandLine) -> io::Result<Launched> {
    // Close-on-exec: without it the launcher, and the daemon it forks, kept a
    // copy of the write end under its own fd number, so the end of file
    // that says "launcher gone" never came and each node cost a poll interval.
    let (read_end, write_end) = cloexec_pipe()?;
    set_nonblocking(&read_end)?;
    let mut child = {
        let mut command = Command::new(&cmd.program);
        command
            .args(cmd.argv())
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end.try_clone()?))
            .stderr(Stdio::from(write_end));
        command.spawn()?
        // `command` drops here, closing our copies of the write end.
    };
    let mut reader = std::fs::File::from(read_end);
    let mut output = Vec::new();
    let mut eof = false;
    let status = loop {
        if !eof {
            wait_readable(&[reader.as_fd()], Some(POLL_INTERVAL))?;
            // A read error ends nothing: the launcher's exit does.
            eof = drain(&mut reader, &mut output).unwrap_or(false);
        }
        if eof {
            break child.wait()?;
        }
        if let Some(status) = child.try_wait()? {
            let _ = drain(&mut reader, &mut output);
            break status;
        }
    };
    Ok(Launched {
        status,
        output: String::from_utf8_lossy(&output).into_owned(),
    })
}
