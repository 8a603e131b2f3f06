//! Tests of the test harness itself (`tests/common`): they need only
//! `redis-server`, not a working worker, so they pin the harness before the
//! integration tests lean on it.

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

#[test]
fn redis_starts_on_a_free_port_and_answers_ping() {
    let redis = RedisServer::start();
    assert!(redis.ping());
    assert_ne!(
        redis.port(),
        6379,
        "must not use the machine's shared Redis"
    );
    assert_eq!(
        redis.url(1),
        format!("redis://127.0.0.1:{}/1", redis.port())
    );
    assert_eq!(redis.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn two_servers_run_side_by_side() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    a.cmd(&["SET", "k", "a"]);
    assert!(b.cmd(&["GET", "k"]).is_nil());
}

#[test]
fn resp_client_covers_the_commands_tests_need() {
    let redis = RedisServer::start();
    assert_eq!(redis.cmd(&["LPUSH", "q", "one", "two"]).int(), 2);
    assert_eq!(redis.cmd(&["LLEN", "q"]).int(), 2);
    assert_eq!(
        redis.cmd(&["LRANGE", "q", "0", "-1"]).strings(),
        ["two", "one"]
    );
    redis.cmd(&["HSET", "unacked", "tag1", "{\"x\": 1}", "tag2", "y"]);
    let h = redis.cmd(&["HGETALL", "unacked"]).map();
    assert_eq!(h.get("tag1").map(String::as_str), Some("{\"x\": 1}"));
    assert_eq!(h.len(), 2);
    redis.cmd(&["ZADD", "unacked_index", "2", "b", "1", "a"]);
    assert_eq!(
        redis.cmd(&["ZRANGE", "unacked_index", "0", "-1"]).strings(),
        ["a", "b"]
    );
    redis.cmd(&["SET", "k", "v", "EX", "100"]);
    let ttl = redis.cmd(&["TTL", "k"]).int();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(redis.cmd(&["EXISTS", "k", "nope"]).int(), 1);
    let mut keys = redis.cmd(&["KEYS", "*"]).strings();
    keys.sort();
    assert_eq!(keys, ["k", "q", "unacked", "unacked_index"]);
    assert!(redis.cmd(&["GET", "nope"]).is_nil());
    assert!(matches!(redis.cmd(&["NOSUCHCOMMAND"]), Resp::Error(_)));
    // Databases are separate; the binary-safe path keeps bytes intact.
    let mut conn = redis.conn(RESULT_DB);
    conn.cmd_bytes(&[b"SET", b"bin", b"\x00\x06\x16\xff"])
        .expect("SET");
    assert_eq!(
        conn.cmd(&["GET", "bin"]).bytes(),
        Some(b"\x00\x06\x16\xff".to_vec())
    );
    assert!(redis.cmd(&["GET", "bin"]).is_nil());
}

#[test]
fn dropping_the_server_kills_it() {
    let redis = RedisServer::start();
    let (pid, port) = (redis.pid() as i32, redis.port());
    assert!(alive(pid));
    drop(redis);
    assert!(!alive(pid), "redis-server {pid} survived its drop");
    assert!(
        RedisConn::connect(port, 0).is_err(),
        "port {port} still answers"
    );
}

#[test]
fn published_task_has_the_shape_of_the_celery_fixture() {
    let redis = RedisServer::start();
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[4, 4]");
    let raw = redis.cmd(&["LRANGE", "celery", "0", "-1"]).strings();
    assert_eq!(raw.len(), 1);
    let env: Value = serde_json::from_str(&raw[0]).expect("envelope is JSON");

    // Key order as in fixtures/celery-5.7/task-v2-delay.json.
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&env),
        [
            "body",
            "content-encoding",
            "content-type",
            "headers",
            "properties"
        ]
    );
    assert_eq!(
        keys(&env["headers"]),
        [
            "lang",
            "task",
            "id",
            "shadow",
            "eta",
            "expires",
            "group",
            "group_index",
            "retries",
            "timelimit",
            "root_id",
            "parent_id",
            "argsrepr",
            "kwargsrepr",
            "origin",
            "ignore_result",
            "replaced_task_nesting",
            "stamped_headers",
            "stamps"
        ]
    );
    assert_eq!(
        keys(&env["properties"]),
        [
            "correlation_id",
            "reply_to",
            "delivery_mode",
            "delivery_info",
            "priority",
            "body_encoding",
            "delivery_tag"
        ]
    );
    assert_eq!(env["headers"]["task"], "proj.tasks.add");
    assert_eq!(env["headers"]["id"], id.as_str());
    assert_eq!(env["headers"]["argsrepr"], "(4, 4)");
    assert_eq!(env["properties"]["delivery_info"]["routing_key"], "celery");
    let body = base64::engine::general_purpose::STANDARD
        .decode(env["body"].as_str().expect("body is a string"))
        .expect("body is base64");
    let body: Value = serde_json::from_slice(&body).expect("body is JSON");
    assert_eq!(
        body,
        json!([[4, 4], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])
    );
}

