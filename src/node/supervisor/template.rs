//! The node's Python template (`tasks::python::template`): started before
//! the pool's children are forked, named to them in the environment,
//! replaced when it dies (the children start hosts of their own meanwhile)
//! and on HUP (so new hosts fork from the reloaded code), killed at exit.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::exit_kind::Exit;
use super::Supervisor;
use crate::plumbing::lines::LineReader;
use crate::plumbing::process::children_of;
use crate::tasks::python::template::{self, AskError, Template, ENV};

/// How long after a template's death the next one is started; doubled
/// (up to `MAX_RESPAWN_DELAY`) while templates die young (an app that no
/// longer imports), so a broken deploy does not boot Python every second.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(60);
/// A template that lived this long loaded the app: the delay starts over.
const GROWN_UP: Duration = Duration::from_secs(30);
/// How long the node waits at exit for what its template left: the spare
/// host (it leaves on EOF) and recorders still storing an outcome.
const LEFTOVERS_AT_EXIT: Duration = Duration::from_secs(5);

/// The supervisor's view of its template.
#[derive(Default)]
pub(super) struct TemplateSlot {
    running: Option<Template>,
    /// The template's stdout and stderr, logged by the main process.
    output: Option<LineReader>,
    generation: u32,
    not_before: Option<Instant>,
    started: Option<Instant>,
    delay: Option<Duration>,
}

impl TemplateSlot {
    pub(super) fn pid(&self) -> Option<Pid> {
        self.running.as_ref().map(|t| t.pid)
    }

    /// The fd of the template's output, for the loop's wait.
    pub(super) fn output_fd(&self) -> Option<BorrowedFd<'_>> {
        self.output.as_ref().map(AsFd::as_fd)
    }

    /// Writes what the template printed to the node's log, as one record
    /// (a traceback stays together); forgets the pipe at its end.
    pub(super) fn log_output(&mut self) {
        let Some(reader) = self.output.as_mut() else {
            return;
        };
        let lines = reader.read_lines();
        if !lines.is_empty() {
            tracing::warn!("Python template:\n{}", lines.join("\n"));
        }
        if reader.is_eof() {
            self.output = None;
        }
    }
}

impl Supervisor {
    /// Starts the template if the app is a Python one and none runs.
    pub(super) fn keep_template(&mut self) {
        let Some(py) = self.cfg.app.python.as_ref() else {
            return;
        };
        let slot = &mut self.template;
        if slot.running.is_some() || slot.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        slot.generation += 1;
        let address = format!(
            "rmulti-template-{}-{}-{}",
            self.cfg.node, self.main_pid, slot.generation
        );
        match template::spawn(&py.host_config(), &self.cfg.node, &address) {
            Ok((t, output)) => {
                tracing::debug!("Python template pid:{} at @{address}", t.pid);
                slot.output = LineReader::new(output)
                    .map_err(|e| tracing::error!("Cannot read the Python template's output: {e}"))
                    .ok();
                // Single-threaded: the children forked from now on see it.
                std::env::set_var(ENV, t.env_value());
                slot.running = Some(t);
                slot.started = Some(Instant::now());
            }
            Err(e) => {
                tracing::error!("Cannot start the Python template: {e}");
                std::env::remove_var(ENV);
                slot.not_before = Some(Instant::now() + RESPAWN_DELAY);
            }
        }
    }

    /// Whether `pid` was the template; if so it is replaced in a moment.
    pub(super) fn template_exited(&mut self, pid: Pid, exit: &Exit) -> bool {
        if self.template.pid() != Some(pid) {
            return false;
        }
        // Its last words (a traceback) before the line saying it died.
        self.template.log_output();
        tracing::error!("The Python template pid:{pid} exited ({exit:?}); a new one follows");
        let slot = &mut self.template;
        slot.output = None;
        slot.running = None;
        std::env::remove_var(ENV);
        let young = slot.started.is_some_and(|s| s.elapsed() < GROWN_UP);
        let delay = match slot.delay {
            Some(d) if young => (d * 2).min(MAX_RESPAWN_DELAY),
            _ => RESPAWN_DELAY,
        };
        slot.delay = Some(delay);
        slot.not_before = Some(Instant::now() + delay);
        true
    }

    /// Hands the outcomes the main process recorded for an app whose results
    /// are Python's (`Recovery::records`) to the template, waiting up to
    /// `patience` for it to listen; what it cannot take yet (still loading,
    /// being replaced) waits for a later turn.
    pub(super) fn hand_records(&mut self, patience: Duration) {
        if self.recovery.records().is_empty() {
            return;
        }
        let Some(t) = self.template.running.clone() else {
            return;
        };
        let records = self.recovery.records();
        while let Some(record) = records.first() {
            match template::record(&t, record, patience) {
                Ok(()) => {
                    records.remove(0);
                }
                Err(AskError::NotReady(_) | AskError::Gone(_)) => return,
                Err(e) => {
                    tracing::error!(
                        "The Python template did not take the outcome of task {}: {e}",
                        record.task_id()
                    );
                    records.remove(0);
                }
            }
        }
    }

    /// Logs the outcomes no template took (the node is leaving).
    pub(super) fn drop_records(&mut self) {
        for record in self.recovery.records().drain(..) {
            tracing::error!(
                "The outcome of task {} could not be stored: no Python template took it",
                record.task_id()
            );
        }
    }

    /// At exit, after `stop_template`: reaps the template and what it left
    /// re-parented to us (we are the subreaper), waiting up to
    /// `LEFTOVERS_AT_EXIT` for the spare host to see EOF and recorders to
    /// store their outcome, then killing the rest: the node leaves no
    /// process behind. The pool's children are gone by then.
    pub(super) fn reap_leftovers(&mut self) {
        let deadline = Instant::now() + LEFTOVERS_AT_EXIT;
        let mut killed = false;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // SIGKILLed ones die at once: one more round reaps them.
                Ok(WaitStatus::StillAlive) if killed => return,
                Ok(WaitStatus::StillAlive) => {
                    for pid in children_of(self.main_pid.as_raw()) {
                        tracing::warn!("Killing pid:{pid}, still running at exit");
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    killed = true;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) | Err(Errno::EINTR) => {}
                // ECHILD: nothing left.
                Err(_) => return,
            }
        }
    }

    /// Kills the template (HUP: the next one loads the reloaded code; exit).
    pub(super) fn stop_template(&mut self) {
        if let Some(t) = self.template.running.take() {
            let _ = kill(t.pid, Signal::SIGKILL);
            std::env::remove_var(ENV);
        }
        self.template.log_output();
        self.template.output = None;
        self.template.not_before = None;
    }
}
