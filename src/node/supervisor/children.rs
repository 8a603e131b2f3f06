//! The pool: forking a child per slot, reading its status reports, reaping
//! it and acting on what its death means (`exit_kind::classify`), killing
//! what its task left behind, and hard time limits. A child working through
//! a batch reports it once; which of its tasks runs is read from the
//! child's progress word (`plumbing::progress`), mapped before the fork.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::exit_kind::{classify, Exit, ExitKind, Facts, Respawn};
use super::{Phase, Supervisor, HANDLED};
use crate::broker::keys::Slot;
use crate::child::report::{batch_tasks, Report, Started};
use crate::child::{self, ChildSpec};
use crate::exit;
use crate::node::control::Control;
use crate::node::recovery::Lost;
use crate::plumbing::affinity::Affinity;
use crate::plumbing::lines::LineReader;
use crate::plumbing::pipe::cloexec_pipe;
use crate::plumbing::process::children_of;
use crate::plumbing::progress::{now_ms, Mark, Progress, Stage};
use crate::protocol::time::duration_secs;

/// How long a slot stays empty after its child died by itself at once.
const RESPAWN_DELAY: Duration = Duration::from_millis(500);
/// How long after a child's death its task's orphans are looked for.
const STRAY_WINDOW: Duration = Duration::from_secs(3);

pub(super) struct Child {
    pub(super) pid: Pid,
    pub(super) slot: usize,
    pub(super) number: usize,
    /// The status pipe's read end (`child::report`).
    pub(super) status: LineReader,
    pub(super) ready: bool,
    spawned: Instant,
    pub(super) current: Option<(Started, Instant)>,
    /// The last batch the child reported: its generation and its messages'
    /// tasks in order, as JSON (`report::batch_tasks` parses it).
    batch: Option<(u32, String)>,
    /// Its `ran` report came (the batch's tasks are counted in `stats`).
    batch_counted: bool,
    /// Where the child is in that batch (`None`: the page could not be
    /// mapped; the child then never batches).
    progress: Option<Progress>,
    /// Killed by us at its task's hard time limit.
    killed_at_limit: bool,
    /// What the child said before dying, if it could not run at all.
    fatal: Option<String>,
    /// Asked to leave (warm stop, HUP, shrink, cold stop): its death is
    /// expected, so it neither fails a start nor delays a respawn.
    pub(super) retiring: bool,
    jobs: usize,
}

impl Child {
    fn new(
        pid: Pid,
        slot: usize,
        number: usize,
        status: LineReader,
        progress: Option<Progress>,
    ) -> Child {
        Child {
            pid,
            slot,
            number,
            status,
            ready: false,
            spawned: Instant::now(),
            current: None,
            batch: None,
            batch_counted: false,
            progress,
            killed_at_limit: false,
            fatal: None,
            retiring: false,
            jobs: 0,
        }
    }

    pub(super) fn name(&self) -> String {
        format!("ForkPoolWorker-{}", self.number)
    }

    /// Reads and applies the reports that arrived; returns lines to log.
    fn read_reports(&mut self, control: &mut Control) -> Vec<String> {
        let reports: Vec<Report> = self
            .status
            .read_lines()
            .iter()
            .filter_map(|line| Report::parse(line.trim_end()))
            .collect();
        for r in &reports {
            control.observe(r);
        }
        reports.into_iter().filter_map(|r| self.apply(r)).collect()
    }

    /// Takes one status report into account; returns a line to log.
    fn apply(&mut self, report: Report) -> Option<String> {
        match report {
            Report::Ready => self.ready = true,
            Report::Fatal { message } => self.fatal = Some(message),
            // Built only when logged: a batch brings dozens at once.
            Report::Received { id, task } => {
                return tracing::enabled!(tracing::Level::INFO)
                    .then(|| format!("Task {task}[{id}] received"))
            }
            Report::Started(s) => {
                self.jobs += usize::from(!s.batched);
                self.current = Some((s, Instant::now()));
            }
            Report::Done => self.current = None,
            Report::Batch { gen, tasks } => {
                self.batch = Some((gen, tasks));
                self.batch_counted = false;
            }
            Report::Ran { names } => {
                self.jobs += names.len();
                self.batch_counted = true;
            }
        }
        None
    }

