//! Batch reservation under faults (issue 15). Fast tasks on a deep queue
//! make the children reserve batches (K > 1, seen in their debug log line
//! `Reserved a batch of N message(s)`); then pool children are SIGKILLed
//! mid-batch, or the whole node is. What must hold, from the outside:
//! every task ends with a result, none runs twice (each run logs one
//! `succeeded` line), and when only a child died, the batch's messages it
//! had not started run elsewhere instead of being recorded lost.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const MAIN_LOG: &str = "w1.log";
/// The fast task: `sleep(0.0003)`, well under the batch's slow-task bound.
const TASK: &str = "proj.tasks.sleep";
const RESULTS_TIMEOUT: Duration = Duration::from_secs(60);

/// Pushes `n` fast tasks on `celery`; returns their ids.
fn send(redis: &RedisServer, n: usize) -> Vec<String> {
    push_tasks(redis, TASK, &json!([0.0003]), n, |_| {})
}

/// The final results stored for `ids`, by id.
fn results(redis: &RedisServer, ids: &[String]) -> HashMap<String, Value> {
    results_in(redis, ids, &["SUCCESS", "FAILURE"])
}

fn wait_all_finished(redis: &RedisServer, dir: &TestDir, ids: &[String]) -> HashMap<String, Value> {
    let deadline = Instant::now() + RESULTS_TIMEOUT;
    loop {
        let found = results(redis, ids);
        if found.len() == ids.len() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} tasks finished\n{}",
            found.len(),
            ids.len(),
            tail(&node_logs(dir))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// How many times each task ran: its `succeeded` lines in the children's logs.
fn runs(dir: &TestDir) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    let logs = node_logs(dir);
    for line in logs.lines().filter(|l| l.contains("] succeeded in ")) {
        let Some(start) = line.find(&format!("{TASK}[")) else {
            continue;
        };
        let rest = &line[start + TASK.len() + 1..];
        if let Some(end) = rest.find(']') {
            *count.entry(rest[..end].to_string()).or_insert(0) += 1;
        }
    }
    count
}

/// Waits until a child logged a batch of at least `k` messages.
fn wait_batches(dir: &TestDir, k: usize) {
    let seen = wait_until(Duration::from_secs(20), || {
        node_logs(dir).lines().any(|l| {
            l.split("Reserved a batch of ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= k)
        })
    });
    assert!(seen, "no batch of {k} or more\n{}", tail(&node_logs(dir)));
}

/// Starts w1 detached (`-c 2`) at log level debug, for the batch lines.
fn start_node(dir: &TestDir) -> (NodeGuard, i32) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut args: Vec<String> = worker_args(&["-c", "2", "--detach"])
        .into_iter()
        .map(|a| if a == "info" { "debug".into() } else { a })
        .collect();
    args.dedup();
    Rmulti::new(dir).args(&args).run().success();
    guard.remember();
    let pid = read_pidfile(dir.join("w1.pid")).expect("pidfile after a successful start");
    (guard, pid)
}

fn is_worker_lost(meta: &Value) -> bool {
    meta["status"] == "FAILURE" && exc_type(meta) == "WorkerLostError"
}

#[test]
fn children_killed_mid_batch_lose_nothing_and_run_nothing_twice() {
    let (redis, dir) = redis_with_app("");
    let ids = send(&redis, 6000);
    let (_guard, pid) = start_node(&dir);
    wait_batches(&dir, 4);

    let mut kills = 0;
    for round in 0..6 {
        let kids = children_of(pid);
        let Some(&victim) = kids.get(round % kids.len().max(1)) else {
            continue;
        };
        signal(victim, libc::SIGKILL);
        kills += 1;
        assert!(
            wait_until(Duration::from_secs(5), || {
                let now = children_of(pid);
                now.len() == 2 && !now.contains(&victim)
            }),
            "child {victim} not replaced\n{}",
            tail(&node_logs(&dir))
        );
        std::thread::sleep(Duration::from_millis(150));
    }

    let found = wait_all_finished(&redis, &dir, &ids);
    let runs = runs(&dir);
    let twice: Vec<_> = runs.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "ran twice: {twice:?}");
    // Recorded lost: only tasks that ran (their result went with the
    // child) or the one each killed child was running; the ones it had
    // not started ran elsewhere.
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| is_worker_lost(&found[*id]))
        .collect();
    let lost_unrun = lost.iter().filter(|id| !runs.contains_key(**id)).count();
    assert!(
        lost_unrun <= kills,
        "{lost_unrun} tasks recorded lost without having run, after {kills} kills"
    );
    let succeeded = found.values().filter(|m| m["status"] == "SUCCESS").count();
    assert_eq!(succeeded + lost.len(), ids.len());
    eprintln!(
        "batch_faults: {kills} child kills: sent {}, succeeded {succeeded}, recorded lost {} ({lost_unrun} of them running), executed twice 0",
        ids.len(),
        lost.len()
    );
}

#[test]
fn a_node_killed_mid_batch_runs_nothing_twice_and_records_every_task() {
    let (redis, dir) = redis_with_app("");
    let ids = send(&redis, 6000);
    let (mut guard, pid) = start_node(&dir);
    wait_batches(&dir, 4);
    let kids = children_of(pid);
    signal(pid, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)
            && kids.iter().all(|&c| !alive(c))),
        "node {pid} or its children still alive"
    );

    let (_guard2, _pid2) = start_node(&dir);
    guard.remember();
    let found = wait_all_finished(&redis, &dir, &ids);
    let runs = runs(&dir);
    let twice: Vec<_> = runs.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "ran twice: {twice:?}");
    let lost = found.values().filter(|m| is_worker_lost(m)).count();
    assert!(
        dir.read(MAIN_LOG).contains("ready."),
        "{}",
        tail(&node_logs(&dir))
    );
    eprintln!(
        "batch_faults: node kill: sent {}, finished {}, recorded lost {lost}, executed twice 0",
        ids.len(),
        found.len()
    );
}

#[test]
fn batched_tasks_under_a_time_limit_all_succeed_and_stats_count_each_once() {
    // A hard limit makes each batched task report its start on its own too.
    let (redis, dir) = redis_with_app("task_time_limit = 30");
    let ids = send(&redis, 3000);
    let (_guard, _pid) = start_node(&dir);
    wait_batches(&dir, 4);
    let found = wait_all_finished(&redis, &dir, &ids);
    assert!(found.values().all(|m| m["status"] == "SUCCESS"));
    let run = Rmulti::new(&dir)
        .args([
            "inspect", "stats", "-j", "-A", "proj", "-t", "2", "-d", TEST_NODE,
        ])
        .run()
        .success();
    let all: Value = serde_json::from_str(run.stdout().trim()).expect("stats JSON");
    assert_eq!(
        all[TEST_NODE]["total"][TASK],
        json!(ids.len()),
        "{}",
        run.stdout()
    );
    let runs = runs(&dir);
    assert!(runs.values().all(|&n| n == 1) && runs.len() == ids.len());
}
