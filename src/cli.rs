//! The command line, as clap derive types. Doc comments are the help text.
//!
//! The `celery multi` commands (`start`, `stop`, ...) are not parsed here:
//! they use multi's own argv grammar (see `multi`), so `main.rs` hands their
//! raw arguments to `multi::run` before clap sees them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;

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

/// The last lines of `rmulti --help` and `rmulti help`: each names the other.
pub const HELP_FOOTER: &str = "\
Multi commands (celery multi's grammar): rmulti start|stop|stopwait|stop_verify|restart|kill|show|names|get|expand ...
  rmulti help                 the multi commands' usage
  rmulti help worker|call     a command's options (same as rmulti worker --help)
  rmulti --version            the version (rmulti multi --version: multi's banner)";

#[derive(Debug, Parser)]
#[command(
    name = "rmulti",
    version,
    about = "A drop-in for `celery multi` and Celery's prefork worker on Redis",
    disable_help_subcommand = true,
    after_help = HELP_FOOTER
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

/// `-c`: a number of children, or `auto` (the CPUs this process may use:
/// its affinity mask and cgroup CPU quota, as Celery's `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Auto,
    Fixed(usize),
}

fn parse_concurrency(text: &str) -> Result<Concurrency, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    text.trim()
        .parse()
        .map(Concurrency::Fixed)
        .map_err(|_| format!("expected a number of processes or `auto`, got {text:?}"))
}

fn parse_loglevel(text: &str) -> Result<LevelFilter, String> {
    crate::logging::parse_level(text).map_err(|e| e.to_string())
}

/// `--autoscale MAX,MIN` (either order, as Celery: the larger is the
/// maximum; a single number is the maximum with a minimum of 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscaleArg {
    pub max: usize,
    pub min: usize,
}

fn parse_autoscale(text: &str) -> Result<AutoscaleArg, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let numbers = parts
        .iter()
        .map(|p| p.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("expected MAX,MIN (two comma-separated integers), got {text:?}"))?;
    match numbers[..] {
        [max] if max > 0 => Ok(AutoscaleArg { max, min: 0 }),
        [a, b] if a.max(b) > 0 => Ok(AutoscaleArg {
            max: a.max(b),
            min: a.min(b),
        }),
        _ => Err(format!(
            "expected MAX,MIN with a maximum of at least 1, got {text:?}"
        )),
    }
}

#[derive(Debug, Clone, Args)]
// A flag given twice takes its last value, as Celery's click options do
// (`-c 1 -c 4` is 4): init scripts append their options to defaults.
#[command(after_help = WORKER_AFTER_HELP, args_override_self = true)]
pub struct WorkerArgs {
    /// The app: NAME.toml in the working directory, a path ending in .toml,
    /// or a Celery app's Python module (`proj`, `proj.celery:app`).
    #[arg(short = 'A', long = "app")]
    pub app: Option<String>,

    /// Node name, Celery style: `w1@%h`; a value without `@` is the host.
    #[arg(short = 'n', long = "hostname")]
    pub hostname: Option<String>,

    /// Number of pool children, or `auto` (the CPUs this process may use,
    /// cgroup quota and affinity included). Default: worker_concurrency,
    /// else the CPU count.
    #[arg(short = 'c', long = "concurrency", value_parser = parse_concurrency)]
    pub concurrency: Option<Concurrency>,

    /// Grow the pool up to MAX children while tasks wait, and shrink it
    /// back to MIN after 30 s without new work (AUTOSCALE_KEEPALIVE), as
    /// Celery's autoscaler. Replaces -c.
    #[arg(long = "autoscale", value_name = "MAX,MIN", value_parser = parse_autoscale)]
    pub autoscale: Option<AutoscaleArg>,

