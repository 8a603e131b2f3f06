//! Bad input at scale: several hundred malformed messages of every kind —
//! random bytes, bytes that are not UTF-8, fields of the wrong JSON type,
//! bad base64, bad zlib, bodies past the size limit, dates that are not
//! dates, missing fields, pickle/yaml/msgpack and other content types,
//! unknown tasks, wrong arguments — interleaved with good tasks on one queue.
//!
//! Afterwards the node still serves (every good task has its result), no
//! process died (the same pids, no "exited with" line), every malformed
//! message is in `rmulti.deadletter` exactly once and byte for byte as it was
//! sent, and a client waiting on one whose id could be read gets a FAILURE.
//!
//! The messages come from a seeded PRNG; every assertion message names the
//! seed, and `RMULTI_TEST_SEED=<n>` replays it.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// How many malformed messages one run sends (plus the good ones between them).
const BAD_MESSAGES: usize = 400;
/// One good task after every this many messages, on average.
const GOOD_EVERY: u64 = 8;
/// Bodies past the 64 MiB limit cost a child ~0.1 s each to refuse: a few.
const OVERSIZED: usize = 3;
const DEFAULT_SEED: u64 = 0x5eed_0006;

/// xorshift64*: small, fast, and the same sequence everywhere for one seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A malformed message and what a client waiting on its id gets, when the
/// id can be read from it: `(task id, exc_type of the FAILURE)`.
struct Bad {
    kind: &'static str,
    raw: Vec<u8>,
    failure: Option<(String, &'static str)>,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("write to a Vec");
    enc.finish().expect("finish into a Vec")
}

/// A well-formed `proj.tasks.add(a, b)` envelope, to be broken by the caller.
fn good_envelope(rng: &mut Rng) -> (String, Value) {
    let (a, b) = (rng.below(1000), rng.below(1000));
    task_envelope("celery", "proj.tasks.add", &json!([a, b]), &json!({}))
}

fn set_body(env: &mut Value, body: &str) {
    env["body"] = json!(b64(body));
}

fn bad(kind: &'static str, env: &Value, failure: Option<(String, &'static str)>) -> Bad {
    Bad {
        kind,
        raw: env.to_string().into_bytes(),
        failure,
    }
}

fn random_bytes(rng: &mut Rng) -> Bad {
    let len = rng.below(300);
    Bad {
        kind: "random bytes",
        raw: rng.bytes(len),
        failure: None,
    }
}

fn not_utf8(rng: &mut Rng) -> Bad {
    let (id, env) = good_envelope(rng);
    let text = env.to_string();
    // A byte that cannot start or continue a UTF-8 sequence here, inside a
    // header string: the rest of the JSON is intact, so the id is readable.
    let at = text.find("\"argsrepr\":\"").expect("argsrepr header") + 12;
    let mut raw = text.into_bytes();
    raw.insert(at, rng.pick(&[0x80, 0xbf, 0xc0, 0xe9, 0xfe, 0xff]));
    Bad {
        kind: "not UTF-8",
        raw,
        failure: Some((id, "DecodeError")),
    }
}

