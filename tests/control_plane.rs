//! The node's control plane through the native client (`rmulti inspect`,
//! `rmulti control`, `rmulti status`): ping, stats, active, revoke (before
//! and while running), remote shutdown, and garbage on the pidbox channel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

fn ctl(dir: &TestDir, args: &[&str]) -> Run {
    Rmulti::new(dir)
        .args(args)
        .args(["-A", "proj", "-t", "2", "-d", TEST_NODE])
        .run()
}

/// `rmulti inspect <cmd> -j`: the node's reply value.
fn inspect_json(dir: &TestDir, cmd: &[&str]) -> Value {
    let mut args = vec!["inspect"];
    args.extend_from_slice(cmd);
    args.push("-j");
    let run = ctl(dir, &args).success();
    let all: Value = serde_json::from_str(run.stdout().trim())
        .unwrap_or_else(|e| panic!("inspect {cmd:?} -j: {e}: {}", run.stdout()));
    all[TEST_NODE].clone()
}

#[test]
fn ping_status_stats_registered_active_queues() {
    let (_redis, dir, _guard, pid) = started_node("", &["-c", "2"]);
    let run = ctl(&dir, &["inspect", "ping"]).success();
    assert!(
        run.stdout().contains(&format!("->  {TEST_NODE}: OK")),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("pong"));
    let run = ctl(&dir, &["status"]).success();
    assert!(run.stdout().contains("1 node online."), "{}", run.stdout());

    let stats = inspect_json(&dir, &["stats"]);
    assert_eq!(stats["pid"], json!(pid));
    assert_eq!(stats["pool"]["max-concurrency"], json!(2));
    assert_eq!(stats["pool"]["processes"].as_array().map(Vec::len), Some(2));
    assert!(stats["broker"].is_object() && stats["total"].is_object());

    let registered = inspect_json(&dir, &["registered"]);
    assert!(registered
        .as_array()
        .unwrap()
        .contains(&json!("proj.tasks.add")));
    let queues = inspect_json(&dir, &["active_queues"]);
    for key in [
        "name",
        "exclusive",
        "durable",
        "routing_key",
        "no_ack",
        "alias",
        "queue_arguments",
        "binding_arguments",
        "auto_delete",
    ] {
        assert!(
            queues[0].get(key).is_some(),
            "active_queues lacks {key}: {queues}"
        );
    }
    assert_eq!(queues[0]["name"], json!("celery"));
}

#[test]
fn active_shows_the_running_task_and_stats_counts_it() {
    let (redis, dir, _guard, _pid) = started_node("", &["-c", "1"]);
    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[3]");
    let active = wait_for(T, || {
        let a = inspect_json(&dir, &["active"]);
        (a.as_array().is_some_and(|l| !l.is_empty())).then_some(a)
    })
    .expect("the task shows as active");
    assert_eq!(active[0]["id"], json!(id));
    assert_eq!(active[0]["name"], json!("proj.tasks.sleep"));
    assert_eq!(active[0]["args"], json!([3]));
    assert_eq!(active[0]["delivery_info"]["routing_key"], json!("celery"));
    assert!(active[0]["worker_pid"].as_i64().is_some());
    let stats = inspect_json(&dir, &["stats"]);
    assert_eq!(stats["total"]["proj.tasks.sleep"], json!(1));
}

