//! `rmulti worker` under systemd's `Type=notify` (issue 13): with a
//! `NOTIFY_SOCKET` this test owns, the node sends `READY=1` once its pool
//! consumes, `STATUS=` lines, `STOPPING=1` on TERM, and `WATCHDOG=1` over
//! and over when `WATCHDOG_USEC` is set.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The socket systemd would own; collects what the node sends.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &TestDir) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_nonblocking(true).unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Reads what arrived; returns the new messages.
    fn poll(&mut self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let mut new = Vec::new();
        while let Ok(n) = self.sock.recv(&mut buf) {
            new.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.seen.extend(new.iter().cloned());
        new
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}

fn start(dir: &TestDir, sock: &NotifySocket, watchdog_usec: Option<&str>) -> (Spawned, NodeGuard) {
    let mut cmd = Command::new(rmulti_bin());
    cmd.args(worker_args(&["-c", "2"]))
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &sock.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(usec) = watchdog_usec {
        cmd.env("WATCHDOG_USEC", usec);
    }
    let guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let node = Spawned::adopt(cmd.spawn().expect("spawn rmulti worker"), "rmulti worker");
    (node, guard)
}

#[test]
fn ready_comes_after_the_pool_consumes_and_stopping_on_term() {
    let (redis, dir) = redis_with_app("");
    let mut sock = NotifySocket::bind(&dir);
    let (mut node, mut guard) = start(&dir, &sock, None);
    let ready_line = format!("{TEST_NODE} ready.");
    let mut log_when_ready = None;
    let got_ready = wait_until(STARTUP_TIMEOUT, || {
        // The log is read before the socket: if READY=1 is in what was
        // read after it, the log line was there first.
        let log = dir.read("w1.log");
        sock.poll();
        if sock.count("READY=1") > 0 {
            log_when_ready = Some(log);
            true
        } else {
            false
        }
    });
    assert!(
        got_ready,
        "no READY=1: {:?}\n{}",
        sock.seen,
        node_logs(&dir)
    );
    guard.remember();
    // READY=1 may arrive in the same poll as the ready line: check it is in the log now.
    let log = log_when_ready.unwrap_or_default() + &dir.read("w1.log");
    assert!(log.contains(&ready_line), "{log}");
    // A status before ready (connecting/starting) and in the READY message.
    assert!(
        sock.seen.iter().any(|m| m.starts_with("STATUS=")),
        "{:?}",
        sock.seen
    );
    let ready = sock.seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=") && ready.contains("MAINPID="),
        "{ready}"
    );
    assert_eq!(sock.count("STOPPING=1"), 0);
    assert_eq!(
        sock.count("WATCHDOG=1"),
        0,
        "no watchdog without WATCHDOG_USEC"
    );

    // The pool really consumes.
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[2, 3]");
    assert!(redis.wait_result(&id, Duration::from_secs(10)).is_some());

    node.signal(libc::SIGTERM);
    let status = node.wait_timeout(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    sock.poll();
    assert_eq!(sock.count("STOPPING=1"), 1, "{:?}", sock.seen);
    assert_eq!(sock.count("READY=1"), 1, "{:?}", sock.seen);
}

#[test]
fn watchdog_repeats_at_half_the_interval() {
    let (_redis, dir) = redis_with_app("");
    let mut sock = NotifySocket::bind(&dir);
    // 400 ms: a ping every 200 ms, well inside the main loop's 1 s wake-up.
    let (mut node, mut guard) = start(&dir, &sock, Some("400000"));
    assert!(
        wait_until(STARTUP_TIMEOUT, || {
            sock.poll();
            sock.count("READY=1") > 0
        }),
        "{:?}\n{}",
        sock.seen,
        node_logs(&dir)
    );
    guard.remember();
    let before = sock.count("WATCHDOG=1");
    let start = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || {
            sock.poll();
            sock.count("WATCHDOG=1") >= before + 5
        }),
        "{:?}",
        sock.seen
    );
    // Five pings at 200 ms take about a second, not five main-loop wake-ups.
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    node.signal(libc::SIGTERM);
    assert_eq!(
        node.wait_timeout(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}
