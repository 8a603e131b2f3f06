//! Signals on a node's main process (issue 2, point 7; spec/multi.md §13):
//! TERM/INT warm shutdown, QUIT and INT-INT cold shutdown, HUP restart in
//! place, USR1 status dump, TTIN/TTOU pool resizing. Every test asserts what
//! an operator sees: pidfiles, exit statuses, log lines, results on Redis.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PIDFILE: &str = "w1.pid";
const MAIN_LOG: &str = "w1.log";
/// Settings that let a test see when a task has really started (STARTED result).
const TRACK_STARTED: &str = "task_track_started = true";

/// True once the node is gone: the main process dead (or a zombie) and its pidfile removed.
fn node_gone(dir: &TestDir, pid: i32) -> bool {
    !alive(pid) && !dir.join(PIDFILE).exists()
}

fn assert_worker_lost(meta: &Value) {
    assert_eq!(meta["status"], "FAILURE", "{meta}");
    assert_eq!(meta["result"]["exc_type"], "WorkerLostError", "{meta}");
}

// ---------------------------------------------------------------------------

#[test]
fn term_lets_the_running_task_finish_then_exits_and_removes_the_pidfile() {
    let (redis, dir, _guard, pid) = started_node(TRACK_STARTED, &["-c", "2"]);

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[2]");
    wait_started(&redis, &id);
    let sent = Instant::now();
    signal(pid, libc::SIGTERM);

    assert!(
        wait_until(Duration::from_secs(10), || node_gone(&dir, pid)),
        "node did not exit after TERM\n{}",
        node_logs(&dir)
    );
    // The task was allowed to run its 2 s: the node could not leave before.
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "node left after {:?}, before the task could finish",
        sent.elapsed()
    );
    let meta = redis.result(&id).expect("result of the sleep task");
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], 2);
    let main_log = dir.read(MAIN_LOG);
    assert!(main_log.contains("Warm shutdown"), "{main_log}");
    let child_logs = dir.read("w1-1.log") + &dir.read("w1-2.log");
    assert!(
        child_logs.contains(&format!("Task proj.tasks.sleep[{id}] succeeded in 2.")),
        "{child_logs}"
    );
    assert_broker_clean(&redis);
}

#[test]
fn term_on_an_idle_node_removes_the_pidfile_within_a_second() {
    let (_redis, dir, _guard, pid) = started_node("", &["-c", "2"]);
    let children = descendants(pid);
    assert_eq!(children.len(), 2, "children of {pid}: {children:?}");

    signal(pid, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(1), || node_gone(&dir, pid)),
        "idle node still there 1 s after TERM\n{}",
        node_logs(&dir)
    );
    assert!(
        wait_until(Duration::from_secs(1), || children
            .iter()
            .all(|&c| !alive(c))),
        "pool children survived the node"
    );
    assert!(dir.read(MAIN_LOG).contains("Warm shutdown"));
}

#[test]
fn quit_kills_a_running_task_and_records_worker_lost() {
    let (redis, dir, _guard, pid) = started_node(TRACK_STARTED, &["-c", "2"]);

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[30]");
    wait_started(&redis, &id);
    let children = descendants(pid);
    signal(pid, libc::SIGQUIT);

    assert!(
        wait_until(Duration::from_secs(3), || node_gone(&dir, pid)),
        "node still there 3 s after QUIT\n{}",
        node_logs(&dir)
    );
    assert!(
        children.iter().all(|&c| !alive(c)),
        "children survived QUIT"
    );
    let meta = redis
        .wait_result(&id, Duration::from_secs(2))
        .expect("a final result for the killed task");
    assert_worker_lost(&meta);
    let main_log = dir.read(MAIN_LOG);
    assert!(main_log.contains("Cold shutdown"), "{main_log}");
    // Early ack: the task is not redelivered, nothing of it is left behind.
    assert_broker_clean(&redis);
}