/// Each field the decoder needs, given a value of a wrong JSON type. (Fields
/// kombu and Celery are lenient about, such as `retries` or `priority`, are
/// read leniently here too: a wrong type there is not bad input.)
fn wrong_type(rng: &mut Rng) -> Bad {
    let (id, mut env) = good_envelope(rng);
    // Never a string: every field below but the body's items wants one.
    let wrong = rng.pick(&[
        json!(42),
        json!(true),
        json!([1]),
        json!({"a": 1}),
        json!(1.5),
    ]);
    let field = rng.below(12);
    let id_known = Some((id.clone(), "DecodeError"));
    let failure = match field {
        0 => {
            env["body"] = wrong.clone();
            id_known
        }
        1 => {
            env["headers"] = rng.pick(&[json!("h"), json!([1, 2]), json!(3)]);
            None
        }
        2 => {
            env["properties"] = rng.pick(&[json!("p"), json!([]), json!(0)]);
            id_known
        }
        3 => {
            env["content-type"] = wrong.clone();
            id_known
        }
        4 => {
            env["content-encoding"] = wrong.clone();
            id_known
        }
        5 => {
            env["headers"]["task"] = wrong.clone();
            id_known
        }
        6 => {
            env["headers"]["id"] = wrong.clone();
            None
        }
        7 => {
            env["headers"]["eta"] = wrong.clone();
            id_known
        }
        8 => {
            env["headers"]["expires"] = wrong.clone();
            id_known
        }
        9 => {
            env["headers"]["compression"] = wrong.clone();
            id_known
        }
        10 => {
            // args, kwargs, embed: a list, an object, an object.
            let body = match rng.below(3) {
                0 => json!([wrong_unless(&wrong, Value::is_array), {}, {}]),
                1 => json!([[1, 2], wrong_unless(&wrong, Value::is_object), {}]),
                _ => json!([[1, 2], {}, wrong_unless(&wrong, Value::is_object)]),
            };
            set_body(&mut env, &body.to_string());
            id_known
        }
        _ => {
            // The body itself: protocol 2 wants a list.
            set_body(&mut env, rng.pick(&["{}", "\"text\"", "12", "null"]));
            id_known
        }
    };
    bad("wrong JSON type", &env, failure)
}

fn wrong_unless(v: &Value, right: fn(&Value) -> bool) -> Value {
    if right(v) {
        json!("neither")
    } else {
        v.clone()
    }
}

fn bad_base64(rng: &mut Rng) -> Bad {
    let (id, mut env) = good_envelope(rng);
    env["body"] = json!(rng.pick(&["!!!!", "W1sx%%%", "QUJDR", "A", "W1sxLCAy*XSwge30sIHt9XQ=="]));
    bad("bad base64", &env, Some((id, "DecodeError")))
}

fn bad_zlib(rng: &mut Rng) -> Bad {
    let (id, mut env) = good_envelope(rng);
    let body =
        "[[1, 2], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]";
    let packed = match rng.below(3) {
        0 => {
            let len = 1 + rng.below(60);
            rng.bytes(len)
        }
        1 => {
            // A stream cut short: the body is never complete JSON.
            let full = zlib(body.as_bytes());
            let cut = 1 + rng.below(full.len() / 2);
            full[..cut].to_vec()
        }
        _ => {
            env["headers"]["compression"] =
                json!(rng.pick(&["application/x-bz2", "application/x-lzma", "brotli"]));
            zlib(body.as_bytes())
        }
    };
    env["body"] = json!(b64(packed));
    if env["headers"]["compression"].is_null() {
        env["headers"]["compression"] = json!("application/x-gzip");
    }
    bad("bad zlib", &env, Some((id, "DecodeError")))
}

fn bad_date(rng: &mut Rng) -> Bad {
    let (id, mut env) = good_envelope(rng);
    let field = rng.pick(&["eta", "expires"]);
    env["headers"][field] = json!(rng.pick(&[
        "2030-13-45T99:00:00",
        "tomorrow",
        "",
        "2026-02-30T00:00:00",
        "12:00",
        "2030-01-01T25:00:00+00:00",
        "2030-01-01T12:00:00+99:00",
        "1e9",
    ]));
    bad("bad date", &env, Some((id, "DecodeError")))
}

fn missing_field(rng: &mut Rng) -> Bad {
    let (id, mut env) = good_envelope(rng);
    let failure = match rng.below(6) {
        0 => {
            env.as_object_mut().expect("object").remove("body");
            Some((id, "DecodeError"))
        }
        1 => {
            env["headers"].as_object_mut().expect("object").remove("id");
            None
        }
        2 => {
            // Without a task header it reads as protocol 1, whose body is an object.
            env["headers"]
                .as_object_mut()
                .expect("object")
                .remove("task");
            Some((id, "DecodeError"))
        }
        3 => {
            // No body_encoding: the base64 text is read as the JSON body.
            env.as_object_mut().expect("object").remove("properties");
            Some((id, "DecodeError"))
        }
        4 => {
            set_body(&mut env, rng.pick(&["[[1, 2]]", "[]", ""]));
            Some((id, "DecodeError"))
        }
        _ => {
            env.as_object_mut().expect("object").remove("headers");
            None
        }
    };
    bad("missing field", &env, failure)
}

