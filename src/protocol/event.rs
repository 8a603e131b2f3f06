//! Celery's monitoring events (wire.md §7, fixtures `event-*`): worker
//! events (`worker-online`, `-heartbeat`, `-offline`) and task events, each
//! a JSON dict in Python's field order, carried in a kombu envelope with
//! `headers = {"hostname": <node>}` on the `celeryev` fanout exchange.
//!
//! On Redis an event is `PUBLISH /{db}.celeryev/<routing key>`, the routing
//! key being the type with `-` → `.` (`worker.heartbeat`); receivers
//! (`celery events`, Flower) `PSUBSCRIBE /{db}.celeryev/*`. A Python worker
//! batches task events as one `task.multi` message whose body is a list;
//! receivers take either form, so `Publish::batch` and `Publish::single`
//! are both offered.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::envelope::{encode_kombu, fanout_channel};
use super::pyjson;

/// The events exchange.
pub const EXCHANGE: &str = "celeryev";
/// Routing key of a batch of task events.
pub const BATCH_ROUTING_KEY: &str = "task.multi";
/// Celery's heartbeat interval (`freq`), seconds.
pub const HEARTBEAT_FREQ: f64 = 2.0;

/// Who sends: the fields every event starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    /// The node name, `w1@host`.
    pub hostname: String,
    /// Hours *west* of UTC, Python's `utcoffset()` (see `utcoffset_hours`).
    pub utcoffset: f64,
    pub pid: u32,
}

impl Sender {
    /// The start every event of this sender shares, up to the clock's
    /// value: `{"hostname": ..., "utcoffset": ..., "pid": ..., "clock": `.
    pub fn head(&self) -> String {
        let mut out = String::from("{\"hostname\": ");
        pyjson::write_json_str(&mut out, &self.hostname);
        out.push_str(", \"utcoffset\": ");
        pyjson::write_json(&mut out, &Value::from(self.utcoffset));
        let _ = write!(out, ", \"pid\": {}, \"clock\": ", self.pid);
        out
    }
}

/// `sw_ident`, `sw_ver`, `sw_sys` of worker events.
#[derive(Debug, Clone, PartialEq)]
pub struct Software {
    pub ident: String,
    pub version: String,
    pub system: String,
}

impl Software {
    /// What an rmulti node reports.
    pub fn rmulti() -> Software {
        Software {
            ident: "rmulti".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            system: "Linux".into(),
        }
    }
}

/// The load and counters of a worker event.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub freq: f64,
    /// Tasks running now.
    pub active: u64,
    /// Tasks finished since start.
    pub processed: u64,
    /// 1, 5, 15 minute load averages (rounded to 2 decimals here).
    pub loadavg: [f64; 3],
    pub software: Software,
}

/// Which worker event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    Online,
    Heartbeat,
    Offline,
}

/// A task event's own fields.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Received {
        uuid: String,
        /// The shadow name if set, else the task name.
        name: String,
        /// `argsrepr` / `kwargsrepr` strings.
        args: String,
        kwargs: String,
        root_id: Option<String>,
        parent_id: Option<String>,
        retries: u64,
        /// ISO 8601 strings as in the message.
        eta: Option<String>,
        expires: Option<String>,
    },
    Started {
        uuid: String,
    },
    Succeeded {
        uuid: String,
        /// `repr` of the result.
        result: String,
        /// Seconds.
        runtime: f64,
    },
    Failed {
        uuid: String,
        /// `repr` of the exception: `ValueError('boom')`.
        exception: String,
        /// None for a task that never ran (NotRegistered): the field is left out.
        traceback: Option<String>,
    },
    Retried {
        uuid: String,
        exception: String,
        traceback: String,
    },
    Revoked {
        uuid: String,
        terminated: bool,
        signum: Option<i32>,
        expired: bool,
    },
    Rejected {
        uuid: String,
        requeue: bool,
    },
}

/// One field value of a task event.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Str(&'a str),
    /// `None` is JSON null.
    OptStr(Option<&'a str>),
    U64(u64),
    F64(f64),
    Bool(bool),
    OptI32(Option<i32>),
}