#[test]
fn int_is_warm_and_a_second_int_is_cold_with_exit_status_1() {
    let (redis, dir) = redis_with_app(TRACK_STARTED);
    let (mut node, _guard, _) = start_foreground(&dir, &["-c", "1"]);
    let pid = node.pid();

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[30]");
    wait_started(&redis, &id);
    signal(pid, libc::SIGINT);
    assert!(
        wait_until(Duration::from_secs(5), || dir
            .read(MAIN_LOG)
            .contains("Warm shutdown")),
        "no warm shutdown after the first INT\n{}",
        node_logs(&dir)
    );
    // Warm: the running task keeps its child, the node waits for it.
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "node left on the first INT"
    );
    assert_eq!(redis.result(&id).unwrap()["status"], "STARTED");

    signal(pid, libc::SIGINT);
    let status = node
        .wait_timeout(Duration::from_secs(3))
        .unwrap_or_else(|| {
            panic!(
                "node still running after the second INT\n{}",
                node_logs(&dir)
            )
        });
    assert_eq!(
        status.code(),
        Some(1),
        "cold shutdown by INT exits 1 as Celery"
    );
    assert!(!dir.join(PIDFILE).exists(), "pidfile left after INT INT");
    let main_log = dir.read(MAIN_LOG);
    assert!(main_log.contains("Cold shutdown"), "{main_log}");
    let meta = redis
        .wait_result(&id, Duration::from_secs(2))
        .expect("a final result for the killed task");
    assert_worker_lost(&meta);
}

#[test]
fn term_in_the_foreground_exits_0() {
    let (_redis, dir) = redis_with_app("");
    let (mut node, _guard, _) = start_foreground(&dir, &["-c", "1"]);
    node.signal(libc::SIGTERM);
    let status = node
        .wait_timeout(Duration::from_secs(3))
        .expect("node still running after TERM");
    assert_eq!(status.code(), Some(0));
    assert!(!dir.join(PIDFILE).exists());
}

#[test]
fn hup_replaces_every_child_keeps_the_pid_and_serves_the_reread_app() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "2"]);
    let old_children = descendants(pid);
    assert_eq!(old_children.len(), 2, "{old_children:?}");

    // Not known before the HUP.
    let before = publish_task(&redis, "celery", "proj.tasks.hello", "[\"hi\"]");
    let meta = redis
        .wait_result(&before, Duration::from_secs(5))
        .expect("NotRegistered result before HUP");
    assert_eq!(meta["result"]["exc_type"], "NotRegistered", "{meta}");

    dir.write_app_tasks(
        "proj",
        "",
        "\"proj.tasks.hello\" = { builtin = \"echo\" }\n",
    );
    signal(pid, libc::SIGHUP);

    let new_children = wait_for(Duration::from_secs(5), || {
        let now = descendants(pid);
        (now.len() == 2 && now.iter().all(|c| !old_children.contains(c))).then_some(now)
    })
    .unwrap_or_else(|| {
        panic!(
            "pool not replaced after HUP: before {old_children:?}, now {:?}\n{}",
            descendants(pid),
            node_logs(&dir)
        )
    });
    assert!(old_children.iter().all(|&c| !alive(c)));
    assert!(alive(pid), "main process died on HUP");
    assert_eq!(
        read_pidfile(dir.join(PIDFILE)),
        Some(pid),
        "pid changed on HUP"
    );

    let after = publish_task(&redis, "celery", "proj.tasks.hello", "[\"hi\"]");
    let meta = redis
        .wait_result(&after, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no result after HUP\n{}", node_logs(&dir)));
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], "hi");
    assert_eq!(descendants(pid), new_children);
}

#[test]
fn usr1_logs_each_child_and_what_it_runs() {
    let (redis, dir, _guard, pid) = started_node(TRACK_STARTED, &["-c", "2"]);
    let children = descendants(pid);
    assert_eq!(children.len(), 2);

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[5]");
    wait_started(&redis, &id);
    signal(pid, libc::SIGUSR1);

    let dumped = wait_until(Duration::from_secs(3), || {
        let log = dir.read(MAIN_LOG);
        log.contains(&format!("proj.tasks.sleep[{id}]"))
            && children.iter().all(|c| log.contains(&format!("pid:{c} ")))
    });
    let log = dir.read(MAIN_LOG);
    assert!(
        dumped,
        "USR1 dump incomplete (children {children:?}):\n{log}"
    );
    // One child runs the sleep task, the other is idle.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("pid:")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("running proj.tasks.sleep") && l.contains(&id)),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("idle")), "{lines:?}");
    assert!(alive(pid), "USR1 must not stop the node");
}

#[test]
fn ttin_grows_and_ttou_shrinks_the_pool_by_one() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "2"]);
    assert_eq!(descendants(pid).len(), 2);

    signal(pid, libc::SIGTTIN);
    assert!(
        wait_until(Duration::from_secs(3), || descendants(pid).len() == 3),
        "TTIN: children {:?}\n{}",
        descendants(pid),
        node_logs(&dir)
    );
    // The new slot gets its own log file.
    assert!(
        wait_until(Duration::from_secs(2), || dir.join("w1-3.log").exists()),
        "no w1-3.log"
    );

    signal(pid, libc::SIGTTOU);
    assert!(
        wait_until(Duration::from_secs(3), || descendants(pid).len() == 2),
        "TTOU: children {:?}\n{}",
        descendants(pid),
        node_logs(&dir)
    );
    // And it stays shrunk (the retired slot is not refilled).
    let stayed = !wait_until(Duration::from_millis(1500), || descendants(pid).len() != 2);
    assert!(stayed, "pool size changed again: {:?}", descendants(pid));

    // The node still serves with the smaller pool.
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[2, 3]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(5))
        .expect("result");
    assert_eq!(meta["result"], 5);
}