#[test]
fn a_revoked_countdown_task_never_runs() {
    let (redis, dir, _guard, _pid) = started_node("", &["-c", "1"]);
    let (id, mut env) = task_envelope("celery", "proj.tasks.add", &json!([2, 3]), &json!({}));
    let eta = chrono::Utc::now() + chrono::Duration::seconds(4);
    env["headers"]["eta"] = json!(eta.to_rfc3339());
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    assert!(wait_until(T, || redis.cmd(&["ZCARD", "rmulti.eta"]).int() == 1));
    let run = ctl(&dir, &["control", "revoke", &id]).success();
    assert!(
        run.stdout().contains("flagged as revoked"),
        "{}",
        run.stdout()
    );
    // Stored at once (children null), before the ETA.
    let meta = redis.result(&id).expect("REVOKED stored by the revoke");
    assert_eq!(meta["status"], json!("REVOKED"));
    assert_eq!(meta["children"], Value::Null);
    // Once due, the child discards it: REVOKED again (children []), never SUCCESS.
    let meta = wait_for(T, || {
        redis.result(&id).filter(|m| m["children"] == json!([]))
    })
    .expect("the child discarded the revoked message");
    assert_eq!(meta["result"]["exc_message"], json!(["revoked"]));
    assert!(dir.read("w1-1.log").contains("Discarding revoked task"));
    assert_eq!(redis.cmd(&["ZCARD", "rmulti.eta"]).int(), 0);
    let revoked = inspect_json(&dir, &["revoked"]);
    assert_eq!(revoked, json!([id]));
    // Delivered again later (another client re-sends the same id): still not run.
    let (_, mut again) = task_envelope("celery", "proj.tasks.add", &json!([1, 1]), &json!({}));
    again["headers"]["id"] = json!(id);
    publish_raw(&redis, "celery", again.to_string().as_bytes());
    // The child's second discard of that id is the sign it handled the copy.
    assert!(
        wait_until(T, || dir
            .read("w1-1.log")
            .matches("Discarding revoked task")
            .count()
            >= 2),
        "{}",
        dir.read("w1-1.log")
    );
    assert_eq!(redis.result(&id).unwrap()["status"], json!("REVOKED"));
}

