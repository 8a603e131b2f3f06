//! What the supervisor does for the service around it, kept out of the
//! loop's own file: systemd notifications (see `node::notify`), the
//! `--autoscale` decisions (see `node::autoscale`), `--purge`, and following
//! log rotation. The loop calls [`Supervisor::service_tick`] once per turn
//! and [`Supervisor::purge_if_asked`] once Redis answers.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::{Phase, Supervisor};
use crate::node::autoscale::{Autoscaler, Load, Policy};
use crate::node::config::NodeConfig;
use crate::node::notify::Notify;
use crate::node::queues;
use crate::{broker, logging};

pub(super) struct Hooks {
    notify: Notify,
    autoscaler: Option<Autoscaler>,
    /// The phase the last STATUS= line described.
    shown: Option<Phase>,
}

impl Hooks {
    pub(super) fn new(cfg: &NodeConfig) -> Hooks {
        let keepalive = std::env::var("AUTOSCALE_KEEPALIVE").ok();
        let notify = Notify::from_env();
        notify.status(&format!(
            "{}: connecting to {}",
            cfg.node,
            broker::url::masked(&cfg.app.broker_url)
        ));
        Hooks {
            notify,
            autoscaler: cfg.autoscale.map(|a| {
                Autoscaler::new(Policy::from_arg(a, keepalive.as_deref()), Instant::now())
            }),
            shown: None,
        }
    }

    /// The next time the loop must wake for us (the watchdog).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.notify.deadline()
    }
}

impl Supervisor {
    /// Once per loop turn: notifications, watchdog, autoscaling, log rotation.
    pub(super) fn service_tick(&mut self) {
        let now = Instant::now();
        self.notify_phase();
        self.hooks.notify.watchdog_when_due(now);
        if self.phase == Phase::Running {
            self.autoscale(now);
        }
        logging::maintain();
    }

    fn notify_phase(&mut self) {
        if self.hooks.shown == Some(self.phase) {
            return;
        }
        let first = self.hooks.shown.is_none();
        self.hooks.shown = Some(self.phase);
        let node = self.cfg.node.clone();
        match self.phase {
            // Said by `Hooks::new` already.
            Phase::Connecting if first => {}
            Phase::Connecting => self.hooks.notify.status(&format!(
                "{node}: connecting to {}",
                broker::url::masked(&self.cfg.app.broker_url)
            )),
            Phase::Starting => self
                .hooks
                .notify
                .status(&format!("{node}: starting {} pool children", self.target)),
            Phase::Running => self.hooks.notify.ready(&format!(
                "{node}: ready, {} pool children consuming {}",
                self.target,
                self.cfg.queues.join(",")
            )),
            Phase::Warm => self
                .hooks
                .notify
                .stopping(&format!("{node}: warm shutdown, waiting for running tasks")),
            Phase::Cold => self
                .hooks
                .notify
                .stopping(&format!("{node}: cold shutdown")),
        }
    }

    /// `--autoscale`: measure once a second, then grow or retire slots.
    fn autoscale(&mut self, now: Instant) {
        let Some(scaler) = self.hooks.autoscaler.as_ref() else {
            return;
        };
        if !scaler.due(now) {
            return;
        }
        let busy = self
            .children
            .values()
            .filter(|c| c.busy() && !c.retiring)
            .count();
        let waiting = match self
            .recovery
            .broker()
            .map_err(|e| e.to_string())
            .and_then(|con| queues::depth(con, &self.cfg.queues).map_err(|e| e.to_string()))
        {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("Autoscaler: cannot read the queue depth: {e}");
                self.recovery.reset();
                0
            }
        };
        let current = self.target;
        let Some(scaler) = self.hooks.autoscaler.as_mut() else {
            return;
        };
        let Some(target) = scaler.tick(current, Load { busy, waiting }, now) else {
            return;
        };
        if target > current {
            tracing::info!("Scaling up {} processes.", target - current);
            self.target = target;
            self.highest_slot = self.highest_slot.max(target);
        } else {
            tracing::info!("Scaling down {} processes.", current - target);
            self.target = target;
            self.retire_where(Signal::SIGTERM, |c| c.slot > target);
        }
        self.hooks.notify.status(&format!(
            "{}: {} pool children (autoscale {}..{})",
            self.cfg.node,
            self.target,
            scaler_min(self),
            scaler_max(self)
        ));
    }

    /// `--purge`: once Redis answers and before any child consumes.
    pub(super) fn purge_if_asked(&mut self) {
        if !self.cfg.purge {
            return;
        }
        let queues = self.cfg.queues.clone();
        let erased = self
            .recovery
            .broker()
            .map_err(|e| e.to_string())
            .and_then(|con| queues::purge(con, &queues).map_err(|e| e.to_string()));
        match erased {
            Ok(n) => {
                if let Some(line) = queues::purge_line(n) {
                    tracing::warn!("{line}");
                    if !self.notifier.is_detached() {
                        println!("{line}\n");
                    }
                }
            }
            Err(e) => tracing::error!("purge: cannot empty the queues: {e}"),
        }
    }
}

fn scaler_min(s: &Supervisor) -> usize {
    s.hooks.autoscaler.as_ref().map_or(0, |a| a.policy.min)
}

fn scaler_max(s: &Supervisor) -> usize {
    s.hooks.autoscaler.as_ref().map_or(0, |a| a.policy.max)
}
