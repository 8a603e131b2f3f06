//! The node's subscription to the `celery.pidbox` fanout: one Redis
//! connection in PSUBSCRIBE mode whose socket is one more fd in the
//! supervisor's poll set.
//!
//! redis-rs keeps what it read ahead in its parser, so "the socket is
//! readable" and "a message is waiting" differ: after poll wakes us, `drain`
//! reads until a read would block, which leaves no whole message behind in
//! that buffer. The socket is non-blocking for that (redis-rs keeps a
//! partly read message in its parser and takes it up on the next read): a
//! read timeout would be at least a kernel tick (4 ms at HZ=250) added to
//! every request, long enough for a child to take a task a revoke names
//! before the revoke is in Redis.

use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::broker::{self, BrokerError};

/// Wait after a failed or lost subscription before trying again.
const RETRY: Duration = Duration::from_secs(2);

pub struct Listener {
    url: String,
    channel: String,
    con: Option<(redis::Connection, RawFd)>,
    retry_at: Option<Instant>,
}

impl Listener {
    pub fn new(url: &str, channel: &str) -> Listener {
        Listener {
            url: url.to_string(),
            channel: channel.to_string(),
            con: None,
            retry_at: None,
        }
    }

    /// The subscribed socket, when there is one.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the fd belongs to `self.con`'s socket and lives as long as it.
        self.con
            .as_ref()
            .map(|(_, fd)| unsafe { BorrowedFd::borrow_raw(*fd) })
    }

    /// When a lost subscription is tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.con.is_none())
    }

    /// Subscribes if not subscribed (and no retry is pending).
    pub fn ensure(&mut self) {
        if self.con.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.subscribe() {
            Ok(c) => {
                self.con = Some(c);
                self.retry_at = None;
            }
            Err(e) => {
                tracing::error!("Cannot listen for remote control on {}: {e}", self.channel);
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    fn subscribe(&mut self) -> Result<(redis::Connection, RawFd), BrokerError> {
        // redis-rs does not expose its socket: it is the one socket that
        // appears while connecting (this process is single-threaded).
        let before = socket_fds();
        let mut con = broker::connect(&self.url)?;
        let fresh: Vec<RawFd> = socket_fds()
            .into_iter()
            .filter(|fd| !before.contains(fd))
            .collect();
        let [fd] = fresh[..] else {
            return Err(BrokerError::Reply(format!(
                "cannot tell the subscription's socket ({} new sockets)",
                fresh.len()
            )));
        };
        redis::cmd("PSUBSCRIBE")
            .arg(&self.channel)
            .query::<redis::Value>(&mut con)?;
        // The subscription only reads from here on (see the module doc).
        set_nonblocking(fd).map_err(|e| {
            BrokerError::Reply(format!("cannot make the subscription non-blocking: {e}"))
        })?;
        tracing::debug!("Listening for remote control on {}", self.channel);
        Ok((con, fd))
    }

    /// The payloads received so far (at most `max`; the rest stay for the
    /// next turn). A lost connection is re-made on a later turn.
    pub fn drain(&mut self, max: usize) -> Vec<String> {
        self.ensure();
        let mut out = Vec::new();
        let Some((con, _)) = self.con.as_mut() else {
            return out;
        };
        let mut lost = None;
        {
            let mut pubsub = con.as_pubsub();
            while out.len() < max {
                match pubsub.get_message() {
                    Ok(msg) => match msg.get_payload::<Vec<u8>>() {
                        Ok(bytes) => out.push(String::from_utf8_lossy(&bytes).into_owned()),
                        Err(e) => tracing::warn!("Ignored a remote-control message: {e}"),
                    },
                    // Nothing more to read now (WouldBlock counts as a timeout).
                    Err(e) if e.is_timeout() => break,
                    // A signal (SIGCHLD) interrupted the read: nothing is
                    // lost, the loop comes back for the rest.
                    Err(e) if e.to_string().contains("os error 4") => break,
                    Err(e) => {
                        lost = Some(e);
                        break;
                    }
                }
            }
            // Dropping a PubSub unsubscribes; the subscription is kept for
            // the next turn, and a PubSub that only read holds nothing.
            std::mem::forget(pubsub);
        }
        if let Some(e) = lost {
            tracing::error!("Remote-control subscription lost: {e}; subscribing again");
            self.con = None;
            self.retry_at = Some(Instant::now() + RETRY);
        }
        out
    }
}

fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// This process's open socket fds.
fn socket_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        target.to_str()?.starts_with("socket:").then_some(fd)
    })
    .collect()
}
