//! Duplicate node names: a node holds a lease on its name in Redis, so a
//! second live node with the same name (another pidfile, another machine) is
//! refused at start with exit 73; a lease left by a SIGKILLed node does not
//! block its restart, and a clean stop gives the name up.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn worker(dir: &TestDir, files: &str) -> Run {
    Rmulti::new(dir)
        .args(["worker", "-A", "proj", "-n", TEST_NODE, "-l", "info"])
        .arg(format!("--pidfile={files}.pid"))
        .arg(format!("--logfile={files}.log"))
        .arg("--detach")
        .run()
}

fn lease_pid(redis: &RedisServer) -> Option<i64> {
    let value = redis
        .cmd(&["GET", &format!("rmulti.node.{TEST_NODE}")])
        .text()?;
    serde_json::from_str::<serde_json::Value>(&value).ok()?["pid"].as_i64()
}

#[test]
fn a_second_live_node_with_the_same_name_is_refused_and_a_killed_one_restarts() {
    let (redis, dir) = redis_with_app("");
    let _guard = NodeGuard::new(dir.path(), &["a.pid", "b.pid"]);
    worker(&dir, "a").success();
    let first = read_pidfile(dir.join("a.pid")).expect("pidfile a");
    assert_eq!(lease_pid(&redis), Some(first as i64));

    let run = worker(&dir, "b").code_is(73);
    assert!(
        run.stderr()
            .contains(&format!("another node named {TEST_NODE} is running")),
        "{}",
        run.stderr()
    );
    assert!(alive(first), "the first node must not be disturbed");
    assert!(wait_until(STARTUP_TIMEOUT, || read_pidfile(
        dir.join("b.pid")
    )
    .is_none()));

    // SIGKILLed: its lease (TTL 30 s) is taken over by the restart at once.
    signal(first, libc::SIGKILL);
    assert!(wait_until(STARTUP_TIMEOUT, || !alive(first)));
    let started = Instant::now();
    worker(&dir, "a").success();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "restart waited {:?}",
        started.elapsed()
    );
    let second = read_pidfile(dir.join("a.pid")).expect("pidfile a");
    assert_ne!(second, first);
    assert_eq!(lease_pid(&redis), Some(second as i64));

    // A clean stop gives the name up.
    signal(second, libc::SIGTERM);
    assert!(wait_until(STARTUP_TIMEOUT, || !alive(second)));
    assert_eq!(lease_pid(&redis), None);
}