#[test]
fn revoke_terminate_kills_the_running_task_and_the_node_serves_on() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "1"]);
    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[30]");
    assert!(wait_until(T, || inspect_json(&dir, &["active"])
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    let run = ctl(&dir, &["control", "terminate", "SIGTERM", &id]).success();
    assert!(
        run.stdout().contains(&format!("terminate: {id}")),
        "{}",
        run.stdout()
    );
    let meta = wait_for(T, || {
        redis
            .result(&id)
            .filter(|m| m["status"] == json!("REVOKED"))
    })
    .expect("REVOKED terminated");
    assert_eq!(meta["result"]["exc_message"], json!(["terminated"]));
    let next = publish_task(&redis, "celery", "proj.tasks.add", "[4, 4]");
    let meta = redis
        .wait_result(&next, T)
        .expect("the replacement child runs tasks");
    assert_eq!(meta["result"], json!(8));
    assert!(alive(pid));
}

#[test]
fn remote_shutdown_is_a_warm_shutdown() {
    let (_redis, dir, _guard, pid) = started_node("", &[]);
    ctl(&dir, &["control", "shutdown"]);
    assert!(wait_until(T, || !alive(pid)), "the node is still running");
    assert!(!dir.join("w1.pid").exists(), "pidfile left behind");
    assert!(dir.read("w1.log").contains("Got shutdown from remote"));
}

#[test]
fn garbage_on_the_pidbox_channel_is_logged_and_the_node_answers_on() {
    let (redis, dir, _guard, pid) = started_node("", &[]);
    let channel = "/0.celery.pidbox";
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let garbage = vec![
        "not json".to_string(),
        "[1, 2, 3]".to_string(),
        "\"a string\"".to_string(),
        json!({"body": "%%% not base64", "content-type": "application/json", "properties": {}}).to_string(),
        json!({"body": b64("[\"a list body\"]"), "content-type": "application/json", "content-encoding": "utf-8", "headers": {}, "properties": {"body_encoding": "base64"}}).to_string(),
        json!({"body": b64("{\"method\": 5, \"arguments\": []}"), "content-type": "application/json", "content-encoding": "utf-8", "headers": {}, "properties": {"body_encoding": "base64"}}).to_string(),
        json!({"body": b64("{\"method\": \"revoke\", \"arguments\": {\"task_id\": {\"x\": 1}, \"signal\": [1]}}"), "content-type": "application/json", "content-encoding": "utf-8", "headers": {"clock": "x"}, "properties": {"body_encoding": "base64"}}).to_string(),
    ];
    for g in &garbage {
        redis.cmd(&["PUBLISH", channel, g]);
    }
    // A flood: the node keeps answering and running tasks.
    let ping = json!({"body": b64("{\"method\": \"ping\", \"arguments\": {}, \"destination\": null, \"pattern\": null, \"matcher\": null}"), "content-type": "application/json", "content-encoding": "utf-8", "headers": {"clock": 1, "expires": 0}, "properties": {"body_encoding": "base64", "delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}, "priority": 0, "delivery_tag": "x"}}).to_string();
    for _ in 0..2000 {
        redis.cmd(&["PUBLISH", channel, &ping]);
    }
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[1, 2]");
    assert_eq!(
        redis.wait_result(&id, T).expect("tasks still run")["result"],
        json!(3)
    );
    let run = ctl(&dir, &["inspect", "ping"]).success();
    assert!(run.stdout().contains("pong"));
    let run = ctl(&dir, &["inspect", "nosuchcommand_x"]);
    drop(run);
    assert!(alive(pid));
    assert!(
        dir.read("w1.log").contains("not a request"),
        "garbage not logged"
    );
}

/// A task envelope stamped as Celery's canvas stamping sends it
/// (`stamped_headers` names the header, `stamps` holds its value).
fn stamped_envelope(name: &str, args: &Value, stamp: &Value) -> (String, Value) {
    let (id, mut env) = task_envelope("celery", name, args, &json!({}));
    env["headers"]["stamped_headers"] = json!(["monitoring_id"]);
    env["headers"]["stamps"] = json!({ "monitoring_id": stamp });
    env["headers"]["monitoring_id"] = stamp.clone();
    (id, env)
}

/// A remote-control request as kombu PUBLISHes it, with no reply wanted.
fn broadcast(redis: &RedisServer, method: &str, arguments: Value) {
    broadcast_body(
        redis,
        json!({"method": method, "arguments": arguments, "destination": null, "pattern": null, "matcher": null}),
    );
}

fn broadcast_body(redis: &RedisServer, body: Value) {
    use base64::Engine;
    let env = json!({
        "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
        "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"clock": 1, "expires": null},
        "properties": {"body_encoding": "base64", "delivery_mode": 2,
                       "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
                       "priority": 0, "delivery_tag": uuid::Uuid::new_v4().to_string()}
    });
    redis.cmd(&["PUBLISH", "/0.celery.pidbox", &env.to_string()]);
}

#[test]
fn a_task_revoked_by_stamped_header_never_runs_even_on_a_restarted_node() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "1"]);
    let run = ctl(
        &dir,
        &["control", "revoke_by_stamped_headers", "monitoring_id=m1"],
    )
    .success();
    assert!(
        run.stdout()
            .contains("headers {'monitoring_id': 'm1'} flagged as revoked, but not terminated"),
        "{}",
        run.stdout()
    );
    let (revoked, env) = stamped_envelope("proj.tasks.add", &json!([2, 3]), &json!("m1"));
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    // A list stamp runs unless one of its items is revoked.
    let (other, env) = stamped_envelope("proj.tasks.add", &json!([1, 1]), &json!(["m2", "x"]));
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    assert_eq!(
        redis.wait_result(&other, T).expect("m2 runs")["result"],
        json!(2)
    );
    let meta = redis.result(&revoked).expect("REVOKED stored by the child");
    assert_eq!(meta["status"], json!("REVOKED"));
    assert_eq!(meta["result"]["exc_message"], json!(["revoked"]));
    assert!(
        dir.read("w1-1.log").contains(&format!(
            "Discarding revoked task: proj.tasks.add[{revoked}] (revoked by header: {{'monitoring_id': 'm1'}})"
        )),
        "{}",
        dir.read("w1-1.log")
    );
    // The revoke is in Redis, not in the node: a restarted node keeps it.
    ctl(&dir, &["control", "shutdown"]);
    assert!(wait_until(T, || !alive(pid)), "the node is still running");
    let (_guard2, _pid2) = start_detached(&dir, &["-c", "1"]);
    let (again, env) = stamped_envelope("proj.tasks.add", &json!([4, 4]), &json!(["z", "m1"]));
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    let meta = wait_for(T, || {
        redis
            .result(&again)
            .filter(|m| m["status"] != json!("PENDING"))
    })
    .expect("an outcome for the stamped task");
    assert_eq!(meta["status"], json!("REVOKED"), "{meta}");
}

#[test]
fn revoke_by_stamped_headers_with_terminate_kills_the_running_task() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "1"]);
    let (id, env) = stamped_envelope("proj.tasks.sleep", &json!([30]), &json!("m9"));
    publish_raw(&redis, "celery", env.to_string().as_bytes());
    assert!(wait_until(T, || inspect_json(&dir, &["active"])
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    broadcast(
        &redis,
        "revoke_by_stamped_headers",
        json!({"headers": {"monitoring_id": ["m9"]}, "terminate": true, "signal": "SIGKILL"}),
    );
    let meta = wait_for(T, || {
        redis
            .result(&id)
            .filter(|m| m["status"] == json!("REVOKED"))
    })
    .expect("REVOKED terminated");
    assert_eq!(meta["result"]["exc_message"], json!(["terminated"]));
    let next = publish_task(&redis, "celery", "proj.tasks.add", "[4, 4]");
    assert_eq!(
        redis.wait_result(&next, T).expect("the node serves on")["result"],
        json!(8)
    );
    assert!(alive(pid));
}

#[test]
fn a_revoked_protocol_1_task_is_not_run() {
    let (redis, dir, _guard, _pid) = started_node("", &["-c", "1"]);
    // `task-v1-basic.json`'s shape: everything in the body, headers empty.
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"task": "proj.tasks.add", "id": id, "args": [3, 4], "kwargs": {},
        "group": null, "group_index": null, "retries": 0, "eta": null, "expires": null,
        "utc": true, "callbacks": null, "errbacks": null, "timelimit": [null, null],
        "taskset": null, "chord": null});
    let env = |body: &Value| {
        use base64::Engine;
        json!({
            "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
            "content-encoding": "utf-8", "content-type": "application/json", "headers": {},
            "properties": {"correlation_id": body["id"], "reply_to": "r", "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
                "body_encoding": "base64", "delivery_tag": uuid::Uuid::new_v4().to_string()}
        })
        .to_string()
    };
    ctl(&dir, &["control", "revoke", &id]).success();
    publish_raw(&redis, "celery", env(&body).as_bytes());
    // The child's REVOKED has `children: []` (the revoke's own has null).
    let meta = wait_for(T, || {
        redis.result(&id).filter(|m| m["children"] == json!([]))
    })
    .unwrap_or_else(|| panic!("the child discarded it: {}", node_logs(&dir)));
    assert_eq!(meta["status"], json!("REVOKED"));
    assert!(dir
        .read("w1-1.log")
        .contains(&format!("Discarding revoked task: proj.tasks.add[{id}]")));
    // A protocol 1 task that is not revoked still runs.
    let mut other = body.clone();
    let other_id = uuid::Uuid::new_v4().to_string();
    other["id"] = json!(other_id);
    publish_raw(&redis, "celery", env(&other).as_bytes());
    assert_eq!(
        redis.wait_result(&other_id, T).expect("runs")["result"],
        json!(7)
    );
}

