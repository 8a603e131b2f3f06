//! Property tests of the message decoder (`Envelope::parse`,
//! `TaskMessage::decode`/`decode_bytes`): whatever a queue holds — random
//! bytes, mangled messages, JSON shaped like an envelope with every field of
//! the wrong type — decoding returns a task or an error with a reason, and
//! never panics; and what our encoder writes (plain or zlib-compressed)
//! decodes to the task it was given.
//!
//! proptest prints the minimal failing input and keeps its seed in
//! `proptest-regressions/protocol/fuzz.txt` (committed: replayed first); pin
//! it as a plain unit test too, beside the code it broke (as
//! `task::tests::floats_round_trip_exactly`).
//! `PROPTEST_CASES=N` runs more cases than the few hundred below (30 000 per
//! property take about 15 s in release).

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use std::io::Write as _;

use super::envelope::Envelope;
use super::pyjson;
use super::pyrepr::{args_repr, kwargs_repr};
use super::task::{NewTask, TaskMessage};

/// Cases per property: each is cheap, so all of them run in about a second
/// in release.
const CASES: u32 = 400;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("write to a Vec");
    enc.finish().expect("finish into a Vec")
}

// ---------------------------------------------------------------------------
// Strategies

/// Any JSON scalar serde_json can hold (no NaN or infinity: JSON has none).
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Strings that look like dates, valid or not (month 13, hour 99, odd offsets).
fn date_like() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{0,12})?)?)?(Z|[+-][0-9]{1,2}:?[0-9]{0,2})?",
        Just("tomorrow".to_string()),
        Just(String::new()),
        Just("9999-12-31T23:59:59.999999-23:59".to_string()),
        Just("0000-01-01T00:00:00+23:59".to_string()),
    ]
    .prop_map(Value::String)
}

/// A value for one header: of the right type often, of any type otherwise.
fn header_value(key: &'static str) -> BoxedStrategy<Value> {
    let right: BoxedStrategy<Value> = match key {
        "eta" | "expires" => date_like().boxed(),
        "timelimit" => prop::collection::vec(json_leaf(), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        "compression" => prop::sample::select(vec![
            "application/x-gzip",
            "zlib",
            "gzip",
            "application/x-bz2",
            "",
        ])
        .prop_map(Value::from)
        .boxed(),
        "retries" | "group_index" => any::<i64>().prop_map(Value::from).boxed(),
        "ignore_result" | "redelivered" => any::<bool>().prop_map(Value::Bool).boxed(),
        _ => any::<String>().prop_map(Value::String).boxed(),
    };
    prop_oneof![3 => right, 1 => json_value()].boxed()
}

const HEADER_KEYS: [&str; 17] = [
    "task",
    "id",
    "eta",
    "expires",
    "timelimit",
    "retries",
    "group",
    "group_index",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "ignore_result",
    "shadow",
    "origin",
    "compression",
    "redelivered",
];

fn headers() -> impl Strategy<Value = Value> {
    let fields: Vec<_> = HEADER_KEYS
        .iter()
        .map(|k| prop::option::weighted(0.6, header_value(k)).prop_map(move |v| (*k, v)))
        .collect();
    let object = fields.prop_map(|kv| {
        Value::Object(
            kv.into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        )
    });
    prop_oneof![6 => object, 1 => json_value()]
}

fn properties() -> impl Strategy<Value = Value> {
    let delivery_info = prop_oneof![
        (any::<String>(), any::<String>(), any::<bool>()).prop_map(|(e, r, re)| {
            serde_json::json!({"exchange": e, "routing_key": r, "redelivered": re})
        }),
        json_value(),
    ];
    let object = (
        prop::option::of(prop_oneof![Just(Value::from("base64")), json_value()]),
        prop::option::of(prop_oneof![
            any::<String>().prop_map(Value::String),
            json_value()
        ]),
        prop::option::of(prop_oneof![any::<i64>().prop_map(Value::from), json_leaf()]),
        prop::option::of(delivery_info),
    )
        .prop_map(|(enc, tag, prio, info)| {
            let mut m = Map::new();
            for (k, v) in [
                ("body_encoding", enc),
                ("delivery_tag", tag),
                ("priority", prio),
                ("delivery_info", info),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        });
    prop_oneof![6 => object, 1 => json_value()]
}

/// The payload a body may carry: shaped like protocol 2's `[args, kwargs,
/// embed]` or protocol 1's object, with fields of any type.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        (json_value(), json_value(), json_value())
            .prop_map(|(a, k, e)| Value::Array(vec![a, k, e])),
        (
            prop::collection::vec(json_value(), 0..3),
            prop::collection::vec((any::<String>(), json_value()), 0..3)
        )
            .prop_map(|(a, k)| {
                serde_json::json!([a, Value::Object(k.into_iter().collect()), {}])
            }),
        (any::<String>(), any::<String>(), json_value(), json_value()).prop_map(
            |(task, id, args, kwargs)| serde_json::json!({"task": task, "id": id, "args": args, "kwargs": kwargs})
        ),
        json_value(),
    ]
}

