//! Is this pid that node's rmulti worker? Pidfiles can be stale, garbage or
//! point at a reused pid (spec §10.4, §10.7); the front end signals a pid only
//! after this check says it is the node's main process.

use std::fs;
use std::io;
use std::path::Path;

use crate::plumbing::process;

/// What a pidfile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidfileState {
    /// No such file.
    Missing,
    /// Unreadable, or not `<positive int>\n`: never a pid to signal.
    Garbage,
    Pid(i32),
}

/// Reads a pidfile written as `<pid>\n`. `0`, negative numbers, a missing
/// newline and anything else count as garbage: `-1` would otherwise mean
/// "every process" to kill(2).
pub fn read_pidfile(path: &Path) -> PidfileState {
    match fs::read(path) {
        Ok(bytes) => parse_pidfile(&bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => PidfileState::Missing,
        Err(_) => PidfileState::Garbage,
    }
}

pub fn parse_pidfile(bytes: &[u8]) -> PidfileState {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return PidfileState::Garbage;
    };
    let Some(line) = text.strip_suffix('\n') else {
        return PidfileState::Garbage;
    };
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return PidfileState::Garbage;
    }
    match line.parse::<i32>() {
        Ok(pid) if pid > 0 => PidfileState::Pid(pid),
        _ => PidfileState::Garbage,
    }
}

/// True if a process with this pid exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    pid > 0 && process::stat(pid).is_some_and(|s| s.is_alive())
}

/// argv[0] names rmulti: basename `rmulti`, or the basename of the running
/// executable (a renamed binary, a test build).
fn is_rmulti_program(argv0: &str) -> bool {
    let base = Path::new(argv0)
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or(argv0);
    if base == "rmulti" || argv0.ends_with("rmulti") {
        return true;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|f| f.to_string_lossy().into_owned()))
        .is_some_and(|own| own == base)
}

/// The `-n`/`--hostname` value of a worker argv, before any `--`.
pub fn worker_node_name(argv: &[String]) -> Option<&str> {
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.as_str();
        if arg == "--" {
            return None;
        }
        if arg == "-n" || arg == "--hostname" {
            return it.next().map(|s| s.as_str());
        }
        if let Some(v) = arg.strip_prefix("--hostname=") {
            return Some(v);
        }
        if let Some(v) = arg.strip_prefix("-n") {
            if !arg.starts_with("--") {
                return Some(v.strip_prefix('=').unwrap_or(v));
            }
        }
    }
    None
}

/// True only for the live (non-zombie) main process of this node's rmulti
/// worker: argv[0] is rmulti, it runs `worker`, and its `-n` is `node_name`.
pub fn is_node_process(pid: i32, node_name: &str) -> bool {
    if pid <= 1 || !process_alive(pid) {
        return false;
    }
    let Some(argv) = process::argv(pid) else {
        return false;
    };
    argv_is_node(&argv, node_name)
}

/// True for the live (non-zombie) main process of any rmulti worker: what the
/// worker's own pidfile check needs (a pidfile may be shared between node names).
pub fn is_rmulti_worker(pid: i32) -> bool {
    if pid <= 1 || !process_alive(pid) {
        return false;
    }
    process::argv(pid).is_some_and(|argv| {
        argv.first().is_some_and(|a0| is_rmulti_program(a0))
            && argv.iter().skip(1).any(|a| a == "worker")
    })
}

pub fn argv_is_node(argv: &[String], node_name: &str) -> bool {
    let Some(argv0) = argv.first() else {
        return false;
    };
    is_rmulti_program(argv0)
        && argv.iter().skip(1).any(|a| a == "worker")
        && worker_node_name(argv) == Some(node_name)
}

/// True once a node's main process has really exited: no such pid, a
/// zombie, or the pid now belongs to another program. A process in the middle
/// of exiting (its memory, hence its cmdline, already gone) still counts as
/// there, so a restart never meets it.
pub fn node_process_gone(pid: i32, node_name: &str) -> bool {
    if pid <= 1 {
        return true;
    }
    let Some(stat) = process::stat(pid) else {
        return true;
    };
    if !stat.is_alive() {
        return true;
    }
    match process::argv(pid) {
        Some(argv) => !argv_is_node(&argv, node_name),
        None => stat.kernel_thread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pidfile_contents() {
        assert_eq!(parse_pidfile(b"123\n"), PidfileState::Pid(123));
        for bad in [
            &b"123"[..],
            b"0\n",
            b"-5\n",
            b"\n",
            b"",
            b"abc\n",
            b"12 \n",
            b"+3\n",
            b"1\n2\n",
            b"99999999999\n",
        ] {
            assert_eq!(parse_pidfile(bad), PidfileState::Garbage, "{bad:?}");
        }
        assert_eq!(
            read_pidfile(Path::new("/nonexistent/x.pid")),
            PidfileState::Missing
        );
    }

    #[test]
    fn node_name_forms() {
        assert_eq!(
            worker_node_name(&v(&["rmulti", "worker", "-n", "w1@h"])),
            Some("w1@h")
        );
        assert_eq!(
            worker_node_name(&v(&["rmulti", "worker", "--hostname=w1@h"])),
            Some("w1@h")
        );
        assert_eq!(
            worker_node_name(&v(&["rmulti", "worker", "--hostname", "w1@h"])),
            Some("w1@h")
        );
        assert_eq!(
            worker_node_name(&v(&["rmulti", "worker", "-nw1@h"])),
            Some("w1@h")
        );
        assert_eq!(
            worker_node_name(&v(&["rmulti", "worker", "--", "-n", "x"])),
            None
        );
    }

    #[test]
    fn argv_identity() {
        let ok = v(&["/usr/bin/rmulti", "worker", "-A", "proj", "-n", "w1@h"]);
        assert!(argv_is_node(&ok, "w1@h"));
        assert!(!argv_is_node(&ok, "w2@h"));
        assert!(!argv_is_node(
            &v(&["/bin/sleep", "worker", "-n", "w1@h"]),
            "w1@h"
        ));
        assert!(!argv_is_node(
            &v(&["/usr/bin/rmulti", "call", "-n", "w1@h"]),
            "w1@h"
        ));
        assert!(argv_is_node(
            &v(&["target/debug/rmulti", "worker", "--hostname=w1@h"]),
            "w1@h"
        ));
    }

    #[test]
    fn live_processes() {
        let me = std::process::id() as i32;
        assert!(process_alive(me));
        assert!(!process_alive(0));
        assert!(!process_alive(-1));
        // the test binary is not a worker
        assert!(!is_node_process(me, "w1@h"));
        assert!(!is_node_process(1, "w1@h"));
        assert!(node_process_gone(me, "w1@h"));
        assert!(node_process_gone(i32::MAX, "w1@h"));
    }
}
