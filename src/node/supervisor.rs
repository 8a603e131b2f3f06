//! The supervisor loop of the node main process, read top to bottom:
//! signal handlers only queue the signal and wake the loop; the loop reaps
//! children, spawns up to the target count, reads children's status reports,
//! enforces hard time limits, and handles the queued signals by name
//! (`handle_term`, `handle_int`, `handle_quit`, `handle_hup`, ...).
//!
//! It is single-threaded on purpose: `fork()` is only safe that way.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};

use super::config::{load_app, NodeConfig};
use super::connecting::{Connecting, Verdict};
use super::detach::Notifier;
use super::recovery::{Lost, Recovery};
use crate::broker::keys::Slot;
use crate::broker::{self, BrokerError};
use crate::child::report::{take_lines, Report, Reporter, Started};
use crate::child::{self, ChildSpec};
use crate::protocol::time::duration_secs;
use crate::signals::{self, SelfPipe};
use crate::{exit, logging};

/// Signals the main process handles.
pub const HANDLED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
];

/// A child that lived less than this is replaced only after `RESPAWN_DELAY`,
/// so a child that cannot start does not spin the CPU.
const SHORT_LIFE: Duration = Duration::from_secs(1);
const RESPAWN_DELAY: Duration = Duration::from_millis(500);
/// This many children in a row dying before they are ready (with a `fatal`
/// report, or within `SHORT_LIFE`) stop the node instead of a respawn storm.
const MAX_BOOT_FAILURES: u32 = 5;
/// How long after a child's death its task's orphans are looked for.
const STRAY_WINDOW: Duration = Duration::from_secs(3);
/// How often the visibility-timeout restore runs (kombu: every 10 s, scanning
/// on every 10th call).
const SWEEP_INTERVAL: Duration = Duration::from_secs(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for Redis (`connecting`); no child yet.
    Connecting,
    Starting,
    Running,
    Warm,
    Cold,
}

struct Child {
    pid: Pid,
    slot: usize,
    number: usize,
    status: File,
    buf: Vec<u8>,
    ready: bool,
    spawned: Instant,
    current: Option<(Started, Instant)>,
    /// Killed by us at its task's hard time limit.
    killed_at_limit: bool,
    /// What the child said before dying, if it could not run at all.
    fatal: Option<String>,
    /// Asked to leave (warm stop, HUP, shrink, cold stop): its death is
    /// expected, so it neither fails a start nor delays a respawn.
    retiring: bool,
    jobs: usize,
}

impl Child {
    /// Takes one status report into account; returns a line to log.
    fn apply(&mut self, report: Report) -> Option<String> {
        match report {
            Report::Ready => self.ready = true,
            Report::Fatal { message } => self.fatal = Some(message),
            Report::Received { id, task } => return Some(format!("Task {task}[{id}] received")),
            Report::Started(s) => {
                self.current = Some((s, Instant::now()));
                self.jobs += 1;
            }
            Report::Done => self.current = None,
        }
        None
    }

    /// When the running task's hard time limit runs out, unless it already did.
    fn deadline(&self) -> Option<Instant> {
        let (task, since) = self.current.as_ref()?;
        if self.killed_at_limit {
            return None;
        }
        Some(*since + duration_secs(task.time_limit?)?)
    }
}

pub struct Supervisor {
    cfg: NodeConfig,
    pipe: SelfPipe,
    children: HashMap<i32, Child>,
    target: usize,
    next_number: usize,
    highest_slot: usize,
    phase: Phase,
    notifier: Notifier,
    recovery: Recovery,
    exit_code: i32,
    respawn_after: HashMap<usize, Instant>,
    main_pid: Pid,
    next_sweep: Instant,
    /// After a child died, orphans of its task (an exec command's own
    /// children) are re-parented to us; until then we look for them.
    strays_until: Option<Instant>,
    connecting: Connecting,
    /// Redis answered once: held lists are ours to restore at exit.
    connected: bool,
    /// Children that died before they were ready, since one last was.
    boot_failures: u32,
    /// The lease on this node's name (`lease`).
    lease: super::lease::Lease,
}

