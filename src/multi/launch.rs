//! Spawning one node's launcher (`rmulti worker ... --detach`) and waiting for
//! its verdict. The launcher exits 0 once the node is ready and non-zero with
//! the reason on stderr otherwise; its stdout and stderr are captured so the
//! reason can be shown under the node's line.
//!
//! The daemonized worker may keep the pipe open after the launcher exits, so
//! reading stops when the launcher is gone, not at end of file.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::cmdline::CommandLine;

#[derive(Debug)]
pub struct Launched {
    pub status: ExitStatus,
    /// What the launcher wrote on stdout and stderr, interleaved.
    pub output: String,
}

/// How often the launcher's exit is checked while its pipe stays open: a
/// fallback, for a worker program that keeps its stdout after detaching.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Reads what is available now; returns true at end of file.
fn drain(reader: &mut std::fs::File, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

pub fn launch(cmd: &CommandLine) -> io::Result<Launched> {
    // Close-on-exec: without it the launcher, and the daemon it forks, kept a
    // copy of the write end under its own fd number, so the end of file
    // that says "launcher gone" never came and each node cost a poll interval.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
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
            let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
            eof = drain(&mut reader, &mut output);
        }
        if eof {
            break child.wait()?;
        }
        if let Some(status) = child.try_wait()? {
            drain(&mut reader, &mut output);
            break status;
        }
    };
    Ok(Launched {
        status,
        output: String::from_utf8_lossy(&output).into_owned(),
    })
}
