//! `--detach`: the double fork of a daemon, with one difference from Celery —
//! the launching process waits on a pipe until the node reports "ready" or a
//! failure, and exits with the node's status and reason instead of always 0.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::unistd::{fork, setsid, ForkResult};

use crate::exit;
use crate::plumbing::pipe::{cloexec_pipe, drain, set_nonblocking, wait_readable};

/// How long the launcher waits for the node to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the node tells its launcher that start-up ended. Without `--detach`
/// there is no launcher and failures go to stderr.
pub struct Notifier {
    pipe: Option<File>,
}

impl Notifier {
    pub fn foreground() -> Notifier {
        Notifier { pipe: None }
    }

    /// Closes the pipe in a forked pool child, so the launcher sees EOF when
    /// the node itself is done with it.
    pub fn close_in_child(&mut self) {
        self.pipe = None;
    }

    pub fn is_detached(&self) -> bool {
        self.pipe.is_some()
    }

    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"0\n");
        }
    }

    /// Reports a start-up failure (to the launcher, or stderr in the foreground).
    pub fn fail(&mut self, code: i32, message: &str) {
        match self.pipe.take() {
            Some(mut p) => {
                let _ = p.write_all(format!("{code}\n{message}").as_bytes());
            }
            None => eprintln!("{message}"),
        }
    }

    /// A message for the launcher's terminal that does not end start-up.
    pub fn warn(&mut self, message: &str) {
        match self.pipe.as_mut() {
            Some(p) => {
                let _ = p.write_all(format!("w\n{message}\n").as_bytes());
            }
            None => eprintln!("{message}"),
        }
    }
}

/// Detaches. Returns only in the daemon (the grandchild); the launcher waits
/// for the node's report and exits with its status.
pub fn daemonize(logfile_hint: &str) -> Notifier {
    let (read, write) = match cloexec_pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot detach: pipe: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    // SAFETY: the process is single-threaded here (no threads are ever started before detaching).
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("cannot detach: fork: {e}");
            std::process::exit(exit::FAILURE);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            let code = wait_for_node(read, logfile_hint);
            let _ = nix::sys::wait::waitpid(child, None);
            std::process::exit(code);
        }
        Ok(ForkResult::Child) => {}
    }
    drop(read);
    let _ = setsid();
    // SAFETY: still single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            // SAFETY: _exit skips destructors and atexit handlers that belong to the launcher.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Child) => {}
        Err(e) => {
            let mut n = Notifier {
                pipe: Some(File::from(write)),
            };
            n.fail(exit::FAILURE, &format!("cannot detach: fork: {e}"));
            std::process::exit(exit::FAILURE);
        }
    }
    redirect_stdio();
    Notifier {
        pipe: Some(File::from(write)),
    }
}

fn redirect_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// The launcher's side: relays warnings, then exits with the node's status.
fn wait_for_node(read: OwnedFd, logfile_hint: &str) -> i32 {
    let deadline = Instant::now() + READY_TIMEOUT;
    if set_nonblocking(&read).is_err() {
        eprintln!("cannot detach: the node's pipe cannot be read. See {logfile_hint}");
        return exit::FAILURE;
    }
    let mut file = File::from(read);
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("The node did not report ready within {} s; it may still be starting. See {logfile_hint}", READY_TIMEOUT.as_secs());
            return exit::FAILURE;
        }
        match wait_readable(&[file.as_fd()], Some(left)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        let eof = drain(&mut file, &mut buf);
        relay_warnings(&mut buf);
        if buf.starts_with(b"0\n") {
            return exit::OK;
        }
        if !matches!(eof, Ok(false)) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let Some((code, message)) = text.split_once('\n') else {
        eprintln!("The node exited during start-up without saying why. See {logfile_hint}");
        return exit::FAILURE;
    };
    let code: i32 = code.trim().parse().unwrap_or(exit::FAILURE);
    if code != 0 && !message.is_empty() {
        eprintln!("{}", message.trim_end());
    }
    code
}

/// Prints and removes complete `w\n<line>\n` warning records from the front of `buf`.
fn relay_warnings(buf: &mut Vec<u8>) {
    while buf.starts_with(b"w\n") {
        let Some(end) = buf[2..].iter().position(|b| *b == b'\n') else {
            return;
        };
        let line: Vec<u8> = buf.drain(..end + 3).collect();
        eprintln!("{}", String::from_utf8_lossy(&line[2..line.len() - 1]));
    }
}
