//! A Sentinel failover under load, where Redis loses nothing it acknowledged:
//! writes paused, the replica caught up, then the master SIGKILLed mid-drain.
//! Every task must end SUCCESS with the value it computes (no FAILURE from a
//! connection error, none lost), and both nodes survive with the same pids.

mod common;
mod ha;

use std::time::{Duration, Instant};

use common::*;
use ha::*;
use serde_json::json;

const TASKS: usize = 1500;

/// Task `i`: its name, its arguments and the result it computes.
fn task(i: usize) -> (&'static str, serde_json::Value, serde_json::Value) {
    if i.is_multiple_of(3) {
        ("proj.tasks.sleep", json!([0.02]), json!(0.02))
    } else {
        ("proj.tasks.add", json!([i, i]), json!(2 * i))
    }
}

fn start_node(work: &std::path::Path, name: &str) -> i32 {
    let node = format!("{name}@testhost");
    let args = [
        "worker",
        "-A",
        "proj",
        "-n",
        &node,
        "-l",
        "info",
        "-c",
        "2",
        "--pidfile=%n.pid",
        "--logfile=%n%I.log",
        "--detach",
    ];
    Rmulti::in_dir(work).args(args).run().success();
    let ready = format!("{node} ready.");
    let log = work.join(format!("{name}.log"));
    assert!(
        wait_until(STARTUP_TIMEOUT, || read_log(&log).contains(&ready)),
        "{name} not ready:\n{}",
        read_log(&log)
    );
    read_pidfile(work.join(format!("{name}.pid"))).expect("pidfile")
}

fn logs(work: &std::path::Path) -> String {
    let mut out = String::new();
    let mut names: Vec<_> = std::fs::read_dir(work)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    for p in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let text = read_log(p);
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out.push_str(&format!("--- {}\n", p.display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn a_failover_mid_drain_loses_nothing_and_fails_nothing() {
    let mut group = SentinelGroup::start();
    let work = work_dir();
    write_sentinel_app(work.path(), &group, "", "");
    let _guard = NodeGuard::new(work.path(), &["w1.pid", "w2.pid"]);
    let pids = [start_node(work.path(), "w1"), start_node(work.path(), "w2")];

    let old = group.master.port;
    // A third of the tasks sleep 20 ms, so the drain lasts seconds and the
    // failover lands in its middle even on a fast machine.
    let ids: Vec<String> = (0..TASKS)
        .map(|i| publish_on(old, task(i).0, task(i).1))
        .collect();
    let mut results = RedisConn::connect(old, RESULT_DB).expect("connect");
    let some_done = wait_until(STARTUP_TIMEOUT, || results.cmd(&["DBSIZE"]).int() >= 100);
    assert!(some_done, "drain did not start:\n{}", logs(work.path()));

    // Redis loses nothing it acknowledged: pause writes, let the replica
    // catch up, then kill the master.
    group.master.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let offset = |p: &Proc| info_field(p, "master_repl_offset").and_then(|v| v.parse::<i64>().ok());
    let caught_up = wait_until(STARTUP_TIMEOUT, || {
        let (m, r) = (offset(&group.master), offset(&group.replica));
        m.is_some() && m == r
    });
    assert!(caught_up, "replica did not catch up");
    let done_at_kill = results.cmd(&["DBSIZE"]).int();
    group.master.kill();
    eprintln!("master killed with {done_at_kill} of {TASKS} results stored");
    assert!(
        (done_at_kill as usize) < TASKS,
        "the drain ended before the failover"
    );

    let failed_over = wait_until(Duration::from_secs(30), || {
        group.master_port() == Some(group.replica.port)
    });
    assert!(failed_over, "no failover:\n{}", group.logs());
    let started = Instant::now();
    let new = group.replica.port;
    let all = wait_until(Duration::from_secs(40), || {
        RedisConn::connect(new, RESULT_DB)
            .map(|mut c| c.cmd(&["DBSIZE"]).int() as usize >= TASKS)
            .unwrap_or(false)
    });
    eprintln!("drained {:?} after the failover", started.elapsed());
    let missing: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| result_on(new, id).is_none())
        .map(|(i, _)| i)
        .collect();
    assert!(
        all && missing.is_empty(),
        "tasks without a result: {missing:?}\n{}",
        logs(work.path())
    );
    for (i, id) in ids.iter().enumerate() {
        let meta = result_on(new, id).expect("result");
        assert_eq!(meta["status"], "SUCCESS", "task {i}: {meta}");
        assert_eq!(meta["result"], task(i).2, "task {i}: {meta}");
    }
    for (pid, name) in pids.iter().zip(["w1", "w2"]) {
        assert!(alive(*pid), "{name} died");
        assert_eq!(
            read_pidfile(work.path().join(format!("{name}.pid"))),
            Some(*pid)
        );
    }
    // Nothing is left reserved or queued.
    let mut broker = RedisConn::connect(new, BROKER_DB).expect("connect");
    let left = wait_until(Duration::from_secs(10), || {
        broker.cmd(&["LLEN", "celery"]).int() == 0 && broker.cmd(&["HLEN", "unacked"]).int() == 0
    });
    assert!(left, "messages left on the broker:\n{}", logs(work.path()));
}
