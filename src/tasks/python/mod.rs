//! The `python` executor: an existing Celery project's tasks, run by one
//! long-lived Python host process per pool child.
//!
//! The host is `host.py`, shipped in the binary. It is started as
//! `python -c BOOT describe|serve APP ...`, where `BOOT` reads the script
//! from stdin (a byte count line, then the script): no temporary files, and
//! `ps` shows a short command line.
//!
//! * `describe` (run once by the node's main process, and waited for, so
//!   the main process stays single-threaded) imports the app as
//!   `celery worker` does and prints its settings and tasks as one JSON
//!   object ([`Description`]); an import error exits non-zero with the
//!   traceback on stderr.
//! * `serve` (one per pool child, started before the child reports Ready)
//!   speaks the pipe protocol below and runs each task through Celery's own
//!   tracer, so the request context, signals, retry, `Reject`/`Ignore`,
//!   `update_state`, result storage, callbacks and chains are Celery's.
//!
//! # Pipe protocol, version 1
//!
//! Requests go to the host's stdin, one JSON object per line; the host
//! answers on fd 3, one JSON object per line. The host's stdout and stderr
//! are a separate pipe: whatever a task prints is logged by the child as a
//! WARNING line, as Celery's worker redirects a task's `print()`, and can
//! never corrupt the protocol.
//!
//! Host → child:
//! * `{"hello": 1, "pid": N, "tasks": [...]}` once the app is loaded (the
//!   first line; a different version is refused);
//! * `{"fatal": "traceback"}` when the app cannot be loaded (then it exits);
//! * `{"log": [levelno, "text"]}` a Python log record, any time;
//! * `{"done": {"state": "SUCCESS"|"FAILURE"|"RETRY"|"IGNORED"|"REJECTED",
//!   "runtime": secs, "requeue": bool}}` after each request.
//!
//! Child → host: `{"run": {"raw": "<the kombu envelope as reserved>"}}`.
//! `SIGUSR1` to the host means the task's soft time limit passed: the host
//! raises `SoftTimeLimitExceeded` inside the task, as billiard does.
//!
//! The host dies with its child (`PR_SET_PDEATHSIG`) and lives in the
//! child's process group, so a hard time limit kills both.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::plumbing::deathsig::die_with_parent;
use crate::plumbing::lines::LineReader;
use crate::plumbing::pipe::{cloexec_pipe, wait_readable};

pub mod template;
use template::{HostFds, Template};

/// The host script (see the module docs).
pub const HOST_SCRIPT: &str = include_str!("host.py");

/// The protocol version this binary speaks.
pub const PROTOCOL: u64 = 1;

/// Reads the script from stdin and runs it as `__main__`.
const BOOT: &str = "import sys;_n=int(sys.stdin.buffer.readline());exec(compile(sys.stdin.buffer.read(_n),'<rmulti-host>','exec'))";

/// How often a running task's host is checked for life (see `Host::run`).
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// `describe`'s exit status when the app's module does not exist (host.py's `NO_MODULE`).
const NO_MODULE: i32 = 3;

/// How many lines of a Python traceback an error message keeps.
const TAIL_LINES: usize = 12;

/// How long a host may take to load the app (a Django project's imports
/// can be slow on a loaded machine, but never this slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("cannot run {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("{0}")]
    Load(String),
    #[error("no Python module {0} is importable with {1}")]
    NoModule(String, PathBuf),
    #[error("Python host protocol: {0}")]
    Protocol(String),
    #[error("Python host I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl PythonError {
    /// A Celery app that cannot be described is a configuration error,
    /// whichever command loads it.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG
    }
}

/// The interpreter: `--python`, else `$VIRTUAL_ENV/bin/python`, else `python3`.
pub fn interpreter(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(venv) = env("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        return Path::new(&venv).join("bin/python");
    }
    PathBuf::from("python3")
}

/// Per-task options as the app declares them; `None` = the app's default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TaskInfo {
    pub acks_late: Option<bool>,
    #[serde(default)]
    pub reject_on_worker_lost: Option<bool>,
    pub time_limit: Option<f64>,
    pub soft_time_limit: Option<f64>,
    #[serde(default)]
    pub ignore_result: bool,
    pub max_retries: Option<i64>,
}

