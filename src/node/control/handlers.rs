//! Remote-control commands as pure functions: a request and a snapshot of
//! the node in, Celery's reply value and what is to be done out
//! (wire.md §8.3; reply shapes from the `pidbox-reply-*` fixtures).
//! Nothing here touches Redis or processes.

use nix::sys::signal::Signal;
use serde_json::{json, Map, Value};

use super::{NodeAction, NodeView};
use crate::protocol::pidbox::{error_reply, Request};
use crate::protocol::pyrepr::{python_repr, python_str_repr};

/// What a handler wants done besides its reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Node(NodeAction),
    /// Add `ids` to the revoked set; store REVOKED for those not `running` here.
    /// With `terminate`, those not running yet are signalled if they start
    /// here after all (a child that reserved one before the revoke).
    Revoke {
        ids: Vec<String>,
        running: Vec<String>,
        terminate: Option<Signal>,
    },
    /// Add stamp values to the revoked stamps, header by header; with
    /// `terminate`, as `Revoke`'s for tasks that start later.
    RevokeStamps {
        headers: Vec<(String, Vec<Value>)>,
        terminate: Option<Signal>,
    },
    TaskEvents(bool),
    /// Send a `worker-heartbeat` event (the answer to a `heartbeat` broadcast).
    HeartbeatReply,
    /// A line for the node's log (WARNING).
    Log(String),
}

/// A handler's result: the reply value (`None`: no reply, as `shutdown`) and actions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub reply: Option<Value>,
    pub actions: Vec<Action>,
}

fn reply(value: Value) -> Outcome {
    Outcome {
        reply: Some(value),
        actions: Vec::new(),
    }
}

fn ok(text: impl Into<String>) -> Value {
    json!({ "ok": text.into() })
}

fn nok(text: impl Into<String>) -> Value {
    json!({ "error": text.into() })
}

/// Whether `method` acts on the tasks running now (terminating revokes),
/// so it must see the children's latest reports.
/// Whether `method`'s reply lists the tasks a child holds and has not
/// started (`ChildView::reserved`).
pub fn shows_reserved(method: &str) -> bool {
    matches!(method, "reserved" | "dump_reserved" | "query_task")
}

pub fn acts_on_running(method: &str) -> bool {
    matches!(method, "revoke" | "terminate" | "revoke_by_stamped_headers")
}

/// Celery's handler for `req.method`; an unknown one gets kombu's
/// `{"error": "KeyError('name')"}`. Each command group is one function
/// that answers `None` for a method not its own.
pub fn handle(req: &Request, v: &NodeView) -> Outcome {
    let (method, args) = (req.method.as_str(), &req.arguments);
    inspect_node(method, args, v)
        .or_else(|| inspect_tasks(method, args, v))
        .or_else(|| revoking(method, args, v))
        .or_else(|| pool(method, args))
        .or_else(|| consumers(method, args, v))
        .or_else(|| task_limits(method, args, v))
        .or_else(|| events(method, v))
        .unwrap_or_else(|| {
            reply(error_reply(&format!(
                "KeyError({})",
                python_str_repr(method)
            )))
        })
}

/// The node itself: `ping`, `stats`, `active_queues`, `conf`, `clock`,
/// `report`, and mingle's `hello`.
fn inspect_node(method: &str, args: &Map<String, Value>, v: &NodeView) -> Option<Outcome> {
    Some(match method {
        "ping" => reply(ok("pong")),
        "stats" => reply(stats(v)),
        "active_queues" => reply(Value::Array(
            v.queues.iter().map(|q| queue_info(q)).collect(),
        )),
        "conf" | "dump_conf" => reply(conf(v)),
        "clock" => reply(json!({ "clock": v.clock })),
        "report" => reply(ok(report(v))),
        "hello" => {
            let from = args.get("from_node").and_then(Value::as_str).unwrap_or("");
            if from == v.node {
                reply(Value::Null)
            } else {
                reply(json!({ "revoked": v.revoked, "clock": v.clock }))
            }
        }
        _ => return None,
    })
}