    /// Where the child is in its batch.
    pub(super) fn mark(&self) -> Mark {
        self.progress.as_ref().map_or(Mark::IDLE, Progress::read)
    }

    /// The task the child runs and since when: the one it reported started,
    /// else the one its progress word points at in its batch.
    pub(super) fn running(&self) -> Option<(Started, Instant)> {
        if let Some((s, since)) = &self.current {
            return Some((s.clone(), *since));
        }
        let (gen, tasks) = self.batch.as_ref()?;
        let mark = self.mark();
        if mark.stage != Stage::Running || mark.gen != *gen {
            return None;
        }
        let task = batch_tasks(tasks)
            .into_iter()
            .nth(usize::from(mark.index))??;
        let ago = Duration::from_millis(now_ms().saturating_sub(mark.since_ms));
        let now = Instant::now();
        Some((task, now.checked_sub(ago).unwrap_or(now)))
    }

    /// Marks the tasks `revoked` names that the child's batch holds and has
    /// not started, not to start (revoked since the batch was reserved).
    /// Returns the ids of those that will not.
    pub(super) fn skip_unstarted(&self, revoked: &crate::node::control::Revoked) -> Vec<String> {
        let (Some((gen, tasks)), Some(progress)) = (self.batch.as_ref(), self.progress.as_ref())
        else {
            return Vec::new();
        };
        if progress.read().gen != *gen {
            return Vec::new();
        }
        batch_tasks(tasks)
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| s.filter(|s| revoked.names(s)).map(|s| (i, s.id)))
            .filter(|(i, _)| progress.skip(*gen, *i))
            .map(|(_, id)| id)
            .collect()
    }

    /// The child's batch (as JSON) and the position of its first task not
    /// started; `None` when it holds no batch.
    fn batch_position(&self) -> Option<(&str, usize)> {
        let (gen, tasks) = self.batch.as_ref()?;
        let mark = self.progress.as_ref()?.read();
        let first = match mark.stage {
            _ if mark.gen != *gen => return None,
            Stage::Idle => return None,
            Stage::Running => usize::from(mark.index) + 1,
            Stage::Between => usize::from(mark.index),
        };
        Some((tasks.as_str(), first))
    }

    /// The tasks of the child's batch it has not started yet.
    pub(super) fn unstarted(&self) -> Vec<Started> {
        let Some((tasks, first)) = self.batch_position() else {
            return Vec::new();
        };
        batch_tasks(tasks)
            .into_iter()
            .skip(first)
            .flatten()
            .collect()
    }

    /// The tasks of its batch a dead child started, when it died before
    /// its `ran` report counted them (for `stats`).
    fn started_uncounted(&self) -> Vec<String> {
        match self.batch_position() {
            Some((tasks, first)) if !self.batch_counted => batch_tasks(tasks)
                .into_iter()
                .take(first)
                .flatten()
                .map(|s| s.task)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Running a task or holding a batch.
    pub(super) fn busy(&self) -> bool {
        self.current.is_some() || self.mark().stage != Stage::Idle
    }

    /// When the running task's hard time limit runs out, unless it already did.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let (task, since) = self.current.as_ref()?;
        if self.killed_at_limit {
            return None;
        }
        Some(*since + duration_secs(task.time_limit?)?)
    }

    fn facts(&self) -> Facts {
        Facts {
            ready: self.ready,
            retiring: self.retiring,
            fatal: self.fatal.is_some(),
            killed_at_limit: self.killed_at_limit,
            lived: self.spawned.elapsed(),
            jobs: self.jobs,
        }
    }
}