/// What `describe` prints: the settings rmulti needs and the tasks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Description {
    pub hello: u64,
    pub main: Option<String>,
    /// The app's settings by Celery's name (`app::settings::SETTINGS` reads
    /// the ones rmulti uses); `null` where Celery's is `None`.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Celery's `broker_use_ssl` / `redis_backend_use_ssl` dicts, as the
    /// `ssl_*` query options of a `rediss://` URL (`broker::url::with_ssl_options`).
    #[serde(default)]
    pub broker_use_ssl: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub redis_backend_use_ssl: Option<BTreeMap<String, String>>,
    pub tasks: BTreeMap<String, TaskInfo>,
}

/// The last `TAIL_LINES` non-empty lines of `text` (a traceback's end says what went wrong).
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

pub(crate) fn boot_command(python: &Path, mode: &str, app: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(BOOT).arg(mode).arg(app);
    cmd
}

pub(crate) fn script_header() -> Vec<u8> {
    let mut data = format!("{}\n", HOST_SCRIPT.len()).into_bytes();
    data.extend_from_slice(HOST_SCRIPT.as_bytes());
    data
}

/// Runs `describe` and waits for it (see the module docs).
/// `settings` are the Celery names (dotted inside a table:
/// `broker_transport_options.visibility_timeout`) whose values it reports.
pub fn describe(
    python: &Path,
    app: &str,
    cwd: &Path,
    settings: &[String],
) -> Result<Description, PythonError> {
    let names = serde_json::to_string(settings)
        .map_err(|e| PythonError::Protocol(format!("setting names: {e}")))?;
    let mut child = boot_command(python, "describe", app)
        .arg(names)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PythonError::Spawn(python.to_path_buf(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Python reads the script before anything else, so this cannot
        // block on a full pipe; an error only means Python exited early,
        // and its stderr says why.
        let _ = stdin.write_all(&script_header());
    }
    // Reads stdout and stderr together (poll, no threads) until exit.
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(NO_MODULE) {
        let top = app.split([':', '.']).next().unwrap_or(app);
        return Err(PythonError::NoModule(top.to_string(), python.to_path_buf()));
    }
    if !out.status.success() {
        return Err(PythonError::Load(format!(
            "Python could not load the app ({}):\n{}",
            describe_status(out.status),
            tail(&stderr)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let d: Description = serde_json::from_str(line).map_err(|e| {
        PythonError::Protocol(format!(
            "describe printed no app description ({e}): {line:?}"
        ))
    })?;
    if d.hello != PROTOCOL {
        return Err(PythonError::Protocol(format!(
            "host speaks version {}, rmulti {PROTOCOL}",
            d.hello
        )));
    }
    Ok(d)
}

/// Celery's wording for how a process ended: `signal 9 (SIGKILL)`, `exitcode 3`.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exitcode {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str()),
            Err(_) => format!("signal {sig}"),
        },
        _ => "unknown status".to_string(),
    }
}

/// How the host's run of one task ended, as Celery's tracer reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Done {
    pub state: String,
    /// Seconds; null when the task did not get to run (e.g. a failure in
    /// the tracer before it).
    #[serde(default)]
    pub runtime: Option<f64>,
    #[serde(default)]
    pub requeue: bool,
    /// Set when the host itself failed around the task (not the task).
    #[serde(default)]
    pub error: Option<String>,
    /// The task's final result meta, as Celery's Redis backend encodes it,
    /// for the child to store with the ack (the host did not write it).
    #[serde(default)]
    pub meta: Option<String>,
}

/// Why a task got no `done`.
#[derive(Debug)]
pub enum RunError {
    /// The host exited (crash, `os._exit`, OOM kill) while running the task.
    Died(ExitStatus),
    /// The host was gone before it got the request: it can be restarted
    /// and the task sent again.
    NotRunning,
    Io(std::io::Error),
    Protocol(String),
}

/// What a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub python: PathBuf,
    pub app: String,
    /// Settings rmulti changed (`-b`, `--result-backend`, `-- key=value`),
    /// applied to `app.conf` before the app is finalized.
    pub conf: Map<String, Value>,
}

/// A host's process: spawned by this child, or forked by the node's
/// template (not our child: its wait status comes on a status pipe).
enum Proc {
    Spawned(Child),
    Forked {
        pid: u32,
        status: LineReader,
        exited: Option<ExitStatus>,
    },
}