fn other_content_type(rng: &mut Rng) -> Bad {
    let (id, mut env) = good_envelope(rng);
    let (content_type, encoding, body): (&str, &str, Vec<u8>) = match rng.below(5) {
        // pickle protocol 4 of os.system('touch /tmp/pwned'): never run.
        0 => (
            "application/x-python-serialize",
            "binary",
            b"\x80\x04cos\nsystem\n(S'touch /tmp/pwned'\ntR.".to_vec(),
        ),
        1 => (
            "application/x-yaml",
            "utf-8",
            b"- [1, 2]\n- {}\n- {}\n".to_vec(),
        ),
        // msgpack of [[1, 2], {}, {}]
        2 => (
            "application/x-msgpack",
            "binary",
            vec![0x93, 0x92, 0x01, 0x02, 0x80, 0x80],
        ),
        3 => ("text/plain", "utf-8", b"[[1, 2], {}, {}]".to_vec()),
        _ => ("application/data", "binary", rng.bytes(16)),
    };
    env["content-type"] = json!(content_type);
    env["content-encoding"] = json!(encoding);
    env["body"] = json!(b64(body));
    bad("content type", &env, Some((id, "ContentDisallowed")))
}

fn unknown_task(rng: &mut Rng) -> Bad {
    let name = format!("proj.tasks.nope{}", rng.below(100));
    let (id, env) = task_envelope("celery", &name, &json!([1]), &json!({}));
    bad("unknown task", &env, Some((id, "NotRegistered")))
}

fn wrong_arguments(rng: &mut Rng) -> Bad {
    let args = rng.pick(&[json!([1]), json!([1, 2, 3]), json!(["a", null])]);
    let (id, env) = task_envelope("celery", "proj.tasks.add", &args, &json!({}));
    bad("wrong arguments", &env, Some((id, "TypeError")))
}

/// A body of 64 MiB + 1 byte that travels as about 65 KiB of zlib.
fn oversized(rng: &mut Rng, bomb: &str) -> Bad {
    let (id, mut env) = good_envelope(rng);
    env["body"] = json!(bomb);
    env["headers"]["compression"] = json!("application/x-gzip");
    bad("oversized body", &env, Some((id, "DecodeError")))
}

type Maker = fn(&mut Rng) -> Bad;

const KINDS: [Maker; 10] = [
    random_bytes,
    not_utf8,
    wrong_type,
    bad_base64,
    bad_zlib,
    bad_date,
    missing_field,
    other_content_type,
    unknown_task,
    wrong_arguments,
];

/// What a dead-letter record says the message was: its exact bytes.
fn recorded_bytes(record: &Value) -> Vec<u8> {
    match record["message_base64"].as_str() {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("message_base64 is base64"),
        None => record["message"]
            .as_str()
            .expect("message is a string")
            .as_bytes()
            .to_vec(),
    }
}