impl Field<'_> {
    fn to_value(self) -> Value {
        match self {
            Field::Str(s) => s.into(),
            Field::OptStr(s) => s.map_or(Value::Null, Value::from),
            Field::U64(n) => n.into(),
            Field::F64(f) => Value::from(f),
            Field::Bool(b) => b.into(),
            Field::OptI32(n) => n.map_or(Value::Null, Value::from),
        }
    }

    fn write_json(self, out: &mut String) {
        match self {
            Field::Str(s) | Field::OptStr(Some(s)) => pyjson::write_json_str(out, s),
            Field::OptStr(None) | Field::OptI32(None) => out.push_str("null"),
            Field::U64(n) => {
                let _ = write!(out, "{n}");
            }
            Field::F64(f) if f.is_finite() => pyjson::write_float(out, f),
            // As serde_json (and so `Event::task`) has it.
            Field::F64(_) => out.push_str("null"),
            Field::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Field::OptI32(Some(n)) => {
                let _ = write!(out, "{n}");
            }
        }
    }
}

impl TaskEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskEvent::Received { .. } => "task-received",
            TaskEvent::Started { .. } => "task-started",
            TaskEvent::Succeeded { .. } => "task-succeeded",
            TaskEvent::Failed { .. } => "task-failed",
            TaskEvent::Retried { .. } => "task-retried",
            TaskEvent::Revoked { .. } => "task-revoked",
            TaskEvent::Rejected { .. } => "task-rejected",
        }
    }

    /// The event's own fields in Celery's order: the one list both the
    /// map (`Event::task`) and the direct writer (`write_json`) follow.
    pub fn visit_fields(&self, visit: &mut dyn FnMut(&'static str, Field<'_>)) {
        match self {
            TaskEvent::Received {
                uuid,
                name,
                args,
                kwargs,
                root_id,
                parent_id,
                retries,
                eta,
                expires,
            } => {
                visit("uuid", Field::Str(uuid));
                visit("name", Field::Str(name));
                visit("args", Field::Str(args));
                visit("kwargs", Field::Str(kwargs));
                visit("root_id", Field::OptStr(root_id.as_deref()));
                visit("parent_id", Field::OptStr(parent_id.as_deref()));
                visit("retries", Field::U64(*retries));
                visit("eta", Field::OptStr(eta.as_deref()));
                visit("expires", Field::OptStr(expires.as_deref()));
            }
            TaskEvent::Started { uuid } => visit("uuid", Field::Str(uuid)),
            TaskEvent::Succeeded {
                uuid,
                result,
                runtime,
            } => {
                visit("uuid", Field::Str(uuid));
                visit("result", Field::Str(result));
                visit("runtime", Field::F64(*runtime));
            }
            TaskEvent::Failed {
                uuid,
                exception,
                traceback,
            } => {
                visit("uuid", Field::Str(uuid));
                visit("exception", Field::Str(exception));
                if let Some(tb) = traceback {
                    visit("traceback", Field::Str(tb));
                }
            }
            TaskEvent::Retried {
                uuid,
                exception,
                traceback,
            } => {
                visit("uuid", Field::Str(uuid));
                visit("exception", Field::Str(exception));
                visit("traceback", Field::Str(traceback));
            }
            TaskEvent::Revoked {
                uuid,
                terminated,
                signum,
                expired,
            } => {
                visit("uuid", Field::Str(uuid));
                visit("terminated", Field::Bool(*terminated));
                visit("signum", Field::OptI32(*signum));
                visit("expired", Field::Bool(*expired));
            }
            TaskEvent::Rejected { uuid, requeue } => {
                visit("uuid", Field::Str(uuid));
                visit("requeue", Field::Bool(*requeue));
            }
        }
    }

    /// Appends the event dict's JSON, as `Event::task(self).write_json`
    /// would, without building the map: `head` is `Sender::head`.
    pub fn write_json(&self, out: &mut String, head: &str, clock: u64, timestamp: f64) {
        out.push_str(head);
        let _ = write!(out, "{clock}");
        self.visit_fields(&mut |name, field| {
            out.push_str(", \"");
            // Field names are plain ASCII identifiers: no escaping.
            out.push_str(name);
            out.push_str("\": ");
            field.write_json(out);
        });
        out.push_str(", \"timestamp\": ");
        pyjson::write_float(out, timestamp);
        out.push_str(", \"type\": \"");
        out.push_str(self.kind());
        out.push_str("\"}");
    }
}