impl Proc {
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Proc::Spawned(c) => c.try_wait(),
            Proc::Forked {
                pid,
                status,
                exited,
            } => {
                if exited.is_none() {
                    let line = status.read_lines().into_iter().next();
                    if let Some(raw) = line.and_then(|l| l.trim().parse::<i32>().ok()) {
                        *exited = Some(ExitStatus::from_raw(raw));
                    } else if status.is_eof() && kill(Pid::from_raw(*pid as i32), None).is_err() {
                        // The template died before it could say how.
                        *exited = Some(ExitStatus::from_raw(1 << 8));
                    }
                }
                Ok(*exited)
            }
        }
    }

    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Proc::Spawned(c) = self {
            return c.wait();
        }
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if let Proc::Forked { status, .. } = self {
                let eof = status.is_eof();
                if !eof {
                    wait_readable(&[status.as_fd()], Some(LIVENESS_CHECK))?;
                    continue;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        match self {
            Proc::Spawned(c) => {
                let _ = c.kill();
            }
            Proc::Forked { pid, .. } => {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
        let _ = self.wait();
    }
}

/// A running host.
pub struct Host {
    child: Proc,
    /// `None` once closed (which asks the host to exit).
    stdin: Option<ChildStdin>,
    proto: LineReader,
    output: LineReader,
    pub pid: u32,
}

/// One line from the host's protocol fd.
enum Message {
    Hello(u64),
    Fatal(String),
    Log(i64, String),
    Done(Done),
    Other,
}

fn parse_message(line: &str) -> Message {
    let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(line) else {
        return Message::Other;
    };
    if let Some(v) = m.get("hello").and_then(Value::as_u64) {
        return Message::Hello(v);
    }
    if let Some(Value::String(tb)) = m.remove("fatal") {
        return Message::Fatal(tb);
    }
    if let Some(Value::Array(parts)) = m.get("log") {
        let level = parts.first().and_then(Value::as_i64).unwrap_or(30);
        let text = parts.get(1).and_then(Value::as_str).unwrap_or("");
        return Message::Log(level, text.to_string());
    }
    if let Some(done) = m.remove("done") {
        // A `done` always ends the task, even one this version cannot read.
        return Message::Done(
            serde_json::from_value::<Done>(done.clone()).unwrap_or_else(|e| Done {
                state: "FAILURE".into(),
                runtime: None,
                requeue: false,
                error: Some(format!("unreadable done from the host ({e}): {done}")),
                meta: None,
            }),
        );
    }
    Message::Other
}

/// Logs a Python log record at its level in the child's log.
fn log_record(level: i64, text: &str) {
    match level {
        l if l >= 40 => tracing::error!("{text}"),
        l if l >= 30 => tracing::warn!("{text}"),
        l if l >= 20 => tracing::info!("{text}"),
        _ => tracing::debug!("{text}"),
    }
}

/// Python's `logging` level for the child's own log level.
pub(crate) fn python_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF | LevelFilter::ERROR => 40,
        LevelFilter::WARN => 30,
        LevelFilter::INFO => 20,
        _ => 10,
    }
}

impl Host {
    /// Starts a host and waits for its hello: forked by the node's template
    /// when there is one, else spawned here. A host that cannot load the
    /// app gives `PythonError::Load` with the traceback's last lines.
    pub fn start(cfg: &HostConfig, hostname: &str) -> Result<Host, PythonError> {
        if let Some(t) = Template::from_env() {
            match Host::fork_from(&t)? {
                Some(host) => return Ok(host),
                None => {
                    tracing::warn!("No Python template to fork from: starting a host of its own")
                }
            }
        }
        Host::spawn(cfg, hostname)
    }

    /// A host forked by `template`; `None` if the template cannot give one.
    fn fork_from(t: &Template) -> Result<Option<Host>, PythonError> {
        let (req_r, req_w) = cloexec_pipe()?;
        let (proto_r, proto_w) = cloexec_pipe()?;
        let (out_r, out_w) = cloexec_pipe()?;
        let (status_r, status_w) = cloexec_pipe()?;
        let fds = HostFds {
            requests: req_r,
            protocol: proto_w,
            output: out_w,
            status: status_w,
        };
        let pid = match template::ask(t, fds) {
            Ok(pid) => pid,
            Err(e) => {
                tracing::warn!("Python template: {e}");
                return Ok(None);
            }
        };
        let mut host = Host {
            child: Proc::Forked {
                pid,
                status: LineReader::new(status_r)?,
                exited: None,
            },
            stdin: Some(ChildStdin::from(req_w)),
            proto: LineReader::new(proto_r)?,
            output: LineReader::new(out_r)?,
            pid,
        };
        host.wait_hello()
            .inspect_err(|_| host.kill())
            .map(|()| Some(host))
    }

