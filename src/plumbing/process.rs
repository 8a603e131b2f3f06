//! What `/proc` says about a process, read through the `procfs` crate (it
//! parses `stat` whatever the command name holds, spaces and parentheses
//! included). Every answer is a snapshot: the process may be gone a moment
//! later, so a missing or unreadable entry is `None`, never an error.

use std::io::Read;

use procfs::process::{all_processes, Process};

/// `PF_KTHREAD` in `stat`'s flags (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub ppid: i32,
    pub kernel_thread: bool,
}

impl Stat {
    /// Neither a zombie nor dead.
    pub fn is_alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

pub fn stat(pid: i32) -> Option<Stat> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some(Stat {
        state: stat.state,
        ppid: stat.ppid,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
    })
}

/// The argv from `/proc/<pid>/cmdline`; `None` when it is empty (a zombie,
/// a kernel thread, a process in the middle of exiting) or unreadable.
/// An argument that is not UTF-8 is decoded lossily (`Process::cmdline`
/// would fail on it, and a pid reused by such a program would then never
/// count as another program's).
pub fn argv(pid: i32) -> Option<Vec<String>> {
    let mut raw = Vec::new();
    Process::new(pid)
        .ok()?
        .open_relative("cmdline")
        .ok()?
        .read_to_end(&mut raw)
        .ok()?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    (!argv.is_empty()).then_some(argv)
}

/// The parent pid of `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.ppid)
}

/// The pids whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(all) = all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| {
        let p = p.ok()?;
        (p.stat().ok()?.ppid == pid).then_some(p.pid())
    })
    .collect()
}

/// This process's resident set size in KiB (`/proc/self/statm`).
pub fn resident_kib() -> Option<u64> {
    let pages = Process::myself().ok()?.statm().ok()?.resident;
    Some(pages * procfs::page_size() / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_child() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(s.is_alive());
        assert!(!s.kernel_thread);
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
        assert!(argv(me).is_some_and(|a| !a.is_empty()));
        assert!(resident_kib().is_some_and(|k| k > 0));
        assert_eq!(stat(i32::MAX), None);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children_of(me).contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
