//! The consume loop of a pool child: reserve a message only when idle, hand it
//! to `execute`, repeat; reconnect with back-off when Redis goes away; leave
//! at a safe point when the main process asks (SIGTERM) or a per-child limit
//! (max tasks, max memory) is reached.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::execute::Executor;
use super::report::{Report, Reporter};
use super::ChildSpec;
use crate::broker::BrokerError;
use crate::signals;

/// Broker and backend connections, re-opened after a failure.
pub use crate::broker::Connections as Conns;

/// How long a stopping child keeps trying to store its last task's outcome.
const FINISH_PATIENCE: Duration = Duration::from_secs(30);

/// How often Redis may refuse to process one message before it is dead-lettered.
const MAX_REFUSALS: u32 = 3;

/// True once the main process asked this child to leave (SIGTERM).
pub fn stop_requested() -> bool {
    signals::is_pending(Signal::SIGTERM) || signals::peek(Signal::SIGTERM) > 0
}

/// Sleeps up to `total`, waking early when a stop is requested.
pub fn nap(total: Duration) {
    let end = Instant::now() + total;
    while Instant::now() < end && !stop_requested() {
        std::thread::sleep(
            Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
        );
    }
}

/// Runs until asked to stop; returns the child's exit status.
pub fn run(spec: &ChildSpec, reporter: &mut Reporter) -> i32 {
    let mut conns = Conns::new(&spec.app.broker_url, &spec.app.result_backend);
    let mut executor = Executor::new(spec);

    if !wait_connected(&mut conns) {
        return 0;
    }
    if let Err(message) = executor.start_host() {
        tracing::error!("{message}");
        let _ = reporter.send(&Report::Fatal { message });
        return 1;
    }
    if reporter.send(&Report::Ready).is_err() {
        return 1;
    }
    let code = consume(spec, &mut executor, &mut conns, reporter);
    let _ = reporter.flush();
    code
}

