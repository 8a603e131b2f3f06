//! What a pool child's death means, decided by a pure function of what the
//! main process knew of the child, the node's phase and the exit status, so
//! each case is tested alone. `Supervisor::child_exited` only acts on it.

use std::fmt;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::Phase;
use crate::node::recovery::Lost;

/// A child that died by itself sooner than this after its fork is replaced
/// only after a delay, so a child that cannot start does not spin the CPU.
pub const SHORT_LIFE: Duration = Duration::from_secs(1);
/// This many children in a row dying before they are ready (with a `fatal`
/// report, or within `SHORT_LIFE`) stop the node instead of a respawn storm.
pub const MAX_BOOT_FAILURES: u32 = 5;

/// How a child ended, as `waitpid` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

impl Exit {
    pub fn is_clean(self) -> bool {
        self == Exit::Code(0)
    }
}

/// Celery's words: `exitcode 1`, `signal 9 (SIGKILL)`.
impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exitcode {code}"),
            Exit::Signal(sig) => write!(f, "signal {} ({})", *sig as i32, sig.as_str()),
        }
    }
}

/// What the main process knew of a child when it died (its last reports
/// read).
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// It reported `ready`.
    pub ready: bool,
    /// We asked it to leave (warm or cold stop, HUP, TTOU).
    pub retiring: bool,
    /// It reported `fatal`: it cannot run at all.
    pub fatal: bool,
    /// We killed it at its task's hard time limit.
    pub killed_at_limit: bool,
    /// Since its fork.
    pub lived: Duration,
    /// Tasks it started.
    pub jobs: usize,
}

/// When the slot gets its next child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Respawn {
    Now,
    /// After `RESPAWN_DELAY`: it died by itself at once.
    Later,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Died before it was ready while the pool starts: the start fails.
    StartFailed,
    /// Died before it was ready (a `fatal` report, or within `SHORT_LIFE`)
    /// while the node runs: one more boot failure in a row.
    BootFailure(Respawn),
    /// The `MAX_BOOT_FAILURES`th boot failure in a row: the node stops.
    BootStorm,
    /// Killed by us at its task's hard time limit.
    TimeLimit,
    /// Left because we asked it to.
    Retired,
    /// SIGKILLed from outside (an operator, the OOM killer): no crash raises
    /// SIGKILL, so it is replaced at once, however young; under repeated
    /// kills a back-off would leave the slot empty most of the time.
    Killed,
    /// Left by itself, cleanly, after running tasks: `--max-tasks-per-child`
    /// or `--max-memory-per-child`.
    Recycled,
    /// Died by itself after it was ready, or too late to count as a boot
    /// failure.
    Crashed(Respawn),
}

impl ExitKind {
    pub fn respawn(self) -> Respawn {
        match self {
            ExitKind::BootFailure(r) | ExitKind::Crashed(r) => r,
            _ => Respawn::Now,
        }
    }

    /// Why the task the child was running is lost (`time_limit`: that task's).
    pub fn lost(self, phase: Phase, exit: Exit, time_limit: f64) -> Lost {
        match (self, phase) {
            (ExitKind::TimeLimit, _) => Lost::TimeLimit(time_limit),
            (_, Phase::Cold) => Lost::ColdShutdown,
            _ => Lost::Died(exit.to_string()),
        }
    }
}

