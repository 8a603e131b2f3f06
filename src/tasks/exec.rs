//! `exec` tasks: one process per run, `{"id","task","args","kwargs"}` on stdin,
//! the JSON result on stdout; a non-zero exit is a FAILURE carrying stderr.
//!
//! One thread drives all three pipes with `poll(2)`, so a command that
//! writes a lot before reading its input cannot deadlock us, and the soft
//! time limit is enforced from the same loop.

use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::{Invocation, Outcome, TaskError};
use crate::plumbing::deathsig::die_with_parent;
use crate::plumbing::pipe::{drain, set_nonblocking};

/// How long a command gets between SIGTERM (soft limit) and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How often the loop looks at the process itself, for commands that
/// exit while a grandchild still holds their stdout open.
const EXIT_CHECK: Duration = Duration::from_millis(50);

pub fn run(argv: &[String], inv: &Invocation) -> Outcome {
    let Some(program) = argv.first() else {
        return Err(TaskError::raised(
            inv.task,
            "ValueError",
            "builtins",
            "exec task has an empty command",
        ));
    };
    let request = json!({"id": inv.id, "task": inv.task, "args": inv.args, "kwargs": inv.kwargs});
    let input = request.to_string().into_bytes();

    let mut child = match spawn(argv) {
        Ok(child) => child,
        Err(err) => return Err(spawn_error(inv.task, program, &err)),
    };
    let started = Instant::now();
    let soft_deadline = inv.soft_time_limit.map(|limit| started + limit);

    let run = drive(&mut child, &input, soft_deadline);
    let Run {
        stdout,
        stderr,
        status,
        soft_limited,
    } = match run {
        Ok(run) => run,
        Err(err) => {
            // The process must not outlive a run we have given up on.
            kill_group(&child, Signal::SIGKILL);
            let _ = child.wait();
            return Err(TaskError::raised(
                inv.task,
                "OSError",
                "builtins",
                format!("exec task {program}: {err}"),
            ));
        }
    };
    let stderr = String::from_utf8_lossy(&stderr).into_owned();

    if soft_limited {
        let mut err = TaskError::soft_time_limit_exceeded(inv.task);
        if !stderr.is_empty() {
            err.traceback = format!("{stderr}\n{}", err.traceback);
        }
        return Err(err);
    }
    if !status.success() {
        let what = match (status.code(), status.signal()) {
            (Some(code), _) => format!("command exited with status {code}"),
            (None, Some(signal)) => format!("command killed by signal {signal}"),
            (None, None) => format!("command ended with {status}"),
        };
        let trimmed = stderr.trim();
        let message = if trimmed.is_empty() {
            what
        } else {
            format!("{what}: {trimmed}")
        };
        let mut err = TaskError::raised(inv.task, "RuntimeError", "builtins", message);
        if !stderr.is_empty() {
            err.traceback = stderr;
        }
        return Err(err);
    }
    // Celery logs what a task prints as WARNING; do the same for stderr.
    for line in stderr.lines() {
        tracing::warn!(task = inv.task, id = inv.id, "{line}");
    }
    let text = String::from_utf8_lossy(&stdout);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|err| {
        TaskError::value_error(inv.task, format!("exec task printed invalid JSON: {err}"))
    })
}

fn spawn(argv: &[String]) -> std::io::Result<Child> {
    let parent = std::process::id();
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a soft limit stops the command's children too
    // (`sh -c` scripts) rather than leaving them holding our pipes.
    command.process_group(0);
    // SAFETY: die_with_parent only makes async-signal-safe calls.
    // A killed pool child must not leave its task running.
    unsafe {
        command.pre_exec(move || die_with_parent(parent as i32));
    }
    command.spawn()
}

/// Python's wording for the common spawn failures, naming the command.
fn spawn_error(task: &str, program: &str, err: &std::io::Error) -> TaskError {
    let (exc_type, errno) = match err.kind() {
        ErrorKind::NotFound => ("FileNotFoundError", "[Errno 2] No such file or directory"),
        ErrorKind::PermissionDenied => ("PermissionError", "[Errno 13] Permission denied"),
        _ => ("OSError", ""),
    };
    let message = if errno.is_empty() {
        format!("cannot run {program:?}: {err}")
    } else {
        format!("{errno}: '{program}'")
    };
    TaskError::raised(task, exc_type, "builtins", message)
}

struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: ExitStatus,
    soft_limited: bool,
}