/// One event's type and own fields, before the sender's fields, clock and
/// time are put around them.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub fields: Map<String, Value>,
}

impl Event {
    /// A `worker-online` / `-heartbeat` / `-offline` event.
    pub fn worker(which: WorkerEvent, status: &WorkerStatus) -> Event {
        let kind = match which {
            WorkerEvent::Online => "worker-online",
            WorkerEvent::Heartbeat => "worker-heartbeat",
            WorkerEvent::Offline => "worker-offline",
        };
        let round2 = |x: f64| Value::from((x * 100.0).round() / 100.0);
        let mut fields = Map::new();
        fields.insert("freq".into(), Value::from(status.freq));
        fields.insert("active".into(), status.active.into());
        fields.insert("processed".into(), status.processed.into());
        fields.insert(
            "loadavg".into(),
            Value::Array(status.loadavg.iter().map(|x| round2(*x)).collect()),
        );
        software_fields(&mut fields, &status.software);
        Event { kind, fields }
    }

    /// The `worker-heartbeat` a Python worker sends when asked by a
    /// `heartbeat` broadcast: `freq: 5` and only the software fields.
    pub fn heartbeat_reply(software: &Software) -> Event {
        let mut fields = Map::new();
        fields.insert("freq".into(), 5.into());
        software_fields(&mut fields, software);
        Event {
            kind: "worker-heartbeat",
            fields,
        }
    }

    /// A task event.
    pub fn task(event: TaskEvent) -> Event {
        let mut fields = Map::new();
        event.visit_fields(&mut |name, field| {
            fields.insert(name.into(), field.to_value());
        });
        Event {
            kind: event.kind(),
            fields,
        }
    }

    /// The routing key of this event sent alone: `task-succeeded` → `task.succeeded`.
    pub fn routing_key(&self) -> String {
        self.kind.replace('-', ".")
    }

    /// The event dict as Celery's `EventDispatcher.send` builds it:
    /// `hostname, utcoffset, pid, clock`, the event's fields, `timestamp, type`.
    pub fn to_value(&self, sender: &Sender, clock: u64, timestamp: f64) -> Value {
        let mut m = Map::new();
        m.insert("hostname".into(), sender.hostname.clone().into());
        m.insert("utcoffset".into(), Value::from(sender.utcoffset));
        m.insert("pid".into(), sender.pid.into());
        m.insert("clock".into(), clock.into());
        for (k, v) in &self.fields {
            m.insert(k.clone(), v.clone());
        }
        m.insert("timestamp".into(), Value::from(timestamp));
        m.insert("type".into(), self.kind.into());
        Value::Object(m)
    }

    /// Appends `to_value`'s JSON (Python's layout) to `out`. Worker events
    /// go through here, a few a second; task events, the hot ones, have
    /// their own writer (`TaskEvent::write_json`).
    pub fn write_json(&self, out: &mut String, sender: &Sender, clock: u64, timestamp: f64) {
        pyjson::write_json(out, &self.to_value(sender, clock, timestamp));
    }
}

fn software_fields(fields: &mut Map<String, Value>, software: &Software) {
    fields.insert("sw_ident".into(), software.ident.clone().into());
    fields.insert("sw_ver".into(), software.version.clone().into());
    fields.insert("sw_sys".into(), software.system.clone().into());
}

/// An event stamped with its Lamport clock and POSIX time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub event: Event,
    pub clock: u64,
    pub timestamp: f64,
}

/// One `PUBLISH channel payload`.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub channel: String,
    pub payload: String,
}

impl Publish {
    /// One event on its own routing key (how a Python worker sends worker events).
    pub fn single(sender: &Sender, stamped: &Stamped, db: i64, delivery_tag: &str) -> Publish {
        let routing_key = stamped.event.routing_key();
        let mut body = String::new();
        stamped
            .event
            .write_json(&mut body, sender, stamped.clock, stamped.timestamp);
        Publish::envelope(sender, &body, &routing_key, db, delivery_tag)
    }