/// The tasks the node holds or knows: `active`, `reserved`, `scheduled`,
/// `registered`, `revoked`, `query_task`.
fn inspect_tasks(method: &str, args: &Map<String, Value>, v: &NodeView) -> Option<Outcome> {
    Some(match method {
        "active" | "dump_active" => reply(Value::Array(
            v.children
                .iter()
                .filter_map(|c| {
                    c.current
                        .as_ref()
                        .map(|(s, t)| request_info(v, Some(c.pid), s, Some(*t)))
                })
                .collect(),
        )),
        // A child reserves only when idle, or a batch of fast tasks; ETA
        // messages are parked in Redis (`scheduled`), not here.
        "reserved" | "dump_reserved" => reply(Value::Array(
            v.children
                .iter()
                .flat_map(|c| c.reserved.iter().map(|s| request_info(v, None, s, None)))
                .collect(),
        )),
        "scheduled" | "dump_schedule" => reply(Value::Array(v.scheduled.clone())),
        "registered" | "dump_tasks" => reply(registered(args, v)),
        "revoked" | "dump_revoked" => reply(json!(v.revoked)),
        "query_task" => reply(query_task(args, v)),
        _ => return None,
    })
}

/// `report`: Celery's bug-report layout (tools read its `software -> celery:`
/// line), saying which Celery protocol the node speaks and that rmulti runs it.
fn report(v: &NodeView) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let backend = crate::broker::url::masked(&v.app.result_backend);
    let results = backend.split("://").next().unwrap_or_default().to_string();
    format!(
        "software -> celery:{CELERY_PROTOCOL} (its protocol; the worker is rmulti:{} in Rust)\n\
         platform -> system:Linux arch:{}\n            kernel version:{} imp:-\n\
         loader   -> rmulti\n\
         settings -> transport:redis results:{results}\n\n\
         broker_url: {}\nresult_backend: {}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        kernel.trim(),
        python_str_repr(&crate::broker::url::masked(&v.app.broker_url)),
        python_str_repr(&backend),
    )
}

/// The Celery version whose messages, results and control replies rmulti
/// reproduces (the fixtures of `tests/fixtures/celery-5.7`).
const CELERY_PROTOCOL: &str = "5.7.0";

/// `registered`: the task names, with ` [name=<name>]` when `name` is among
/// the asked `taskinfoitems`.
fn registered(args: &Map<String, Value>, v: &NodeView) -> Value {
    let mut names: Vec<&str> = v.app.tasks.names().collect();
    names.sort_unstable();
    // Celery appends the asked task attributes that are not None; of
    // those, rmulti knows `name` (exchange, routing_key and rate_limit, the
    // default items, are None unless set per task).
    let with_name = match args.get("taskinfoitems") {
        Some(Value::Array(items)) => items.iter().any(|i| i == "name"),
        Some(Value::String(s)) => s == "name",
        _ => false,
    };
    if with_name {
        json!(names
            .iter()
            .map(|n| format!("{n} [name={n}]"))
            .collect::<Vec<_>>())
    } else {
        json!(names)
    }
}

/// `revoke`, `terminate`, `revoke_by_stamped_headers`.
fn revoking(method: &str, args: &Map<String, Value>, v: &NodeView) -> Option<Outcome> {
    Some(match method {
        "revoke" => revoke(args, v, bool_arg(args, "terminate")),
        "terminate" => revoke(args, v, true),
        "revoke_by_stamped_headers" => {
            revoke_by_stamped_headers(args, v, bool_arg(args, "terminate"))
        }
        _ => return None,
    })
}

/// The node's life and size: `shutdown`, `pool_grow`, `pool_shrink`.
fn pool(method: &str, args: &Map<String, Value>) -> Option<Outcome> {
    Some(match method {
        "shutdown" => {
            let msg = args
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("Got shutdown from remote");
            Outcome {
                reply: None,
                actions: vec![
                    Action::Log(msg.to_string()),
                    Action::Node(NodeAction::Shutdown),
                ],
            }
        }
        "pool_grow" => Outcome {
            reply: Some(ok("pool will grow")),
            actions: vec![Action::Node(NodeAction::Grow(count_arg(args)))],
        },
        "pool_shrink" => Outcome {
            reply: Some(ok("pool will shrink")),
            actions: vec![Action::Node(NodeAction::Shrink(count_arg(args)))],
        },
        _ => return None,
    })
}

