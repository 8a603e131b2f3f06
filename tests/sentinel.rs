//! Redis Sentinel as kombu and Celery configure it: a node started with a
//! `sentinel://...;sentinel://...` broker and backend (`master_name` in the
//! transport options) runs tasks on the master the sentinels name, and
//! `rmulti call` reaches it too, from an app or from a bare URL.

mod common;
mod ha;

use std::time::Duration;

use common::*;
use ha::*;
use serde_json::json;

#[test]
fn a_node_on_sentinel_urls_runs_tasks_and_rmulti_call_reaches_it() {
    let group = SentinelGroup::start();
    let work = work_dir();
    let _guard = start_ready_node(&work, &group, "");
    // The banner shows the URL as given, one entry per sentinel.
    let log = read_log(work.path().join("w1.log"));
    assert!(log.contains("sentinel://127.0.0.1:"), "{log}");

    let ids: Vec<String> = (0..20)
        .map(|i| publish_on(group.master.port, "proj.tasks.add", json!([i, 1])))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let meta =
            wait_for(STARTUP_TIMEOUT, || result_on(group.master.port, id)).unwrap_or_else(|| {
                panic!(
                    "no result for task {i}:\n{}",
                    read_log(work.path().join("w1.log"))
                )
            });
        assert_eq!(meta["status"], "SUCCESS");
        assert_eq!(meta["result"], json!(i + 1));
    }

    // rmulti call with the app's settings
    let run = Rmulti::in_dir(work.path())
        .args([
            "call",
            "-A",
            "proj",
            "proj.tasks.add",
            "2",
            "3",
            "--wait",
            "15",
        ])
        .run()
        .success();
    assert_eq!(run.stdout().lines().last(), Some("5"), "{}", run.stdout());

    // and with a bare URL carrying master_name in its query
    let broker = format!("{}?master_name={MASTER_NAME}", group.url(BROKER_DB));
    let backend = format!("{}?master_name={MASTER_NAME}", group.url(RESULT_DB));
    let run = Rmulti::in_dir(work.path())
        .args(["call", "-b", &broker, "--result-backend", &backend])
        .args(["proj.tasks.mul", "3", "4", "--wait", "15"])
        .run()
        .success();
    assert_eq!(run.stdout().lines().last(), Some("12"), "{}", run.stdout());
}

#[test]
fn a_sentinel_url_without_master_name_is_a_configuration_error() {
    let group = SentinelGroup::start();
    let work = work_dir();
    std::fs::write(
        work.path().join("proj.toml"),
        format!(
            "broker_url = \"{}\"\n\n[tasks]\n{BUILTIN_TASKS}",
            group.url(0)
        ),
    )
    .expect("write app");
    let _guard = NodeGuard::new(work.path(), &["w1.pid"]);
    let mut args = worker_args(&[]);
    args.push("--detach".into());
    let run = Rmulti::in_dir(work.path()).args(&args).run();
    assert_eq!(run.code(), Some(78), "{}", run.stderr());
    assert!(run.stderr().contains("master_name"), "{}", run.stderr());
    // nothing is left running
    assert!(wait_until(Duration::from_secs(5), || read_pidfile(
        work.path().join("w1.pid")
    )
    .is_none()));
}

#[test]
fn wait_replicas_makes_each_finish_wait_for_the_replica() {
    let group = SentinelGroup::start();
    let work = work_dir();
    let _guard = start_ready_node(&work, &group, "wait_replicas = 1");

    let ids: Vec<String> = (0..10)
        .map(|i| publish_on(group.master.port, "proj.tasks.add", json!([i, 2])))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let meta =
            wait_for(STARTUP_TIMEOUT, || result_on(group.master.port, id)).unwrap_or_else(|| {
                panic!(
                    "no result for task {i}:\n{}",
                    read_log(work.path().join("w1.log"))
                )
            });
        assert_eq!(meta["result"], json!(i + 2));
    }
    // Every finish (result + ack) waited for the replica: WAIT ran once per
    // task on the master, and no finish timed out short of a replica.
    let waits = wait_for(Duration::from_secs(5), || {
        wait_calls(&group.master).filter(|n| *n >= ids.len())
    });
    assert!(
        waits.is_some(),
        "WAIT calls on the master: {:?}",
        wait_calls(&group.master)
    );
    let logs = format!(
        "{}{}",
        read_log(work.path().join("w1-1.log")),
        read_log(work.path().join("w1-2.log"))
    );
    assert!(!logs.contains("replicas confirmed"), "{logs}");
}

/// How many WAIT commands the server ran (INFO commandstats).
fn wait_calls(p: &Proc) -> Option<usize> {
    let mut c = RedisConn::connect(p.port, 0).ok()?;
    let info = c.cmd_bytes(&[b"INFO", b"commandstats"]).ok()?.text()?;
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:"))
        .and_then(|v| v.split(',').next()?.strip_prefix("calls=")?.parse().ok())
}

/// Writes the sentinel app (`transport`: more `broker_transport_options`
/// lines), starts a detached `-c 2` node on it and waits until it is ready.
fn start_ready_node(work: &tempfile::TempDir, group: &SentinelGroup, transport: &str) -> NodeGuard {
    write_sentinel_app(work.path(), group, "", transport);
    let mut guard = NodeGuard::new(work.path(), &["w1.pid"]);
    let mut args = worker_args(&["-c", "2"]);
    args.push("--detach".into());
    Rmulti::in_dir(work.path()).args(&args).run().success();
    guard.remember();
    let ready = format!("{TEST_NODE} ready.");
    assert!(
        wait_until(STARTUP_TIMEOUT, || read_log(work.path().join("w1.log"))
            .contains(&ready)),
        "node not ready:\n{}",
        read_log(work.path().join("w1.log"))
    );
    guard
}