    /// Task events as one `task.multi` message with a list body (how a
    /// Python worker flushes its buffer; at most 24 events per message there).
    pub fn batch(sender: &Sender, events: &[Stamped], db: i64, delivery_tag: &str) -> Publish {
        let mut list = String::new();
        for (i, s) in events.iter().enumerate() {
            if i > 0 {
                list.push_str(", ");
            }
            s.event.write_json(&mut list, sender, s.clock, s.timestamp);
        }
        Publish::task_multi(sender, &list, db, delivery_tag)
    }

    /// `batch` of events already written as JSON and joined with `, `.
    pub fn task_multi(sender: &Sender, events_json: &str, db: i64, delivery_tag: &str) -> Publish {
        let body = format!("[{events_json}]");
        Publish::envelope(sender, &body, BATCH_ROUTING_KEY, db, delivery_tag)
    }

    /// `body` is the event's (or events') JSON text.
    fn envelope(
        sender: &Sender,
        body: &str,
        routing_key: &str,
        db: i64,
        delivery_tag: &str,
    ) -> Publish {
        Publish {
            channel: fanout_channel("", db, EXCHANGE, routing_key),
            payload: encode_kombu(
                body,
                serde_json::json!({ "hostname": sender.hostname }),
                1,
                EXCHANGE,
                routing_key,
                delivery_tag,
            ),
        }
    }
}