#[test]
fn hundreds_of_malformed_messages_are_dead_lettered_and_the_node_keeps_serving() {
    let seed = std::env::var("RMULTI_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = Rng::new(seed);
    let (redis, dir, _guard, main_pid) = started_node("", &["-c", "2"]);
    let mut children = descendants(main_pid);
    children.sort();
    assert_eq!(children.len(), 2, "pool of 2: {children:?}");

    let bomb = b64(zlib(&vec![b' '; (64 << 20) + 1]));
    let mut sent_bad: Vec<Bad> = Vec::new();
    let mut good: Vec<(String, u64)> = Vec::new();
    let mut queue: Vec<Vec<u8>> = Vec::new();
    while sent_bad.len() < BAD_MESSAGES {
        if rng.next().is_multiple_of(GOOD_EVERY) {
            let (a, b) = (rng.below(1 << 20) as u64, rng.below(1 << 20) as u64);
            let (id, mut env) =
                task_envelope("celery", "proj.tasks.add", &json!([a, b]), &json!({}));
            if rng.next().is_multiple_of(2) {
                // Good compressed bodies pass the same decoder as the bad ones.
                let body = base64::engine::general_purpose::STANDARD
                    .decode(env["body"].as_str().expect("body"))
                    .expect("base64");
                env["body"] = json!(b64(zlib(&body)));
                env["headers"]["compression"] = json!("application/x-gzip");
            }
            queue.push(env.to_string().into_bytes());
            good.push((id, a + b));
            continue;
        }
        let b = if sent_bad.len() % (BAD_MESSAGES / OVERSIZED) == 1 {
            oversized(&mut rng, &bomb)
        } else {
            KINDS[rng.below(KINDS.len())](&mut rng)
        };
        queue.push(b.raw.clone());
        sent_bad.push(b);
    }
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for b in &sent_bad {
        *kinds.entry(b.kind).or_default() += 1;
    }
    eprintln!(
        "seed {seed}: {} malformed messages {kinds:?}, {} good tasks",
        sent_bad.len(),
        good.len()
    );

    let began = Instant::now();
    let mut con = redis.conn(BROKER_DB);
    for raw in &queue {
        let r = con
            .cmd_bytes(&[b"LPUSH", b"celery", raw])
            .expect("LPUSH celery");
        assert!(matches!(r, Resp::Int(_)), "LPUSH: {r:?}");
    }

    let all_seen = wait_until(Duration::from_secs(60), || {
        redis.cmd(&["LLEN", "rmulti.deadletter"]).int() as usize >= sent_bad.len()
            && good.iter().all(|(id, _)| redis.result(id).is_some())
    });
    let missing: Vec<&String> = good
        .iter()
        .map(|(id, _)| id)
        .filter(|id| redis.result(id).is_none())
        .collect();
    if !all_seen {
        let kept: Vec<Vec<u8>> = redis
            .cmd(&["LRANGE", "rmulti.deadletter", "0", "-1"])
            .strings()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r).ok())
            .map(|r| recorded_bytes(&r))
            .collect();
        let not_kept: Vec<&str> = sent_bad
            .iter()
            .filter(|b| !kept.contains(&b.raw))
            .map(|b| b.kind)
            .collect();
        panic!(
            "seed {seed}: after 60 s, {} of {} dead letters (not kept: {not_kept:?}), good tasks without a result: {missing:?}\ncelery queue: {}, keys: {:?}\n{}",
            kept.len(),
            sent_bad.len(),
            redis.cmd(&["LLEN", "celery"]).int(),
            redis.cmd(&["KEYS", "rmulti.*"]).strings(),
            node_logs(&dir)
        );
    }
    assert_broker_clean(&redis);
    eprintln!(
        "seed {seed}: {} messages handled in {:.2}s",
        queue.len(),
        began.elapsed().as_secs_f64()
    );

    // The node serves: every good task succeeded with its sum.
    for (id, sum) in &good {
        let meta = redis.result(id).expect("result");
        assert_eq!(meta["status"], "SUCCESS", "seed {seed}: {meta}");
        assert_eq!(meta["result"], json!(sum), "seed {seed}: {meta}");
    }

    // Every malformed message is in the dead-letter list once, as sent.
    let records: Vec<Value> = redis
        .cmd(&["LRANGE", "rmulti.deadletter", "0", "-1"])
        .strings()
        .iter()
        .map(|r| serde_json::from_str(r).expect("a dead-letter record is JSON"))
        .collect();
    assert_eq!(records.len(), sent_bad.len(), "seed {seed}");
    for r in &records {
        assert!(
            !r["reason"].as_str().unwrap_or_default().is_empty(),
            "seed {seed}: {r}"
        );
        assert_eq!(r["node"], TEST_NODE, "seed {seed}: {r}");
        assert_eq!(r["queue"], "celery", "seed {seed}: {r}");
    }
    let mut kept: Vec<Vec<u8>> = records.iter().map(recorded_bytes).collect();
    let mut expected: Vec<Vec<u8>> = sent_bad.iter().map(|b| b.raw.clone()).collect();
    kept.sort();
    expected.sort();
    if kept != expected {
        let lost: Vec<&Bad> = sent_bad
            .iter()
            .filter(|b| !kept.contains(&b.raw))
            .take(5)
            .collect();
        panic!(
            "seed {seed}: the dead-letter list is not the malformed messages sent; e.g. not kept: {:?}",
            lost.iter()
                .map(|b| (b.kind, String::from_utf8_lossy(&b.raw)))
                .collect::<Vec<_>>()
        );
    }

    // A client waiting on a malformed message's id gets an exception.
    for b in &sent_bad {
        if let Some((id, exc)) = &b.failure {
            let meta = redis
                .result(id)
                .unwrap_or_else(|| panic!("seed {seed}: no result for {} {id}", b.kind));
            assert_eq!(meta["status"], "FAILURE", "seed {seed}: {} {meta}", b.kind);
            assert_eq!(exc_type(&meta), *exc, "seed {seed}: {} {meta}", b.kind);
        }
    }

    // No process died or was replaced.
    assert!(alive(main_pid), "seed {seed}: main process gone");
    let mut after = descendants(main_pid);
    after.sort();
    assert_eq!(after, children, "seed {seed}: the pool changed");
    let main_log = dir.read("w1.log");
    assert!(!main_log.contains("exited with"), "seed {seed}: {main_log}");

    // Bad input is never taken for a broker failure (a reconnect loop).
    let logs = node_logs(&dir);
    assert!(
        !logs.contains("Cannot connect to broker") && !logs.contains("Cannot handle message"),
        "seed {seed}: {logs}"
    );

    // And it still serves now.
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[20, 22]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .expect("node keeps serving");
    assert_eq!(meta["result"], 42);
}

