//! Looking at processes: liveness and the process tree from `/proc`,
//! pidfiles, signals, and whether the tests run as root.

use std::fs;
use std::path::Path;

/// Parent pid and state of a live process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

/// Every live descendant of `pid` (children, grandchildren, ...).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some((ppid, _)) = proc_stat(p) {
                    parent_of.push((p, ppid));
                }
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let cur = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The live direct children of `pid` (a node's pool children, say, with
/// whatever orphans it adopted as subreaper).
pub fn children_of(pid: i32) -> Vec<i32> {
    descendants(pid)
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((ppid, _)) if ppid == pid))
        .collect()
}

/// The pid in a pidfile (`<pid>\n`), if it holds one.
pub fn read_pidfile(path: impl AsRef<Path>) -> Option<i32> {
    fs::read_to_string(path.as_ref())
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 1)
}

/// Sends `sig` to `pid`; panics if kill(2) fails (the process is gone).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// True when the tests run as root (CI does): the tests that switch users
/// are `#[ignore]`d and `bin/test` runs them only then.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The user `nobody`, whom the root-only tests switch to.
pub fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("a user nobody in /etc/passwd")
}

/// SIGKILLs node main process `pid` and waits up to `timeout` for it and
/// `pool` (its processes, listed before the kill) to be gone. Returns the
/// ones still alive then (empty: all gone, as PR_SET_PDEATHSIG must make it).
pub fn kill_node(pid: i32, pool: &[i32], timeout: std::time::Duration) -> Vec<i32> {
    signal(pid, libc::SIGKILL);
    super::poll::wait_until(timeout, || !alive(pid) && pool.iter().all(|&c| !alive(c)));
    std::iter::once(pid)
        .chain(pool.iter().copied())
        .filter(|&p| alive(p))
        .collect()
}
