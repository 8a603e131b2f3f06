//! The node main process's signals, one handler each, named after it.
//!
//! Handlers (`crate::signals`) only count a signal and wake the loop; once
//! per turn `handle_signals` takes the counts in a fixed precedence, the most
//! drastic first (`ORDER`), not in arrival order as gunicorn's queue does:
//! - the kernel itself does not keep arrival order: standard signals pending
//!   together are delivered lowest number first, and one of a kind that is
//!   already pending is merged into it;
//! - signals counted in one turn (a few milliseconds, a second at most)
//!   have no order an operator could mean, and the precedence makes "stop"
//!   win: TTIN and TERM together never fork a child only to stop it, and
//!   QUIT wins over a TERM of the same turn.
//!
//! INT, TTIN and TTOU are handled once per arrival (a second INT means cold
//! shutdown, each TTIN one child more); the others once however often they
//! came.

use std::sync::Arc;

use nix::sys::signal::{kill, Signal};

use super::children::{kill_group, Child};
use super::{Phase, Supervisor};
use crate::exit;
use crate::node::config::load_app;
use crate::node::recovery::Recovery;
use crate::signals;

/// Signals the main process handles.
pub const HANDLED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
];

/// How often a signal counted several times in one turn is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    Once,
    EachArrival,
}

/// The precedence of `handle_signals`, the most drastic first. CHLD only
/// wakes the loop (it reaps every turn).
const ORDER: &[(Signal, Times)] = &[
    (Signal::SIGQUIT, Times::Once),
    (Signal::SIGINT, Times::EachArrival),
    (Signal::SIGTERM, Times::Once),
    (Signal::SIGHUP, Times::Once),
    (Signal::SIGUSR1, Times::Once),
    (Signal::SIGTTIN, Times::EachArrival),
    (Signal::SIGTTOU, Times::EachArrival),
    (Signal::SIGCHLD, Times::Once),
];

impl Supervisor {
    pub(super) fn handle_signals(&mut self) {
        for &(sig, times) in ORDER {
            let count = signals::take(sig);
            let count = match times {
                Times::Once => count.min(1),
                Times::EachArrival => count,
            };
            for _ in 0..count {
                self.handle(sig);
            }
        }
    }

    fn handle(&mut self, sig: Signal) {
        match sig {
            Signal::SIGQUIT => self.handle_quit(),
            Signal::SIGINT => self.handle_int(),
            Signal::SIGTERM => self.handle_term(),
            Signal::SIGHUP => self.handle_hup(),
            Signal::SIGUSR1 => self.handle_usr1(),
            Signal::SIGTTIN => self.handle_ttin(),
            Signal::SIGTTOU => self.handle_ttou(),
            _ => {}
        }
    }

    /// Warm shutdown: stop reserving, let running tasks finish, exit 0.
    pub(super) fn handle_term(&mut self) {
        self.say("worker: Warm shutdown (MainProcess)");
        if matches!(
            self.phase,
            Phase::Connecting | Phase::Starting | Phase::Running
        ) {
            self.phase = Phase::Warm;
            self.retire_all(Signal::SIGTERM);
        }
    }

    /// First INT: warm shutdown; second: cold shutdown, exit 1 (as Celery).
    fn handle_int(&mut self) {
        if matches!(
            self.phase,
            Phase::Connecting | Phase::Starting | Phase::Running
        ) {
            self.say("worker: Hitting Ctrl+C again will initiate cold shutdown, terminating all running tasks!");
            self.handle_term();
        } else if self.phase == Phase::Warm {
            self.exit_code = exit::FAILURE;
            self.handle_quit();
        }
    }

    /// Cold shutdown: children killed at once; their tasks' outcomes are recorded.
    fn handle_quit(&mut self) {
        self.say("worker: Hitting Ctrl+C again will terminate all running tasks!");
        self.say("worker: Cold shutdown (MainProcess)");
        self.phase = Phase::Cold;
        for c in self.children.values_mut() {
            c.retiring = true;
            kill_group(c.pid);
        }
    }

