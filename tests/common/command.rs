//! The `rmulti` command builder around the real binary: every run has a
//! deadline, so a hung `rmulti` fails the test instead of hanging CI.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::app::TestDir;
use super::guard::{kill_group_and_tree, Spawned};
use super::poll::wait_until;

/// The binary under test.
pub fn rmulti_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rmulti"))
}

/// `rmulti <args>` run in a test dir, with the Celery variables of the
/// developer's shell removed so only the test's app file counts.
pub struct Rmulti {
    cmd: Command,
    display: Vec<String>,
}

impl Rmulti {
    pub fn new(dir: &TestDir) -> Rmulti {
        Rmulti::in_dir(dir.path())
    }

    pub fn in_dir(cwd: &Path) -> Rmulti {
        let mut cmd = Command::new(rmulti_bin());
        cmd.current_dir(cwd).stdin(Stdio::null());
        for var in ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "C_FAKEFORK"] {
            cmd.env_remove(var);
        }
        Rmulti {
            cmd,
            display: vec!["rmulti".into()],
        }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Rmulti {
        self.display.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Rmulti
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Rmulti {
        self.cmd.env(k, v);
        self
    }

    /// The underlying command, for anything not covered here.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Removes `k` from the environment the command gets.
    pub fn env_remove(mut self, k: &str) -> Rmulti {
        self.cmd.env_remove(k);
        self
    }

    /// Runs to completion, with a deadline: a hung `rmulti` is killed and
    /// the test fails instead of hanging CI.
    pub fn run(mut self) -> Run {
        let shown = self.display.join(" ");
        run_with_deadline(&mut self.cmd, shown)
    }

    /// Starts it in the background (a foreground worker, say) in its own
    /// process group; the returned guard kills the group on drop.
    pub fn spawn(mut self) -> Spawned {
        let shown = self.display.join(" ");
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        Spawned { child, shown }
    }
}

/// Runs `cmd` to completion in a process group of its own, its output
/// captured; if it has not finished within 60 s, its group and every
/// descendant are SIGKILLed and the test fails (with `shown` and the output
/// so far) instead of hanging CI.
pub fn run_with_deadline(cmd: &mut Command, shown: String) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let pid = child.id() as i32;
    let done = wait_until(Duration::from_secs(60), || {
        !matches!(child.try_wait(), Ok(None))
    });
    if !done {
        kill_group_and_tree(pid);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {shown}: {e}"));
    assert!(
        done,
        "{shown} did not finish within 60 s (killed)\n{}",
        Run::describe_output(&out)
    );
    Run { shown, out }
}

/// The outcome of [`Rmulti::run`] and [`run_with_deadline`].
pub struct Run {
    pub shown: String,
    pub out: Output,
}

impl Run {
    fn describe_output(out: &Output) -> String {
        format!(
            "status: {}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Asserts exit 0 and returns self; the failure message shows both streams.
    pub fn success(self) -> Run {
        assert!(
            self.out.status.success(),
            "{} failed\n{}",
            self.shown,
            Run::describe_output(&self.out)
        );
        self
    }

    /// Asserts the exit status.
    pub fn code_is(self, code: i32) -> Run {
        assert_eq!(
            self.out.status.code(),
            Some(code),
            "{}: unexpected exit status\n{}",
            self.shown,
            Run::describe_output(&self.out)
        );
        self
    }
}
