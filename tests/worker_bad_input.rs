//! Bad input never kills a process and is never silently dropped: each kind
//! gets an ERROR log line, a FAILURE result where the task id is known, and
//! a record in the dead-letter list `rmulti.deadletter`, while the node keeps
//! serving.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const NODE: &str = TEST_NODE;

/// Fields drop in order: the node is killed before its dir and Redis go.
struct Node {
    _guard: NodeGuard,
    dir: TestDir,
    redis: RedisServer,
}

fn node() -> Node {
    let (redis, dir, guard, _pid) = started_node("", &["-c", "1"]);
    Node {
        _guard: guard,
        dir,
        redis,
    }
}

impl Node {
    fn dead_letters(&self) -> Vec<Value> {
        let raw = self
            .redis
            .cmd(&["LRANGE", "rmulti.deadletter", "0", "-1"])
            .strings();
        raw.iter()
            .map(|r| serde_json::from_str(r).expect("dead-letter record is JSON"))
            .collect()
    }

    fn wait_dead_letter(&self, needle: &str) -> Value {
        wait_for(Duration::from_secs(10), || {
            self.dead_letters()
                .into_iter()
                .find(|r| r["message"].as_str().unwrap_or("").contains(needle))
        })
        .unwrap_or_else(|| {
            panic!(
                "no dead-letter record for {needle}; have {:?}",
                self.dead_letters()
            )
        })
    }