/// Python's `celery.utils.time.utcoffset()` for this host now: hours west
/// of UTC (New York winter 5.0, India -5.5, UTC 0.0), DST aware.
pub fn utcoffset_hours() -> f64 {
    let east = chrono::Local::now().offset().local_minus_utc();
    // Negate the integer, not the float: UTC must be 0.0, never -0.0.
    f64::from(-east) / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_fixture;

    /// Rebuilds `name` from its decoded body and checks the PUBLISH byte for byte.
    fn check(name: &str, build: impl Fn(&Value) -> Vec<Event>) {
        let fixture = test_fixture(name);
        let decoded = &fixture["decoded"];
        // The body of `raw`, not `decoded.body`: the fixtures' decoded copy
        // has its traceback paths rewritten.
        let raw = fixture["raw"].as_str().unwrap();
        let body: Value =
            serde_json::from_slice(&crate::protocol::Envelope::parse(raw).unwrap().body).unwrap();
        let body = &body;
        let first = if body.is_array() { &body[0] } else { body };
        let sender = Sender {
            hostname: first["hostname"].as_str().unwrap().into(),
            utcoffset: first["utcoffset"].as_f64().unwrap(),
            pid: first["pid"].as_u64().unwrap() as u32,
        };
        let tag = decoded["properties"]["delivery_tag"].as_str().unwrap();
        let items: Vec<&Value> = match body {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let stamped: Vec<Stamped> = build(body)
            .into_iter()
            .zip(items)
            .map(|(event, item)| Stamped {
                event,
                clock: item["clock"].as_u64().unwrap(),
                timestamp: item["timestamp"].as_f64().unwrap(),
            })
            .collect();
        let publish = if body.is_array() {
            Publish::batch(&sender, &stamped, 0, tag)
        } else {
            Publish::single(&sender, &stamped[0], 0, tag)
        };
        let command = fixture["redis_command"].as_array().unwrap();
        assert_eq!(command[0], "PUBLISH");
        assert_eq!(publish.channel, command[1].as_str().unwrap(), "{name}");
        assert_eq!(publish.payload, fixture["raw"].as_str().unwrap(), "{name}");
    }

    fn s(v: &Value, k: &str) -> String {
        v[k].as_str().unwrap().to_string()
    }

    fn python_software() -> Software {
        Software {
            ident: "py-celery".into(),
            version: "5.7.0".into(),
            system: "Linux".into(),
        }
    }

    fn worker(which: WorkerEvent) -> impl Fn(&Value) -> Vec<Event> {
        move |b: &Value| {
            let la: Vec<f64> = b["loadavg"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            vec![Event::worker(
                which,
                &WorkerStatus {
                    freq: b["freq"].as_f64().unwrap(),
                    active: b["active"].as_u64().unwrap(),
                    processed: b["processed"].as_u64().unwrap(),
                    loadavg: [la[0], la[1], la[2]],
                    software: python_software(),
                },
            )]
        }
    }

    #[test]
    fn worker_events_match_the_fixtures_byte_for_byte() {
        check("event-worker-online.json", worker(WorkerEvent::Online));
        check(
            "event-worker-heartbeat.json",
            worker(WorkerEvent::Heartbeat),
        );
        check("event-worker-offline.json", worker(WorkerEvent::Offline));
        check("event-worker-heartbeat-reply-to-broadcast.json", |_| {
            vec![Event::heartbeat_reply(&python_software())]
        });
    }

    #[test]
    fn task_events_match_the_fixtures_byte_for_byte() {
        check("event-task-received.json", |b| {
            let e = &b[0];
            vec![Event::task(TaskEvent::Received {
                uuid: s(e, "uuid"),
                name: s(e, "name"),
                args: s(e, "args"),
                kwargs: s(e, "kwargs"),
                root_id: e["root_id"].as_str().map(String::from),
                parent_id: e["parent_id"].as_str().map(String::from),
                retries: e["retries"].as_u64().unwrap(),
                eta: None,
                expires: None,
            })]
        });
        check("event-task-started.json", |b| {
            vec![Event::task(TaskEvent::Started {
                uuid: s(&b[0], "uuid"),
            })]
        });
        check("event-task-multi-batch.json", |b| {
            b.as_array()
                .unwrap()
                .iter()
                .map(|e| Event::task(TaskEvent::Started { uuid: s(e, "uuid") }))
                .collect()
        });
        check("event-task-succeeded.json", |b| {
            vec![Event::task(TaskEvent::Succeeded {
                uuid: s(&b[0], "uuid"),
                result: s(&b[0], "result"),
                runtime: b[0]["runtime"].as_f64().unwrap(),
            })]
        });
        check("event-task-failed.json", |b| {
            vec![Event::task(TaskEvent::Failed {
                uuid: s(&b[0], "uuid"),
                exception: s(&b[0], "exception"),
                traceback: Some(s(&b[0], "traceback")),
            })]
        });
        check("event-task-failed-notregistered.json", |b| {
            vec![Event::task(TaskEvent::Failed {
                uuid: s(&b[0], "uuid"),
                exception: s(&b[0], "exception"),
                traceback: None,
            })]
        });
        check("event-task-retried.json", |b| {
            vec![Event::task(TaskEvent::Retried {
                uuid: s(&b[0], "uuid"),
                exception: s(&b[0], "exception"),
                traceback: s(&b[0], "traceback"),
            })]
        });
        for name in [
            "event-task-revoked-terminated.json",
            "event-task-revoked-expired.json",
        ] {
            check(name, |b| {
                vec![Event::task(TaskEvent::Revoked {
                    uuid: s(&b[0], "uuid"),
                    terminated: b[0]["terminated"].as_bool().unwrap(),
                    signum: b[0]["signum"].as_i64().map(|n| n as i32),
                    expired: b[0]["expired"].as_bool().unwrap(),
                })]
            });
        }
    }

    #[test]
    fn a_task_event_sent_alone_goes_on_its_own_routing_key() {
        let sender = Sender {
            hostname: "w1@h".into(),
            utcoffset: -5.5,
            pid: 7,
        };
        let stamped = Stamped {
            event: Event::task(TaskEvent::Rejected {
                uuid: "u".into(),
                requeue: false,
            }),
            clock: 3,
            timestamp: 1.5,
        };
        let p = Publish::single(&sender, &stamped, 2, "tag");
        assert_eq!(p.channel, "/2.celeryev/task.rejected");
        let env = crate::protocol::Envelope::parse(&p.payload).unwrap();
        assert_eq!(
            String::from_utf8(env.body).unwrap(),
            r#"{"hostname": "w1@h", "utcoffset": -5.5, "pid": 7, "clock": 3, "uuid": "u", "requeue": false, "timestamp": 1.5, "type": "task-rejected"}"#
        );
        assert_eq!(
            env.properties["delivery_info"]["routing_key"],
            "task.rejected"
        );
    }

    #[test]
    fn utcoffset_is_never_negative_zero() {
        let offset = utcoffset_hours();
        assert!(offset.is_finite());
        assert!(!(offset == 0.0 && offset.is_sign_negative()));
    }
}