/// A terminating revoke sent at the same instant as its task, behind a
/// burst of inspect requests handled in the same loop turn (each answered
/// with a Redis round trip): whether the node handles the revoke before a
/// child takes the task (never started), while the child's `started`
/// report is still in its pipe, or after (running), the task ends REVOKED
/// and never SUCCESS. Answered from the turn's first snapshot of the pool,
/// some rounds ran the task to the end.
#[test]
fn a_terminating_revoke_racing_its_task_never_lets_it_finish() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "2"]);
    let ping = json!({"method": "ping", "arguments": {}, "destination": null, "pattern": null,
        "matcher": null, "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "gone"},
        "ticket": "t"});
    for round in 0..12 {
        let (id, env) = task_envelope("celery", "proj.tasks.sleep", &json!([3]), &json!({}));
        publish_raw(&redis, "celery", env.to_string().as_bytes());
        for _ in 0..60 {
            broadcast_body(&redis, ping.clone());
        }
        broadcast(
            &redis,
            "revoke",
            json!({"task_id": [id], "terminate": true, "signal": "SIGKILL"}),
        );
        // The revoke's own REVOKED (children null) comes first; the outcome
        // is the child's discard (children []), the terminate's record, or
        // the task's own result.
        let meta = wait_for(T, || {
            redis.result(&id).filter(|m| {
                m["status"] == json!("SUCCESS")
                    || m["children"] == json!([])
                    || m["result"]["exc_message"] == json!(["terminated"])
            })
        })
        .unwrap_or_else(|| panic!("round {round}: no outcome\n{}", node_logs(&dir)));
        assert_eq!(meta["status"], json!("REVOKED"), "round {round}: {meta}");
    }
    assert!(alive(pid));
}
