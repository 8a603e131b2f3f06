//! What a pool child does when Redis fails in the middle of a task: the
//! message stays in its held list, and when Redis answers again the child
//! resumes where it was — it neither runs the task twice nor records a task
//! that never ran as lost.

mod common;

use std::time::Duration;

use common::*;

/// Broker on `broker`, results on `backend`: the result store can fail
/// while the broker keeps working.
fn split_app(dir: &TestDir, broker: &RedisServer, backend: &RedisServer, extra: &str) {
    dir.write(
        "proj.toml",
        format!(
            "broker_url = \"{}\"\nresult_backend = \"{}\"\n{extra}\n[tasks]\n{BUILTIN_TASKS}",
            broker.url(0),
            backend.url(0)
        ),
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
    let broker = RedisServer::start();
    let mut backend = RedisServer::start();
    let dir = TestDir::new(&broker);
    split_app(&dir, &broker, &backend, "task_track_started = true");
    let (run, _guard) = start_worker(&dir, &["-c", "1"]);
    run.success();

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
    let log = dir.read("w1-1.log");
    assert_eq!(
        log.matches(&format!("[{id}] succeeded")).count(),
        1,
        "{log}"
    );
    wait_nothing_in_flight(&broker);
}

/// A result the backend would not take while it was down is stored when it
/// comes back, and the task is not run again.
#[test]
fn a_result_stored_late_is_the_real_one_and_the_task_ran_once() {
    let broker = RedisServer::start();
    let mut backend = RedisServer::start();
    let dir = TestDir::new(&broker);
    split_app(&dir, &broker, &backend, "");
    let (run, _guard) = start_worker(&dir, &["-c", "1"]);
    run.success();

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
    let log = dir.read("w1-1.log");
    assert_eq!(
        log.matches(&format!("[{id}] succeeded")).count(),
        1,
        "{log}"
    );
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
    let log = dir.read("w1-1.log");
    assert_eq!(
        log.matches(&format!("[{id}] succeeded")).count(),
        1,
        "{log}"
    );
    // Stored in the end, so not dead-lettered either.
    assert_eq!(redis.cmd(&["LLEN", "rmulti.deadletter"]).int(), 0);
    wait_nothing_in_flight(&redis);
}
