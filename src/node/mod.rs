//! The node main process ("supervisor"): detach, pidfile, the supervisor loop
//! and its signal handlers. It never consumes tasks and stays single-threaded
//! so that `fork()` is safe.

pub mod autoscale;
pub mod banner;
pub mod config;
pub mod connecting;
pub mod control;
pub mod detach;
pub mod identity;
pub mod lease;
pub mod names;
pub mod notify;
pub mod pidfile;
pub mod privileges;
pub mod queues;
pub mod recovery;
pub mod supervisor;

use nix::sys::signal::Signal;

use crate::cli::WorkerArgs;
use crate::{broker, exit, logging, signals};
use config::{NodeConfig, StartError};
use detach::Notifier;
use pidfile::Pidfile;
use recovery::Recovery;

/// `rmulti worker`: returns the process exit status.
pub fn run_worker(args: WorkerArgs) -> i32 {
    if let Some(dir) = &args.workdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("Error: cannot change to --workdir {}: {e}", dir.display());
            return exit::FAILURE;
        }
    }
    let cfg = match NodeConfig::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return e.code;
        }
    };
    if let Some(mask) = &args.umask {
        match privileges::parse_umask(mask) {
            Ok(m) => privileges::apply_umask(m),
            Err(e) => {
                eprintln!("Error: {e}");
                return exit::USAGE;
            }
        }
    }
    if let Err(e) = privileges::drop_privileges(args.uid.as_deref(), args.gid.as_deref()) {
        eprintln!("Error: {e}");
        return exit::FAILURE;
    }
    let hint = cfg
        .logfile(0)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the node's log".to_string());
    let mut notifier = if args.detach {
        detach::daemonize(&hint)
    } else {
        Notifier::foreground()
    };
    match start(cfg, &mut notifier) {
        Ok((supervisor, pidfile)) => {
            let code = supervisor.run();
            drop(pidfile);
            code
        }
        Err(e) => {
            tracing::error!("{e}");
            notifier.fail(e.code, &e.message);
            e.code
        }
    }
}

/// Everything between detaching and the supervisor loop.
fn start(
    cfg: NodeConfig,
    notifier: &mut Notifier,
) -> Result<(supervisor::Supervisor, Option<Pidfile>), StartError> {
    let log = match cfg.logfile(0) {
        Some(path) => {
            Some(logging::open(&path).map_err(|e| StartError::new(exit::FAILURE, e.to_string()))?)
        }
        None => None,
    };
    logging::init(cfg.level, log, "MainProcess");
    signals::ignore(Signal::SIGPIPE);
    // Before the pidfile: a TERM during start-up is queued for the loop
    // (which then shuts down cleanly) instead of killing us with the pidfile left.
    let pipe = signals::install(supervisor::HANDLED).map_err(|e| {
        StartError::new(
            exit::FAILURE,
            format!("cannot install signal handlers: {e}"),
        )
    })?;

    logging::install_reopen_signal().map_err(|e| {
        StartError::new(
            exit::FAILURE,
            format!("cannot install the SIGUSR2 (log reopen) handler: {e}"),
        )
    })?;

    let pidfile = match &cfg.pidfile {
        Some(path) => {
            let (pf, warnings) =
                Pidfile::acquire(path, &identity::is_rmulti_worker).map_err(|e| {
                    let code = match e {
                        pidfile::PidfileError::AlreadyRunning { .. } => exit::CANTCREAT,
                        _ => exit::FAILURE,
                    };
                    StartError::new(code, e.to_string())
                })?;
            for w in warnings {
                tracing::warn!("{w}");
                notifier.warn(&w);
            }
            Some(pf)
        }
        None => None,
    };

    privileges::warn_if_superuser();
    warn_about_tls(&cfg);
    let recovery = Recovery::new(&cfg.app, cfg.default_queue());

    let text = banner::banner(&cfg);
    tracing::info!("\n{text}");
    if !notifier.is_detached() {
        println!("{text}");
    }
    let notifier = std::mem::replace(notifier, Notifier::foreground());
    Ok((
        supervisor::Supervisor::new(cfg, pipe, notifier, recovery),
        pidfile,
    ))
}

/// Celery's warnings about TLS without verification, once per URL.
fn warn_about_tls(cfg: &NodeConfig) {
    let mut urls = vec![&cfg.app.broker_url];
    if cfg.app.result_backend != cfg.app.broker_url {
        urls.push(&cfg.app.result_backend);
    }
    for url in urls {
        let tls = broker::url::parse(url).ok().and_then(|t| t.tls);
        if let Some(warning) = tls.as_ref().and_then(|t| t.warning()) {
            tracing::warn!("{warning} ({})", broker::url::masked(url));
        }
    }
}
