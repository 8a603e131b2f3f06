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

fn assert_none_ran_twice(runs: &HashMap<String, usize>) {
    let twice: Vec<_> = runs.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "ran twice: {twice:?}");
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

/// `inspect stats`' `total` of the fast task is `n`: each start counted once.
fn assert_started_total(dir: &TestDir, n: usize) {
    let run = Rmulti::new(dir)
        .args([
            "inspect", "stats", "-j", "-A", "proj", "-t", "2", "-d", TEST_NODE,
        ])
        .run()
        .success();
    let all: Value = serde_json::from_str(run.stdout().trim()).expect("stats JSON");
    assert_eq!(all[TEST_NODE]["total"][TASK], json!(n), "{}", run.stdout());
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
    assert_none_ran_twice(&runs);
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
    // Every task started once: the ones a dead child had started count too.
    assert_started_total(&dir, ids.len());
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
    let left = kill_node(pid, &children_of(pid), Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "node {pid} or its children still alive: {left:?}"
    );

    let (_guard2, _pid2) = start_node(&dir);
    guard.remember();
    let found = wait_all_finished(&redis, &dir, &ids);
    let runs = runs(&dir);
    assert_none_ran_twice(&runs);
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
    assert_started_total(&dir, ids.len());
    let runs = runs(&dir);
    assert!(runs.values().all(|&n| n == 1) && runs.len() == ids.len());
}

#[test]
fn a_task_revoked_while_its_batch_runs_does_not_start() {
    // Tasks of 1.2 ms: a batch of 32 lasts about 40 ms. A batch is caught
    // as it is reserved and its last task revoked at once (the broadcast
    // published straight onto the pidbox channel): the revoke must reach a
    // task the child already holds. One that came too late (the main
    // process saw the task started) is tried again on another batch.
    let (redis, dir) = redis_with_app("");
    let ids = push_tasks(&redis, TASK, &json!([0.0012]), 3000, |_| {});
    let (_guard, _pid) = start_node(&dir);
    let keys: Vec<String> = (1..=2)
        .map(|slot| format!("rmulti.batch.{TEST_NODE}.{slot}"))
        .collect();
    let id_of = |raw: &str| -> String {
        let env: Value = serde_json::from_str(raw).expect("a batched envelope");
        env["headers"]["id"].as_str().expect("an id").to_string()
    };
    let mut tried: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while skipped.len() < 3 && tried.len() < 20 && Instant::now() < deadline {
        let held = keys
            .iter()
            .map(|k| redis.cmd(&["LRANGE", k, "0", "-1"]).strings())
            .find(|b| b.len() >= 16 && !tried.contains(&id_of(&b[b.len() - 1])));
        let Some(held) = held else {
            // A tight poll: the batch lasts tens of ms.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let victim = id_of(&held[held.len() - 1]);
        redis.cmd(&["PUBLISH", "/0.celery.pidbox", &revoke_request(&victim)]);
        tried.push(victim.clone());
        let line = format!("Revoked task {victim} will not start");
        if wait_until(Duration::from_secs(2), || {
            dir.read(MAIN_LOG).contains(&line)
        }) {
            skipped.push(victim);
        }
    }
    assert!(
        !skipped.is_empty(),
        "no revoke reached a batch before its task started ({} tried)\n{}",
        tried.len(),
        tail(&node_logs(&dir))
    );

    let found = wait_for(RESULTS_TIMEOUT, || {
        let f = results_in(&redis, &ids, &["SUCCESS", "FAILURE", "REVOKED"]);
        (f.len() == ids.len()).then_some(f)
    })
    .unwrap_or_else(|| panic!("not every task finished\n{}", tail(&node_logs(&dir))));
    let runs = runs(&dir);
    let logs = node_logs(&dir);
    for victim in &skipped {
        assert_eq!(found[victim]["status"], "REVOKED", "{}", found[victim]);
        assert_eq!(runs.get(victim), None, "the revoked task {victim} ran");
        assert!(
            logs.contains(&format!("Discarding revoked task: {TASK}[{victim}]")),
            "{}",
            tail(&logs)
        );
    }
    // A victim the main process did not see in time ran once, or was
    // revoked by the reserving script when its batch's rest went back to
    // the queue; every other task ran once.
    let wrong: Vec<String> = ids
        .iter()
        .filter(|id| !skipped.contains(id))
        .filter(|id| {
            let (status, ran) = (&found[*id]["status"], runs.get(*id).copied());
            let fine = status == "SUCCESS" && ran == Some(1)
                || tried.contains(id) && status == "REVOKED" && ran.is_none();
            !fine
        })
        .map(|id| format!("{id}: {} ran {:?}", found[id]["status"], runs.get(id)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}\n{}", tail(&logs));
    eprintln!(
        "batch_faults: revokes into running batches: {} in time of {} tried",
        skipped.len(),
        tried.len()
    );
}

/// A `revoke` broadcast for `id`, as `app.control.revoke(id)` publishes it.
fn revoke_request(id: &str) -> String {
    use base64::Engine;
    let body = json!({
        "method": "revoke",
        "arguments": {"task_id": id, "terminate": false, "signal": "SIGTERM"},
        "destination": null, "pattern": null, "matcher": null,
    });
    json!({
        "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
        "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"clock": 1, "expires": 0},
        "properties": {"body_encoding": "base64", "delivery_mode": 2,
            "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
            "priority": 0, "delivery_tag": uuid_like(id)},
    })
    .to_string()
}

fn uuid_like(id: &str) -> String {
    format!("revoke-{id}")
}
