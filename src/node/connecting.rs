//! The node's first connection to Redis, as Celery's worker makes it: a
//! Redis that is not there yet does not stop the node. The main process logs
//! the error with the URL masked and retries with a bounded back-off
//! (0.5 s, 1 s, 2 s, 4 s, then every 8 s); the pool is forked once Redis
//! answers. The launcher of a detached node is not kept waiting for that:
//! after `GRACE` it is told the node runs and why it is not serving yet.
//!
//! What waiting cannot fix fails the start at once: Redis refusing the
//! credentials, an unreadable certificate file, a TLS handshake refused.

use std::time::{Duration, Instant};

use crate::broker::BrokerError;

/// How long a detached start waits for Redis before returning (exit 0, with
/// a warning) and leaving the node to keep trying.
pub const GRACE: Duration = Duration::from_secs(5);
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(8);

pub struct Connecting {
    attempts: u32,
    next: Instant,
    grace_until: Instant,
    launcher_told: bool,
}

/// What to do after a failed attempt.
pub enum Verdict {
    /// Try again at `Connecting::next_attempt`.
    Retry,
    /// Give up: the start fails with this message.
    Fail(String),
}

impl Connecting {
    /// The first attempt is due at once; the grace starts now.
    pub fn from_now() -> Connecting {
        let now = Instant::now();
        Connecting {
            attempts: 0,
            next: now,
            grace_until: now + GRACE,
            launcher_told: false,
        }
    }

    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// When the loop must wake up next: the next attempt, or the end of the
    /// grace if the launcher still waits.
    pub fn deadline(&self) -> Instant {
        if self.launcher_told {
            self.next
        } else {
            self.next.min(self.grace_until)
        }
    }

    /// Logs the failed attempt as Celery's consumer does and schedules the
    /// next. `shown_url` is the broker's, masked; an error that names its own
    /// URL (the backend's) is shown with that one.
    pub fn failed(&mut self, shown_url: &str, e: &BrokerError) -> Verdict {
        let (url, why) = detail(e);
        let reason = format!(
            "consumer: Cannot connect to {}: {why}",
            url.unwrap_or(shown_url)
        );
        if is_permanent(e) {
            return Verdict::Fail(reason);
        }
        self.attempts += 1;
        let delay = FIRST_DELAY
            .saturating_mul(1 << self.attempts.saturating_sub(1).min(5))
            .min(MAX_DELAY);
        self.next = Instant::now() + delay;
        tracing::error!(
            "{reason}.\nTrying again in {:.2} seconds... ({})",
            delay.as_secs_f64(),
            self.attempts
        );
        Verdict::Retry
    }

    /// Once, when the grace is over and Redis still did not answer: the line
    /// for the launcher's terminal.
    pub fn grace_over(&mut self, shown_url: &str, logfile_hint: &str) -> Option<String> {
        if self.launcher_told || Instant::now() < self.grace_until {
            return None;
        }
        self.launcher_told = true;
        Some(format!(
            "Redis at {shown_url} is not reachable yet; the node is running and keeps trying to connect (see {logfile_hint})"
        ))
    }
}

/// The URL a connection error names, and the error without the "cannot
/// connect to <url>: " it starts with (Celery's line names the URL once).
fn detail(e: &BrokerError) -> (Option<&str>, String) {
    match e {
        BrokerError::Connect { url, source } => (Some(url.as_str()), source.to_string()),
        BrokerError::Auth { url, source } => (
            Some(url.as_str()),
            format!("authentication failed: {source}"),
        ),
        other => (None, other.to_string()),
    }
}

fn is_permanent(e: &BrokerError) -> bool {
    match e {
        BrokerError::Auth { .. } | BrokerError::TlsFile { .. } | BrokerError::BadUrl(_) => true,
        BrokerError::Connect { source, .. } => is_tls_refusal(source),
        _ => false,
    }
}

/// A TLS handshake that failed (certificate not trusted, client certificate
/// refused). The redis crate keeps rustls's error inside an io::Error it does
/// not expose, so this goes by rustls's messages; anything else is retried.
fn is_tls_refusal(e: &redis::RedisError) -> bool {
    if !e.is_io_error() {
        return false;
    }
    let text = e.to_string();
    [
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}