fn consume(
    spec: &ChildSpec,
    executor: &mut Executor,
    conns: &mut Conns,
    reporter: &mut Reporter,
) -> i32 {
    let mut failures: u32 = 0;
    let mut done: u64 = 0;
    let mut refused: u32 = 0;
    let mut last_refused: Option<String> = None;
    // The key a BLMOVE took a message from, so the message keeps its queue.
    let mut moved_from: Option<String> = None;
    let mut finish_deadline: Option<Instant> = None;
    // A handled message is finished (result, ack) even when a stop came
    // meanwhile; so is one a BLMOVE just put in the held list: a retired slot
    // would otherwise keep it unseen.
    loop {
        let leaving = stop_requested() && moved_from.is_none();
        if leaving && !executor.finishing() {
            return 0;
        }
        let limit_reached = spec.max_tasks.is_some_and(|max| done >= max) || over_memory(spec);
        let reserve = !leaving && !limit_reached;
        match executor.next(conns, reporter, reserve) {
            Ok(Some(mut msg)) => {
                if msg.source.is_empty() {
                    msg.source = moved_from.take().unwrap_or_default();
                }
                failures = 0;
                let handled = executor.handle(&msg, conns, reporter);
                let _ = reporter.flush();
                if let Err(e) = handled {
                    // Whatever the main process thinks this child runs, it
                    // does not run it now; the held message speaks for itself.
                    let _ = reporter.send(&Report::Done);
                    if e.is_connection_problem() {
                        tracing::error!("consumer: Connection to broker lost: {e}. Trying to re-establish the connection...");
                        conns.reset();
                        nap(Duration::from_secs(1));
                        continue;
                    }
                    // The same held message comes back on the next reserve; a
                    // message Redis keeps refusing must not loop forever.
                    refused = if last_refused.as_deref() == Some(msg.raw.as_str()) {
                        refused + 1
                    } else {
                        1
                    };
                    last_refused = Some(msg.raw.clone());
                    tracing::error!("Cannot handle message ({refused}/{MAX_REFUSALS}): {e}");
                    if refused >= MAX_REFUSALS {
                        refused = 0;
                        let reason =
                            format!("Redis refused to process it {MAX_REFUSALS} times: {e}");
                        if let Err(e) = executor.give_up(&msg, conns, &reason) {
                            tracing::error!("Cannot dead-letter the message either: {e}");
                        }
                    }
                    nap(Duration::from_secs(1));
                    continue;
                }
                refused = 0;
                done += 1;
            }
            Ok(None) if !reserve => {
                let _ = reporter.flush();
                if limit_reached && !leaving {
                    log_limit(spec, done);
                }
                return 0;
            }
            Ok(None) => {
                // Whatever a BLMOVE moved was not there to take (a sweep
                // had requeued it): nothing holds a stop back any more.
                moved_from = None;
                if reporter.flush().is_err() {
                    return 1;
                }
                // The idle wait is the one place TERM may interrupt: nothing is
                // half-done there, and an idle child then leaves at once.
                let _ = signals::unblock(Signal::SIGTERM);
                let waited = executor.wait(conns);
                let _ = signals::block(Signal::SIGTERM);
                match waited {
                    Ok(true) => moved_from = Some(executor.first_key().to_string()),
                    Ok(false) => {}
                    Err(e) => {
                        if !retry_later(&e, &mut failures, conns) {
                            return 0;
                        }
                    }
                }
            }
            Err(e) => {
                let _ = reporter.flush();
                if retry_later(&e, &mut failures, conns) {
                    continue;
                }
                if !executor.finishing() {
                    return 0;
                }
                // Stopping with a task run but not finished: its result is
                // its only record, so keep trying a while (as a store does).
                let deadline =
                    *finish_deadline.get_or_insert_with(|| Instant::now() + FINISH_PATIENCE);
                if Instant::now() >= deadline {
                    tracing::error!("Leaving with a task's finish undone: {e}; its message stays held for the next start");
                    return 0;
                }
                tracing::error!("Cannot finish the last task: {e}; retrying");
                conns.reset();
                // A real sleep: during a stop `nap` returns at once.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Logs why this child leaves to be replaced (a per-child limit).
fn log_limit(spec: &ChildSpec, done: u64) {
    if spec.max_tasks.is_some_and(|max| done >= max) {
        tracing::info!("Child reached max-tasks-per-child ({done}); exiting to be replaced");
    } else if let (Some(limit), Some(rss)) = (spec.max_memory_kib, resident_kib()) {
        tracing::warn!("Child resident memory {rss} KiB exceeds max-memory-per-child {limit} KiB; exiting to be replaced");
    }
}

/// Whether this child's resident memory is above `--max-memory-per-child`.
fn over_memory(spec: &ChildSpec) -> bool {
    spec.max_memory_kib
        .is_some_and(|limit| resident_kib().is_some_and(|rss| rss > limit))
}

/// After a broker error: false when the child should leave (a stop was
/// asked; the error is then just the interrupted wait), else reports it,
/// drops the connections and backs off.
fn retry_later(e: &BrokerError, failures: &mut u32, conns: &mut Conns) -> bool {
    if stop_requested() {
        return false;
    }
    *failures += 1;
    report_broker_error(e, *failures);
    conns.reset();
    nap(backoff(*failures));
    true
}

fn wait_connected(conns: &mut Conns) -> bool {
    let mut failures = 0;
    loop {
        let connected = conns
            .broker()
            .map(|_| ())
            .and_then(|()| conns.backend().map(|_| ()));
        match connected {
            Ok(()) => return true,
            Err(e) => {
                if !retry_later(&e, &mut failures, conns) {
                    return false;
                }
            }
        }
    }
}

fn report_broker_error(e: &BrokerError, attempt: u32) {
    let wait = backoff(attempt).as_secs_f64();
    tracing::error!(
        "consumer: Cannot connect to broker: {e}. Trying again in {wait:.2} seconds... ({attempt})"
    );
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(4)).min(4000))
}

/// Resident set size of this process in KiB, from /proc.
pub fn resident_kib() -> Option<u64> {
    crate::plumbing::process::resident_kib()
}
