//! The supervisor's side of the control plane (`node::control`): it hands
//! the control plane a snapshot of the pool when a request needs one, and
//! applies what comes back (shutdown, pool size, queues, terminate, time
//! limits) with the same handlers the signals use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::children::Child;
use super::{Phase, Supervisor};
use crate::broker;
use crate::node::config::NodeConfig;
use crate::node::control::{self, handlers, ChildView, Control, NodeAction, NodeView};

impl Supervisor {
    pub(super) fn new_control(cfg: &NodeConfig) -> Control {
        Control::new(
            &cfg.app,
            &cfg.node,
            cfg.args.task_events || cfg.app.worker_send_task_events,
            !cfg.args.without_heartbeat,
        )
    }

    /// The node is ready: listen, `worker-online`.
    pub(super) fn control_online(&mut self) {
        let view = node_view(&self.cfg, &self.children, self.target, false);
        self.control.start(&view);
    }

    /// Shutting down: `worker-offline`.
    pub(super) fn control_offline(&mut self) {
        let view = node_view(&self.cfg, &self.children, self.target, false);
        self.control.stop(&view);
    }

    /// Heartbeats and remote-control requests, once per loop turn.
    ///
    /// A request that acts on running tasks (a terminating revoke) is
    /// answered from the children's latest reports, read right before it:
    /// a snapshot taken for earlier requests of the turn (a burst of
    /// inspects, each with its Redis reply) may predate a `started`.
    /// Its terminates are applied at once, before the child can move on to
    /// another task; the other actions after the turn's requests, as before.
    pub(super) fn control_turn(&mut self) {
        if self.phase == Phase::Running {
            let (cfg, children, target) = (&self.cfg, &self.children, self.target);
            let requests = self
                .control
                .receive(&mut || node_view(cfg, children, target, false));
            let mut snapshot: Option<NodeView> = None;
            // Listing a batch's tasks not started parses each child's batch:
            // done only for the requests that show them.
            let mut with_reserved: Option<NodeView> = None;
            let mut later = Vec::new();
            for req in &requests {
                if handlers::acts_on_running(&req.method) {
                    self.read_reports();
                    snapshot = None;
                }
                let v = if handlers::shows_reserved(&req.method) {
                    with_reserved.insert(node_view(&self.cfg, &self.children, self.target, true))
                } else {
                    snapshot.get_or_insert_with(|| {
                        node_view(&self.cfg, &self.children, self.target, false)
                    })
                };
                for action in self.control.handle(req, v) {
                    match action {
                        // Now, before the child moves on.
                        NodeAction::Terminate { .. } | NodeAction::SkipInBatches(_) => {
                            self.apply_control(action)
                        }
                        other => later.push(other),
                    }
                }
            }
            for action in later {
                self.apply_control(action);
            }
        }
        self.terminate_late();
    }

    /// Signals the children whose reports say they started a task that a
    /// terminating revoke named before it started (`Control::terminate_late`).
    pub(super) fn terminate_late(&mut self) {
        let running = self
            .children
            .values()
            .filter_map(|c| c.current.as_ref().map(|(s, _)| (c.pid.as_raw(), s)));
        for action in self.control.terminate_late(running) {
            self.apply_control(action);
        }
    }

    fn apply_control(&mut self, action: NodeAction) {
        match action {
            NodeAction::Shutdown => self.handle_term(),
            NodeAction::Grow(n) => (0..n).for_each(|_| self.handle_ttin()),
            NodeAction::Shrink(n) => (0..n).for_each(|_| self.handle_ttou()),
            NodeAction::Terminate { pid, signal } => control::revoke::terminate(pid, signal),
            NodeAction::SkipInBatches(revoked) => {
                for c in self.children.values() {
                    for id in c.skip_unstarted(&revoked) {
                        tracing::info!(
                            "Revoked task {id} will not start: {} holds it in its batch",
                            c.name()
                        );
                    }
                }
            }
            NodeAction::SetQueues(queues) => {
                let declared = self
                    .recovery
                    .broker()
                    .and_then(|con| broker::reserve::declare_queues(con, &queues));
                if let Err(e) = declared {
                    tracing::error!("Cannot declare queues {queues:?}: {e}");
                    return;
                }
                tracing::info!(
                    "Consuming from {} from now on: children are replaced once their current task ends",
                    queues.join(", ")
                );
                self.cfg.queues = queues;
                self.retire_all(Signal::SIGTERM);
            }
            NodeAction::SetTimeLimit { task, hard, soft } => {
                let mut app = (*self.cfg.app).clone();
                if let Some(mut spec) = app.tasks.get(&task).cloned() {
                    spec.time_limit = hard;
                    spec.soft_time_limit = soft;
                    app.tasks.insert(task.clone(), spec);
                    self.cfg.app = Arc::new(app);
                    tracing::info!(
                        "New time limits for tasks of type {task}: soft={soft:?} hard={hard:?} (children started from now on)"
                    );
                }
            }
        }
    }
}

/// A snapshot of the pool for the control plane; the tasks each child's
/// batch holds and has not started only `with_reserved`.
fn node_view(
    cfg: &NodeConfig,
    children: &HashMap<i32, Child>,
    target: usize,
    with_reserved: bool,
) -> NodeView {
    let now = broker::reserve::now_secs();
    let mut kids: Vec<ChildView> = children
        .values()
        .map(|c| ChildView {
            pid: c.pid.as_raw(),
            number: c.number,
            slot: c.slot,
            current: c.running().map(|(s, since)| {
                let ran = Instant::now().saturating_duration_since(since);
                (s, now - ran.as_secs_f64())
            }),
            reserved: if with_reserved {
                c.unstarted()
            } else {
                Vec::new()
            },
        })
        .collect();
    kids.sort_by_key(|c| c.slot);
    NodeView {
        node: cfg.node.clone(),
        pid: std::process::id(),
        uptime: 0,
        target,
        children: kids,
        queues: cfg.queues.clone(),
        app: cfg.app.clone(),
        max_tasks_per_child: cfg.max_tasks_per_child,
        totals: Default::default(),
        clock: 0,
        task_events: false,
        revoked: Vec::new(),
        rusage: serde_json::Value::Null,
        scheduled: Vec::new(),
    }
}