/// The `body` field: base64 of a payload (maybe compressed), base64 of
/// random bytes, text that is not base64, or any JSON value.
fn body() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => payload().prop_map(|p| Value::String(b64(pyjson::to_string(&p)))),
        2 => payload().prop_map(|p| Value::String(b64(zlib(pyjson::to_string(&p).as_bytes())))),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::String(b64(&b))),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::String(b64(zlib(&b)))),
        1 => any::<String>().prop_map(Value::String),
        1 => payload().prop_map(|p| Value::String(pyjson::to_string(&p))),
        1 => json_value(),
    ]
}

fn content_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "application/json",
            "application/json; charset=utf-8",
            "application/x-python-serialize",
            "application/x-yaml",
            "application/x-msgpack",
            "text/plain",
        ])
        .prop_map(Value::from),
        1 => json_value(),
    ]
}

/// A JSON document shaped like a kombu envelope, any part of it wrong.
fn envelope_like() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.9, body()),
        prop::option::weighted(0.8, content_type()),
        prop::option::weighted(0.5, json_value()),
        prop::option::weighted(0.9, headers()),
        prop::option::weighted(0.9, properties()),
    )
        .prop_map(|(body, ct, ce, headers, props)| {
            let mut m = Map::new();
            for (k, v) in [
                ("body", body),
                ("content-type", ct),
                ("content-encoding", ce),
                ("headers", headers),
                ("properties", props),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

/// Microsecond-precise instants from 1970 to 9999 (what `isoformat` writes).
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..253_402_300_799, 0u32..1_000_000).prop_map(|(secs, micros)| {
        Utc.timestamp_opt(secs, micros * 1000)
            .single()
            .unwrap_or_default()
    })
}

fn limit() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(prop_oneof![
        (0u32..100_000).prop_map(f64::from),
        (0.0f64..1e9),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ])
}

