//! The supervisor loop of the node main process, read top to bottom as
//! gunicorn's arbiter: signal handlers only count the signal and wake the
//! loop (self-pipe); each turn the loop spawns children up to the target,
//! waits, handles the queued signals by name (`signals.rs`: `handle_term`,
//! `handle_int`, `handle_quit`, ...), reads the children's status reports,
//! reaps (`children.rs`; what a death means is `exit_kind::classify`),
//! enforces hard time limits and runs the visibility sweep.
//!
//! Before the pool starts, the loop waits for Redis (`connect.rs`).
//!
//! It is single-threaded on purpose: `fork()` is only safe that way.

mod children;
mod connect;
mod control;
mod exit_kind;
mod service;
mod signals;
mod template;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::unistd::{getpid, Pid};

use self::children::Child;
use super::config::NodeConfig;
use super::connecting::Connecting;
use super::detach::Notifier;
use super::recovery::Recovery;
use crate::broker::keys::Slot;
use crate::exit;
use crate::plumbing::pipe::wait_readable;
use crate::signals::{Held, SelfPipe};

pub use self::signals::HANDLED;

/// How often the visibility-timeout restore runs (kombu: every 10 s, scanning
/// on every 10th call).
const SWEEP_INTERVAL: Duration = Duration::from_secs(100);

/// How long the exit waits for the Python template to take the last
/// outcomes (`hand_records`).
const RECORDS_AT_EXIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for Redis (`connecting`); no child yet.
    Connecting,
    /// Forking the pool; the node is ready once every slot's child is.
    Starting,
    Running,
    /// Warm shutdown: children finish their task and leave.
    Warm,
    /// Cold shutdown: children killed.
    Cold,
}

pub struct Supervisor {
    cfg: NodeConfig,
    pipe: SelfPipe,
    children: HashMap<i32, Child>,
    target: usize,
    next_number: usize,
    highest_slot: usize,
    phase: Phase,
    notifier: Notifier,
    recovery: Recovery,
    exit_code: i32,
    respawn_after: HashMap<usize, Instant>,
    main_pid: Pid,
    next_sweep: Instant,
    /// After a child died, orphans of its task (an exec command's own
    /// children) are re-parented to us; until then we look for them.
    strays_until: Option<Instant>,
    connecting: Connecting,
    /// Redis answered once: held lists are ours to restore at exit.
    connected: bool,
    /// Children that died before they were ready, since one last was.
    boot_failures: u32,
    /// Service hooks: systemd notify, autoscale, purge, log rotation.
    hooks: service::Hooks,
    /// Remote control, worker events, revokes (`node::control`).
    control: crate::node::control::Control,
    /// The lease on this node's name (`node::lease`).
    lease: super::lease::Lease,
    /// The Python template the hosts fork from (`template.rs`).
    template: template::TemplateSlot,
    /// Which child ran last, shared with all of them (mapped before the
    /// first fork); `None` when it could not be mapped.
    affinity: Option<crate::plumbing::affinity::Affinity>,
}

/// Blocks our signals for a turn's work: its Redis calls (a lost task's
/// record, the sweep) are socket calls with timeouts, which a handler makes
/// fail with EINTR whatever SA_RESTART says, and children killed together
/// (hard time limits, a cold stop) send SIGCHLD in bursts.
fn hold_signals() -> Option<Held> {
    crate::signals::hold(HANDLED)
        .map_err(|e| tracing::error!("cannot block signals: {e}"))
        .ok()
}

impl Supervisor {
    pub fn new(
        cfg: NodeConfig,
        pipe: SelfPipe,
        notifier: Notifier,
        recovery: Recovery,
    ) -> Supervisor {
        let target = cfg.concurrency;
        let control = Self::new_control(&cfg);
        let lease = super::lease::Lease::new(&cfg.node);
        // Orphans of a dead child's task come to us instead of init, so
        // `kill_strays` can find them.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory effects.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        }
        Supervisor {
            hooks: service::Hooks::new(&cfg),
            cfg,
            pipe,
            children: HashMap::new(),
            target,
            next_number: 1,
            highest_slot: target,
            phase: Phase::Connecting,
            notifier,
            recovery,
            exit_code: exit::OK,
            respawn_after: HashMap::new(),
            main_pid: getpid(),
            next_sweep: Instant::now(),
            strays_until: None,
            connecting: Connecting::from_now(),
            connected: false,
            boot_failures: 0,
            control,
            lease,
            template: template::TemplateSlot::default(),
            affinity: crate::plumbing::affinity::Affinity::new()
                .map_err(|e| {
                    tracing::warn!("Cannot map the pool's affinity word ({e}); due work goes to any idle child")
                })
                .ok(),
        }
    }

