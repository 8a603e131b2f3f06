//! Deadline polling: wait for a condition instead of sleeping, and the
//! one timeout ([`STARTUP_TIMEOUT`]) sized for a loaded 2-core CI runner.

use std::time::{Duration, Instant};

/// How long to wait for things that should take milliseconds on an idle
/// machine, generously sized for a loaded 2-core CI runner.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `cond` every 10 ms until it is true (returns `true`) or `timeout`
/// has passed (returns `false`, after one last try). Use it instead of sleeps.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || cond().then_some(())).is_some()
}

/// Polls `f` every 10 ms until it returns `Some`, or `timeout` has passed.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