fn kill_group(child: &Child, signal: Signal) {
    // The group may already be gone; nothing to do then.
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Feeds stdin, collects stdout/stderr and waits, enforcing the soft limit
/// (SIGTERM, then SIGKILL after `TERM_GRACE`).
fn drive(child: &mut Child, input: &[u8], soft_deadline: Option<Instant>) -> std::io::Result<Run> {
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let mut stdout: Option<ChildStdout> = child.stdout.take();
    let mut stderr: Option<ChildStderr> = child.stderr.take();
    for fd in [
        stdin.as_ref().map(|f| f.as_raw_fd()),
        stdout.as_ref().map(|f| f.as_raw_fd()),
        stderr.as_ref().map(|f| f.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(&fd)?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut written = 0;
    let mut soft_limited = false;
    let mut kill_at: Option<Instant> = None;
    let mut status: Option<ExitStatus> = None;

    loop {
        if written >= input.len() {
            stdin = None; // EOF tells the command its input is complete.
        }
        let now = Instant::now();
        if status.is_none() {
            status = child.try_wait()?;
        }
        // Checked before the deadlines, so a command finishing just in time
        // is not failed. Once the process is gone, only what is already
        // buffered is ours: a grandchild holding the pipes open must not
        // keep us waiting.
        if let Some(status) = status {
            if let Some(f) = stdout.as_mut() {
                drain(f, &mut out)?;
            }
            if let Some(f) = stderr.as_mut() {
                drain(f, &mut err)?;
            }
            return Ok(Run {
                stdout: out,
                stderr: err,
                status,
                soft_limited,
            });
        }
        if !soft_limited && soft_deadline.is_some_and(|d| now >= d) {
            soft_limited = true;
            kill_group(child, Signal::SIGTERM);
            kill_at = Some(now + TERM_GRACE);
        }
        if kill_at.is_some_and(|k| now >= k) {
            kill_group(child, Signal::SIGKILL);
            kill_at = None;
        }
        let pending = if soft_limited { None } else { soft_deadline };
        if stdout.is_none() && stderr.is_none() && stdin.is_none() {
            // Only the exit remains and poll has nothing to wait on.
            if pending.is_none() && kill_at.is_none() {
                status = Some(child.wait()?);
            } else {
                std::thread::sleep(Duration::from_millis(2).min(time_left(now, pending, kill_at)));
            }
            continue;
        }

        let timeout = EXIT_CHECK.min(time_left(now, pending, kill_at));
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::ZERO);
        let (in_ready, out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(3);
            if let Some(f) = &stdin {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
            }
            if let Some(f) = &stdout {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            }
            if let Some(f) = &stderr {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut ready = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()));
            let in_ready = stdin.is_some() && ready.next().unwrap_or(false);
            let out_ready = stdout.is_some() && ready.next().unwrap_or(false);
            let err_ready = stderr.is_some() && ready.next().unwrap_or(false);
            (in_ready, out_ready, err_ready)
        };
        if in_ready {
            if let Some(f) = stdin.as_mut() {
                match f.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock
                            || e.kind() == ErrorKind::Interrupted => {}
                    // The command does not want (the rest of) its input.
                    Err(_) => written = input.len(),
                }
            }
        }
        if out_ready {
            if let Some(f) = stdout.as_mut() {
                if drain(f, &mut out)? {
                    stdout = None;
                }
            }
        }
        if err_ready {
            if let Some(f) = stderr.as_mut() {
                if drain(f, &mut err)? {
                    stderr = None;
                }
            }
        }
    }
}