/// The queues consumed: `add_consumer`, `cancel_consumer`.
fn consumers(method: &str, args: &Map<String, Value>, v: &NodeView) -> Option<Outcome> {
    let queue = args.get("queue").and_then(Value::as_str);
    Some(match method {
        "add_consumer" => match queue {
            Some(q) if !q.is_empty() => {
                let mut queues = v.queues.clone();
                let mut actions = Vec::new();
                if !queues.iter().any(|x| x == q) {
                    queues.push(q.to_string());
                    actions.push(Action::Node(NodeAction::SetQueues(queues)));
                }
                Outcome {
                    reply: Some(ok(format!("add consumer {q}"))),
                    actions,
                }
            }
            _ => reply(nok("add_consumer needs a queue name")),
        },
        "cancel_consumer" => match queue {
            Some(q) => {
                let queues: Vec<String> = v.queues.iter().filter(|x| *x != q).cloned().collect();
                let mut actions = Vec::new();
                if queues.len() != v.queues.len() && !queues.is_empty() {
                    actions.push(Action::Node(NodeAction::SetQueues(queues)));
                }
                Outcome {
                    reply: Some(ok(format!("no longer consuming from {q}"))),
                    actions,
                }
            }
            None => reply(nok("cancel_consumer needs a queue name")),
        },
        _ => return None,
    })
}

/// Per-task limits: `rate_limit`, `time_limit`.
fn task_limits(method: &str, args: &Map<String, Value>, v: &NodeView) -> Option<Outcome> {
    let task = args.get("task_name").and_then(Value::as_str).unwrap_or("");
    Some(match method {
        "rate_limit" => {
            let rate = args.get("rate_limit").cloned().unwrap_or(Value::Null);
            if !valid_rate(&rate) {
                return Some(reply(nok(format!(
                    "Invalid rate limit string: ValueError({})",
                    python_str_repr(&format!("Invalid rate limit: {}", rate_text(&rate)))
                ))));
            }
            if v.app.tasks.get(task).is_none() {
                return Some(reply(nok("unknown task")));
            }
            if rate_text(&rate).is_empty() || rate == json!(0) {
                reply(ok("rate limit disabled successfully"))
            } else {
                reply(ok("new rate limit set successfully"))
            }
        }
        "time_limit" => {
            if v.app.tasks.get(task).is_none() {
                return Some(Outcome {
                    reply: Some(nok("unknown task")),
                    actions: vec![Action::Log(format!(
                        "Change time limit attempt for unknown task {task}"
                    ))],
                });
            }
            Outcome {
                reply: Some(ok("time limits set successfully")),
                actions: vec![Action::Node(NodeAction::SetTimeLimit {
                    task: task.to_string(),
                    hard: args.get("hard").and_then(Value::as_f64),
                    soft: args.get("soft").and_then(Value::as_f64),
                })],
            }
        }
        _ => return None,
    })
}

/// Events: `enable_events`, `disable_events`, and the `heartbeat` broadcast.
fn events(method: &str, v: &NodeView) -> Option<Outcome> {
    Some(match method {
        "enable_events" => Outcome {
            reply: Some(ok(if v.task_events {
                "task events already enabled"
            } else {
                "task events enabled"
            })),
            actions: vec![Action::TaskEvents(true)],
        },
        "disable_events" => Outcome {
            reply: Some(ok(if v.task_events {
                "task events disabled"
            } else {
                "task events already disabled"
            })),
            actions: vec![Action::TaskEvents(false)],
        },
        "heartbeat" => Outcome {
            reply: None,
            actions: vec![Action::HeartbeatReply],
        },
        _ => return None,
    })
}

/// `revoke` / `terminate`: `task_id` is one id (from `AsyncResult.revoke()`)
/// or a list (CLI, `app.control.revoke`).
fn revoke(args: &Map<String, Value>, v: &NodeView, terminate: bool) -> Outcome {
    let mut ids: Vec<String> = Vec::new();
    match args.get("task_id") {
        Some(Value::String(s)) => ids.push(s.clone()),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(s) = item.as_str() {
                    if !ids.iter().any(|x| x == s) {
                        ids.push(s.to_string());
                    }
                }
            }
        }
        _ => {}
    }
    let running: Vec<(String, i32)> = v
        .children
        .iter()
        .filter_map(|c| c.current.as_ref().map(|(s, _)| (s.id.clone(), c.pid)))
        .filter(|(id, _)| ids.contains(id))
        .collect();
    let signal = signal_arg(args.get("signal"));
    let mut actions = vec![Action::Revoke {
        ids: ids.clone(),
        running: running.iter().map(|(id, _)| id.clone()).collect(),
        terminate: terminate.then_some(signal),
    }];
    if !terminate {
        let set = if ids.is_empty() {
            "set()".to_string()
        } else {
            let items: Vec<String> = ids.iter().map(|i| python_str_repr(i)).collect();
            format!("{{{}}}", items.join(", "))
        };
        return Outcome {
            reply: Some(ok(format!("tasks {set} flagged as revoked"))),
            actions,
        };
    }
    for (id, pid) in &running {
        actions.push(Action::Log(format!("Terminating {id} ({})", signal as i32)));
        actions.push(Action::Node(NodeAction::Terminate { pid: *pid, signal }));
    }
    let text = if running.is_empty() {
        "terminate: tasks unknown".to_string()
    } else {
        let ids: Vec<&str> = running.iter().map(|(id, _)| id.as_str()).collect();
        format!("terminate: {}", ids.join(", "))
    };
    Outcome {
        reply: Some(ok(text)),
        actions,
    }
}