impl Supervisor {
    pub(super) fn spawn_missing(&mut self) {
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

    fn spawn(&mut self, slot: usize) -> std::io::Result<()> {
        let (read, write) = cloexec_pipe()?;
        let status = LineReader::new(read)?;
        let number = self.next_number;
        self.next_number += 1;
        let progress = match Progress::new() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("Cannot map a progress page for slot {slot} ({e}); its child reserves one message at a time");
                None
            }
        };
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
            pool_size: self.target.max(1),
            progress: progress.as_ref().map(Progress::handle),
            affinity: self.affinity.as_ref().map(Affinity::handle),
        };
        // The child starts with TERM blocked, so a TERM sent to it before it
        // has set itself up stays pending (and is seen) instead of being
        // handled by our inherited handler and forgotten.
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        let old_mask = term.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        // SAFETY: this process is single-threaded, so the child gets a consistent copy.
        let forked = unsafe { fork() };
        if !matches!(forked, Ok(ForkResult::Child)) {
            let _ = old_mask.thread_set_mask();
        }
        match forked? {
            ForkResult::Child => {
                drop(status);
                self.enter_child(&spec, write)
            }
            ForkResult::Parent { child } => {
                drop(write);
                self.children.insert(
                    child.as_raw(),
                    Child::new(child, slot, number, status, progress),
                );
                tracing::debug!("Started ForkPoolWorker-{number} (slot {slot}) pid:{child}");
                Ok(())
            }
        }
    }

    /// In the forked child: lets go of what only the main process may hold
    /// (the launcher's pipe, siblings' status pipes), then becomes the pool
    /// child.
    fn enter_child(&mut self, spec: &ChildSpec, status: OwnedFd) -> ! {
        self.notifier.close_in_child();
        self.children.clear();
        child::boot::enter(spec, status, self.main_pid, HANDLED)
    }

    pub(super) fn read_reports(&mut self) {
        let mut received = Vec::new();
        let mut became_ready = false;
        for c in self.children.values_mut() {
            let was_ready = c.ready;
            received.extend(c.read_reports(&mut self.control));
            became_ready |= c.ready && !was_ready;
        }
        if became_ready {
            self.boot_failures = 0;
        }
        for line in received {
            tracing::info!("{line}");
        }
    }

    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.child_exited(pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.child_exited(pid, Exit::Signal(sig)),
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
    pub(super) fn kill_strays(&mut self) {
        let Some(until) = self.strays_until else {
            return;
        };
        for pid in children_of(self.main_pid.as_raw()) {
            // A process in a live child's group is that child's (a host
            // whose template died); the template is ours.
            let in_live_group = nix::unistd::getpgid(Some(Pid::from_raw(pid)))
                .is_ok_and(|g| self.children.contains_key(&g.as_raw()));
            if !self.children.contains_key(&pid)
                && !in_live_group
                && self.template.pid() != Some(Pid::from_raw(pid))
            {
                tracing::warn!("Killing pid:{pid}, left running by a pool child that died");
                kill_group(Pid::from_raw(pid));
            }
        }
        if Instant::now() >= until {
            self.strays_until = None;
        }
    }

    /// A child is gone: record its task as lost, then act on what its death
    /// means (`classify`).
    fn child_exited(&mut self, pid: Pid, exit: Exit) {
        if self.template_exited(pid, &exit) {
            return;
        }
        let Some(mut c) = self.children.remove(&pid.as_raw()) else {
            return;
        };
        if !exit.is_clean() {
            self.strays_until = Some(Instant::now() + STRAY_WINDOW);
        }
        // Reports written just before death still count (e.g. "started").
        for line in c.read_reports(&mut self.control) {
            tracing::info!("{line}");
        }
        let names = c.started_uncounted();
        if !names.is_empty() {
            self.control.observe(&Report::Ran { names });
        }
        let name = c.name();
        if exit.is_clean() {
            tracing::debug!("Process '{name}' pid:{pid} exited normally");
        } else {
            tracing::error!("Process '{name}' pid:{pid} exited with '{exit}'");
        }
        let kind = classify(&c.facts(), self.phase, exit, self.boot_failures);
        let running = c.running().map(|(task, _)| task.id);
        let terminated = self
            .control
            .was_terminated(pid.as_raw(), running.as_deref());
        let recorded = c.current.as_ref().map(|(task, _)| task.id.clone());
        if let Some((task, _)) = c.current.take() {
            let why = if terminated {
                Lost::Terminated
            } else {
                kind.lost(self.phase, exit, task.time_limit.unwrap_or_default())
            };
            let jobs_before = c.jobs.saturating_sub(1);
            self.recovery
                .task_lost(&self.cfg.node, c.slot, &task, &why, jobs_before);
        }
        // Its batch: the tasks it ran or runs are recorded, the rest requeued.
        // The batch's others were not what hit the time limit.
        let died = match kind.lost(self.phase, exit, 0.0) {
            Lost::TimeLimit(_) => Lost::Died(exit.to_string()),
            other => other,
        };
        let why_running = if terminated {
            Lost::Terminated
        } else {
            died.clone()
        };
        self.recovery.batch_lost(
            &self.cfg.node,
            c.slot,
            c.mark(),
            recorded.as_deref(),
            (&why_running, &died),
            c.jobs.saturating_sub(1),
        );
        match kind {
            ExitKind::StartFailed => return self.fail_start(&c, exit),
            ExitKind::BootStorm => {
                self.boot_failures += 1;
                return self.stop_boot_storm(&name, exit, c.fatal.as_deref());
            }
            ExitKind::BootFailure(_) => self.boot_failures += 1,
            _ => {}
        }
        self.release_if_retired(c.slot);
        if kind.respawn() == Respawn::Later {
            self.respawn_after
                .insert(c.slot, Instant::now() + RESPAWN_DELAY);
        }
    }

    /// A child died before the pool was ready: the start fails (cold, exit 1),
    /// with what the child said on the launcher's terminal.
    fn fail_start(&mut self, c: &Child, exit: Exit) {
        let log = self
            .cfg
            .logfile(c.slot)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "stderr".into());
        let mut msg = format!(
            "Pool child {} exited during start-up ({exit}); see {log}",
            c.name()
        );
        if let Some(fatal) = &c.fatal {
            msg = format!("{fatal}\n{msg}");
        }
        tracing::error!("{msg}");
        self.notifier.fail(exit::FAILURE, &msg);
        self.exit_code = exit::FAILURE;
        self.phase = Phase::Cold;
        self.retire_all(Signal::SIGKILL);
    }

    /// Children keep dying before they are ready: stop the node (warm, so
    /// healthy children finish their task) with exit status 1.
    fn stop_boot_storm(&mut self, name: &str, exit: Exit, fatal: Option<&str>) {
        let mut msg = format!(
            "Pool children keep dying before they are ready ({} in a row; the last, {name}, exited with '{exit}'); stopping the node instead of starting more",
            self.boot_failures,
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

    /// A slot above the target gets no new child (TTOU, HUP): what its held
    /// list still has goes back to the queue now, not at shutdown.
    fn release_if_retired(&mut self, slot: usize) {
        let retired = slot > self.target && !self.children.values().any(|o| o.slot == slot);
        if retired && self.recovery.release_held(&Slot::new(&self.cfg.node, slot)) > 0 {
            tracing::warn!("Restored the message held by retired slot {slot}");
        }
    }

    pub(super) fn enforce_time_limits(&mut self) {
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
pub(super) fn kill_group(pid: Pid) {
    let own_group = nix::unistd::getpgrp();
    let kids: Vec<Pid> = children_of(pid.as_raw())
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