    /// The FAILURE result the bad input got.
    fn failure(&self, id: &str) -> Value {
        let meta = self
            .redis
            .wait_result(id, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no result stored for {id}\n{}", self.logs()));
        assert_eq!(meta["status"], "FAILURE", "{meta}");
        meta
    }

    fn logs(&self) -> String {
        node_logs(&self.dir)
    }

    /// The node still serves after the bad input.
    fn still_serves(&self) {
        let id = publish_task(&self.redis, "celery", "proj.tasks.add", "[20, 22]");
        let meta = self
            .redis
            .wait_result(&id, Duration::from_secs(10))
            .expect("node keeps serving");
        assert_eq!(meta["result"], 42);
        wait_nothing_in_flight(&self.redis);
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn undecodable_json_is_dead_lettered() {
    let n = node();
    publish_raw(&n.redis, "celery", b"{not json at all");
    let rec = n.wait_dead_letter("{not json at all");
    assert!(
        rec["reason"].as_str().unwrap().contains("not valid JSON"),
        "{rec}"
    );
    assert_eq!(rec["node"], NODE);
    assert!(
        n.logs()
            .contains("ERROR/ForkPoolWorker-1] Received invalid task message"),
        "{}",
        n.logs()
    );
    n.still_serves();
}

#[test]
fn pickle_is_never_deserialised_and_fails_the_task() {
    let n = node();
    let (id, mut env) = task_envelope("celery", "proj.tasks.add", &json!([1, 2]), &json!({}));
    env["content-type"] = json!("application/x-python-serialize");
    env["content-encoding"] = json!("binary");
    // A real pickle (protocol 4) of os.system('touch /tmp/pwned'), as bytes:
    // the text "\u{80}..." would be UTF-8 (0xC2 0x80), not a pickle at all.
    env["body"] = json!(b64(b"\x80\x04cos\nsystem\n(S'touch /tmp/pwned'\ntR."));
    publish_raw(&n.redis, "celery", env.to_string().as_bytes());
    let meta = n.failure(&id);
    assert_eq!(meta["result"]["exc_type"], "ContentDisallowed");
    let rec = n.wait_dead_letter(&id);
    assert_eq!(rec["task_id"], id.as_str());
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("application/x-python-serialize"),
        "{rec}"
    );
    assert!(n.logs().contains("ERROR/ForkPoolWorker-1]"), "{}", n.logs());
    n.still_serves();
}

#[test]
fn yaml_content_is_refused_too() {
    let n = node();
    let (id, mut env) = task_envelope("celery", "proj.tasks.add", &json!([1, 2]), &json!({}));
    env["content-type"] = json!("application/x-yaml");
    env["body"] = json!(b64("- [1, 2]\n- {}\n"));
    publish_raw(&n.redis, "celery", env.to_string().as_bytes());
    assert_eq!(n.failure(&id)["result"]["exc_type"], "ContentDisallowed");
    n.wait_dead_letter(&id);
    n.still_serves();
}

#[test]
fn body_of_the_wrong_shape_fails_with_its_id() {
    let n = node();
    let (id, mut env) = task_envelope("celery", "proj.tasks.add", &json!([1, 2]), &json!({}));
    env["body"] = json!(b64("{\"args\": \"not a list\"}"));
    publish_raw(&n.redis, "celery", env.to_string().as_bytes());
    let meta = n.failure(&id);
    assert_eq!(meta["result"]["exc_type"], "DecodeError");
    let rec = n.wait_dead_letter(&id);
    assert_eq!(rec["task"], "proj.tasks.add");
    n.still_serves();
}

#[test]
fn unknown_task_fails_with_not_registered() {
    let n = node();
    let id = publish_task(&n.redis, "celery", "proj.nope", "[1]");
    let meta = n.failure(&id);
    // Exactly Celery's fixture shape (result-failure-notregistered.json).
    assert_eq!(
        meta["result"],
        json!({"exc_type": "NotRegistered", "exc_message": ["proj.nope"], "exc_module": "celery.exceptions"})
    );
    assert_eq!(meta["traceback"], json!(null));
    let rec = n.wait_dead_letter(&id);
    assert!(
        rec["reason"].as_str().unwrap().contains("unregistered"),
        "{rec}"
    );
    assert_eq!(rec["queue"], "celery");
    assert!(
        n.logs()
            .contains("Received unregistered task of type 'proj.nope'."),
        "{}",
        n.logs()
    );
    n.still_serves();
}

#[test]
fn wrong_arguments_for_a_builtin_fail_with_type_error() {
    let n = node();
    let id = publish_task(&n.redis, "celery", "proj.tasks.add", "[1]");
    let meta = n.failure(&id);
    assert_eq!(meta["result"]["exc_type"], "TypeError");
    assert_eq!(meta["result"]["exc_module"], "builtins");
    assert!(
        meta["result"]["exc_message"][0]
            .as_str()
            .unwrap()
            .contains("missing 1 required positional argument: 'y'"),
        "{meta}"
    );
    assert!(
        meta["traceback"]
            .as_str()
            .unwrap()
            .starts_with("Traceback (most recent call last):"),
        "{meta}"
    );
    let rec = n.wait_dead_letter(&id);
    assert!(
        rec["reason"].as_str().unwrap().contains("wrong arguments"),
        "{rec}"
    );
    assert!(
        n.logs().contains(&format!(
            "ERROR/ForkPoolWorker-1] Task proj.tasks.add[{id}] raised unexpected: TypeError("
        )),
        "{}",
        n.logs()
    );
    n.still_serves();
}

#[test]
fn envelope_without_headers_or_body_is_dead_lettered() {
    let n = node();
    publish_raw(
        &n.redis,
        "celery",
        b"{\"properties\": {\"delivery_tag\": \"t-1\"}, \"marker\": \"shapeless\"}",
    );
    publish_raw(&n.redis, "celery", b"[1, 2, 3]");
    n.wait_dead_letter("shapeless");
    n.wait_dead_letter("[1, 2, 3]");
    n.still_serves();
}

#[test]
fn a_result_redis_refuses_to_store_is_kept_not_lost() {
    let n = node();
    let (id, env) = task_envelope("celery", "proj.tasks.add", &json!([1, 1]), &json!({}));
    // Someone else's data under the result key: Redis answers WRONGTYPE.
    n.redis.cmd_db(
        RESULT_DB,
        &["HSET", &format!("celery-task-meta-{id}"), "f", "v"],
    );
    publish_raw(&n.redis, "celery", env.to_string().as_bytes());
    let rec = n.wait_dead_letter(&id);
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("result could not be stored"),
        "{rec}"
    );
    assert!(
        rec["reason"].as_str().unwrap().contains("\"result\": 2"),
        "{rec}"
    );
    n.still_serves();
}

#[test]
fn a_body_past_the_size_limit_is_refused_without_inflating_it() {
    use std::io::Write as _;
    let n = node();
    // 64 MiB + 1 of body in about 65 KiB of zlib: refused while inflating.
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&vec![b' '; (64 << 20) + 1]).unwrap();
    let packed = enc.finish().unwrap();
    assert!(packed.len() < 200 << 10, "{} bytes", packed.len());
    let (id, mut env) = task_envelope("celery", "proj.tasks.add", &json!([1, 2]), &json!({}));
    env["body"] = json!(b64(packed));
    env["headers"]["compression"] = json!("application/x-gzip");
    publish_raw(&n.redis, "celery", env.to_string().as_bytes());
    let meta = n.failure(&id);
    assert_eq!(meta["result"]["exc_type"], "DecodeError");
    let rec = n.wait_dead_letter(&id);
    assert_eq!(
        rec["reason"],
        "message body is larger than 64 MiB once decoded (rmulti's limit for one message)"
    );
    assert!(
        n.logs().contains("larger than 64 MiB") && !n.logs().contains("exited with"),
        "{}",
        n.logs()
    );
    n.still_serves();
}

#[test]
fn bytes_that_are_not_utf8_are_kept_exactly() {
    let n = node();
    let (id, env) = task_envelope("celery", "proj.tasks.add", &json!([1, 2]), &json!({}));
    // "é" in Latin-1 inside a header string: JSON otherwise, so the id is read.
    let text = env.to_string();
    let at = text.find("\"argsrepr\":\"").unwrap() + 12;
    let mut raw = text.into_bytes();
    raw.insert(at, 0xe9);
    publish_raw(&n.redis, "celery", &raw);
    let meta = n.failure(&id);
    assert_eq!(meta["result"]["exc_type"], "DecodeError");
    let rec = n.wait_dead_letter(&id);
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .starts_with("message is not valid UTF-8"),
        "{rec}"
    );
    let kept = base64::engine::general_purpose::STANDARD
        .decode(rec["message_base64"].as_str().expect("message_base64"))
        .unwrap();
    assert_eq!(kept, raw);
    assert!(
        rec["message"].as_str().unwrap().contains('\u{fffd}'),
        "{rec}"
    );
    assert!(
        !n.logs().contains("Cannot connect to broker"),
        "{}",
        n.logs()
    );
    n.still_serves();
}