/// `revoke_by_stamped_headers`: `headers` is `{header: value or [values]}`
/// or a list of `"header=value"`. The stamps are revoked for every node
/// (in Redis); with `terminate`, the running tasks stamped with one of them
/// are signalled. Replies as Celery 5.7 words it.
fn revoke_by_stamped_headers(args: &Map<String, Value>, v: &NodeView, terminate: bool) -> Outcome {
    let headers: Map<String, Value> = match args.get("headers") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|h| h.split_once('='))
            .map(|(k, val)| {
                (
                    k.to_string(),
                    Value::from(val.split('=').next().unwrap_or(val)),
                )
            })
            .collect(),
        _ => Map::new(),
    };
    let revoked: Vec<(String, Vec<Value>)> = headers
        .iter()
        .map(|(h, stamps)| {
            let values = match stamps {
                Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            (h.clone(), values)
        })
        .collect();
    let shown = python_repr(&Value::Object(headers));
    let signal = signal_arg(args.get("signal"));
    let mut actions = vec![Action::RevokeStamps {
        headers: revoked.clone(),
        terminate: terminate.then_some(signal),
    }];
    if !terminate {
        return Outcome {
            reply: Some(ok(format!(
                "headers {shown} flagged as revoked, but not terminated"
            ))),
            actions,
        };
    }
    // Celery's `defaultdict(set)` of the stamps that matched, by header.
    let mut matched: Vec<(String, Vec<Value>)> = Vec::new();
    for c in &v.children {
        let Some((s, _)) = &c.current else { continue };
        let hits = stamp_matches(&s.stamps, &revoked);
        if hits.is_empty() {
            continue;
        }
        for (header, value) in hits {
            match matched.iter_mut().find(|(h, _)| *h == header) {
                Some((_, values)) if values.contains(&value) => {}
                Some((_, values)) => values.push(value),
                None => matched.push((header, vec![value])),
            }
        }
        actions.push(Action::Log(format!(
            "Terminating {} ({})",
            s.id, signal as i32
        )));
        actions.push(Action::Node(NodeAction::Terminate { pid: c.pid, signal }));
    }
    let text = if matched.is_empty() {
        format!("headers {shown} were not terminated")
    } else {
        let items: Vec<String> = matched
            .iter()
            .map(|(h, values)| {
                let set: Vec<String> = values.iter().map(python_repr).collect();
                format!("{}: {{{}}}", python_str_repr(h), set.join(", "))
            })
            .collect();
        format!(
            "headers defaultdict(<class 'set'>, {{{}}}) revoked",
            items.join(", ")
        )
    };
    Outcome {
        reply: Some(ok(text)),
        actions,
    }
}

/// The `(header, value)` pairs of a task's `stamps` that are among
/// `revoked` (a stamp that is a list matches by its items).
pub fn stamp_matches(
    stamps: &Map<String, Value>,
    revoked: &[(String, Vec<Value>)],
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (header, values) in revoked {
        let Some(stamp) = stamps.get(header) else {
            continue;
        };
        for item in crate::broker::revoked::stamp_values(stamp) {
            if values.contains(item) {
                out.push((header.clone(), item.clone()));
            }
        }
    }
    out
}

/// Celery's `signals.signum`: a name with or without `SIG`, or a number; TERM by default.
pub fn signal_arg(value: Option<&Value>) -> Signal {
    let parsed = match value {
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .and_then(|n| Signal::try_from(n).ok()),
        Some(Value::String(s)) if !s.is_empty() => {
            let upper = s.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            name.parse::<Signal>().ok()
        }
        _ => None,
    };
    parsed.unwrap_or(Signal::SIGTERM)
}

