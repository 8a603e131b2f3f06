//! The template: one Python process per node that loads the app once and
//! forks every host from it, so hosts share the app's pages copy-on-write.
//!
//! The node's main process [`spawn`]s it (a spawned process, not a fork:
//! the main process stays single-threaded and Python-free) and names it to
//! its pool children in the environment ([`ENV`]: `PID ADDRESS`). A child's
//! `Host::start` [`ask`]s it for a host over an abstract unix socket,
//! passing the host's pipes as SCM_RIGHTS with its process group; the
//! template forks a host that adopts the pipes and joins the group (so a
//! hard time limit's `killpg` takes it too), and writes the host's wait
//! status to the status pipe when it reaps it. host.py's `Template` is the
//! other side.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use nix::unistd::{getpgrp, Pid};

use super::{boot_command, python_level, script_header, HostConfig, PythonError};
use crate::plumbing::deathsig::die_with_parent;
use crate::plumbing::pipe::cloexec_pipe;

/// The variable naming the node's template to its pool children.
pub const ENV: &str = "RMULTI_TEMPLATE";

/// How long a child waits for a template still loading the app.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the template may take to fork a host and say its pid.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running template, as its node's main process knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub pid: Pid,
    /// The abstract socket name (without the leading NUL).
    pub address: String,
}

impl Template {
    /// The `ENV` value for the pool children.
    pub fn env_value(&self) -> String {
        format!("{} {}", self.pid, self.address)
    }

    /// The template named by `ENV`, if any.
    pub fn from_env() -> Option<Template> {
        Template::parse(&std::env::var(ENV).ok()?)
    }

    fn parse(value: &str) -> Option<Template> {
        let (pid, address) = value.split_once(' ')?;
        Some(Template {
            pid: Pid::from_raw(pid.parse().ok()?),
            address: address.to_string(),
        })
    }

    fn alive(&self) -> bool {
        kill(self.pid, None).is_ok()
    }
}

/// Starts a template for `cfg` (not waited for: children wait for it when
/// they ask for a host). It dies with the calling process, whose main
/// thread must be the caller; the caller reaps it. Returns it with the read
/// end of its stdout and stderr (one pipe): a detached node's stdio is
/// /dev/null, and what the template prints (an import's traceback, a
/// recorder's error) belongs in the node's log.
pub fn spawn(
    cfg: &HostConfig,
    hostname: &str,
    address: &str,
) -> Result<(Template, OwnedFd), PythonError> {
    let options = serde_json::json!({
        "conf": cfg.conf,
        "hostname": hostname,
        "loglevel": python_level(),
        "address": address,
    });
    let (output, output_w) =
        cloexec_pipe().map_err(|e| PythonError::Spawn(cfg.python.clone(), e))?;
    let output_w2 = output_w
        .try_clone()
        .map_err(|e| PythonError::Spawn(cfg.python.clone(), e))?;
    let mut cmd = boot_command(&cfg.python, "template", &cfg.app);
    cmd.arg(options.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::from(output_w))
        .stderr(Stdio::from(output_w2));
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (prctl, getppid, signal) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            die_with_parent(parent)?;
            for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGPIPE, libc::SIGCHLD] {
                libc::signal(sig, libc::SIG_DFL);
            }
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| PythonError::Spawn(cfg.python.clone(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The script fits in the pipe's buffer: this does not wait for Python.
        let _ = stdin.write_all(&script_header());
    }
    let template = Template {
        pid: Pid::from_raw(child.id() as i32),
        address: address.to_string(),
    };
    // `cmd` holds the write ends until dropped: EOF must mean the template
    // (and its hosts, which share the pipe only until they adopt their own)
    // is gone.
    drop(cmd);
    Ok((template, output))
}

/// Why a template could not give a host (the child then starts its own).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the template pid:{0} is gone")]
    Gone(Pid),
    #[error("the template did not listen within {0:?}")]
    NotReady(Duration),
    #[error("template socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("template socket: {0}")]
    Sys(#[from] nix::Error),
    #[error("the template answered {0:?}")]
    Answer(String),
}

/// The host's ends of its pipes, handed to the template.
pub struct HostFds {
    pub requests: OwnedFd,
    pub protocol: OwnedFd,
    pub output: OwnedFd,
    pub status: OwnedFd,
}

/// Asks `template` to fork a host with `fds`, in this process's group;
/// returns the host's pid. The fds are closed here once sent.
pub fn ask(template: &Template, fds: HostFds) -> Result<u32, AskError> {
    let addr = SocketAddr::from_abstract_name(template.address.as_bytes())?;
    let deadline = Instant::now() + READY_TIMEOUT;
    // Until the template has loaded the app it does not listen.
    let mut stream = loop {
        match UnixStream::connect_addr(&addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                tracing::debug!("template connect: {e}");
                return Err(AskError::NotReady(READY_TIMEOUT));
            }
            Err(_) if !template.alive() => return Err(AskError::Gone(template.pid)),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let request =
        serde_json::json!({"pgid": getpgrp().as_raw(), "pid": std::process::id()}).to_string();
    let raw = [
        fds.requests.as_raw_fd(),
        fds.protocol.as_raw_fd(),
        fds.output.as_raw_fd(),
        fds.status.as_raw_fd(),
    ];
    sendmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &[IoSlice::new(request.as_bytes())],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )?;
    drop(fds);
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .trim()
        .parse()
        .map_err(|_| AskError::Answer(answer.clone()))
}

/// An outcome the Rust processes decided (a task lost with its child, a
/// revoked or expired one, a host failing around a task) for an app whose
/// results only Python can write (`AppConfig::results_in_python`). The
/// template forks a short-lived recorder that stores it through the app's
/// own backend, with the request the message carries (so chords and
/// errbacks go on as under Celery's worker); host.py's `record`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// The result meta as rmulti stores it on Redis (`ResultMeta::to_json`).
    pub meta: serde_json::Value,
    /// The task's name, when known.
    pub task: Option<String>,
    /// The task's message, when at hand: the request context comes from it.
    pub raw: Option<String>,
}

impl Record {
    /// The task id the record is about, for log lines.
    pub fn task_id(&self) -> &str {
        self.meta
            .get("task_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
    }
}

/// Hands `record` to `template`, waiting up to `patience` for it to listen
/// (the main process passes zero: it keeps the record for a later turn).
/// Returns once the template has forked the recorder.
pub fn record(template: &Template, record: &Record, patience: Duration) -> Result<(), AskError> {
    let addr = SocketAddr::from_abstract_name(template.address.as_bytes())?;
    let deadline = Instant::now() + patience;
    let mut stream = loop {
        match UnixStream::connect_addr(&addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() >= deadline => return Err(AskError::NotReady(patience)),
            Err(_) if !template.alive() => return Err(AskError::Gone(template.pid)),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let line = serde_json::json!({ "record": record }).to_string();
    stream.write_all(line.as_bytes())?;
    // EOF ends the request: a message may be larger than one read.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(()),
        other => Err(AskError::Answer(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_value_round_trips() {
        let t = Template {
            pid: Pid::from_raw(42),
            address: "rmulti-template-w1@h-7-1".into(),
        };
        assert_eq!(Template::parse(&t.env_value()), Some(t));
        assert_eq!(Template::parse("junk"), None);
    }
}
