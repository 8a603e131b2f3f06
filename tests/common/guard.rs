//! Guards that SIGKILL everything a test started when the test ends, even
//! when it panics: [`Spawned`] for a process the test spawned, [`NodeGuard`]
//! for detached nodes found through their pidfiles.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use super::poll::{wait_for, wait_until};
use super::procs::{alive, descendants, read_pidfile};

/// SIGKILLs `pid`, its process group (if it leads one) and every
/// descendant (which may have groups of their own), then waits up to 5 s
/// for them to be gone or zombies.
pub fn kill_group_and_tree(pid: i32) {
    if pid <= 1 {
        return;
    }
    let mut victims = descendants(pid);
    victims.push(pid);
    for &p in &victims {
        // SAFETY: kill(2) has no memory-safety preconditions. A negative
        // pid addresses the group that p leads, if any.
        unsafe {
            if libc::getpgid(p) == p {
                libc::kill(-p, libc::SIGKILL);
            }
            libc::kill(p, libc::SIGKILL);
        }
    }
    wait_until(Duration::from_secs(5), || {
        victims.iter().all(|&p| !alive(p))
    });
}

/// True if `pid` is not this test process and its argv[0] is named
/// `rmulti*`: the only processes a [`NodeGuard`] may kill, since a pidfile
/// (or a remembered pid) can point at anything.
pub fn is_rmulti(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    Path::new(argv0.as_ref())
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("rmulti"))
}

/// Watches pidfiles of detached nodes; on drop, every node (and its pool)
/// still alive is SIGKILLed, so a failed test leaves nothing running.
/// Call [`NodeGuard::remember`] after a start so a node whose pidfile
/// vanished is still found.
pub struct NodeGuard {
    pidfiles: Vec<PathBuf>,
    seen: Vec<i32>,
}

impl NodeGuard {
    /// Pidfile paths, relative ones resolved against `dir`.
    pub fn new<P: AsRef<Path>>(dir: &Path, pidfiles: &[P]) -> NodeGuard {
        let pidfiles = pidfiles.iter().map(|p| dir.join(p.as_ref())).collect();
        NodeGuard {
            pidfiles,
            seen: Vec::new(),
        }
    }

    /// Watches one more pidfile.
    pub fn watch(&mut self, pidfile: impl Into<PathBuf>) {
        self.pidfiles.push(pidfile.into());
    }

    /// Records the pids the pidfiles hold now.
    pub fn remember(&mut self) {
        for pid in self.pidfiles.iter().filter_map(read_pidfile) {
            if !self.seen.contains(&pid) {
                self.seen.push(pid);
            }
        }
    }

    /// The pids the pidfiles hold now, in pidfile order (None: no/garbage file).
    pub fn pids(&self) -> Vec<Option<i32>> {
        self.pidfiles.iter().map(read_pidfile).collect()
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.remember();
        for &pid in &self.seen {
            // A pid may be stale or reused: kill only rmulti processes.
            if alive(pid) && is_rmulti(pid) {
                kill_group_and_tree(pid);
            }
        }
    }
}

/// A process started by [`Rmulti::spawn`] (or handed over with
/// [`Spawned::adopt`]); it, its process group if it leads one, and its
/// descendants are SIGKILLed and reaped on drop unless it already exited.
pub struct Spawned {
    pub child: Child,
    pub shown: String,
}

impl Spawned {
    /// Guards a child the test spawned itself (a `sleep` standing in for a
    /// foreign process, say), so that it dies with the test even on panic.
    pub fn adopt(child: Child, shown: impl Into<String>) -> Spawned {
        Spawned {
            child,
            shown: shown.into(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits up to `timeout` for it to exit; returns its status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_group_and_tree(self.pid());
        }
        let _ = self.child.wait();
    }
}