    /// Queues to consume, comma-separated (default: task_default_queue).
    #[arg(
        short = 'Q',
        long = "queues",
        value_delimiter = ',',
        value_name = "QUEUE,..."
    )]
    pub queues: Vec<String>,

    /// Queues not to consume, comma-separated: removed from -Q (or from the
    /// default queue).
    #[arg(
        short = 'X',
        long = "exclude-queues",
        value_delimiter = ',',
        value_name = "QUEUE,..."
    )]
    pub exclude_queues: Vec<String>,

    /// Erase every message waiting in this node's queues before consuming
    /// (prints `purge: Erased N messages from the queue.`, as Celery).
    #[arg(long = "purge", visible_alias = "discard")]
    pub purge: bool,

    /// Python apps only: more task modules for the pool to import,
    /// comma-separated (added to the app's `include`, as Celery's -I).
    #[arg(
        short = 'I',
        long = "include",
        value_delimiter = ',',
        value_name = "MODULE,..."
    )]
    pub include: Vec<String>,

    /// Log level: DEBUG, INFO, WARNING, ERROR, CRITICAL, FATAL (default WARNING).
    #[arg(short = 'l', long = "loglevel", default_value = "WARNING", value_parser = parse_loglevel)]
    pub loglevel: LevelFilter,

    /// Log file; %n %h %d %p %i %I are expanded (%I: "" for the main
    /// process, -N for child N). Reopened when logrotate moves it away
    /// (checked once a second) and on SIGUSR2.
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
    /// `--executable` (Celery's name) is the same option.
    #[arg(long = "python", visible_alias = "executable")]
    pub python: Option<PathBuf>,

    /// Seconds between the node's heartbeats (Celery's worker heartbeat;
    /// used by the control plane).
    #[arg(long = "heartbeat-interval", value_name = "SECONDS")]
    pub heartbeat_interval: Option<u64>,

    /// Celery's state database of revoked tasks. Accepted and unused:
    /// revokes live in Redis, shared by every node, so there is no file to keep.
    #[arg(short = 'S', long = "statedb", value_name = "PATH")]
    pub statedb: Option<PathBuf>,

    /// Embedded beat: refused. Run the scheduler as its own service with
    /// `celery beat`.
    #[arg(short = 'B', long = "beat")]
    pub beat: bool,

    /// Beat's schedule file: means nothing here (only with -B, which is refused).
    #[arg(
        short = 's',
        long = "schedule-filename",
        visible_alias = "schedule",
        value_name = "FILE"
    )]
    pub schedule_filename: Option<String>,

    /// Beat's scheduler class: means nothing here (only with -B, which is refused).
    #[arg(long = "scheduler")]
    pub scheduler: Option<String>,

    /// Send task events (accepted for compatibility).
    #[arg(short = 'E', long = "task-events", visible_alias = "events")]
    pub task_events: bool,

    /// Optimization profile: `default` or `fair` (rmulti always behaves as `fair`).
    #[arg(short = 'O', long = "optimization", value_parser = ["default", "fair"])]
    pub optimization: Option<String>,

    /// Pool implementation; only `prefork` (and its alias `processes`) exists.
    #[arg(short = 'P', long = "pool")]
    pub pool: Option<String>,

    /// How pool children start: only `fork` (Celery's default) exists.
    #[arg(long = "pool-start-method", value_name = "fork")]
    pub pool_start_method: Option<String>,

    /// Accepted for compatibility; a child reserves only when idle.
    #[arg(long = "prefetch-multiplier")]
    pub prefetch_multiplier: Option<u32>,

    /// What rmulti always does: a child reserves a message only when it is idle.
    #[arg(long = "disable-prefetch")]
    pub disable_prefetch: bool,

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

const WORKER_AFTER_HELP: &str = "\
Signals to the main process: TERM warm shutdown, QUIT cold shutdown, INT warm then cold,
HUP restart the pool in place, USR1 log what each child runs, USR2 reopen the log files,
TTIN/TTOU grow/shrink the pool by one.
Under systemd (NOTIFY_SOCKET set) the node sends READY=1, STATUS=, STOPPING=1 and WATCHDOG=1.";

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

