//! One worker node, the way most tests start it (w1 detached or in the
//! foreground, on a fresh Redis with the builtin app), and its logs.

use std::fs;

use super::app::TestDir;
use super::command::{Rmulti, Run};
use super::guard::{NodeGuard, Spawned};
use super::poll::{wait_until, STARTUP_TIMEOUT};
use super::procs::{alive, read_pidfile};
use super::redis::RedisServer;

/// The node name tests use, so log lines and held-list keys are predictable.
pub const TEST_NODE: &str = "w1@testhost";

/// `worker -A proj -n w1@testhost -l info --pidfile=%n.pid --logfile=%n%I.log`
/// followed by `extra` (no `--detach`: foreground tests use it too).
pub fn worker_args(extra: &[&str]) -> Vec<String> {
    let base = ["worker", "-A", "proj", "-n", TEST_NODE, "-l", "info"];
    let files = ["--pidfile=%n.pid", "--logfile=%n%I.log"];
    base.iter()
        .chain(files.iter())
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect()
}

/// Runs `rmulti worker ... --detach` for w1 in `dir`; the launcher's outcome is
/// not asserted, and the guard kills whatever it started.
pub fn start_worker(dir: &TestDir, extra: &[&str]) -> (Run, NodeGuard) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut args = worker_args(extra);
    args.push("--detach".to_string());
    let run = Rmulti::new(dir).args(&args).run();
    guard.remember();
    (run, guard)
}

/// Starts w1 detached with `extra` flags and asserts it started: exit 0, a
/// pidfile, a live main process. Returns the guard, the main pid and the
/// launcher's outcome.
pub fn start_detached_run(dir: &TestDir, extra: &[&str]) -> (NodeGuard, i32, Run) {
    let (run, guard) = start_worker(dir, extra);
    let run = run.success();
    let pid = read_pidfile(dir.join("w1.pid")).expect("pidfile after a successful start");
    assert!(alive(pid), "main process {pid} not alive after start");
    (guard, pid, run)
}

/// [`start_detached_run`] without the launcher's outcome.
pub fn start_detached(dir: &TestDir, extra: &[&str]) -> (NodeGuard, i32) {
    let (guard, pid, _) = start_detached_run(dir, extra);
    (guard, pid)
}

/// Starts w1 in the foreground (so its exit status can be seen) and waits
/// for `ready.` in its log. Returns the process, its guard and the pid its
/// pidfile holds.
pub fn start_foreground(dir: &TestDir, extra: &[&str]) -> (Spawned, NodeGuard, i32) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let node = Rmulti::new(dir).args(worker_args(extra)).spawn();
    let ready = format!("{TEST_NODE} ready.");
    assert!(
        wait_until(STARTUP_TIMEOUT, || dir.read("w1.log").contains(&ready)),
        "foreground node not ready:\n{}",
        node_logs(dir)
    );
    guard.remember();
    let pid = read_pidfile(dir.join("w1.pid")).expect("pidfile of a ready node");
    (node, guard, pid)
}

/// A fresh redis-server and a test dir holding the builtin app `proj`, with
/// `extra_toml` in its config.
pub fn redis_with_app(extra_toml: &str) -> (RedisServer, TestDir) {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write_app("proj", extra_toml);
    (redis, dir)
}

/// [`redis_with_app`] with w1 started on it as [`start_detached`] does.
/// Bind all four in this order: the guard then drops before the dir and
/// the redis-server it uses.
pub fn started_node(extra_toml: &str, extra: &[&str]) -> (RedisServer, TestDir, NodeGuard, i32) {
    let (redis, dir) = redis_with_app(extra_toml);
    let (guard, pid) = start_detached(&dir, extra);
    (redis, dir, guard, pid)
}

/// Every `*.log` file of the test dir, sorted by name, each after a
/// `--- <name>` line: for failure messages, and for asserting that a line
/// is (or is not) in any of a node's logs.
pub fn node_logs(dir: &TestDir) -> String {
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| format!("--- {n}\n{}", dir.read(n)))
        .collect()
}

/// The machine's host name: what `%h` and a bare node name expand to.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}
