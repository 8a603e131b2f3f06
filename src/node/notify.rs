//! systemd's notify protocol (`sd_notify(3)`), without libsystemd: one
//! datagram per message to the unix socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` in the abstract namespace).
//!
//! The node main process sends `READY=1` once its pool consumes, `STATUS=`
//! lines as it changes state, `STOPPING=1` when it starts to shut down, and
//! `WATCHDOG=1` from its loop at half of `$WATCHDOG_USEC` when systemd sets
//! it (`WatchdogSec=`). Nothing here blocks or starts a thread: the socket
//! is non-blocking and a lost datagram is only a lost notification.
//!
//! The variables are removed from the environment once read, so pool
//! children and the commands they run cannot speak for the node.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notify {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    next_watchdog: Instant,
    stopping_sent: bool,
    ready_sent: bool,
}

impl Notify {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` and removes
    /// them from the environment (call while single-threaded).
    pub fn from_env() -> Notify {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let socket = var("NOTIFY_SOCKET").and_then(|path| connect(&path));
        let for_us = var("WATCHDOG_PID")
            .map(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()))
            .unwrap_or(true);
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u) / 2);
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        Notify {
            socket,
            watchdog,
            next_watchdog: Instant::now(),
            stopping_sent: false,
            ready_sent: false,
        }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notify {
        Notify {
            socket: None,
            watchdog: None,
            next_watchdog: Instant::now(),
            stopping_sent: false,
            ready_sent: false,
        }
    }

    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one message (`KEY=value` lines); errors are ignored: systemd
    /// gone or the socket full only loses a notification.
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket {
            let _ = sock.send_to_addr(message.as_bytes(), addr);
        }
    }

    pub fn status(&self, text: &str) {
        // One line: a newline would end the STATUS= assignment.
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// `READY=1` with a status, once.
    pub fn ready(&mut self, status: &str) {
        if !self.ready_sent {
            self.ready_sent = true;
            self.send(&format!(
                "READY=1\nSTATUS={}\nMAINPID={}",
                status.replace('\n', " "),
                std::process::id()
            ));
        }
    }

    /// `STOPPING=1` with a status, once.
    pub fn stopping(&mut self, status: &str) {
        if !self.stopping_sent {
            self.stopping_sent = true;
            self.send(&format!("STOPPING=1\nSTATUS={}", status.replace('\n', " ")));
        }
    }

    /// When the next `WATCHDOG=1` is due, if systemd watches us.
    pub fn deadline(&self) -> Option<Instant> {
        self.watchdog.map(|_| self.next_watchdog)
    }

    /// Sends `WATCHDOG=1` when due (call from the main loop: a loop that is
    /// stuck stops the pings, and systemd restarts the node).
    pub fn watchdog_when_due(&mut self, now: Instant) {
        if let Some(every) = self.watchdog {
            if now >= self.next_watchdog {
                self.send("WATCHDOG=1");
                self.next_watchdog = now + every;
            }
        }
    }
}

fn connect(path: &str) -> Option<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
        None if path.starts_with('/') => SocketAddr::from_pathname(path).ok()?,
        None => return None,
    };
    let sock = UnixDatagram::unbound().ok()?;
    sock.set_nonblocking(true).ok()?;
    Some((sock, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notify::none();
        n.socket = connect(path.to_str().unwrap());
        n.ready("Ready");
        n.ready("again");
        n.stopping("Stopping");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..len]).to_string();
        assert!(
            first.starts_with("READY=1\nSTATUS=Ready\nMAINPID="),
            "{first}"
        );
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=Stopping");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(connect("notify").is_none());
    }
}
