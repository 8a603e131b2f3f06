//! `rmulti worker` as an operator sees it: `--detach` returns once the node
//! is ready (or fails with the reason and a meaningful exit status), the
//! pidfile and per-process log files Celery writes, Celery's log lines, and
//! results on Redis that a Celery client reads.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const NODE: &str = TEST_NODE;

#[test]
fn detach_returns_once_ready_with_pidfile_and_log_files() {
    let (_redis, dir, _guard, pid) = started_node("", &["-c", "2"]);
    // Ready means: pidfile written, children consuming — no waiting needed.
    assert_eq!(dir.read("w1.pid"), format!("{pid}\n"));
    assert!(alive(pid));
    assert_eq!(descendants(pid).len(), 2, "two pool children");
    for f in ["w1.log", "w1-1.log", "w1-2.log"] {
        assert!(dir.join(f).exists(), "{f} exists");
    }
    assert!(!dir.join("w1%I.log").exists(), "no literal %I file");
    let main_log = dir.read("w1.log");
    assert!(
        main_log.contains(&format!("INFO/MainProcess] {NODE} ready.")),
        "{main_log}"
    );
    assert!(
        main_log.contains(".> transport:   redis://127.0.0.1:"),
        "banner in the main log: {main_log}"
    );
    assert!(
        main_log.contains("  . proj.tasks.add"),
        "task list in the main log: {main_log}"
    );
}

#[test]
fn task_result_and_log_lines_match_celery() {
    let (redis, dir, _guard, _pid) = started_node("result_expires = 600", &["-c", "1"]);
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[4, 4]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .expect("result stored");
    assert_eq!(meta["status"], "SUCCESS");
    assert_eq!(meta["result"], 8);
    assert_eq!(meta["task_id"], id.as_str());
    assert_eq!(meta["children"], json!([]));
    assert_eq!(meta["traceback"], json!(null));
    // Byte shape as Celery's backend writes it: Python spacing and key order.
    let raw = redis
        .cmd_db(RESULT_DB, &["GET", &format!("celery-task-meta-{id}")])
        .text()
        .unwrap();
    assert!(raw.starts_with("{\"status\": \"SUCCESS\", \"result\": 8, \"traceback\": null, \"children\": [], \"date_done\": \""), "{raw}");
    assert!(raw.ends_with(&format!("\"task_id\": \"{id}\"}}")), "{raw}");
    let ttl = redis
        .cmd_db(RESULT_DB, &["TTL", &format!("celery-task-meta-{id}")])
        .int();
    assert!(
        (590..=600).contains(&ttl),
        "TTL follows result_expires: {ttl}"
    );
    assert!(wait_until(Duration::from_secs(5), || dir
        .read("w1.log")
        .contains(&format!(
            "INFO/MainProcess] Task proj.tasks.add[{id}] received"
        ))));
    let child_log = dir.read("w1-1.log");
    assert!(
        child_log.contains(&format!(
            "INFO/ForkPoolWorker-1] Task proj.tasks.add[{id}] succeeded in "
        )),
        "{child_log}"
    );
    assert!(child_log.contains("s: 8\n"), "{child_log}");
    // Nothing left behind: queue, unacked, held list.
    assert_eq!(redis.cmd(&["LLEN", "celery"]).int(), 0);
    wait_nothing_in_flight(&redis);
}

#[test]
fn priority_zero_is_served_before_nine_and_queues_are_declared() {
    let (redis, dir) = redis_with_app("");
    let (low_id, mut low) = task_envelope("celery", "proj.tasks.add", &json!([9, 9]), &json!({}));
    low["properties"]["priority"] = json!(9);
    publish_raw(&redis, "celery\x06\x169", low.to_string().as_bytes());
    let high_id = publish_task(&redis, "celery", "proj.tasks.add", "[0, 0]");
    let (run, _guard) = start_worker(&dir, &["-c", "1", "-Q", "celery,other"]);
    run.success();
    let other_id = publish_task(&redis, "other", "proj.tasks.mul", "[6, 7]");
    for id in [&low_id, &high_id, &other_id] {
        redis
            .wait_result(id, Duration::from_secs(10))
            .expect("all three run");
    }
    assert_eq!(redis.result(&other_id).unwrap()["result"], 42);
    let log = dir.read("w1.log");
    let pos = |id: &str| {
        log.find(&format!("[{id}] received"))
            .expect("received line")
    };
    assert!(pos(&high_id) < pos(&low_id), "priority 0 before 9:\n{log}");
    let binding = redis.cmd(&["SMEMBERS", "_kombu.binding.other"]).strings();
    assert_eq!(binding, vec!["other\x06\x16\x06\x16other".to_string()]);
}

#[test]
fn already_running_fails_with_73_and_leaves_the_node_alone() {
    let (_redis, dir, _guard, pid) = started_node("", &["-c", "1"]);
    let (second, _g2) = start_worker(&dir, &["-c", "1"]);
    let second = second.code_is(73);
    assert!(
        second.stderr().contains("already exists"),
        "{}",
        second.stderr()
    );
    assert!(
        second
            .stderr()
            .contains(&format!("Seems we're already running? (pid: {pid})")),
        "{}",
        second.stderr()
    );
    assert_eq!(read_pidfile(dir.join("w1.pid")), Some(pid));
    assert!(alive(pid));
}