    /// Spawns a host of its own (no template).
    fn spawn(cfg: &HostConfig, hostname: &str) -> Result<Host, PythonError> {
        let (proto_r, proto_w) = cloexec_pipe()?;
        let (out_r, out_w) = cloexec_pipe()?;
        let err_w = out_w.try_clone()?;
        let options = serde_json::json!({
            "conf": cfg.conf,
            "hostname": hostname,
            "loglevel": python_level(),
        });
        let mut cmd = boot_command(&cfg.python, "serve", &cfg.app);
        cmd.arg(options.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        let proto_fd = proto_w.as_raw_fd();
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl, getppid,
        // signal) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if proto_fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(proto_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Never outlive the pool child, whatever kills it.
                die_with_parent(parent)?;
                // The child ignores these for itself; Python gets defaults.
                // INT and TERM stay ignored: they are for the Rust processes.
                for sig in [
                    libc::SIGHUP,
                    libc::SIGUSR1,
                    libc::SIGPIPE,
                    libc::SIGTTIN,
                    libc::SIGTTOU,
                ] {
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
        drop(cmd);
        drop(proto_w);
        let pid = child.id();
        let Some(mut stdin) = child.stdin.take() else {
            return Err(PythonError::Protocol("no stdin pipe".into()));
        };
        let mut host = match (LineReader::new(proto_r), LineReader::new(out_r)) {
            (Ok(proto), Ok(output)) => {
                if let Err(e) = stdin.write_all(&script_header()) {
                    tracing::debug!("Python host exited before reading its script: {e}");
                }
                Host {
                    child: Proc::Spawned(child),
                    stdin: Some(stdin),
                    proto,
                    output,
                    pid,
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        host.wait_hello()
            .inspect_err(|_| host.kill())
            .map(|()| host)
    }

    fn wait_hello(&mut self) -> Result<(), PythonError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut output_tail = Vec::<String>::new();
        loop {
            let (proto, output) = self.poll(Some(deadline))?;
            for line in output {
                tracing::warn!("{line}");
                output_tail.push(line);
            }
            for line in proto {
                match parse_message(&line) {
                    Message::Hello(v) if v == PROTOCOL => return Ok(()),
                    Message::Hello(v) => {
                        return Err(PythonError::Protocol(format!(
                            "host speaks version {v}, rmulti {PROTOCOL}"
                        )))
                    }
                    Message::Fatal(tb) => {
                        return Err(PythonError::Load(format!(
                            "Python host could not load the app:\n{}",
                            tail(&tb)
                        )))
                    }
                    Message::Log(level, text) => log_record(level, &text),
                    Message::Done(_) | Message::Other => {
                        return Err(PythonError::Protocol(format!(
                            "unexpected line before hello: {line:?}"
                        )))
                    }
                }
            }
            if self.proto.is_eof() {
                let status = self.child.wait()?;
                return Err(PythonError::Load(format!(
                    "Python host exited during start-up ({}):\n{}",
                    describe_status(status),
                    tail(&output_tail.join("\n"))
                )));
            }
            if Instant::now() >= deadline {
                return Err(PythonError::Load(format!(
                    "Python host did not load the app within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
        }
    }

    /// Waits until either pipe has data (or `deadline`), and returns the
    /// complete lines of each: (protocol, output).
    fn poll(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(Vec<String>, Vec<String>), PythonError> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let fds: Vec<_> = [&self.proto, &self.output]
            .into_iter()
            .filter(|r| !r.is_eof())
            .map(|r| r.as_fd())
            .collect();
        if !fds.is_empty() {
            wait_readable(&fds, timeout)?;
        }
        let output = self.output.read_lines();
        let proto = self.proto.read_lines();
        Ok((proto, output))
    }

    /// Whether the process is still there (reaps it if not).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs one task: sends the reserved message and waits for `done`,
    /// logging the task's output and log records meanwhile. At `soft_limit`
    /// after the start the host gets SIGUSR1.
    pub fn run(&mut self, raw: &str, soft_limit: Option<Duration>) -> Result<Done, RunError> {
        if !self.alive() {
            return Err(RunError::NotRunning);
        }
        let mut line = serde_json::json!({"run": {"raw": raw}}).to_string();
        line.push('\n');
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(RunError::NotRunning);
        };
        if let Err(e) = stdin.write_all(line.as_bytes()) {
            return if e.kind() == std::io::ErrorKind::BrokenPipe {
                Err(RunError::NotRunning)
            } else {
                Err(RunError::Io(e))
            };
        }
        let soft_at = soft_limit.map(|d| Instant::now() + d);
        let mut soft_sent = false;
        loop {
            // Wake at least every LIVENESS_CHECK: a process the task forked
            // may hold fd 3 open after the host died, so EOF alone is not
            // proof of life.
            let check = Instant::now() + LIVENESS_CHECK;
            let deadline = Some(
                soft_at
                    .filter(|at| !soft_sent && *at < check)
                    .unwrap_or(check),
            );
            let (proto, output) = self.poll(deadline).map_err(|e| match e {
                PythonError::Io(e) => RunError::Io(e),
                other => RunError::Protocol(other.to_string()),
            })?;
            for line in output {
                tracing::warn!("{line}");
            }
            for line in proto {
                match parse_message(&line) {
                    Message::Done(d) => {
                        // Output printed just before returning belongs to this task.
                        for line in self.output.read_lines() {
                            tracing::warn!("{line}");
                        }
                        return Ok(d);
                    }
                    Message::Log(level, text) => log_record(level, &text),
                    Message::Hello(_) | Message::Fatal(_) | Message::Other => {
                        tracing::error!("Python host sent an unexpected line: {line}");
                    }
                }
            }
            let exited = if self.proto.is_eof() {
                Some(self.child.wait())
            } else {
                self.child.try_wait().transpose()
            };
            if let Some(status) = exited {
                for line in self.output.read_lines() {
                    tracing::warn!("{line}");
                }
                // A `done` written just before exiting still counts.
                for line in self.proto.read_lines() {
                    if let Message::Done(d) = parse_message(&line) {
                        return Ok(d);
                    }
                }
                return match status {
                    Ok(status) => Err(RunError::Died(status)),
                    Err(e) => Err(RunError::Io(e)),
                };
            }
            if let Some(at) = soft_at {
                if !soft_sent && Instant::now() >= at {
                    soft_sent = true;
                    let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGUSR1);
                }
            }
        }
    }

    /// Kills the host and reaps it.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Closing stdin ends the host's loop; a host stuck in a task is killed.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

/// The `-A` value and interpreter of a Python app, with the settings
/// rmulti changed, for the hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonApp {
    pub module: String,
    pub python: PathBuf,
    pub conf: Map<String, Value>,
}

impl PythonApp {
    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            python: self.python.clone(),
            app: self.module.clone(),
            conf: self.conf.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let tb = (1..=30)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let t = tail(&tb);
        assert!(t.starts_with("line 19") && t.ends_with("line 30"), "{t}");
    }

    #[test]
    fn interpreter_order() {
        let none = |_: &str| None;
        let venv = |k: &str| (k == "VIRTUAL_ENV").then(|| "/v".to_string());
        assert_eq!(
            interpreter(Some(Path::new("/x/py")), &venv),
            PathBuf::from("/x/py")
        );
        assert_eq!(interpreter(None, &venv), PathBuf::from("/v/bin/python"));
        assert_eq!(interpreter(None, &none), PathBuf::from("python3"));
    }

    #[test]
    fn messages_parse() {
        assert!(matches!(
            parse_message("{\"hello\": 1, \"pid\": 3}"),
            Message::Hello(1)
        ));
        assert!(
            matches!(parse_message("{\"log\": [20, \"hi\"]}"), Message::Log(20, ref t) if t == "hi")
        );
        match parse_message(
            "{\"done\": {\"state\": \"REJECTED\", \"runtime\": 0.5, \"requeue\": true}}",
        ) {
            Message::Done(d) => assert!(d.state == "REJECTED" && d.requeue),
            _ => panic!("not done"),
        }
        assert!(matches!(parse_message("garbage"), Message::Other));
    }
}
