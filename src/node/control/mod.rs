//! The node's control plane (DESIGN.md "The control plane"): the main
//! process listens on the `celery.pidbox` fanout (`listener`), answers
//! remote-control requests from what it knows of its children
//! (`handlers`, pure), keeps revokes in Redis (`revoke`), and sends the
//! worker events (`events`). All of it runs inside the supervisor's
//! single-threaded poll loop: the subscription is one more fd there.
//!
//! The supervisor hands over a `NodeView` (a snapshot, built only when a
//! request came) and applies the `NodeAction`s it gets back (shutdown, pool
//! size, queues, terminate); everything that is only Redis is done here.

pub mod events;
pub mod handlers;
pub mod listener;
pub mod revoke;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::app::AppConfig;
use crate::broker::{self, keys, BrokerError, Connections};
use crate::child::report::{Report, Started};
use crate::protocol::pidbox::{self, Request};
use crate::protocol::{envelope, event};
use events::Events;
use handlers::{Action, Outcome};
use listener::Listener;

/// At most this many requests are handled per loop turn, so a flood of
/// requests cannot starve the children's reports and signals.
const MAX_PER_TURN: usize = 100;

/// What a pool child is doing, as the control plane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildView {
    pub pid: i32,
    /// Its `ForkPoolWorker-N` number.
    pub number: usize,
    pub slot: usize,
    /// The task it runs and when it started (POSIX seconds).
    pub current: Option<(Started, f64)>,
    /// The tasks of its batch it has not started: reserved, as Celery's
    /// prefetched requests (filled for the requests that show them,
    /// `handlers::shows_reserved`).
    pub reserved: Vec<Started>,
}

/// A snapshot of the node for the handlers.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub node: String,
    pub pid: u32,
    pub uptime: u64,
    /// The pool's target size.
    pub target: usize,
    pub children: Vec<ChildView>,
    pub queues: Vec<String>,
    pub app: Arc<AppConfig>,
    pub max_tasks_per_child: Option<u64>,
    /// Filled in by `Control`: tasks started since the node started, by name.
    pub totals: BTreeMap<String, u64>,
    pub clock: u64,
    pub task_events: bool,
    /// Revoked ids (read from Redis only for the requests that show them).
    pub revoked: Vec<String>,
    /// `getrusage(RUSAGE_SELF)` as Celery's `stats` shows it.
    pub rusage: Value,
    /// `inspect scheduled`: the ETA messages this node parked (filled on demand).
    pub scheduled: Vec<Value>,
}

/// What the supervisor must do for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// Warm shutdown, as TERM.
    Shutdown,
    Grow(usize),
    Shrink(usize),
    /// Signal the child running this task (`pid`); its death is recorded as
    /// REVOKED `terminated`.
    Terminate {
        pid: i32,
        signal: Signal,
    },
    /// Tasks revoked now that a child holds in its batch, not started yet:
    /// mark them not to start.
    SkipInBatches(Revoked),
    /// Consume from these queues from now on (children are replaced, as HUP does).
    SetQueues(Vec<String>),
    /// New children use these limits for `task`.
    SetTimeLimit {
        task: String,
        hard: Option<f64>,
        soft: Option<f64>,
    },
}

/// What a revoke names: ids, or stamps (`{header: values}`).
#[derive(Debug, Clone, PartialEq)]
pub enum Revoked {
    Ids(Vec<String>),
    Stamps(Vec<(String, Vec<Value>)>),
}

impl Revoked {
    /// Whether `task` is one of them.
    pub fn names(&self, task: &Started) -> bool {
        match self {
            Revoked::Ids(ids) => ids.contains(&task.id),
            Revoked::Stamps(headers) => !handlers::stamp_matches(&task.stamps, headers).is_empty(),
        }
    }
}

/// The control plane's state in the node main process.
pub struct Control {
    listener: Listener,
    /// Replies, events and revokes; separate from the subscription.
    conns: Connections,
    revoked: broker::revoked::Revoked,
    events: Events,
    node: String,
    db: i64,
    result_expires: Option<u64>,
    results_in_python: bool,
    clock: u64,
    totals: BTreeMap<String, u64>,
    processed: u64,
    task_events: bool,
    /// Children killed by a terminate: their task is REVOKED, not lost.
    terminated: HashMap<i32, i32>,
    /// Terminating revokes of tasks that were not running here when they
    /// came: a child may have reserved one just before (its `started`
    /// report still to come), so it is signalled when it starts.
    late: revoke::LateTerminates,
    heartbeats: bool,
    next_heartbeat: Instant,
    /// When to answer a `heartbeat` broadcast (see `HEARTBEAT_REPLY_DELAY`).
    heartbeat_reply_at: Option<Instant>,
    online: bool,
    born: Instant,
}