#[test]
fn stale_broken_and_foreign_pidfiles_are_replaced_with_a_warning() {
    let (_redis, dir) = redis_with_app("");
    // A live process that is not an rmulti worker: ours (the test runner).
    let foreign = std::process::id().to_string();
    for (content, warning) in [
        ("999999\n", "Stale pidfile exists - Removing it."),
        ("garbage", "Broken pidfile found - Removing it."),
        (foreign.as_str(), "Broken pidfile found - Removing it."),
        (
            &format!("{foreign}\n"),
            "Stale pidfile exists - Removing it.",
        ),
    ] {
        dir.write("w1.pid", content);
        let (run, guard) = start_worker(&dir, &["-c", "1"]);
        let run = run.success();
        assert!(
            run.stderr().contains(warning),
            "{content:?}: {}",
            run.stderr()
        );
        let pid = read_pidfile(dir.join("w1.pid")).unwrap();
        assert_ne!(pid.to_string(), foreign);
        assert!(alive(pid));
        drop(guard);
        assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
        let _ = std::fs::remove_file(dir.join("w1.pid"));
    }
}

#[test]
fn missing_or_invalid_app_fails_before_detaching() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let (run, _g) = start_worker(&dir, &[]);
    let run = run.code_is(78);
    assert!(run.stderr().contains("proj.toml"), "{}", run.stderr());
    assert!(
        !dir.join("w1.pid").exists() && !dir.join("w1.log").exists(),
        "nothing created"
    );

    dir.write(
        "proj.toml",
        "broker_url = \"redis://127.0.0.1:1/0\"\nbrokr_url = 1\n",
    );
    let (run, _g) = start_worker(&dir, &[]);
    let run = run.code_is(78);
    let err = run.stderr();
    assert!(
        err.contains("proj.toml") && err.contains("line 2") && err.contains("brokr_url"),
        "{err}"
    );
}

#[test]
fn unknown_flag_is_a_usage_error_naming_it() {
    let (_redis, dir) = redis_with_app("");
    let run = Rmulti::new(&dir)
        .args(["worker", "-A", "proj", "--frobnicate"])
        .run()
        .code_is(2);
    assert!(run.stderr().contains("--frobnicate"), "{}", run.stderr());
    let run = Rmulti::new(&dir)
        .args(["worker", "-A", "proj", "-l", "chatty"])
        .run()
        .code_is(2);
    assert!(run.stderr().contains("chatty"), "{}", run.stderr());
}

#[test]
fn unwritable_pidfile_directory_fails_the_start_with_the_reason() {
    let (_redis, dir) = redis_with_app("");
    let mut guard = NodeGuard::new(dir.path(), &["missing/w1.pid"]);
    let run = Rmulti::new(&dir)
        .args([
            "worker",
            "-A",
            "proj",
            "-n",
            NODE,
            "--detach",
            "--pidfile=missing/%n.pid",
            "--logfile=%n%I.log",
        ])
        .run()
        .code_is(1);
    guard.remember();
    assert!(
        run.stderr().contains("cannot create pidfile") && run.stderr().contains("missing/w1.pid"),
        "{}",
        run.stderr()
    );
}

#[test]
fn env_and_flags_override_the_app_broker() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    // The file points nowhere; the environment and then the flag fix it.
    let dead = format!("redis://127.0.0.1:{}/0", free_port());
    dir.write("proj.toml", format!("broker_url = \"{dead}\"\nresult_backend = \"{dead}\"\n[tasks]\n\"proj.tasks.add\" = {{ builtin = \"add\" }}\n"));
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    Rmulti::new(&dir)
        .env("CELERY_BROKER_URL", redis.url(0))
        .env("CELERY_RESULT_BACKEND", &dead)
        .args(worker_args(&["-c", "1", "--detach"]))
        .args(["--result-backend", &redis.url(1)])
        .run()
        .success();
    guard.remember();
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[1, 2]");
    assert_eq!(
        redis.wait_result(&id, Duration::from_secs(10)).unwrap()["result"],
        3
    );
}

#[test]
fn exec_tasks_get_json_on_stdin_and_fail_with_stderr() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write_app_tasks(
        "proj",
        "",
        r#""proj.tasks.cat" = { exec = ["cat"] }
"proj.tasks.boom" = { exec = ["sh", "-c", "echo broken >&2; exit 3"] }
"#,
    );
    let (run, _guard) = start_worker(&dir, &["-c", "1"]);
    run.success();
    let ok = publish_task(&redis, "celery", "proj.tasks.cat", "[1, \"two\"]");
    let bad = publish_task(&redis, "celery", "proj.tasks.boom", "[]");
    let meta = redis.wait_result(&ok, Duration::from_secs(10)).unwrap();
    assert_eq!(meta["result"]["args"], json!([1, "two"]));
    assert_eq!(meta["result"]["id"], ok.as_str());
    let meta = redis.wait_result(&bad, Duration::from_secs(10)).unwrap();
    assert_eq!(meta["status"], "FAILURE");
    assert!(
        meta["result"]["exc_message"][0]
            .as_str()
            .unwrap()
            .contains("broken"),
        "{meta}"
    );
}

