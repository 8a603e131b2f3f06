//! The start of a forked pool child, before its consume loop: dying with
//! the main process, a process group of its own, its signal dispositions,
//! its log file; then `consume::run`. The forked process ends here, through
//! `_exit`, whatever happens in it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::report::{Report, Reporter};
use super::{consume, ChildSpec};
use crate::plumbing::deathsig::die_with_parent;
use crate::{exit, logging, signals};

/// Runs the pool child in the process just forked by the main process
/// `main_pid`, writing reports to `status`; `inherited`: the signals the
/// main process handles, reset to their defaults here. A panic is exit 1.
pub fn enter(spec: &ChildSpec, status: OwnedFd, main_pid: Pid, inherited: &[Signal]) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| boot(spec, status, main_pid, inherited)))
        .unwrap_or(exit::FAILURE);
    // SAFETY: _exit skips destructors that belong to the main process (pidfile, connections).
    unsafe { libc::_exit(code) }
}

fn boot(spec: &ChildSpec, status: OwnedFd, main_pid: Pid, inherited: &[Signal]) -> i32 {
    // The main process may have died before prctl took effect.
    if die_with_parent(main_pid.as_raw()).is_err() {
        return exit::FAILURE;
    }
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // TERM arrives blocked (the main process forks with it blocked): it stays
    // pending until `consume::stop_requested` looks, so none is missed while
    // we reset.
    signals::reset_in_child(inherited);
    // Delivered only while the child waits idle on Redis (see `consume::run`).
    if signals::install_flags(&[Signal::SIGTERM]).is_err() {
        return exit::FAILURE;
    }
    // Ctrl-C, job control and HUP are for the main process.
    for sig in [
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGPIPE,
        // Log reopen is the main process's (logging.rs).
        Signal::SIGUSR2,
    ] {
        signals::ignore(sig);
    }
    let mut reporter = Reporter::new(File::from(status));
    let log = match &spec.log_file {
        Some(path) => match logging::open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!("{e}");
                let _ = reporter.send(&Report::Fatal {
                    message: e.to_string(),
                });
                return exit::FAILURE;
            }
        },
        None => None,
    };
    logging::set_target(log, &spec.process_name());
    consume::run(spec, &mut reporter)
}