    /// Restart in place: re-read the app, replace the pool; the pid stays.
    fn handle_hup(&mut self) {
        if !matches!(
            self.phase,
            Phase::Connecting | Phase::Starting | Phase::Running
        ) {
            return;
        }
        match load_app(&self.cfg.args) {
            Ok(app) => {
                if self.cfg.args.concurrency.is_none() {
                    if let Some(c) = app.worker_concurrency {
                        self.target = c;
                        self.highest_slot = self.highest_slot.max(c);
                    }
                }
                if app.broker_url != self.cfg.app.broker_url
                    || app.result_backend != self.cfg.app.result_backend
                {
                    // Lost-task records and the sweep follow the new Redis.
                    self.recovery = Recovery::new(&app, self.cfg.default_queue());
                }
                self.cfg.app = Arc::new(app);
                // New hosts fork from a template with the reloaded code.
                self.stop_template();
                self.keep_template();
                self.say("Restarting the pool (SIGHUP): app re-read, children replaced once their current task ends");
                self.retire_all(Signal::SIGTERM);
            }
            Err(e) => tracing::error!(
                "SIGHUP: keeping the running pool, the app could not be re-read: {e}"
            ),
        }
    }

    /// Logs what each child is doing.
    fn handle_usr1(&mut self) {
        let mut lines = vec![format!(
            "{}: {} child(ren), target {}",
            self.cfg.node,
            self.children.len(),
            self.target
        )];
        let mut kids: Vec<&Child> = self.children.values().collect();
        kids.sort_by_key(|c| c.slot);
        for c in kids {
            let doing = match c.running() {
                Some((t, since)) => format!(
                    "running {}[{}] for {:.3}s",
                    t.task,
                    t.id,
                    since.elapsed().as_secs_f64()
                ),
                None => "idle".to_string(),
            };
            lines.push(format!(
                "  ForkPoolWorker-{} (slot {}) pid:{} {}",
                c.number, c.slot, c.pid, doing
            ));
        }
        tracing::warn!("{}", lines.join("\n"));
    }

    /// One more child.
    pub(super) fn handle_ttin(&mut self) {
        self.target += 1;
        self.highest_slot = self.highest_slot.max(self.target);
        tracing::info!("Pool grown to {} (SIGTTIN)", self.target);
    }

    /// One child fewer (not below 1): the highest slot's child retires after
    /// its task.
    pub(super) fn handle_ttou(&mut self) {
        if self.target <= 1 {
            tracing::warn!("Pool not shrunk below 1 (SIGTTOU)");
            return;
        }
        self.target -= 1;
        let target = self.target;
        self.retire_where(Signal::SIGTERM, |c| c.slot > target);
        tracing::info!("Pool shrunk to {} (SIGTTOU)", self.target);
    }

    pub(super) fn retire_all(&mut self, sig: Signal) {
        self.retire_where(sig, |_| true);
    }

    pub(super) fn retire_where(&mut self, sig: Signal, which: impl Fn(&Child) -> bool) {
        for c in self.children.values_mut().filter(|c| which(c)) {
            c.retiring = true;
            let _ = kill(c.pid, sig);
        }
    }

    /// A shutdown message: to the log, and to stdout in the foreground as Celery prints it.
    fn say(&mut self, text: &str) {
        tracing::info!("{text}");
        if !self.notifier.is_detached() {
            println!("\n{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_signal_has_its_place_once() {
        for sig in HANDLED {
            assert_eq!(ORDER.iter().filter(|(s, _)| s == sig).count(), 1, "{sig}");
        }
        assert_eq!(ORDER.len(), HANDLED.len());
        // The most drastic first.
        assert_eq!(ORDER[0].0, Signal::SIGQUIT);
    }
}