/// kombu's `unacked` may hold anything a consumer reserved; an entry that is
/// not UTF-8 must not stop the visibility sweep from restoring the others.
#[test]
fn an_unacked_entry_that_is_not_utf8_does_not_stop_the_sweep() {
    let (redis, dir) = redis_with_app("[broker_transport_options]\nvisibility_timeout = 1");
    // Two entries of a consumer that died long ago; the sweep meets the
    // broken one first (lower score).
    let broken: &[u8] = b"[{\"body\": \"\xff\xfe\"}, \"\", \"celery\"]";
    let (id, env) = task_envelope("celery", "proj.tasks.add", &json!([2, 3]), &json!({}));
    let tag = env["properties"]["delivery_tag"]
        .as_str()
        .expect("tag")
        .to_string();
    let entry = format!("[{env}, \"\", \"celery\"]");
    let mut con = redis.conn(BROKER_DB);
    for args in [
        [&b"HSET"[..], b"unacked", b"broken-tag", broken],
        [b"HSET", b"unacked", tag.as_bytes(), entry.as_bytes()],
        [b"ZADD", b"unacked_index", b"1", b"broken-tag"],
        [b"ZADD", b"unacked_index", b"2", tag.as_bytes()],
    ] {
        let r = con.cmd_bytes(&args).expect("redis");
        assert!(matches!(r, Resp::Int(1)), "{r:?}");
    }

    // The node sweeps once at start.
    let (_guard, _pid) = start_detached(&dir, &["-c", "1"]);
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the good entry was not restored\n{}", node_logs(&dir)));
    assert_eq!(meta["result"], 5);
    let records = redis
        .cmd(&["LRANGE", "rmulti.deadletter", "0", "-1"])
        .strings();
    assert_eq!(records.len(), 1, "{records:?}");
    let record: Value = serde_json::from_str(&records[0]).expect("JSON record");
    assert!(
        record["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be restored"),
        "{record}"
    );
    assert_eq!(recorded_bytes(&record), broken, "{record}");
    assert_broker_clean(&redis);
}
