//! What a pool child does when Redis fails in the middle of a task: the
//! message stays in its held list, and when Redis answers again the child
//! resumes where it was — it neither runs the task twice nor records a task
//! that never ran as lost.

mod common;

use std::time::Duration;

use common::*;

/// w1 with its broker and its result backend on two redis-servers, so the
/// result store can fail while the broker keeps working; `extra` goes in
/// the app's config. Bind all four in this order.
fn split_node(extra: &str) -> (RedisServer, RedisServer, TestDir, NodeGuard) {
    let broker = RedisServer::start();
    let backend = RedisServer::start();
    let dir = TestDir::new(&broker);
    dir.write(
        "proj.toml",
        format!(
            "broker_url = \"{}\"\nresult_backend = \"{}\"\n{extra}\n[tasks]\n{BUILTIN_TASKS}",
            broker.url(0),
            backend.url(0)
        ),
    );
    let (guard, _pid) = start_detached(&dir, &["-c", "1"]);
    (broker, backend, dir, guard)
}

/// The task ran to success exactly once, by the log of the only child.
fn assert_succeeded_once(dir: &TestDir, id: &str) {
    let log = dir.read("w1-1.log");
    assert_eq!(
        log.matches(&format!("[{id}] succeeded")).count(),
        1,
        "{log}"
    );
}

fn result_in(backend: &RedisServer, id: &str) -> Option<serde_json::Value> {
    result(backend, 0, id).filter(|m| m["status"] != "STARTED")
}

/// Regression (review): the STARTED write failed after the early ack, and the
/// task came back from the held list marked started, so it was recorded as
/// WorkerLostError although it never ran.
#[test]
fn a_task_acked_but_not_run_when_the_backend_failed_is_run_once() {
    let (broker, mut backend, dir, _guard) = split_node("task_track_started = true");

    backend.stop();
    let id = publish_task(&broker, "celery", "proj.tasks.add", "[2, 3]");
    // The child has taken it and failed on the backend.
    assert!(wait_until(Duration::from_secs(10), || {
        dir.read("w1-1.log").contains("Connection to broker lost")
    }));
    backend.restart();
    let meta = wait_for(Duration::from_secs(15), || result_in(&backend, &id))
        .unwrap_or_else(|| panic!("no result\n{}", dir.read("w1-1.log")));
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], 5);
    assert_succeeded_once(&dir, &id);
    wait_nothing_in_flight(&broker);
}

/// A result the backend would not take while it was down is stored when it
/// comes back, and the task is not run again.
#[test]
fn a_result_stored_late_is_the_real_one_and_the_task_ran_once() {
    let (broker, mut backend, dir, _guard) = split_node("");

    let id = publish_task(&broker, "celery", "proj.tasks.sleep", "[0.5]");
    // Stop the backend while the task sleeps; the child retries the store.
    assert!(wait_until(Duration::from_secs(10), || {
        broker.cmd(&["KEYS", "rmulti.state.*"]).strings().len() == 1
    }));
    backend.stop();
    assert!(wait_until(Duration::from_secs(10), || {
        dir.read("w1-1.log").contains("Cannot store result of task")
    }));
    backend.restart();
    let meta = wait_for(Duration::from_secs(15), || result_in(&backend, &id))
        .unwrap_or_else(|| panic!("no result\n{}", dir.read("w1-1.log")));
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], 0.5);
    assert_succeeded_once(&dir, &id);
    wait_nothing_in_flight(&broker);
}

/// Regression (found by tests/fault_suite.rs): when Redis refused both the
/// result and its dead-letter record (here: `maxmemory` reached), the
/// outcome was dropped, and once Redis took writes again the message was
/// acked without any result.
#[test]
fn a_result_refused_by_a_full_redis_is_stored_once_it_has_room() {
    let (redis, dir, _guard, _pid) = started_node("", &["-c", "1"]);

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[1]");
    assert!(wait_until(Duration::from_secs(10), || {
        redis.cmd(&["KEYS", "rmulti.state.*"]).strings().len() == 1
    }));
    // Full while the task runs: every write is refused with -OOM.
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    assert!(
        wait_until(Duration::from_secs(10), || dir
            .read("w1-1.log")
            .contains("OOM")),
        "the child never met the full Redis\n{}",
        dir.read("w1-1.log")
    );
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);

    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no result\n{}", dir.read("w1-1.log")));
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], 1);
    assert_succeeded_once(&dir, &id);
    // Stored in the end, so not dead-lettered either.
    assert_eq!(redis.cmd(&["LLEN", "rmulti.deadletter"]).int(), 0);
    wait_nothing_in_flight(&redis);
}