    /// Runs until the node has shut down; returns the exit status.
    pub fn run(mut self) -> i32 {
        loop {
            if self.phase == Phase::Connecting {
                self.connect_when_due();
            }
            if matches!(self.phase, Phase::Starting | Phase::Running) {
                // Before the children: they find it in the environment.
                self.keep_template();
                self.spawn_missing();
            }
            if matches!(self.phase, Phase::Warm | Phase::Cold) && self.children.is_empty() {
                break;
            }
            self.wait_for_events();
            let held = hold_signals();
            self.handle_signals();
            self.read_reports();
            self.control_turn();
            self.reap();
            if matches!(self.phase, Phase::Starting | Phase::Running) {
                // A dead child's replacement first: the turn's other chores
                // (the stray scan reads all of /proc) would delay it.
                self.keep_template();
                self.spawn_missing();
            }
            self.hand_records(Duration::ZERO);
            self.kill_strays();
            self.enforce_time_limits();
            self.check_ready();
            self.sweep_when_due();
            self.service_tick();
            // What arrived meanwhile is handled now and wakes the next wait.
            drop(held);
        }
        let _held = hold_signals();
        self.finish();
        self.exit_code
    }

    fn finish(&mut self) {
        self.control_offline();
        let mut restored = 0;
        for slot in (1..=self.highest_slot).filter(|_| self.connected) {
            restored += self.recovery.release_held(&Slot::new(&self.cfg.node, slot));
        }
        // Lost tasks' outcomes for a backend only Python writes, before the
        // template goes.
        self.hand_records(RECORDS_AT_EXIT);
        self.drop_records();
        self.stop_template();
        self.reap_leftovers();
        if restored > 0 {
            tracing::warn!(
                "Restored {restored} message(s) held by this node's children to their queues"
            );
        }
        self.lease.release(|| self.recovery.broker());
        // The launcher still waits: it was neither told ready nor failed.
        if self.notifier.is_detached() {
            self.notifier
                .fail(exit::FAILURE, "The node stopped before it was ready");
        }
        tracing::info!("{}: shutdown complete", self.cfg.node);
    }

    /// Sleeps until a signal, a child's report or the next deadline (at most
    /// a second).
    fn wait_for_events(&mut self) {
        let timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let mut fds = vec![self.pipe.as_fd()];
        fds.extend(self.children.values().map(|c| c.status.as_fd()));
        fds.extend(self.template.output_fd());
        // Requests are only read while running: out of that phase a
        // readable subscription must not keep waking the loop.
        if self.phase == Phase::Running {
            fds.extend(self.control.fd());
        }
        if let Err(e) = wait_readable(&fds, Some(timeout)) {
            tracing::error!("poll failed: {e}");
        }
        self.pipe.drain();
        self.template.log_output();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let limits = self.children.values().filter_map(Child::deadline);
        let respawns = self.respawn_after.values().copied();
        let connect = (self.phase == Phase::Connecting).then(|| self.connecting.deadline());
        let service = self.hooks.deadline();
        let control = self.control.next_deadline();
        limits
            .chain(respawns)
            .chain(connect)
            .chain(service)
            .chain(control)
            .min()
    }

    fn check_ready(&mut self) {
        if self.phase != Phase::Starting {
            return;
        }
        let ready =
            (1..=self.target).all(|slot| self.children.values().any(|c| c.slot == slot && c.ready));
        if ready {
            self.phase = Phase::Running;
            tracing::info!("{} ready.", self.cfg.node);
            self.control_online();
            self.notifier.ready();
        }
    }

    fn sweep_when_due(&mut self) {
        if self.phase != Phase::Connecting {
            self.lease.renew_when_due(|| self.recovery.broker());
        }
        if self.phase == Phase::Running && Instant::now() >= self.next_sweep {
            self.next_sweep = Instant::now() + SWEEP_INTERVAL;
            self.recovery.sweep(self.cfg.app.visibility_timeout);
        }
    }
}