fn bool_arg(args: &Map<String, Value>, key: &str) -> bool {
    match args.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        _ => false,
    }
}

/// `n` of `pool_grow`/`pool_shrink` (default 1; at most 64 at once).
fn count_arg(args: &Map<String, Value>) -> usize {
    let n = match args.get("n") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(1),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(1),
        _ => 1,
    };
    n.clamp(1, 64) as usize
}

fn rate_text(rate: &Value) -> String {
    match rate {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Celery's `rate()`: a number, or `<n>/<s|m|h>`; empty/None disables.
fn valid_rate(rate: &Value) -> bool {
    match rate {
        Value::Null | Value::Number(_) => true,
        Value::String(s) if s.is_empty() => true,
        Value::String(s) => {
            let (n, unit) = s.split_once('/').unwrap_or((s.as_str(), "s"));
            n.trim().parse::<f64>().is_ok() && matches!(unit.chars().next(), Some('s' | 'm' | 'h'))
        }
        _ => false,
    }
}

/// Celery's `Request.info()` of a running task.
/// Celery's `Request.info()`: `pid` and `time_start` are null for a
/// request not started.
fn request_info(
    v: &NodeView,
    pid: Option<i32>,
    s: &crate::child::report::Started,
    time_start: Option<f64>,
) -> Value {
    json!({
        "id": s.id,
        "name": s.task,
        "args": s.args,
        "kwargs": s.kwargs,
        "type": s.task,
        "hostname": v.node,
        "time_start": time_start,
        "acknowledged": !s.acks_late,
        "delivery_info": s.delivery_info,
        "worker_pid": pid,
    })
}

/// One `inspect scheduled` entry for a parked message, as Celery lists a
/// message it holds for its ETA (`priority` is Celery's timer priority, 6).
pub fn scheduled_entry(node: &str, raw: &str) -> Option<Value> {
    let task = crate::protocol::TaskMessage::decode(raw).ok()?;
    let d = &task.delivery_info;
    Some(json!({
        "eta": task.eta.map(crate::protocol::time::format_isoformat),
        "priority": 6,
        "request": {
            "id": task.id,
            "name": task.task,
            "args": task.args,
            "kwargs": task.kwargs,
            "type": task.task,
            "hostname": node,
            "time_start": null,
            "acknowledged": false,
            "delivery_info": {
                "exchange": d.exchange,
                "routing_key": d.routing_key,
                "priority": d.priority,
                "redelivered": d.redelivered,
            },
            "worker_pid": null,
        },
    }))
}

fn query_task(args: &Map<String, Value>, v: &NodeView) -> Value {
    let ids: Vec<&str> = match args.get("ids") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut out = Map::new();
    for c in &v.children {
        if let Some((s, t)) = &c.current {
            if ids.contains(&s.id.as_str()) {
                out.insert(
                    s.id.clone(),
                    json!(["active", request_info(v, Some(c.pid), s, Some(*t))]),
                );
            }
        }
        for s in c.reserved.iter().filter(|s| ids.contains(&s.id.as_str())) {
            out.insert(
                s.id.clone(),
                json!(["reserved", request_info(v, None, s, None)]),
            );
        }
    }
    Value::Object(out)
}

/// Every key of kombu's `Queue.as_dict()`: Flower's worker page needs them all.
fn queue_info(name: &str) -> Value {
    json!({
        "name": name,
        "exchange": {
            "name": name, "type": "direct", "arguments": null, "durable": true,
            "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false
        },
        "routing_key": name,
        "queue_arguments": null,
        "binding_arguments": null,
        "consumer_arguments": null,
        "durable": true,
        "exclusive": false,
        "auto_delete": false,
        "no_ack": false,
        "alias": null,
        "bindings": [],
        "no_declare": null,
        "expires": null,
        "message_ttl": null,
        "max_length": null,
        "max_length_bytes": null,
        "max_priority": null
    })
}

fn stats(v: &NodeView) -> Value {
    let processes: Vec<i32> = {
        let mut kids: Vec<_> = v.children.iter().collect();
        kids.sort_by_key(|c| c.slot);
        kids.iter().map(|c| c.pid).collect()
    };
    json!({
        "total": v.totals,
        "pid": v.pid,
        "clock": v.clock.to_string(),
        "uptime": v.uptime,
        "pool": {
            "implementation": "rmulti:prefork",
            "max-concurrency": v.target,
            "processes": processes,
            "max-tasks-per-child": v.max_tasks_per_child.map_or(json!("N/A"), Value::from),
            "put-guarded-by-semaphore": false,
            "timeouts": [
                v.app.task_soft_time_limit.unwrap_or(0.0),
                v.app.task_time_limit.unwrap_or(0.0)
            ],
            "writes": {"total": v.totals.values().sum::<u64>(), "avg": "N/A", "all": "", "raw": "", "strategy": "fair",
                       "inqueues": {"total": processes.len(), "active": v.children.iter().filter(|c| c.current.is_some()).count()}},
        },
        "broker": broker_info(&v.app.broker_url),
        "prefetch_count": 0,
        "rusage": v.rusage,
    })
}

/// kombu's `Connection.info()` for the broker URL (password left out).
fn broker_info(url: &str) -> Value {
    let (hostname, port, userid, vhost, ssl) = match crate::broker::url::parse(url) {
        Ok(t) => {
            let (host, port) = match &t.info.addr {
                redis::ConnectionAddr::Tcp(h, p) => (json!(h), json!(p)),
                redis::ConnectionAddr::TcpTls { host, port, .. } => (json!(host), json!(port)),
                redis::ConnectionAddr::Unix(path) => {
                    (json!(path.display().to_string()), Value::Null)
                }
            };
            (
                host,
                port,
                json!(t.info.redis.username),
                json!(t.db().to_string()),
                t.tls.is_some(),
            )
        }
        Err(_) => (Value::Null, Value::Null, Value::Null, Value::Null, false),
    };
    json!({
        "hostname": hostname,
        "userid": userid,
        "virtual_host": vhost,
        "port": port,
        "insist": false,
        "ssl": ssl,
        "transport": "redis",
        "connect_timeout": 4,
        "transport_options": {},
        "login_method": null,
        "uri_prefix": null,
        "heartbeat": 120.0,
        "failover_strategy": "round-robin",
        "alternates": [],
    })
}

fn conf(v: &NodeView) -> Value {
    let app = &v.app;
    json!({
        "broker_url": crate::broker::url::masked(&app.broker_url),
        "result_backend": crate::broker::url::masked(&app.result_backend),
        "result_expires": app.result_expires,
        "task_default_queue": app.task_default_queue,
        "task_acks_late": app.task_acks_late,
        "task_reject_on_worker_lost": app.task_reject_on_worker_lost,
        "task_track_started": app.task_track_started,
        "task_time_limit": app.task_time_limit,
        "task_soft_time_limit": app.task_soft_time_limit,
        "worker_concurrency": v.target,
        "worker_send_task_events": v.task_events,
        "broker_transport_options": {"visibility_timeout": app.visibility_timeout},
    })
}

/// `getrusage(RUSAGE_SELF)` with Celery's keys.
pub fn rusage() -> Value {
    // SAFETY: getrusage only writes the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return json!({});
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    json!({
        "utime": secs(r.ru_utime), "stime": secs(r.ru_stime), "maxrss": r.ru_maxrss,
        "ixrss": r.ru_ixrss, "idrss": r.ru_idrss, "isrss": r.ru_isrss,
        "minflt": r.ru_minflt, "majflt": r.ru_majflt, "nswap": r.ru_nswap,
        "inblock": r.ru_inblock, "oublock": r.ru_oublock, "msgsnd": r.ru_msgsnd,
        "msgrcv": r.ru_msgrcv, "nsignals": r.ru_nsignals, "nvcsw": r.ru_nvcsw,
        "nivcsw": r.ru_nivcsw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::report::Started;
    use crate::node::control::ChildView;
    use std::sync::Arc;

    fn view(running: Option<&str>) -> NodeView {
        let app = crate::app::AppConfig::from_str(
            "proj",
            std::path::Path::new("proj.toml"),
            "[tasks]\n\"proj.add\" = { builtin = \"add\" }\n",
            &|_| None,
            &Default::default(),
        )
        .expect("test app");
        NodeView {
            node: "w1@h".into(),
            pid: 42,
            uptime: 3,
            target: 1,
            children: vec![ChildView {
                pid: 7,
                number: 1,
                slot: 1,
                current: running.map(|id| {
                    (
                        Started {
                            id: id.into(),
                            task: "proj.add".into(),
                            time_limit: None,
                            acks_late: false,
                            reject_on_worker_lost: false,
                            ignore_result: false,
                            group: None,
                            parent_id: None,
                            args: json!([1, 2]),
                            kwargs: json!({}),
                            delivery_info: json!({"routing_key": "celery"}),
                            stamps: json!({"monitoring_id": ["m1", 7]})
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                            batched: false,
                        },
                        1.5,
                    )
                }),
                reserved: Vec::new(),
            }],
            queues: vec!["celery".into()],
            app: Arc::new(app),
            max_tasks_per_child: None,
            totals: Default::default(),
            clock: 9,
            task_events: false,
            revoked: vec!["r1".into()],
            rusage: Value::Null,
            scheduled: Vec::new(),
        }
    }

    fn req(method: &str, arguments: Value) -> Request {
        Request {
            method: method.into(),
            arguments: arguments.as_object().cloned().unwrap_or_default(),
            destination: None,
            pattern: None,
            matcher: None,
            reply_to: None,
            ticket: None,
            clock: 0,
            expires: None,
        }
    }

    #[test]
    fn ping_and_unknown_method() {
        assert_eq!(
            handle(&req("ping", json!({})), &view(None)).reply,
            Some(json!({"ok": "pong"}))
        );
        assert_eq!(
            handle(&req("nope", json!({})), &view(None)).reply,
            Some(json!({"error": "KeyError('nope')"}))
        );
    }

    #[test]
    fn revoke_takes_a_string_or_a_list() {
        let one = handle(&req("revoke", json!({"task_id": "a"})), &view(None));
        assert_eq!(
            one.reply,
            Some(json!({"ok": "tasks {'a'} flagged as revoked"}))
        );
        assert_eq!(
            one.actions,
            vec![Action::Revoke {
                ids: vec!["a".into()],
                running: vec![],
                terminate: None,
            }]
        );
        let many = handle(
            &req("revoke", json!({"task_id": ["a", "b", "a"]})),
            &view(None),
        );
        assert_eq!(
            many.reply,
            Some(json!({"ok": "tasks {'a', 'b'} flagged as revoked"}))
        );
    }

    #[test]
    fn terminate_signals_the_child_running_it() {
        let out = handle(
            &req(
                "revoke",
                json!({"task_id": ["t"], "terminate": true, "signal": "KILL"}),
            ),
            &view(Some("t")),
        );
        assert_eq!(out.reply, Some(json!({"ok": "terminate: t"})));
        assert!(out.actions.contains(&Action::Node(NodeAction::Terminate {
            pid: 7,
            signal: Signal::SIGKILL
        })));
        let none = handle(&req("terminate", json!({"task_id": "x"})), &view(Some("t")));
        assert_eq!(none.reply, Some(json!({"ok": "terminate: tasks unknown"})));
    }

    #[test]
    fn active_lists_the_running_request() {
        let out = handle(&req("active", json!({})), &view(Some("t")))
            .reply
            .unwrap();
        assert_eq!(out[0]["id"], json!("t"));
        assert_eq!(out[0]["worker_pid"], json!(7));
        assert_eq!(out[0]["args"], json!([1, 2]));
        assert_eq!(out[0]["acknowledged"], json!(true));
    }

    #[test]
    fn report_has_celerys_layout_and_names_rmulti() {
        let out = handle(&req("report", json!({})), &view(None))
            .reply
            .unwrap();
        let text = out["ok"].as_str().unwrap_or_default();
        assert!(text.starts_with("software -> celery:5.7.0 "), "{text}");
        assert!(text.contains("the worker is rmulti:"), "{text}");
        assert!(
            text.contains("\nsettings -> transport:redis results:"),
            "{text}"
        );
    }

    #[test]
    fn reserved_lists_a_batchs_tasks_not_started() {
        let mut v = view(Some("t"));
        let mut waiting = v.children[0].current.clone().expect("running").0;
        waiting.id = "w".into();
        v.children[0].reserved = vec![waiting];
        let out = handle(&req("reserved", json!({})), &v).reply.unwrap();
        assert_eq!(out.as_array().map(Vec::len), Some(1), "{out}");
        assert_eq!(out[0]["id"], json!("w"));
        assert_eq!(out[0]["worker_pid"], Value::Null);
        assert_eq!(out[0]["time_start"], Value::Null);
        let q = handle(&req("query_task", json!({"ids": ["w", "t"]})), &v)
            .reply
            .unwrap();
        assert_eq!(q["w"][0], json!("reserved"));
        assert_eq!(q["t"][0], json!("active"));
        let none = handle(&req("reserved", json!({})), &view(None)).reply;
        assert_eq!(none, Some(json!([])));
    }

    #[test]
    fn shutdown_and_heartbeat_do_not_reply() {
        let out = handle(&req("shutdown", json!({})), &view(None));
        assert_eq!(out.reply, None);
        assert!(out.actions.contains(&Action::Node(NodeAction::Shutdown)));
        assert_eq!(
            handle(&req("heartbeat", json!({})), &view(None)).reply,
            None
        );
    }

    #[test]
    fn queues_events_limits() {
        let add = handle(&req("add_consumer", json!({"queue": "q2"})), &view(None));
        assert_eq!(add.reply, Some(json!({"ok": "add consumer q2"})));
        assert_eq!(
            add.actions,
            vec![Action::Node(NodeAction::SetQueues(vec![
                "celery".into(),
                "q2".into()
            ]))]
        );
        let on = handle(&req("enable_events", json!({})), &view(None));
        assert_eq!(on.reply, Some(json!({"ok": "task events enabled"})));
        let tl = handle(
            &req("time_limit", json!({"task_name": "nope"})),
            &view(None),
        );
        assert_eq!(tl.reply, Some(json!({"error": "unknown task"})));
        let rl = handle(
            &req(
                "rate_limit",
                json!({"task_name": "proj.add", "rate_limit": "10/m"}),
            ),
            &view(None),
        );
        assert_eq!(
            rl.reply,
            Some(json!({"ok": "new rate limit set successfully"}))
        );
        let hello = handle(&req("hello", json!({"from_node": "other@h"})), &view(None));
        assert_eq!(hello.reply, Some(json!({"revoked": ["r1"], "clock": 9})));
    }

    #[test]
    fn revoke_by_stamped_headers_as_celery_replies() {
        let plain = handle(
            &req(
                "revoke_by_stamped_headers",
                json!({"headers": {"myheader": ["myvalue"]}}),
            ),
            &view(Some("t")),
        );
        assert_eq!(
            plain.reply,
            Some(
                json!({"ok": "headers {'myheader': ['myvalue']} flagged as revoked, but not terminated"})
            )
        );
        assert_eq!(
            plain.actions,
            vec![Action::RevokeStamps {
                headers: vec![("myheader".into(), vec![json!("myvalue")])],
                terminate: None
            }]
        );
        // The list form, and a terminate that finds the running task by
        // one item of its stamp.
        let kill = handle(
            &req(
                "revoke_by_stamped_headers",
                json!({"headers": ["monitoring_id=m1"], "terminate": true, "signal": "KILL"}),
            ),
            &view(Some("t")),
        );
        assert_eq!(
            kill.reply,
            Some(
                json!({"ok": "headers defaultdict(<class 'set'>, {'monitoring_id': {'m1'}}) revoked"})
            )
        );
        assert!(kill.actions.contains(&Action::Node(NodeAction::Terminate {
            pid: 7,
            signal: Signal::SIGKILL
        })));
        let missed = handle(
            &req(
                "revoke_by_stamped_headers",
                json!({"headers": {"monitoring_id": 8}, "terminate": true}),
            ),
            &view(Some("t")),
        );
        assert_eq!(
            missed.reply,
            Some(json!({"ok": "headers {'monitoring_id': 8} were not terminated"}))
        );
        assert!(!missed
            .actions
            .iter()
            .any(|a| matches!(a, Action::Node(NodeAction::Terminate { .. }))));
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(signal_arg(Some(&json!("SIGKILL"))), Signal::SIGKILL);
        assert_eq!(signal_arg(Some(&json!("kill"))), Signal::SIGKILL);
        assert_eq!(signal_arg(Some(&json!(9))), Signal::SIGKILL);
        assert_eq!(signal_arg(Some(&json!([1]))), Signal::SIGTERM);
        assert_eq!(signal_arg(None), Signal::SIGTERM);
    }

    #[test]
    fn a_parked_message_is_listed_as_celery_lists_a_scheduled_one() {
        let msg = crate::protocol::test_fixture("task-v2-eta.json");
        let reply = crate::protocol::test_fixture("pidbox-reply-scheduled.json");
        let entry = scheduled_entry("w1@vm", msg["raw"].as_str().unwrap()).unwrap();
        assert_eq!(entry, reply["decoded"]["body"]["w1@vm"][0]);
    }
}