impl Supervisor {
    pub fn new(
        cfg: NodeConfig,
        pipe: SelfPipe,
        notifier: Notifier,
        recovery: Recovery,
    ) -> Supervisor {
        let target = cfg.concurrency;
        let cfg_node = cfg.node.clone();
        // Orphans of a dead child's task come to us instead of init, so
        // `kill_strays` can find them.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory effects.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        }
        Supervisor {
            cfg,
            pipe,
            children: HashMap::new(),
            target,
            next_number: 1,
            highest_slot: target,
            phase: Phase::Connecting,
            notifier,
            recovery,
            exit_code: exit::OK,
            respawn_after: HashMap::new(),
            main_pid: getpid(),
            next_sweep: Instant::now(),
            strays_until: None,
            connecting: Connecting::from_now(),
            connected: false,
            boot_failures: 0,
            lease: super::lease::Lease::new(&cfg_node),
        }
    }

    /// Runs until the node has shut down; returns the exit status.
    pub fn run(mut self) -> i32 {
        loop {
            if self.phase == Phase::Connecting {
                self.connect_when_due();
            }
            if matches!(self.phase, Phase::Starting | Phase::Running) {
                self.spawn_missing();
            }
            if matches!(self.phase, Phase::Warm | Phase::Cold) && self.children.is_empty() {
                break;
            }
            self.wait_for_events();
            self.handle_signals();
            self.read_reports();
            self.reap();
            self.kill_strays();
            self.enforce_time_limits();
            self.check_ready();
            self.sweep_when_due();
        }
        self.finish();
        self.exit_code
    }

    fn finish(&mut self) {
        let mut restored = 0;
        for slot in (1..=self.highest_slot).filter(|_| self.connected) {
            restored += self.recovery.release_held(&Slot::new(&self.cfg.node, slot));
        }
        if restored > 0 {
            tracing::warn!(
                "Restored {restored} message(s) held by this node's children to their queues"
            );
        }
        self.lease.release(|| self.recovery.broker());
        // The launcher still waits: it was neither told ready nor failed.
        if self.notifier.is_detached() {
            self.notifier
                .fail(exit::FAILURE, "The node stopped before it was ready");
        }
        tracing::info!("{}: shutdown complete", self.cfg.node);
    }

    // ---- waiting -------------------------------------------------------