#[test]
fn quit_requeues_a_running_acks_late_task() {
    let (redis, dir, _guard, pid) = started_node(
        "task_acks_late = true\ntask_track_started = true",
        &["-c", "1"],
    );

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[30]");
    wait_started(&redis, &id);
    signal(pid, libc::SIGQUIT);
    assert!(
        wait_until(Duration::from_secs(3), || node_gone(&dir, pid)),
        "node still there 3 s after QUIT\n{}",
        node_logs(&dir)
    );
    // Late ack: the message goes back to its queue for the next worker,
    // marked redelivered; no failure is recorded.
    let queued = redis.cmd(&["LRANGE", "celery", "0", "-1"]).strings();
    assert_eq!(queued.len(), 1, "{queued:?}\n{}", node_logs(&dir));
    let env: Value = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(env["headers"]["id"], id.as_str());
    assert_eq!(env["headers"]["redelivered"], true);
    assert_eq!(redis.result(&id).unwrap()["status"], "STARTED");
    assert_eq!(redis.cmd(&["HLEN", "unacked"]).int(), 0);
    let held = redis.cmd(&["KEYS", "rmulti.held.*"]).strings();
    assert!(held.is_empty(), "{held:?}");
}

#[test]
fn a_parked_eta_message_survives_a_warm_shutdown() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "1"]);

    let eta = chrono::Utc::now() + chrono::Duration::seconds(60);
    let (_id, mut envelope) = task_envelope(
        "celery",
        "proj.tasks.add",
        &serde_json::json!([1, 2]),
        &serde_json::json!({}),
    );
    envelope["headers"]["eta"] =
        serde_json::json!(eta.to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
    publish_raw(&redis, "celery", envelope.to_string().as_bytes());
    assert!(
        wait_until(Duration::from_secs(3), || redis
            .cmd(&["ZCARD", "rmulti.eta"])
            .int()
            == 1),
        "not parked\n{}",
        node_logs(&dir)
    );
    signal(pid, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(3), || node_gone(&dir, pid)));
    assert_eq!(redis.cmd(&["ZCARD", "rmulti.eta"]).int(), 1);
    assert_eq!(redis.cmd(&["HLEN", "rmulti.eta.messages"]).int(), 1);
}

/// Regression (found by bench/): TERM used to interrupt a child's Redis call
/// (EINTR), which the child took for a lost connection, so a task acked but
/// never run was recorded as WorkerLostError.
#[test]
fn term_under_load_fails_no_task_and_loses_no_message() {
    let (redis, dir) = redis_with_app("");
    let total = 3000;
    let ids: Vec<String> = (0..total)
        .map(|i| publish_task(&redis, "celery", "proj.tasks.add", &format!("[{i}, 1]")))
        .collect();
    let (_guard, pid) = start_detached(&dir, &["-c", "2"]);
    // Stop in the middle of the run.
    assert!(wait_until(Duration::from_secs(20), || {
        redis.cmd(&["LLEN", "celery"]).int() < (total / 2) as i64
    }));
    signal(pid, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(10), || node_gone(&dir, pid)),
        "node did not stop"
    );
    let mut done = 0;
    for id in &ids {
        if let Some(meta) = redis.result(id) {
            assert_eq!(meta["status"], "SUCCESS", "{meta}\n{}", node_logs(&dir));
            done += 1;
        }
    }
    let queued = redis.cmd(&["LLEN", "celery"]).int() as usize;
    assert_eq!(
        done + queued,
        total,
        "every message ran once or is back on the queue"
    );
    assert!(
        done > 0 && queued > 0,
        "stopped mid-run: {done} done, {queued} queued"
    );
    wait_nothing_in_flight(&redis);
    // A warm stop is not an error: nothing interrupted, nothing retried.
    let logs = node_logs(&dir);
    for f in ["w1.log", "w1-1.log", "w1-2.log"] {
        assert!(!dir.read(f).contains("ERROR/"), "{f}:\n{logs}");
    }
}