#[test]
fn result_reads_the_meta_key_in_the_result_db() {
    let redis = RedisServer::start();
    assert_eq!(redis.result("abc"), None);
    let meta = json!({"status": "SUCCESS", "result": 8, "task_id": "abc"});
    redis.cmd_db(
        RESULT_DB,
        &["SET", "celery-task-meta-abc", &meta.to_string()],
    );
    assert_eq!(redis.result("abc"), Some(meta.clone()));
    assert_eq!(redis.wait_result("abc", Duration::from_secs(1)), Some(meta));
    assert_eq!(result(&redis, BROKER_DB, "abc"), None);
}

#[test]
fn app_file_points_at_the_test_redis() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let path = dir.write_app("proj", "result_expires = 60");
    let text = dir.read("proj.toml");
    assert_eq!(path, dir.join("proj.toml"));
    let doc: toml::Table = text.parse().expect("app file is valid TOML");
    assert_eq!(doc["broker_url"].as_str(), Some(redis.url(0).as_str()));
    assert_eq!(doc["result_backend"].as_str(), Some(redis.url(1).as_str()));
    assert_eq!(doc["result_expires"].as_integer(), Some(60));
    let tasks = doc["tasks"].as_table().expect("[tasks]");
    for (name, builtin) in [
        ("add", "add"),
        ("mul", "mul"),
        ("xsum", "xsum"),
        ("sleep", "sleep"),
        ("echo", "echo"),
        ("fail", "fail"),
    ] {
        assert_eq!(
            tasks[&format!("proj.tasks.{name}")]["builtin"].as_str(),
            Some(builtin)
        );
    }
    dir.write_app_tasks("other", "", "\"proj.tasks.cat\" = { exec = [\"cat\"] }\n");
    let doc: toml::Table = dir.read("other.toml").parse().expect("valid TOML");
    assert!(doc["tasks"]["proj.tasks.cat"]["exec"].is_array());
}

#[test]
fn wait_until_polls_until_true_or_deadline() {
    let start = Instant::now();
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        n += 1;
        n == 3
    }));
    assert!(start.elapsed() < Duration::from_secs(1));
    let start = Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || false));
    assert!(start.elapsed() >= Duration::from_millis(100));
}

/// A stand-in for a detached node: a shell named `rmulti-sh` that leads its
/// own process group, writes its pid to a pidfile and has two children. The
/// returned guard kills it and its children if the guard under test did not.
fn fake_node(dir: &TestDir, pidfile: &str) -> (Spawned, i32) {
    let sh = dir.join("rmulti-sh");
    std::os::unix::fs::symlink("/bin/sh", &sh).expect("symlink rmulti-sh");
    let child = Command::new(&sh)
        .arg("-c")
        .arg(format!("sleep 300 & sleep 300 & echo $$ > {pidfile}; wait"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn fake node");
    let node = Spawned::adopt(child, "rmulti-sh (fake node)");
    let pid = node.pid();
    let ready = wait_until(STARTUP_TIMEOUT, || {
        read_pidfile(dir.join(pidfile)) == Some(pid) && descendants(pid).len() == 2
    });
    assert!(ready, "fake node did not start");
    (node, pid)
}

#[test]
fn node_guard_kills_a_node_and_its_pool_on_drop() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let (_node, pid) = fake_node(&dir, "w1.pid");
    let pool = descendants(pid);
    assert!(is_rmulti(pid));
    let guard = NodeGuard::new(dir.path(), &["w1.pid", "w2.pid"]);
    assert_eq!(guard.pids(), [Some(pid), None]);
    drop(guard);
    assert!(!alive(pid), "node {pid} survived the guard");
    for p in pool {
        assert!(!alive(p), "pool child {p} survived the guard");
    }
}

#[test]
fn node_guard_kills_a_remembered_node_whose_pidfile_vanished() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let (_node, pid) = fake_node(&dir, "w1.pid");
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    guard.remember();
    std::fs::remove_file(dir.join("w1.pid")).expect("rm pidfile");
    drop(guard);
    assert!(!alive(pid));
}

#[test]
fn node_guard_spares_processes_that_are_not_rmulti() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let sleeper = Spawned::adopt(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
        "sleep 300",
    );
    let sleeper_pid = sleeper.pid();
    dir.write("other.pid", format!("{sleeper_pid}\n"));
    dir.write("self.pid", format!("{}\n", std::process::id()));
    dir.write("garbage.pid", "not a pid\n");
    drop(NodeGuard::new(
        dir.path(),
        &["other.pid", "self.pid", "garbage.pid"],
    ));
    assert!(alive(sleeper_pid), "a process not named rmulti was killed");
}

#[test]
fn command_builder_runs_the_built_binary_in_the_test_dir() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let run = Rmulti::new(&dir).arg("--version").run().success();
    assert!(run.stdout().contains("rmulti"), "{}", run.stdout());
    let run = Rmulti::new(&dir).arg("--no-such-flag").run();
    assert_ne!(run.code(), Some(0));
    // The test dir is its working directory: `start` creates the relative
    // pidfile directory there (the start itself fails: /bin/false).
    Rmulti::new(&dir)
        .args(["start", "w1", "--pidfile=run/%n.pid", "--logfile=%n%I.log"])
        .arg("--executable=/bin/false")
        .run()
        .code_is(1);
    assert!(dir.join("run").is_dir(), "run/ not created in the test dir");
}