    fn wait_for_events(&mut self) {
        let timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        let timeout = timeout.min(Duration::from_secs(1));
        let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN)];
        for c in self.children.values() {
            fds.push(PollFd::new(c.status.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, ms) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => tracing::error!("poll failed: {e}"),
        }
        self.pipe.drain();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let limits = self.children.values().filter_map(Child::deadline);
        let respawns = self.respawn_after.values().copied();
        let connect = (self.phase == Phase::Connecting).then(|| self.connecting.deadline());
        limits.chain(respawns).chain(connect).min()
    }

    // ---- Redis at start-up -------------------------------------------------

    /// One attempt when due: connect, declare the queues, restore what an
    /// earlier run of this node left held; then the pool may start.
    fn connect_when_due(&mut self) {
        let shown = broker::url::masked(&self.cfg.app.broker_url);
        if self.connecting.due() {
            match self.connect() {
                // The name is taken: the start was refused.
                Ok(()) if self.phase == Phase::Cold => return,
                Ok(()) => {
                    tracing::info!("Connected to {shown}");
                    self.connected = true;
                    self.phase = Phase::Starting;
                    return;
                }
                Err(e) => {
                    if let Verdict::Fail(message) = self.connecting.failed(&shown, &e) {
                        tracing::error!("{message}");
                        self.notifier.fail(exit::FAILURE, &message);
                        self.exit_code = exit::FAILURE;
                        self.phase = Phase::Cold;
                        return;
                    }
                }
            }
        }
        let hint = self
            .cfg
            .logfile(0)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the node's log".to_string());
        if let Some(line) = self.connecting.grace_over(&shown, &hint) {
            tracing::warn!("{line}");
            if self.notifier.is_detached() {
                self.notifier.warn(&line);
                self.notifier.ready();
            }
        }
    }

    fn connect(&mut self) -> Result<(), BrokerError> {
        let declared = self
            .recovery
            .broker()
            .and_then(|con| broker::reserve::declare_queues(con, &self.cfg.queues))
            .and_then(|()| self.recovery.check_backend());
        if let Err(e) = declared {
            self.recovery.reset();
            return Err(e);
        }
        // The name first: another live node's held lists are not ours.
        if let Some(why) = self.lease.acquire(self.recovery.broker()?)? {
            tracing::error!("{why}");
            self.notifier.fail(exit::CANTCREAT, &why);
            self.exit_code = exit::CANTCREAT;
            self.phase = Phase::Cold;
            return Ok(());
        }
        match self.recovery.recover_node(&self.cfg.node) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "Restored {n} message(s) held by an earlier run of {} to their queues",
                self.cfg.node
            ),
            Err(e) => tracing::error!("Cannot look for messages held by an earlier run: {e}"),
        }
        Ok(())
    }

    // ---- signals ---------------------------------------------------------

    fn handle_signals(&mut self) {
        if signals::take(Signal::SIGQUIT) > 0 {
            self.handle_quit();
        }
        for _ in 0..signals::take(Signal::SIGINT) {
            self.handle_int();
        }
        if signals::take(Signal::SIGTERM) > 0 {
            self.handle_term();
        }
        if signals::take(Signal::SIGHUP) > 0 {
            self.handle_hup();
        }
        if signals::take(Signal::SIGUSR1) > 0 {
            self.handle_usr1();
        }
        for _ in 0..signals::take(Signal::SIGTTIN) {
            self.handle_ttin();
        }
        for _ in 0..signals::take(Signal::SIGTTOU) {
            self.handle_ttou();
        }
        signals::take(Signal::SIGCHLD);
    }

    /// Warm shutdown: stop reserving, let running tasks finish, exit 0.
    fn handle_term(&mut self) {
        self.say("worker: Warm shutdown (MainProcess)");
        if matches!(
            self.phase,
            Phase::Connecting | Phase::Starting | Phase::Running
        ) {
            self.phase = Phase::Warm;
            self.retire_all(Signal::SIGTERM);
        }
    }

    /// First INT: warm shutdown; second: cold shutdown, exit 1 (as Celery).
    fn handle_int(&mut self) {
        if matches!(
            self.phase,
            Phase::Connecting | Phase::Starting | Phase::Running
        ) {
            self.say("worker: Hitting Ctrl+C again will initiate cold shutdown, terminating all running tasks!");
            self.handle_term();
        } else if self.phase == Phase::Warm {
            self.exit_code = exit::FAILURE;
            self.handle_quit();
        }
    }

    /// Cold shutdown: children killed at once; their tasks' outcomes are recorded.
    fn handle_quit(&mut self) {
        self.say("worker: Hitting Ctrl+C again will terminate all running tasks!");
        self.say("worker: Cold shutdown (MainProcess)");
        self.phase = Phase::Cold;
        for c in self.children.values_mut() {
            c.retiring = true;
            kill_group(c.pid);
        }
    }

    /// Restart in place: re-read the app, replace the pool; the pid stays.
    fn handle_hup(&mut self) {
        if !matches!(
            self.phase,
            Phase::Connecting | Phase::Starting | Phase::Running
        ) {
            return;
        }
        match load_app(&self.cfg.args) {
            Ok(app) => {
                if self.cfg.args.concurrency.is_none() {
                    if let Some(c) = app.worker_concurrency {
                        self.target = c;
                        self.highest_slot = self.highest_slot.max(c);
                    }
                }
                if app.broker_url != self.cfg.app.broker_url
                    || app.result_backend != self.cfg.app.result_backend
                {
                    // Lost-task records and the sweep follow the new Redis.
                    self.recovery = Recovery::new(&app, self.cfg.default_queue());
                }
                self.cfg.app = Arc::new(app);
                self.say("Restarting the pool (SIGHUP): app re-read, children replaced once their current task ends");
                self.retire_all(Signal::SIGTERM);
            }
            Err(e) => tracing::error!(
                "SIGHUP: keeping the running pool, the app could not be re-read: {e}"
            ),
        }
    }

    /// Logs what each child is doing.
    fn handle_usr1(&mut self) {
        let mut lines = vec![format!(
            "{}: {} child(ren), target {}",
            self.cfg.node,
            self.children.len(),
            self.target
        )];
        let mut kids: Vec<&Child> = self.children.values().collect();
        kids.sort_by_key(|c| c.slot);
        for c in kids {
            let doing = match &c.current {
                Some((t, since)) => format!(
                    "running {}[{}] for {:.3}s",
                    t.task,
                    t.id,
                    since.elapsed().as_secs_f64()
                ),
                None => "idle".to_string(),
            };
            lines.push(format!(
                "  ForkPoolWorker-{} (slot {}) pid:{} {}",
                c.number, c.slot, c.pid, doing
            ));
        }
        tracing::warn!("{}", lines.join("\n"));
    }

    fn handle_ttin(&mut self) {
        self.target += 1;
        self.highest_slot = self.highest_slot.max(self.target);
        tracing::info!("Pool grown to {} (SIGTTIN)", self.target);
    }

    fn handle_ttou(&mut self) {
        if self.target <= 1 {
            tracing::warn!("Pool not shrunk below 1 (SIGTTOU)");
            return;
        }
        self.target -= 1;
        let target = self.target;
        self.retire_where(Signal::SIGTERM, |c| c.slot > target);
        tracing::info!("Pool shrunk to {} (SIGTTOU)", self.target);
    }

    fn retire_all(&mut self, sig: Signal) {
        self.retire_where(sig, |_| true);
    }

    fn retire_where(&mut self, sig: Signal, which: impl Fn(&Child) -> bool) {
        for c in self.children.values_mut().filter(|c| which(c)) {
            c.retiring = true;
            let _ = kill(c.pid, sig);
        }
    }

    /// A shutdown message: to the log, and to stdout in the foreground as Celery prints it.
    fn say(&mut self, text: &str) {
        tracing::info!("{text}");
        if !self.notifier.is_detached() {
            println!("\n{text}");
        }
    }

    // ---- children ----------------------------------------------------

    fn spawn_missing(&mut self) {
        let now = Instant::now();
        for slot in 1..=self.target {
            // A retiring child still owns its slot's held list until it exits.
            if self.children.values().any(|c| c.slot == slot) {
                continue;
            }
            if self.respawn_after.get(&slot).is_some_and(|t| *t > now) {
                continue;
            }
            self.respawn_after.remove(&slot);
            if let Err(e) = self.spawn(slot) {
                tracing::error!("Cannot start pool child for slot {slot}: {e}");
                self.respawn_after.insert(slot, now + RESPAWN_DELAY);
            }
        }
    }

    fn spawn(&mut self, slot: usize) -> Result<(), Errno> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let number = self.next_number;
        self.next_number += 1;
        let spec = ChildSpec {
            node: self.cfg.node.clone(),
            slot,
            process_number: number,
            app: self.cfg.app.clone(),
            queues: self.cfg.queues.clone(),
            log_file: self.cfg.logfile(slot),
            max_tasks: self.cfg.max_tasks_per_child,
            max_memory_kib: self.cfg.max_memory_per_child,
            time_limit: self.cfg.time_limit,
            soft_time_limit: self.cfg.soft_time_limit,
        };
        // The child starts with TERM blocked, so a TERM sent to it before it
        // has set itself up stays pending (and is seen) instead of being
        // handled by our inherited handler and forgotten.
        let mut term = nix::sys::signal::SigSet::empty();
        term.add(Signal::SIGTERM);
        let old_mask = term.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
        // SAFETY: this process is single-threaded, so the child gets a consistent copy.
        let forked = unsafe { fork() };
        if !matches!(forked, Ok(ForkResult::Child)) {
            let _ = old_mask.thread_set_mask();
        }
        match forked? {
            ForkResult::Child => {
                drop(read);
                // Only the main process may hold these: the launcher's pipe,
                // siblings' status pipes.
                self.notifier.close_in_child();
                self.children.clear();
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    child_main(&spec, write, self.main_pid)
                }))
                .unwrap_or(exit::FAILURE);
                // SAFETY: _exit skips destructors that belong to the main process (pidfile, connections).
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(write);
                let status = File::from(read);
                self.children.insert(
                    child.as_raw(),
                    Child {
                        pid: child,
                        slot,
                        number,
                        status,
                        buf: Vec::new(),
                        ready: false,
                        spawned: Instant::now(),
                        current: None,
                        killed_at_limit: false,
                        fatal: None,
                        retiring: false,
                        jobs: 0,
                    },
                );
                tracing::debug!("Started ForkPoolWorker-{number} (slot {slot}) pid:{child}");
                Ok(())
            }
        }
    }

    fn read_reports(&mut self) {
        let mut received = Vec::new();
        let mut became_ready = false;
        for c in self.children.values_mut() {
            let was_ready = c.ready;
            let mut chunk = [0u8; 8192];
            loop {
                match c.status.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            for report in take_lines(&mut c.buf) {
                received.extend(c.apply(report));
            }
            became_ready |= c.ready && !was_ready;
        }
        if became_ready {
            self.boot_failures = 0;
        }
        for line in received {
            tracing::info!("{line}");
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.child_exited(
                    pid,
                    if code == 0 {
                        None
                    } else {
                        Some(format!("exitcode {code}"))
                    },
                    false,
                ),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.child_exited(
                    pid,
                    Some(format!("signal {} ({})", sig as i32, sig.as_str())),
                    sig == Signal::SIGKILL,
                ),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    /// Kills processes re-parented to us that are not pool children: what a
    /// dead child's task left running. We are their subreaper (see `new`).
    fn kill_strays(&mut self) {
        let Some(until) = self.strays_until else {
            return;
        };
        for pid in super::identity::children_of(self.main_pid.as_raw()) {
            if !self.children.contains_key(&pid) {
                tracing::warn!("Killing pid:{pid}, left running by a pool child that died");
                kill_group(Pid::from_raw(pid));
            }
        }
        if Instant::now() >= until {
            self.strays_until = None;
        }
    }

    /// `sigkilled`: it died of SIGKILL, which no crash raises: someone
    /// (an operator, the OOM killer, a hard time limit) killed it.
    fn child_exited(&mut self, pid: Pid, abnormal: Option<String>, sigkilled: bool) {
        let Some(mut c) = self.children.remove(&pid.as_raw()) else {
            return;
        };
        if abnormal.is_some() {
            self.strays_until = Some(Instant::now() + STRAY_WINDOW);
        }
        // Reports written just before death still count (e.g. "started").
        let mut rest = Vec::new();
        let _ = c.status.read_to_end(&mut rest);
        c.buf.extend_from_slice(&rest);
        for report in take_lines(&mut c.buf) {
            if let Some(line) = c.apply(report) {
                tracing::info!("{line}");
            }
        }
        let name = format!("ForkPoolWorker-{}", c.number);
        match &abnormal {
            Some(how) => tracing::error!("Process '{name}' pid:{pid} exited with '{how}'"),
            None => tracing::debug!("Process '{name}' pid:{pid} exited normally"),
        }
        if let Some((task, _)) = c.current.take() {
            let why = match (c.killed_at_limit, self.phase) {
                (true, _) => Lost::TimeLimit(task.time_limit.unwrap_or_default()),
                (false, Phase::Cold) => Lost::ColdShutdown,
                (false, _) => {
                    Lost::Died(abnormal.clone().unwrap_or_else(|| "exitcode 0".to_string()))
                }
            };
            self.recovery.task_lost(
                &self.cfg.node,
                c.slot,
                &task,
                &why,
                c.jobs.saturating_sub(1),
            );
        }
        if self.phase == Phase::Starting && !c.ready && !c.retiring {
            let log = self
                .cfg
                .logfile(c.slot)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "stderr".into());
            let mut msg = format!(
                "Pool child {name} exited during start-up ({}); see {log}",
                abnormal.unwrap_or_else(|| "exitcode 0".to_string())
            );
            if let Some(fatal) = &c.fatal {
                msg = format!("{fatal}\n{msg}");
            }
            tracing::error!("{msg}");
            self.notifier.fail(exit::FAILURE, &msg);
            self.exit_code = exit::FAILURE;
            self.phase = Phase::Cold;
            self.retire_all(Signal::SIGKILL);
            return;
        }
        let died_booting =
            !c.ready && !c.retiring && (c.fatal.is_some() || c.spawned.elapsed() < SHORT_LIFE);
        if died_booting && self.phase == Phase::Running {
            self.boot_failures += 1;
            if self.boot_failures >= MAX_BOOT_FAILURES {
                self.stop_boot_storm(&name, abnormal.as_deref(), c.fatal.as_deref());
                return;
            }
        }
        // A slot above the target gets no new child (TTOU, HUP): what its
        // held list still has goes back to the queue now, not at shutdown.
        let retired = c.slot > self.target && !self.children.values().any(|o| o.slot == c.slot);
        if retired
            && self
                .recovery
                .release_held(&Slot::new(&self.cfg.node, c.slot))
                > 0
        {
            tracing::warn!("Restored the message held by retired slot {}", c.slot);
        }
        // The back-off is for children that cannot start or crash at once; a
        // child that ran tasks and left normally (max-tasks-per-child,
        // max-memory-per-child) is replaced at once, and so is one killed
        // from outside: under repeated kills the back-off would leave slots
        // empty for most of the time.
        let healthy = (abnormal.is_none() && c.jobs > 0) || sigkilled;
        if c.spawned.elapsed() < SHORT_LIFE && !c.retiring && !healthy {
            self.respawn_after
                .insert(c.slot, Instant::now() + RESPAWN_DELAY);
        }
    }

    /// Children keep dying before they are ready: stop the node (warm, so
    /// healthy children finish their task) with exit status 1.
    fn stop_boot_storm(&mut self, name: &str, how: Option<&str>, fatal: Option<&str>) {
        let mut msg = format!(
            "Pool children keep dying before they are ready ({} in a row; the last, {name}, exited with '{}'); stopping the node instead of starting more",
            self.boot_failures,
            how.unwrap_or("exitcode 0")
        );
        if let Some(fatal) = fatal {
            msg.push_str(&format!(": {fatal}"));
        }
        tracing::error!("{msg}");
        if !self.notifier.is_detached() {
            eprintln!("{msg}");
        }
        self.exit_code = exit::FAILURE;
        self.phase = Phase::Warm;
        self.retire_all(Signal::SIGTERM);
    }

    fn enforce_time_limits(&mut self) {
        let now = Instant::now();
        for c in self.children.values_mut() {
            if c.deadline().is_none_or(|d| now < d) {
                continue;
            }
            if let Some((task, _)) = &c.current {
                tracing::error!(
                    "Hard time limit ({}s) exceeded for {}[{}]",
                    task.time_limit.unwrap_or_default(),
                    task.task,
                    task.id
                );
            }
            c.killed_at_limit = true;
            kill_group(c.pid);
        }
    }

    fn sweep_when_due(&mut self) {
        if self.phase != Phase::Connecting {
            self.lease.renew_when_due(|| self.recovery.broker());
        }
        if self.phase == Phase::Running && Instant::now() >= self.next_sweep {
            self.next_sweep = Instant::now() + SWEEP_INTERVAL;
            self.recovery.sweep(self.cfg.app.visibility_timeout);
        }
    }

    fn check_ready(&mut self) {
        if self.phase != Phase::Starting {
            return;
        }
        let ready =
            (1..=self.target).all(|slot| self.children.values().any(|c| c.slot == slot && c.ready));
        if ready {
            self.phase = Phase::Running;
            tracing::info!("{} ready.", self.cfg.node);
            self.notifier.ready();
        }
    }
}

/// Kills a pool child, its process group, and the process group of each of
/// its own children. An exec task's command runs in a group of its own
/// (`tasks::exec`), so killing the pool child's group alone would leave
/// whatever the command started (`sh -c 'sleep 30; ...'`) running as an
/// orphan: PR_SET_PDEATHSIG reaches the command, not its children. The
/// command is found while it is still the pool child's, but killed after
/// the pool child: killed first, it would let the child see its command die
/// and store that (`RuntimeError`) as the task's outcome before ours
/// (`TimeLimitExceeded`). Its pid stays valid meanwhile: it is re-parented
/// to us, and we reap nothing before this returns.
fn kill_group(pid: Pid) {
    let own_group = nix::unistd::getpgrp();
    let kids: Vec<Pid> = super::identity::children_of(pid.as_raw())
        .into_iter()
        .map(Pid::from_raw)
        .collect();
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
    for kid in kids {
        if nix::unistd::getpgid(Some(kid)) == Ok(kid) && kid != own_group && kid != pid {
            let _ = killpg(kid, Signal::SIGKILL);
        }
        let _ = kill(kid, Signal::SIGKILL);
    }
}

/// The body of a forked pool child.
fn child_main(spec: &ChildSpec, status: OwnedFd, main_pid: Pid) -> i32 {
    // SAFETY: prctl with PR_SET_PDEATHSIG has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // The main process may have died before prctl took effect.
    if nix::unistd::getppid() != main_pid {
        return exit::FAILURE;
    }
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // TERM arrives blocked (see `spawn`): it stays pending until
    // `consume::stop_requested` looks, so none is missed while we reset.
    signals::reset_in_child(HANDLED);
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
    child::consume::run(spec, &mut reporter)
}
