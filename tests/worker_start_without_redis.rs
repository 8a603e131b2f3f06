//! A node started while its Redis is down (boot order, a Redis restarting):
//! it starts anyway, logs Celery's connection error with the URL masked,
//! retries with a bounded back-off, and serves once Redis is up. A detached
//! start does not hang: after a short grace it returns 0 with a warning.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn connection_errors(dir: &TestDir) -> usize {
    dir.read("w1.log")
        .lines()
        .filter(|l| l.contains("ERROR/MainProcess] consumer: Cannot connect to redis://127.0.0.1:"))
        .count()
}

#[test]
fn a_node_started_before_redis_runs_retries_and_serves_once_redis_is_up() {
    let (mut redis, dir) = redis_with_app("");
    redis.stop();

    let started = Instant::now();
    let (run, _guard) = start_worker(&dir, &["-c", "2"]);
    let run = run.success();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "the launcher waits the grace, not longer: {waited:?}"
    );
    let url = format!("redis://127.0.0.1:{}/0", redis.port());
    assert!(
        run.stderr().contains(&format!(
            "Redis at {url} is not reachable yet; the node is running"
        )),
        "{}",
        run.stderr()
    );
    let pid = read_pidfile(dir.join("w1.pid")).expect("pidfile while waiting for Redis");
    assert!(alive(pid));
    assert!(descendants(pid).is_empty(), "no pool before Redis answers");
    let log = dir.read("w1.log");
    assert!(log.contains("Trying again in 0.50 seconds... (1)"), "{log}");
    assert!(log.contains("Trying again in 1.00 seconds... (2)"), "{log}");
    assert!(log.contains("Trying again in 2.00 seconds... (3)"), "{log}");

    // The back-off is bounded: 8 s at most, so the node comes up within
    // about that once Redis does.
    assert!(wait_until(Duration::from_secs(15), || connection_errors(
        &dir
    ) >= 5));
    assert!(dir
        .read("w1.log")
        .contains("Trying again in 8.00 seconds... (5)"));
    redis.restart();
    let ready = wait_until(Duration::from_secs(12), || {
        dir.read("w1.log").contains("w1@testhost ready.")
    });
    assert!(ready, "{}", node_logs(&dir));
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[20, 22]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no result\n{}", node_logs(&dir)));
    assert_eq!(meta["result"], 42);
    assert_eq!(read_pidfile(dir.join("w1.pid")), Some(pid), "the same node");
}

#[test]
fn term_while_waiting_for_redis_exits_0_and_removes_the_pidfile() {
    let (mut redis, dir) = redis_with_app("");
    redis.stop();

    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut node = Rmulti::new(&dir).args(worker_args(&["-c", "1"])).spawn();
    assert!(wait_until(STARTUP_TIMEOUT, || connection_errors(&dir) >= 1));
    guard.remember();
    assert!(dir.join("w1.pid").exists());
    node.signal(libc::SIGTERM);
    let status = node
        .wait_timeout(Duration::from_secs(5))
        .expect("the node left within 5 s of TERM");
    assert_eq!(status.code(), Some(0), "{}", dir.read("w1.log"));
    assert!(!dir.join("w1.pid").exists());
}

/// `rmulti start` (celery multi's front end) with Redis down: the node is
/// `OK` (it runs and will serve), the reason it is not serving yet is shown
/// under its line, and `stopwait` stops it as any node.
#[test]
fn multi_start_says_ok_with_the_warning_and_stopwait_stops_the_node() {
    let (mut redis, dir) = redis_with_app("");
    redis.stop();
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let run = Rmulti::new(&dir)
        .args(["start", "w1", "-A", "proj", "-c", "1"])
        .run();
    guard.remember();
    let run = run.success();
    assert!(run.stdout().contains(": OK\n"), "{}", run.stdout());
    assert!(
        run.stderr().contains(&format!(
            "\t  Redis at redis://127.0.0.1:{}/0 is not reachable yet",
            redis.port()
        )),
        "{}",
        run.stderr()
    );
    assert!(read_pidfile(dir.join("w1.pid")).is_some_and(alive));
    Rmulti::new(&dir).args(["stopwait", "w1"]).run().success();
    assert!(!dir.join("w1.pid").exists());
}

#[test]
fn a_server_that_accepts_but_never_answers_is_retried_and_term_still_stops_the_node() {
    let (_redis, dir) = redis_with_app("");
    // Accepts connections and holds them, never answering (a wedged proxy).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = format!("redis://:secret@127.0.0.1:{port}/3");

    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut node = Rmulti::new(&dir)
        .args(worker_args(&[
            "-c",
            "1",
            "-b",
            &url,
            "--result-backend",
            &url,
        ]))
        .spawn();
    // The set-up (AUTH, SELECT) is under the read timeout too: the node
    // reports the silent server and tries again instead of hanging in it.
    let shown = format!("consumer: Cannot connect to redis://:**@127.0.0.1:{port}/3");
    assert!(
        wait_until(Duration::from_secs(20), || dir
            .read("w1.log")
            .matches(&shown)
            .count()
            >= 2),
        "{}",
        dir.read("w1.log")
    );
    guard.remember();
    node.signal(libc::SIGTERM);
    let status = node
        .wait_timeout(Duration::from_secs(10))
        .expect("the node left within 10 s of TERM");
    assert_eq!(status.code(), Some(0), "{}", dir.read("w1.log"));
    assert!(!dir.join("w1.pid").exists());
}