fn new_task() -> impl Strategy<Value = NewTask> {
    (
        (
            any::<String>(),
            prop::collection::vec(json_value(), 0..4),
            prop::collection::vec((any::<String>(), json_value()), 0..4),
            "[a-z.]{1,12}",
            any::<u8>(),
        ),
        (
            prop::option::of(instant()),
            prop::option::of(instant()),
            limit(),
            limit(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((task, args, kwargs, queue, priority), (eta, expires, hard, soft, ignore, v1))| {
                NewTask {
                    task,
                    id: String::new(),
                    args,
                    kwargs: kwargs.into_iter().collect(),
                    queue,
                    priority,
                    eta,
                    expires,
                    time_limit: hard,
                    soft_time_limit: soft,
                    ignore_result: ignore,
                    protocol1: v1,
                }
            },
        )
}

/// One byte-level mutation of a message: flip, insert or delete a byte.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip(i, b) => {
            let i = i % bytes.len();
            bytes[i] ^= b.max(1);
        }
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Delete(i) => {
            bytes.remove(i % bytes.len());
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

// ---------------------------------------------------------------------------
// Properties

/// Decodes and checks what any outcome must satisfy: an error says why; a
/// task has a clamped priority and a known protocol.
fn decode_checked(raw: &[u8]) -> Result<Option<TaskMessage>, TestCaseError> {
    match TaskMessage::decode_bytes(raw) {
        Ok(m) => {
            prop_assert!(m.delivery_info.priority <= 9);
            prop_assert!(m.protocol == 1 || m.protocol == 2);
            Ok(Some(m))
        }
        Err(e) => {
            prop_assert!(!e.reason.is_empty(), "an error without a reason");
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_checked(&raw)?;
        if let Ok(text) = std::str::from_utf8(&raw) {
            let _ = Envelope::parse(text);
        }
    }

    #[test]
    fn envelope_shaped_json_never_panics(env in envelope_like()) {
        let raw = pyjson::to_string(&env);
        if let Some(m) = decode_checked(raw.as_bytes())? {
            // A protocol 2 task is named by its headers, and carries their id.
            let headers = &env["headers"];
            if m.protocol == 2 {
                prop_assert_eq!(headers["task"].as_str(), Some(m.task.as_str()));
                prop_assert_eq!(headers["id"].as_str(), Some(m.id.as_str()));
            }
        }
    }

    #[test]
    fn mangled_messages_never_panic(
        t in new_task(),
        compress in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let raw = if compress { compressed(&t.encode()) } else { t.encode() };
        let mut bytes = raw.into_bytes();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        decode_checked(&bytes)?;
    }

    #[test]
    fn encoded_tasks_decode_to_the_same_task(t in new_task(), compress in any::<bool>()) {
        let raw = if compress { compressed(&t.encode()) } else { t.encode() };
        prop_assert!(raw.is_ascii(), "the encoder writes ensure_ascii JSON");
        let m = TaskMessage::decode(&raw).map_err(|e| TestCaseError::fail(e.reason))?;
        prop_assert_eq!(m.protocol, if t.protocol1 { 1 } else { 2 });
        prop_assert_eq!(&m.task, &t.task);
        prop_assert_eq!(&m.args, &t.args);
        prop_assert_eq!(&m.kwargs, &t.kwargs);
        prop_assert_eq!((m.eta, m.expires), (t.eta, t.expires));
        prop_assert_eq!(m.time_limit, t.time_limit);
        prop_assert_eq!(m.soft_time_limit, t.soft_time_limit);
        prop_assert_eq!(m.ignore_result, t.ignore_result && !t.protocol1);
        prop_assert_eq!(m.delivery_info.priority, t.priority.min(9));
        prop_assert_eq!(&m.delivery_info.routing_key, &t.queue);
        prop_assert_eq!(m.argsrepr, args_repr(&t.args));
        prop_assert_eq!(m.kwargsrepr, kwargs_repr(&t.kwargs));
        prop_assert!(m.delivery_tag.is_some());
    }
}

/// `raw` with its body zlib-compressed, as a client with
/// `task_compression = "zlib"` sends it.
fn compressed(raw: &str) -> String {
    let mut env: Value = serde_json::from_str(raw).expect("our encoder writes JSON");
    let body = base64::engine::general_purpose::STANDARD
        .decode(env["body"].as_str().unwrap_or_default())
        .unwrap_or_default();
    env["body"] = Value::String(b64(zlib(&body)));
    if let Some(h) = env["headers"].as_object_mut() {
        h.insert("compression".into(), Value::from("application/x-gzip"));
    } else {
        // Protocol 1 has empty headers; kombu puts compression there too.
        env["headers"] = serde_json::json!({"compression": "application/x-gzip"});
    }
    pyjson::to_string(&env)
}