#[test]
fn ignore_result_stores_nothing_and_track_started_stores_started() {
    let (redis, dir, _guard, _pid) = started_node("task_track_started = true", &["-c", "1"]);
    let (ignored, mut env) = task_envelope("celery", "proj.tasks.add", &json!([1, 1]), &json!({}));
    env["headers"]["ignore_result"] = json!(true);
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    let slow = publish_task(&redis, "celery", "proj.tasks.sleep", "[0.5]");
    let started = wait_for(Duration::from_secs(10), || {
        redis.result(&slow).filter(|m| m["status"] == "STARTED")
    })
    .expect("STARTED stored");
    assert_eq!(started["result"]["hostname"], NODE);
    assert!(started["result"]["pid"].as_i64().is_some());
    assert_eq!(started["date_done"], json!(null));
    redis.wait_result(&slow, Duration::from_secs(10)).unwrap();
    // The ignored task ran before the sleep (FIFO), and left no key.
    assert!(dir
        .read("w1-1.log")
        .contains(&format!("[{ignored}] succeeded")));
    assert!(redis.result(&ignored).is_none());
}

#[test]
fn expired_task_is_revoked_and_not_run() {
    let (redis, dir) = redis_with_app("");
    let (id, mut env) = task_envelope("celery", "proj.tasks.add", &json!([1, 1]), &json!({}));
    env["headers"]["expires"] = json!("2020-01-01T00:00:00+00:00");
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    let (run, _guard) = start_worker(&dir, &["-c", "1"]);
    run.success();
    let meta = redis.wait_result(&id, Duration::from_secs(10)).unwrap();
    assert_eq!(meta["status"], "REVOKED");
    assert_eq!(
        meta["result"],
        json!({"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"})
    );
    assert!(!dir.read("w1-1.log").contains("succeeded"));
}

#[test]
fn rmulti_call_sends_a_task_and_prints_its_result() {
    let (_redis, dir, _guard, _pid) = started_node("", &["-c", "1"]);
    let run = Rmulti::new(&dir)
        .args([
            "call",
            "-A",
            "proj",
            "proj.tasks.xsum",
            "[1, 2, 3]",
            "--wait",
            "10",
        ])
        .run()
        .success();
    assert!(run.stdout().ends_with("6\n"), "{}", run.stdout());
    let run = Rmulti::new(&dir)
        .args([
            "call",
            "-A",
            "proj",
            "proj.tasks.fail",
            "boom",
            "--wait",
            "10",
        ])
        .run()
        .code_is(1);
    assert!(run.stdout().contains("ValueError"), "{}", run.stdout());
}

#[test]
fn unacked_messages_past_the_visibility_timeout_are_restored_and_run() {
    let (redis, dir) = redis_with_app("[broker_transport_options]\nvisibility_timeout = 60");
    // What a crashed Python worker leaves behind: kombu's unacked entry, old.
    let (id, env) = task_envelope("celery", "proj.tasks.add", &json!([2, 3]), &json!({}));
    let tag = env["properties"]["delivery_tag"]
        .as_str()
        .unwrap()
        .to_string();
    let entry = json!([env, "", "celery"]).to_string();
    redis.cmd(&["HSET", "unacked", &tag, &entry]);
    redis.cmd(&["ZADD", "unacked_index", "1000", &tag]);
    let (run, _guard) = start_worker(&dir, &["-c", "1"]);
    run.success();
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .expect("restored and run");
    assert_eq!(meta["result"], 5);
    // The child may finish the task before the main process logs the restore.
    assert!(
        wait_until(Duration::from_secs(5), || dir
            .read("w1.log")
            .contains("Restored 1 unacknowledged message(s)")),
        "{}",
        dir.read("w1.log")
    );
    // The result is stored just before the ack: poll for the ack.
    wait_nothing_in_flight(&redis);
}

#[test]
fn umask_and_workdir_apply_to_pidfile_and_logs() {
    use std::os::unix::fs::PermissionsExt;
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    std::fs::create_dir(dir.join("wd")).unwrap();
    dir.write(
        "wd/proj.toml",
        std::fs::read(dir.write_app("proj", "")).unwrap(),
    );
    let mut guard = NodeGuard::new(&dir.join("wd"), &["w1.pid"]);
    Rmulti::new(&dir)
        .args(worker_args(&[
            "-c",
            "1",
            "--detach",
            "--workdir=wd",
            "--umask=0077",
        ]))
        .run()
        .success();
    guard.remember();
    for f in ["wd/w1.pid", "wd/w1.log", "wd/w1-1.log"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} created under umask 0077");
    }
    assert!(!dir.join("w1.pid").exists());
}