fn time_left(now: Instant, a: Option<Instant>, b: Option<Instant>) -> Duration {
    [a, b]
        .into_iter()
        .flatten()
        .map(|t| t.saturating_duration_since(now))
        .min()
        .unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn call(argv: &[String], args: Value, soft: Option<Duration>) -> Outcome {
        let args = args.as_array().unwrap().clone();
        let mut kwargs = Map::new();
        kwargs.insert("k".into(), json!("v"));
        let inv = Invocation {
            id: "id-1",
            task: "proj.tasks.ex",
            args: &args,
            kwargs: &kwargs,
            soft_time_limit: soft,
        };
        run(argv, &inv)
    }

    #[test]
    fn success_parses_stdout() {
        assert_eq!(
            call(&sh("echo '{\"a\": [1, 2]}'"), json!([]), None).unwrap(),
            json!({"a": [1, 2]})
        );
        assert_eq!(call(&sh("true"), json!([]), None).unwrap(), Value::Null);
        assert_eq!(
            call(&sh("echo 'warned' >&2; echo 42"), json!([]), None).unwrap(),
            json!(42)
        );
    }

    #[test]
    fn request_arrives_on_stdin() {
        let got = call(&sh("cat"), json!([1, "two"]), None).unwrap();
        assert_eq!(
            got,
            json!({"id": "id-1", "task": "proj.tasks.ex", "args": [1, "two"], "kwargs": {"k": "v"}})
        );
    }

    #[test]
    fn python_can_compute_from_args() {
        if Command::new("python3").arg("-c").arg("1").output().is_err() {
            return;
        }
        let argv: Vec<String> = [
            "python3",
            "-c",
            "import json,sys; r=json.load(sys.stdin); print(json.dumps(sum(r['args'])))",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(call(&argv, json!([2, 3, 4]), None).unwrap(), json!(9));
    }

    #[test]
    fn large_input_and_output_do_not_deadlock() {
        let big: Vec<Value> = (0..200_000).map(Value::from).collect();
        // Writes 1 MB before reading stdin: a naive write-then-read would hang.
        let script = "head -c 1000000 /dev/zero | tr '\\0' ' ' >&2; cat";
        let got = call(&sh(script), json!(big), None).unwrap();
        assert_eq!(got["args"].as_array().unwrap().len(), 200_000);
    }

    #[test]
    fn non_zero_exit_carries_stderr() {
        let err = call(&sh("echo 'it broke' >&2; exit 3"), json!([]), None).unwrap_err();
        assert_eq!(err.exc.exc_type, "RuntimeError");
        assert_eq!(err.exc.exc_module.as_deref(), Some("builtins"));
        assert_eq!(
            err.exc.exc_message,
            vec![json!("command exited with status 3: it broke")]
        );
        assert_eq!(err.traceback, "it broke\n");
        let err = call(&sh("exit 1"), json!([]), None).unwrap_err();
        assert_eq!(
            err.exc.exc_message,
            vec![json!("command exited with status 1")]
        );
    }

    #[test]
    fn killed_by_signal() {
        let err = call(&sh("kill -9 $$"), json!([]), None).unwrap_err();
        assert_eq!(
            err.exc.exc_message,
            vec![json!("command killed by signal 9")]
        );
    }

    #[test]
    fn invalid_json_is_a_value_error() {
        let err = call(&sh("echo 'not json'"), json!([]), None).unwrap_err();
        assert_eq!(err.exc.exc_type, "ValueError");
        let message = err.exc.exc_message[0].as_str().unwrap();
        assert!(
            message.starts_with("exec task printed invalid JSON: "),
            "{message}"
        );
    }

    #[test]
    fn missing_command_names_it() {
        let argv = vec!["/nonexistent/rmulti-task".to_string()];
        let err = call(&argv, json!([]), None).unwrap_err();
        assert_eq!(err.exc.exc_type, "FileNotFoundError");
        assert_eq!(
            err.exc.exc_message,
            vec![json!(
                "[Errno 2] No such file or directory: '/nonexistent/rmulti-task'"
            )]
        );
        assert_eq!(
            call(&[], json!([]), None).unwrap_err().exc.exc_type,
            "ValueError"
        );
    }

    #[test]
    fn soft_time_limit_terminates() {
        let start = Instant::now();
        let err = call(
            &sh("sleep 10; echo 1"),
            json!([]),
            Some(Duration::from_millis(100)),
        )
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.exc.exc_type, "SoftTimeLimitExceeded");
        assert_eq!(err.exc.exc_module.as_deref(), Some("billiard.exceptions"));
        assert_eq!(err.exc.exc_message, vec![json!("SoftTimeLimitExceeded()")]);
    }

    #[test]
    fn soft_time_limit_kills_a_command_ignoring_term() {
        let start = Instant::now();
        let err = call(
            &sh("trap '' TERM; sleep 10"),
            json!([]),
            Some(Duration::from_millis(100)),
        )
        .unwrap_err();
        let took = start.elapsed();
        assert!(
            took >= TERM_GRACE && took < TERM_GRACE + Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(err.exc.exc_type, "SoftTimeLimitExceeded");
    }

    #[test]
    fn within_soft_limit_succeeds() {
        assert_eq!(
            call(&sh("echo 7"), json!([]), Some(Duration::from_secs(5))).unwrap(),
            json!(7)
        );
    }

    #[test]
    fn background_grandchild_does_not_hold_us() {
        let start = Instant::now();
        // The grandchild inherits stdout; its own group kill is not our job here.
        let got = call(&sh("(sleep 3 &) ; echo 5"), json!([]), None).unwrap();
        assert_eq!(got, json!(5));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
