//! Pool children that die before they are ready, again and again, stop the
//! node with a clear error and exit status 1 instead of a respawn storm
//! (gunicorn's arbiter does the same). A child that dies after it was ready
//! is simply replaced (tests/worker_faults.rs).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

const STORM: &str = "Pool children keep dying before they are ready (5 in a row;";

/// Children whose log file cannot be opened exit 1 at once, before any
/// report: five of them in a row stop the node.
#[test]
fn children_exiting_at_boot_without_a_report_stop_the_node_with_status_1() {
    let (_redis, dir) = redis_with_app("");
    let (mut node, _guard, pid) = start_foreground(&dir, &["-c", "2"]);
    let children = descendants(pid);
    assert_eq!(children.len(), 2);

    // Every replacement child will fail to open its log file.
    for slot in ["w1-1.log", "w1-2.log"] {
        std::fs::rename(dir.join(slot), dir.join(format!("{slot}.old"))).expect("move log");
        std::fs::create_dir(dir.join(slot)).expect("a directory where the log goes");
    }
    let started = Instant::now();
    for child in children {
        signal(child, libc::SIGKILL);
    }
    let status = node
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the node kept respawning:\n{}", dir.read("w1.log")));
    assert_eq!(status.code(), Some(1), "{}", dir.read("w1.log"));
    let log = dir.read("w1.log");
    assert!(
        log.contains(STORM) && log.contains("exited with 'exitcode 1'"),
        "{log}"
    );
    assert!(!dir.join("w1.pid").exists(), "pidfile removed");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // It did not go on respawning: a handful of attempts, not hundreds.
    let respawned = log.matches("exited with 'exitcode 1'").count();
    assert!((5..=7).contains(&respawned), "{respawned} deaths:\n{log}");
}

/// Children killed by a signal before they are ready (as the OOM killer
/// would): they send nothing, and five in a row stop the node too. Redis is
/// down, so no child can become ready meanwhile.
#[test]
fn children_killed_at_boot_again_and_again_stop_the_node() {
    let (mut redis, dir) = redis_with_app("");
    let (mut node, _guard, pid) = start_foreground(&dir, &["-c", "1"]);
    let first = descendants(pid);
    assert_eq!(first.len(), 1);
    redis.stop();
    let mut killed: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.wait_timeout(Duration::from_millis(5)) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node kept respawning:\n{}",
            dir.read("w1.log")
        );
        for child in descendants(pid) {
            if killed.insert(child) {
                // It may be gone already; that is fine.
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
        }
    };
    assert_eq!(status.code(), Some(1), "{}", dir.read("w1.log"));
    let log = dir.read("w1.log");
    assert!(
        log.contains(STORM) && log.contains("exited with 'signal 9 (SIGKILL)'"),
        "{log}"
    );
    // The first child was ready before it was killed: it does not count.
    assert_eq!(killed.len(), 6, "{killed:?}\n{log}");
    assert!(!dir.join("w1.pid").exists());
}

/// New code deployed under a running node no longer imports, and the
/// node's Python template (which loaded the old code) dies. A child
/// recycled by `--max-tasks-per-child` then starts a Python host of its own
/// that fails (a `fatal` report each time), so the node stops with the
/// import error instead of booting Python again and again. (While the
/// template lives, recycled children fork from it and keep the loaded code,
/// as a Celery pool's do.)
#[test]
fn a_python_app_that_no_longer_imports_stops_the_node_with_the_import_error() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write(
        "stormy.py",
        "import os\nfrom celery import Celery\n\napp = Celery('stormy')\n\n\
         if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'BROKEN')):\n    \
         raise ImportError('stormy: the deployed code no longer imports')\n\n\
         @app.task(name='stormy.add')\ndef add(x, y):\n    return x + y\n",
    );
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let args = [
        "worker",
        "-A",
        "stormy",
        "-n",
        TEST_NODE,
        "-l",
        "info",
        "--pidfile=%n.pid",
        "--logfile=%n%I.log",
        "-c",
        "1",
        "--max-tasks-per-child",
        "1",
    ];
    let mut node = Rmulti::new(&dir)
        .args(args)
        .arg("--python")
        .arg(&python)
        .args([
            "-b",
            &redis.broker_url(),
            "--result-backend",
            &redis.backend_url(),
        ])
        .spawn();
    assert!(
        wait_until(Duration::from_secs(30), || dir
            .read("w1.log")
            .contains("w1@testhost ready.")),
        "not ready:\n{}",
        node_logs(&dir)
    );
    guard.remember();

    dir.write("BROKEN", "");
    let main: i32 = dir.read("w1.pid").trim().parse().expect("pid in w1.pid");
    let template = children_of(main)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.starts_with("python"))
        })
        .expect("the node's Python template");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(template),
        nix::sys::signal::Signal::SIGKILL,
    );
    let id = publish_task(&redis, "celery", "stormy.add", "[1, 2]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no result\n{}", node_logs(&dir)));
    assert_eq!(meta["result"], 3);
    let status = node
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the node kept respawning:\n{}", dir.read("w1.log")));
    assert_eq!(status.code(), Some(1), "{}", dir.read("w1.log"));
    let log = dir.read("w1.log");
    assert!(
        log.contains(STORM) && log.contains("stormy: the deployed code no longer imports"),
        "{log}"
    );
    assert!(!dir.join("w1.pid").exists());
}