/// What a child's death means. `boot_failures`: children that died before
/// they were ready since one last became ready.
pub fn classify(child: &Facts, phase: Phase, exit: Exit, boot_failures: u32) -> ExitKind {
    let booting = !child.ready && !child.retiring;
    let short = child.lived < SHORT_LIFE;
    let sigkilled = exit == Exit::Signal(Signal::SIGKILL);
    let by_itself = if short && !sigkilled {
        Respawn::Later
    } else {
        Respawn::Now
    };
    if booting && phase == Phase::Starting {
        return ExitKind::StartFailed;
    }
    if booting && phase == Phase::Running && (child.fatal || short) {
        return if boot_failures + 1 >= MAX_BOOT_FAILURES {
            ExitKind::BootStorm
        } else {
            ExitKind::BootFailure(by_itself)
        };
    }
    if child.killed_at_limit {
        ExitKind::TimeLimit
    } else if child.retiring {
        ExitKind::Retired
    } else if sigkilled {
        ExitKind::Killed
    } else if exit.is_clean() && child.jobs > 0 {
        ExitKind::Recycled
    } else {
        ExitKind::Crashed(by_itself)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: Exit = Exit::Signal(Signal::SIGKILL);
    const CLEAN: Exit = Exit::Code(0);
    const FAILED: Exit = Exit::Code(1);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn booting(lived: f64) -> Facts {
        Facts {
            lived: secs(lived),
            ..Facts::default()
        }
    }

    fn working(lived: f64, jobs: usize) -> Facts {
        Facts {
            ready: true,
            lived: secs(lived),
            jobs,
            ..Facts::default()
        }
    }

    #[test]
    fn crash_at_boot() {
        let c = booting(0.2);
        assert_eq!(
            classify(&c, Phase::Running, FAILED, 0),
            ExitKind::BootFailure(Respawn::Later)
        );
        let segv = Exit::Signal(Signal::SIGSEGV);
        assert_eq!(
            classify(&c, Phase::Running, segv, 2),
            ExitKind::BootFailure(Respawn::Later)
        );
        // While the pool starts, one is enough to fail the start.
        assert_eq!(
            classify(&c, Phase::Starting, FAILED, 0),
            ExitKind::StartFailed
        );
        // Not ready after a long life, without a fatal report: a crash.
        assert_eq!(
            classify(&booting(30.0), Phase::Running, FAILED, 0),
            ExitKind::Crashed(Respawn::Now)
        );
    }

    #[test]
    fn fatal_report() {
        let c = Facts {
            fatal: true,
            ..booting(3.0)
        };
        // However long it took to say so, it could not start.
        assert_eq!(
            classify(&c, Phase::Running, FAILED, 0),
            ExitKind::BootFailure(Respawn::Now)
        );
        assert_eq!(
            classify(
                &Facts {
                    fatal: true,
                    ..booting(0.1)
                },
                Phase::Running,
                FAILED,
                0
            ),
            ExitKind::BootFailure(Respawn::Later)
        );
        assert_eq!(
            classify(&c, Phase::Starting, FAILED, 0),
            ExitKind::StartFailed
        );
    }

    #[test]
    fn boot_storm() {
        let c = booting(0.1);
        for before in 0..MAX_BOOT_FAILURES - 1 {
            assert!(matches!(
                classify(&c, Phase::Running, FAILED, before),
                ExitKind::BootFailure(_)
            ));
        }
        assert_eq!(
            classify(&c, Phase::Running, FAILED, MAX_BOOT_FAILURES - 1),
            ExitKind::BootStorm
        );
        // A ready child is no boot failure, whatever came before.
        assert_eq!(
            classify(&working(0.5, 0), Phase::Running, FAILED, 4),
            ExitKind::Crashed(Respawn::Later)
        );
    }

    #[test]
    fn sigkill_from_outside() {
        assert_eq!(
            classify(&working(10.0, 3), Phase::Running, KILL, 0),
            ExitKind::Killed
        );
        // Replaced at once even when young: no crash raises SIGKILL.
        assert_eq!(
            classify(&working(0.1, 1), Phase::Running, KILL, 0),
            ExitKind::Killed
        );
        assert_eq!(KILL.to_string(), "signal 9 (SIGKILL)");
        // Before it was ready it still counts towards a storm, without delay.
        assert_eq!(
            classify(&booting(0.1), Phase::Running, KILL, 0),
            ExitKind::BootFailure(Respawn::Now)
        );
    }

    #[test]
    fn hard_time_limit() {
        let c = Facts {
            killed_at_limit: true,
            ..working(5.0, 1)
        };
        let kind = classify(&c, Phase::Running, KILL, 0);
        assert_eq!(kind, ExitKind::TimeLimit);
        assert_eq!(kind.respawn(), Respawn::Now);
        assert_eq!(kind.lost(Phase::Running, KILL, 2.5), Lost::TimeLimit(2.5));
        // Even in a cold shutdown, the limit is what killed the task.
        let c = Facts {
            retiring: true,
            ..c
        };
        assert_eq!(classify(&c, Phase::Cold, KILL, 0), ExitKind::TimeLimit);
        assert_eq!(kind.lost(Phase::Cold, KILL, 2.5), Lost::TimeLimit(2.5));
    }

    #[test]
    fn retiring_hup_ttou_and_shutdown() {
        let c = Facts {
            retiring: true,
            ..working(0.2, 1)
        };
        for phase in [Phase::Running, Phase::Warm, Phase::Starting] {
            let kind = classify(&c, phase, CLEAN, 0);
            assert_eq!(kind, ExitKind::Retired);
            assert_eq!(kind.respawn(), Respawn::Now);
        }
        // Asked to leave before it was ready: expected, not a failed start.
        let c = Facts {
            retiring: true,
            ..booting(0.1)
        };
        assert_eq!(classify(&c, Phase::Starting, KILL, 0), ExitKind::Retired);
        assert_eq!(classify(&c, Phase::Running, CLEAN, 4), ExitKind::Retired);
        // A cold shutdown's task is lost to it, whatever the signal.
        assert_eq!(
            ExitKind::Retired.lost(Phase::Cold, KILL, 0.0),
            Lost::ColdShutdown
        );
        assert_eq!(
            ExitKind::Retired.lost(Phase::Warm, KILL, 0.0),
            Lost::Died("signal 9 (SIGKILL)".into())
        );
    }

    #[test]
    fn max_tasks_per_child() {
        // Many quick tasks: young, but it left cleanly after running them.
        let kind = classify(&working(0.3, 10), Phase::Running, CLEAN, 0);
        assert_eq!(kind, ExitKind::Recycled);
        assert_eq!(kind.respawn(), Respawn::Now);
    }

    #[test]
    fn max_memory_per_child() {
        let kind = classify(&working(7.0, 1), Phase::Running, CLEAN, 0);
        assert_eq!(kind, ExitKind::Recycled);
        assert_eq!(
            classify(&working(0.4, 1), Phase::Running, CLEAN, 0),
            ExitKind::Recycled
        );
    }

    #[test]
    fn crash_after_ready() {
        let young = classify(&working(0.5, 1), Phase::Running, FAILED, 0);
        assert_eq!(young, ExitKind::Crashed(Respawn::Later));
        // Exit 0 without a task is not a recycle: it should not have left.
        assert_eq!(
            classify(&working(0.5, 0), Phase::Running, CLEAN, 0),
            ExitKind::Crashed(Respawn::Later)
        );
        assert_eq!(
            classify(&working(60.0, 4), Phase::Running, FAILED, 0),
            ExitKind::Crashed(Respawn::Now)
        );
        assert_eq!(
            young.lost(Phase::Running, FAILED, 0.0),
            Lost::Died("exitcode 1".into())
        );
    }
}