/// The whole command line as one clap definition, multi commands included,
/// for the man pages and shell completions (`examples/package_assets.rs`).
/// The multi commands are still parsed by `multi` (their argv grammar,
/// `-c:w2 4` and `-SIG`, is not clap's); this only describes them.
pub fn full_command() -> clap::Command {
    use clap::{Arg, ArgAction, CommandFactory};

    let nodes = || {
        Arg::new("nodes")
            .value_name("NODES")
            .num_args(1..)
            .help("Node names (w1 w2), or a count (3: celery1..celery3)")
    };
    let common = |cmd: clap::Command| {
        cmd.arg(
            Arg::new("pidfile")
                .long("pidfile")
                .value_name("TEMPLATE")
                .help("Pidfile of each node (default %n.pid)"),
        )
        .arg(
            Arg::new("workdir")
                .long("workdir")
                .value_name("DIR")
                .help("Directory relative pid and log files are in"),
        )
        .arg(
            Arg::new("nosplash")
                .long("nosplash")
                .action(ArgAction::SetTrue)
                .help("Don't display program info"),
        )
        .arg(
            Arg::new("quiet")
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("Don't show as much output"),
        )
        .arg(
            Arg::new("verbose")
                .long("verbose")
                .action(ArgAction::SetTrue)
                .help("Show more output"),
        )
        .arg(
            Arg::new("no-color")
                .long("no-color")
                .action(ArgAction::SetTrue)
                .help("Don't display colors"),
        )
    };
    let timeout = || {
        Arg::new("timeout")
            .long("timeout")
            .value_name("SECONDS")
            .help("SIGKILL nodes (and their pools) still running after this long")
    };
    let with_worker = |cmd: clap::Command| {
        // The worker's options, as `start` passes them on (`-c:w2 4` sets one node's).
        WorkerArgs::augment_args(cmd.arg(nodes()))
    };
    let multi: Vec<clap::Command> = vec![
        with_worker(clap::Command::new("start")).about(
            "Start nodes in the background; returns once each is ready (celery multi start)",
        ),
        common(clap::Command::new("stop").arg(nodes())).about(
            "Send TERM (or -SIG) to each node's main process and return (celery multi stop)",
        ),
        common(clap::Command::new("stopwait").arg(nodes()).arg(timeout()))
            .about("Stop nodes and wait until each is gone (celery multi stopwait)"),
        common(
            clap::Command::new("stop_verify")
                .arg(nodes())
                .arg(timeout()),
        )
        .about("The same as stopwait (Celery's old name)"),
        with_worker(clap::Command::new("restart").arg(timeout()))
            .about("Stop nodes, wait, and start them again (celery multi restart)"),
        common(clap::Command::new("kill").arg(nodes()))
            .about("SIGKILL each node and its pool; remove the pidfiles (celery multi kill)"),
        with_worker(clap::Command::new("show"))
            .about("Print each node's worker command line; run nothing"),
        common(clap::Command::new("names").arg(nodes())).about("Print the node names"),
        with_worker(clap::Command::new("get").arg(Arg::new("hostname").required(true)))
            .about("Print one node's worker command line"),
        clap::Command::new("expand")
            .arg(
                Arg::new("template")
                    .required(true)
                    .help("A template with %n, %h, %d, %i"),
            )
            .arg(nodes())
            .about("Expand a template for each node"),
        clap::Command::new("multi")
            .about("The multi commands under `celery multi`'s name: rmulti multi start ...")
            .arg(
                Arg::new("args")
                    .num_args(0..)
                    .trailing_var_arg(true)
                    .allow_hyphen_values(true),
            ),
        clap::Command::new("help")
            .about("Print the multi commands' usage; `rmulti help worker|call` for those")
            .arg(Arg::new("command").value_parser(["worker", "call"])),
    ];
    let mut cmd = Cli::command();
    for sub in multi {
        cmd = cmd.subcommand(sub);
    }
    cmd
}
