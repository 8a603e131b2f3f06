//! The command line, as clap derive types. Doc comments are the help text.
//!
//! The `celery multi` commands (`start`, `stop`, ...) are not parsed here:
//! they use multi's own argv grammar (see `multi`), so `main.rs` hands their
//! raw arguments to `multi::run` before clap sees them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The commands that belong to the `celery multi` front end.
pub const MULTI_COMMANDS: &[&str] = &[
    "start",
    "stop",
    "stopwait",
    "stop_verify",
    "restart",
    "kill",
    "show",
    "names",
    "get",
    "expand",
    "multi",
];

#[derive(Debug, Parser)]
#[command(
    name = "rmulti",
    version,
    about = "A drop-in for `celery multi` and Celery's prefork worker on Redis",
    after_help = "Multi commands (celery multi's grammar): rmulti start|stop|stopwait|restart|kill|show|names|get|expand|help ...\nRun `rmulti help` for their usage."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one worker node: a supervisor and its prefork pool.
    Worker(Box<WorkerArgs>),
    /// Send one task the way a Celery client does, and optionally wait for its result.
    Call(Box<CallArgs>),
    /// Ask the workers (celery inspect's grammar): ping, stats, active, registered, ...
    Inspect(Box<ControlArgs>),
    /// Tell the workers (celery control's grammar): revoke, shutdown, pool_grow, ...
    Control(Box<ControlArgs>),
    /// List the workers that are online (celery status).
    Status(Box<ControlArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The app: NAME.toml in the working directory, a path ending in .toml,
    /// or a Celery app's Python module (`proj`, `proj.celery:app`).
    #[arg(short = 'A', long = "app")]
    pub app: Option<String>,

    /// Node name, Celery style: `w1@%h`; a value without `@` is the host.
    #[arg(short = 'n', long = "hostname")]
    pub hostname: Option<String>,

    /// Number of pool children (default: worker_concurrency, else the CPU count).
    #[arg(short = 'c', long = "concurrency")]
    pub concurrency: Option<usize>,

    /// Comma-separated queues to consume (default: task_default_queue).
    #[arg(short = 'Q', long = "queues")]
    pub queues: Option<String>,

    /// Log level: DEBUG, INFO, WARNING, ERROR, CRITICAL (default WARNING).
    #[arg(short = 'l', long = "loglevel", default_value = "WARNING")]
    pub loglevel: String,

    /// Log file; %n %h %d %p %i %I are expanded (%I: "" for the main process, -N for child N).
    #[arg(short = 'f', long = "logfile")]
    pub logfile: Option<String>,

    /// Pidfile of the main process; %n %h %d %p are expanded.
    #[arg(long = "pidfile")]
    pub pidfile: Option<String>,

    /// Run in the background; returns once the node is ready, or fails with the reason.
    #[arg(short = 'D', long = "detach")]
    pub detach: bool,

    /// Change to this directory before anything else.
    #[arg(long = "workdir")]
    pub workdir: Option<PathBuf>,

    /// umask of the node (octal if it starts with 0, else decimal, as Celery).
    #[arg(long = "umask")]
    pub umask: Option<String>,

    /// Drop privileges to this user (name or id) when started as root.
    #[arg(long = "uid")]
    pub uid: Option<String>,

    /// Drop privileges to this group (name or id) when started as root.
    #[arg(long = "gid")]
    pub gid: Option<String>,

    /// Broker URL; overrides CELERY_BROKER_URL and the app's broker_url.
    #[arg(short = 'b', long = "broker")]
    pub broker: Option<String>,

    /// Result backend URL; overrides CELERY_RESULT_BACKEND and the app's result_backend.
    #[arg(long = "result-backend")]
    pub result_backend: Option<String>,

    /// Replace a child after it ran this many tasks.
    #[arg(long = "max-tasks-per-child")]
    pub max_tasks_per_child: Option<u64>,

    /// Replace a child after a task leaves its resident memory above this many KiB.
    #[arg(long = "max-memory-per-child")]
    pub max_memory_per_child: Option<u64>,

    /// Hard time limit in seconds: the child running the task is killed.
    #[arg(long = "time-limit")]
    pub time_limit: Option<f64>,

    /// Soft time limit in seconds: the task fails with SoftTimeLimitExceeded.
    #[arg(long = "soft-time-limit")]
    pub soft_time_limit: Option<f64>,

    /// Python interpreter for a Celery app (`-A proj` naming a Python
    /// module): default `$VIRTUAL_ENV/bin/python`, else `python3`.
    #[arg(long = "python")]
    pub python: Option<PathBuf>,

    /// Send task events (accepted for compatibility).
    #[arg(short = 'E', long = "task-events")]
    pub task_events: bool,

    /// Optimization profile (`fair` is what rmulti always does).
    #[arg(short = 'O')]
    pub optimization: Option<String>,

    /// Pool implementation; only `prefork` exists.
    #[arg(short = 'P', long = "pool")]
    pub pool: Option<String>,

    /// Accepted for compatibility; a child reserves only when idle.
    #[arg(long = "prefetch-multiplier")]
    pub prefetch_multiplier: Option<u32>,

    /// Accepted for compatibility (rmulti does no mingle).
    #[arg(long = "without-mingle")]
    pub without_mingle: bool,

    /// Accepted for compatibility (rmulti does no gossip).
    #[arg(long = "without-gossip")]
    pub without_gossip: bool,

    /// Accepted for compatibility.
    #[arg(long = "without-heartbeat")]
    pub without_heartbeat: bool,

    /// Configuration overrides after `--` (`task_acks_late=true`), as Celery's worker.
    #[arg(last = true)]
    pub config: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Task name, e.g. proj.tasks.add
    pub task: String,
    /// Positional arguments, each parsed as JSON (a bare word is a string).
    pub args: Vec<String>,
    /// The app, for its broker and backend URLs.
    #[arg(short = 'A', long = "app")]
    pub app: Option<String>,
    /// Broker URL (default: the app's, else redis://localhost:6379/0).
    #[arg(short = 'b', long = "broker")]
    pub broker: Option<String>,
    /// Result backend URL (default: the broker).
    #[arg(long = "result-backend")]
    pub result_backend: Option<String>,
    /// Keyword arguments as a JSON object.
    #[arg(long = "kwargs")]
    pub kwargs: Option<String>,
    /// Queue to publish to.
    #[arg(short = 'Q', long = "queue")]
    pub queue: Option<String>,
    /// Run no sooner than this many seconds from now.
    #[arg(long = "countdown")]
    pub countdown: Option<f64>,
    /// Message priority 0..9 (0 is served first on Redis).
    #[arg(long = "priority", default_value_t = 0)]
    pub priority: u8,
    /// Wait this many seconds for the result and print it.
    #[arg(long = "wait")]
    pub wait: Option<f64>,
}

/// `rmulti inspect|control|status`: celery's remote-control options.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// The remote command (`ping`, `revoke`, ...); none for `status`.
    pub command: Option<String>,
    /// The command's arguments, as celery's CLI takes them.
    pub args: Vec<String>,
    /// The app, for its broker URL.
    #[arg(short = 'A', long = "app")]
    pub app: Option<String>,
    /// Broker URL (default: CELERY_BROKER_URL, the app's, else redis://localhost:6379/0).
    #[arg(short = 'b', long = "broker")]
    pub broker: Option<String>,
    /// Comma separated list of destination node names.
    #[arg(short = 'd', long = "destination")]
    pub destination: Option<String>,
    /// Timeout in seconds waiting for (each) reply.
    #[arg(short = 't', long = "timeout", default_value_t = 1.0)]
    pub timeout: f64,
    /// Use json as output format.
    #[arg(short = 'j', long = "json")]
    pub json: bool,
    /// No colours (also NO_COLOR; there are none unless stdout is a terminal).
    #[arg(short = 'C', long = "no-color")]
    pub no_color: bool,
    /// Leave out the `->` marks and the node count.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}