impl Control {
    pub fn new(app: &AppConfig, node: &str, task_events: bool, heartbeats: bool) -> Control {
        let db = broker::url::parse(&app.broker_url)
            .map(|t| t.db())
            .unwrap_or(0);
        Control {
            listener: Listener::new(
                &app.broker_url,
                &envelope::fanout_channel("", db, pidbox::EXCHANGE, ""),
            ),
            conns: Connections::new(&app.broker_url, app.redis_backend_url()),
            revoked: broker::revoked::Revoked::default(),
            events: Events::new(node),
            node: node.to_string(),
            db,
            result_expires: app.result_expires,
            results_in_python: app.results_in_python(),
            clock: 0,
            totals: BTreeMap::new(),
            processed: 0,
            task_events,
            terminated: HashMap::new(),
            late: revoke::LateTerminates::default(),
            heartbeats,
            next_heartbeat: Instant::now(),
            heartbeat_reply_at: None,
            online: false,
            born: Instant::now(),
        }
    }

    /// The subscription's socket, for the poll set.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.fd()
    }

    /// When the loop must wake for the next heartbeat (or a reconnect).
    pub fn next_deadline(&self) -> Option<Instant> {
        let beat = (self.online && self.heartbeats).then_some(self.next_heartbeat);
        [beat, self.heartbeat_reply_at, self.listener.retry_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Counts a child's report (`stats.total`, heartbeats' `processed`).
    pub fn observe(&mut self, report: &Report) {
        match report {
            Report::Started(s) if !s.batched => self.count(&s.task),
            Report::Ran { names } => {
                for name in names {
                    self.count(name);
                }
            }
            _ => {}
        }
    }

    /// One more task accepted (`inspect stats` totals).
    fn count(&mut self, task: &str) {
        match self.totals.get_mut(task) {
            Some(n) => *n += 1,
            None => {
                self.totals.insert(task.to_string(), 1);
            }
        }
        self.processed += 1;
    }

    /// Whether the child `pid` was killed by a terminate; if so, and task
    /// events are on, `task-revoked` (terminated) for the task it ran.
    pub fn was_terminated(&mut self, pid: i32, task_id: Option<&str>) -> bool {
        let Some(signum) = self.terminated.remove(&pid) else {
            return false;
        };
        if let (Some(id), true) = (task_id, self.task_events) {
            let e = event::Event::task(event::TaskEvent::Revoked {
                uuid: id.to_string(),
                terminated: true,
                signum: Some(signum),
                expired: false,
            });
            self.publish_event(e);
        }
        true
    }

    /// The node is ready: subscribe, announce it (`worker-online`), and
    /// publish whether children send task events.
    pub fn start(&mut self, view: &NodeView) {
        self.listener.ensure();
        let flag = if self.task_events { "1" } else { "0" };
        let key = keys::task_events(&self.node);
        if let Err(e) = self.conns.broker().and_then(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(flag)
                .query::<()>(c)
                .map_err(Into::into)
        }) {
            tracing::error!("Cannot record whether task events are on ({key}): {e}");
            self.conns.reset();
        }
        self.online = true;
        if self.heartbeats {
            self.worker_event(event::WorkerEvent::Online, view);
            self.next_heartbeat = Instant::now() + heartbeat_interval();
        }
    }

    /// Warm shutdown: `worker-offline`.
    pub fn stop(&mut self, view: &NodeView) {
        if self.online && self.heartbeats {
            self.worker_event(event::WorkerEvent::Offline, view);
        }
        self.online = false;
    }

    /// One loop turn's first half: the heartbeat when due, then the
    /// requests that came for this node (at most `MAX_PER_TURN`), decoded.
    /// `view` is called only for a heartbeat. The supervisor hands each
    /// request to `handle` with a view as fresh as the request needs.
    pub fn receive(&mut self, view: &mut dyn FnMut() -> NodeView) -> Vec<Request> {
        if !self.online {
            return Vec::new();
        }
        if self.heartbeats && Instant::now() >= self.next_heartbeat {
            self.next_heartbeat = Instant::now() + heartbeat_interval();
            let v = view();
            self.worker_event(event::WorkerEvent::Heartbeat, &v);
        }
        if self
            .heartbeat_reply_at
            .is_some_and(|at| Instant::now() >= at)
        {
            self.heartbeat_reply_at = None;
            let e = event::Event::heartbeat_reply(&event::Software::rmulti());
            self.publish_event(e);
        }
        let mut requests = Vec::new();
        for payload in self.listener.drain(MAX_PER_TURN) {
            let req = match Request::decode(&payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        "Ignored a remote-control message that is not a request: {e}: {}",
                        shorten(&payload)
                    );
                    continue;
                }
            };
            self.clock = self.clock.max(req.clock) + 1;
            if req.matches(&self.node) {
                requests.push(req);
            }
        }
        requests
    }

    /// Answers one request from `v` (completed here with the control
    /// plane's own parts), does what is Redis's, and returns what is the
    /// supervisor's.
    pub fn handle(&mut self, req: &Request, v: &mut NodeView) -> Vec<NodeAction> {
        tracing::debug!("pidbox received method {}", req.method);
        self.fill(v, &req.method);
        let outcome = handlers::handle(req, v);
        self.apply(req, outcome, v)
    }

    /// The parts of the view that are the control plane's own.
    fn fill(&mut self, v: &mut NodeView, method: &str) {
        v.totals = self.totals.clone();
        v.uptime = self.born.elapsed().as_secs();
        v.clock = self.clock;
        v.task_events = self.task_events;
        if matches!(method, "revoked" | "dump_revoked" | "hello") {
            let now = broker::reserve::now_secs();
            match self.conns.broker().and_then(|c| self.revoked.list(c, now)) {
                Ok(ids) => v.revoked = ids,
                Err(e) => {
                    tracing::error!("Cannot read the revoked ids: {e}");
                    self.conns.reset();
                }
            }
        }
        if matches!(method, "scheduled" | "dump_schedule") {
            match self
                .conns
                .broker()
                .and_then(|c| broker::parked::parked_by(c, &self.node))
            {
                Ok(parked) => {
                    v.scheduled = parked
                        .iter()
                        .filter_map(|p| handlers::scheduled_entry(&self.node, &p.raw))
                        .collect()
                }
                Err(e) => {
                    tracing::error!("Cannot read the parked ETA messages: {e}");
                    self.conns.reset();
                }
            }
        }
        if method == "stats" {
            v.rusage = handlers::rusage();
        }
    }

    /// Does what is Redis's, replies, and returns what is the supervisor's.
    fn apply(&mut self, req: &Request, outcome: Outcome, v: &NodeView) -> Vec<NodeAction> {
        let mut out = Vec::new();
        for action in outcome.actions {
            match action {
                Action::Node(a) => {
                    if let NodeAction::Terminate { pid, signal } = &a {
                        self.terminated.insert(*pid, *signal as i32);
                    }
                    out.push(a);
                }
                Action::Revoke {
                    ids,
                    running,
                    terminate,
                } => {
                    if let Some(signal) = terminate {
                        let waiting = ids.iter().filter(|id| !running.contains(id));
                        self.late.add_ids(waiting.cloned(), signal);
                    }
                    self.revoke(&ids, &running);
                    out.push(NodeAction::SkipInBatches(Revoked::Ids(ids)));
                }
                Action::RevokeStamps { headers, terminate } => {
                    if let Some(signal) = terminate {
                        self.late.add_stamps(&headers, signal);
                    }
                    self.revoke_stamps(&headers);
                    out.push(NodeAction::SkipInBatches(Revoked::Stamps(headers)));
                }
                Action::TaskEvents(on) => {
                    self.task_events = on;
                    let key = keys::task_events(&self.node);
                    let set = self.conns.broker().and_then(|c| {
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(if on { "1" } else { "0" })
                            .query::<()>(c)
                            .map_err(Into::into)
                    });
                    if let Err(e) = set {
                        tracing::error!("Cannot switch task events ({key}): {e}");
                        self.conns.reset();
                    }
                }
                Action::HeartbeatReply => {
                    self.heartbeat_reply_at
                        .get_or_insert(Instant::now() + HEARTBEAT_REPLY_DELAY);
                }
                Action::Log(line) => tracing::warn!("{line}"),
            }
        }
        if let (Some(value), Some(reply_to), true) =
            (outcome.reply, &req.reply_to, req.wants_reply())
        {
            self.clock += 1;
            let tag = uuid::Uuid::new_v4().to_string();
            let ticket = req.ticket.clone().unwrap_or_default();
            let reply = pidbox::Reply {
                node_name: &v.node,
                value: &value,
                ticket: &ticket,
                clock: self.clock,
                reply_to,
                delivery_tag: &tag,
            };
            if let Err(e) = self.send_reply(&reply.encode(), reply_to) {
                tracing::error!("Cannot reply to {}: {e}", req.method);
                self.conns.reset();
            }
        }
        out
    }

    fn send_reply(
        &mut self,
        envelope: &str,
        reply_to: &pidbox::ReplyTo,
    ) -> Result<(), BrokerError> {
        let con = self.conns.broker()?;
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::binding(&reply_to.exchange))
            .query(con)?;
        for queue in pidbox::reply_queues(&members, &reply_to.routing_key) {
            redis::cmd("LPUSH")
                .arg(queue)
                .arg(envelope)
                .query::<()>(con)?;
        }
        Ok(())
    }

    /// Revokes `ids`: into the revoked set, and REVOKED stored for those
    /// not running here (`running`), unless a worker got further (§5.4).
    fn revoke(&mut self, ids: &[String], running: &[String]) {
        let now = broker::reserve::now_secs();
        let added = self
            .conns
            .broker()
            .and_then(|c| self.revoked.add(c, ids, now));
        if let Err(e) = added {
            tracing::error!("Cannot record revoked tasks {ids:?}: {e}");
            self.conns.reset();
            return;
        }
        // A backend only Python can write gets REVOKED when a child meets
        // the message, as under Celery's worker.
        let marks = if self.results_in_python { &[][..] } else { ids };
        for id in marks.iter().filter(|id| !running.contains(id)) {
            let mut meta = crate::protocol::ResultMeta::revoked(id, "revoked", chrono::Utc::now());
            meta.children = Value::Null;
            let json = meta.to_json();
            let expires = self.result_expires;
            let marked = self
                .conns
                .backend()
                .and_then(|c| self.revoked.mark(c, id, &json, expires));
            if let Err(e) = marked {
                tracing::warn!("Failed to mark task {id} as revoked in backend: {e}");
                self.conns.reset();
            }
        }
        tracing::info!("Tasks flagged as revoked: {}", ids.join(", "));
    }

    /// Stamps revoked by `revoke_by_stamped_headers`, into Redis for every
    /// node; the children look a stamped message's stamps up there.
    fn revoke_stamps(&mut self, headers: &[(String, Vec<Value>)]) {
        let now = broker::reserve::now_secs();
        let added = self
            .conns
            .broker()
            .and_then(|c| self.revoked.add_stamps(c, headers, now));
        if let Err(e) = added {
            tracing::error!("Cannot record revoked stamps {headers:?}: {e}");
            self.conns.reset();
            return;
        }
        let shown: Vec<String> = headers
            .iter()
            .map(|(h, values)| {
                let shown: Vec<String> = values.iter().map(Value::to_string).collect();
                format!("{h}=[{}]", shown.join(", "))
            })
            .collect();
        tracing::info!("Stamped headers flagged as revoked: {}", shown.join(", "));
    }

    /// Terminates the tasks that started after a terminating revoke
    /// of them came (see `late`): `running` is each child's pid and task,
    /// as the latest reports say.
    pub fn terminate_late<'a>(
        &mut self,
        running: impl Iterator<Item = (i32, &'a Started)>,
    ) -> Vec<NodeAction> {
        if self.late.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (pid, started) in running {
            if self.terminated.contains_key(&pid) {
                continue;
            }
            if let Some(signal) = self.late.take_match(started) {
                tracing::warn!("Terminating {} ({})", started.id, signal as i32);
                self.terminated.insert(pid, signal as i32);
                out.push(NodeAction::Terminate { pid, signal });
            }
        }
        out
    }

    fn worker_event(&mut self, which: event::WorkerEvent, v: &NodeView) {
        let status = event::WorkerStatus {
            freq: heartbeat_interval().as_secs_f64(),
            active: v.children.iter().filter(|c| c.current.is_some()).count() as u64,
            processed: self.processed,
            loadavg: loadavg(),
            software: event::Software::rmulti(),
        };
        self.publish_event(event::Event::worker(which, &status));
    }

    fn publish_event(&mut self, e: event::Event) {
        self.clock += 1;
        let publish = self.events.publish(e, self.clock, self.db);
        let sent = self.conns.broker().and_then(|c| {
            redis::cmd("PUBLISH")
                .arg(&publish.channel)
                .arg(&publish.payload)
                .query::<()>(c)
                .map_err(Into::into)
        });
        if let Err(e) = sent {
            tracing::error!("Cannot send an event: {e}");
            self.conns.reset();
        }
    }
}

/// `--heartbeat-interval` is Celery's broker heartbeat, not the event one:
/// worker heartbeats go every 2 s as Celery's do.
/// A `heartbeat` broadcast is answered this much later. Celery's event
/// receiver sends it (`capture(wakeup=True)`: `celery events`, Flower) right
/// after setting up its consumer, but kombu's Redis transport sends the
/// PSUBSCRIBE only when the receiver first polls: an answer sent at once
/// reaches Redis before the subscription and is lost. A Python worker takes
/// milliseconds to answer; this takes the race out.
const HEARTBEAT_REPLY_DELAY: Duration = Duration::from_millis(100);

fn heartbeat_interval() -> Duration {
    Duration::from_secs_f64(event::HEARTBEAT_FREQ)
}

/// 1, 5, 15 minute load averages.
fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

/// A garbage payload, cut for the log.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}
