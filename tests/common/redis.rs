//! A private `redis-server` per test on a free port of 127.0.0.1, with or
//! without an append-only file, that can be stopped and restarted on the same
//! port; and reading the result backend it holds.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::app::read_log;
use super::poll::{wait_for, wait_until, STARTUP_TIMEOUT};
use super::resp::{RedisConn, Resp};

/// The database the app files use as broker.
pub const BROKER_DB: u32 = 0;
/// The database the app files use as result backend.
pub const RESULT_DB: u32 = 1;

/// A port that was free a moment ago on 127.0.0.1 (the caller retries if it
/// loses the race).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A private `redis-server` on a free port of 127.0.0.1, in its own temp
/// dir, persisting nothing ([`start`](Self::start)) or every write to an
/// append-only file ([`start_with_aof`](Self::start_with_aof)). Killed (and
/// reaped) on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    aof: bool,
}

impl RedisServer {
    /// Starts the server and returns once it answers PING. Panics (with the
    /// server's own log) if it cannot be started.
    pub fn start() -> RedisServer {
        RedisServer::start_persisting(false)
    }

    /// As [`start`](Self::start), with `--appendonly yes --appendfsync
    /// always`: every write Redis acknowledged is on disk, in the server's
    /// dir, which [`restart`](Self::restart) keeps. So a restart, even after
    /// a kill, comes back with the data (as a production Redis with AOF does).
    pub fn start_with_aof() -> RedisServer {
        RedisServer::start_persisting(true)
    }

    fn start_persisting(aof: bool) -> RedisServer {
        let mut last_err = String::new();
        // A free port can be taken between our check and redis' bind: retry.
        for _ in 0..5 {
            match RedisServer::try_start(aof) {
                Ok(server) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    fn try_start(aof: bool) -> Result<RedisServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("rmulti-redis-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let port = free_port();
        let child = RedisServer::spawn_server(port, dir.path(), aof, &[])?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            aof,
        };
        let up = wait_until(STARTUP_TIMEOUT, || server.ping() || server.exited());
        if up && server.ping() {
            return Ok(server);
        }
        Err(format!(
            "redis-server on port {port} did not answer PING; its log:\n{}",
            server.log()
        ))
    }

    /// Kills the server (as a crash would: without AOF nothing is saved) and waits until
    /// it is gone and its port refuses connections. Clients see the
    /// connection drop. [`restart`](Self::restart) brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        wait_until(STARTUP_TIMEOUT, || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
        });
    }

    /// Starts a new `redis-server` on the SAME port (stopping the current
    /// one first if it still runs), so clients configured with the old URL
    /// can reconnect. It is empty, unless the server was started
    /// [with AOF](Self::start_with_aof): then it loads what the old one
    /// wrote. Panics if the port cannot be bound again within
    /// [`STARTUP_TIMEOUT`].
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// As [`restart`](Self::restart), the new server getting `extra`
    /// arguments. `["--key-load-delay", "1000"]` (a hidden setting of Redis'
    /// own tests: microseconds per key loaded from the RDB part of the AOF,
    /// see [`rewrite_aof`](Self::rewrite_aof)) keeps it answering `LOADING`
    /// for a while, as a production Redis with a big data set does. Returns
    /// once it has loaded and answers PING.
    pub fn restart_with(&mut self, extra: &[&str]) {
        if !self.exited() {
            self.stop();
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_err = String::new();
        while Instant::now() < deadline {
            match RedisServer::spawn_server(self.port, self.dir.path(), self.aof, extra) {
                Ok(child) => {
                    self.child = child;
                    let up = wait_until(STARTUP_TIMEOUT, || self.ping() || self.exited());
                    if up && self.ping() {
                        return;
                    }
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    last_err = self.log();
                }
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "could not restart redis-server on port {}: {last_err}",
            self.port
        );
    }

    /// Rewrites the AOF (`BGREWRITEAOF`) and waits until it is done: what
    /// Redis holds now is then in the file's RDB part, which a restart loads
    /// key by key.
    pub fn rewrite_aof(&self) {
        let mut con = self.conn(0);
        let r = con.cmd(&["BGREWRITEAOF"]);
        assert!(matches!(r, Resp::Simple(_)), "BGREWRITEAOF: {r:?}");
        let done = wait_until(STARTUP_TIMEOUT, || {
            let info = con.cmd(&["INFO", "persistence"]).text().unwrap_or_default();
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
        });
        assert!(done, "the AOF rewrite did not finish");
    }

    /// Spawns `redis-server` on `port` with its files in `dir` (the log is
    /// appended to) and `extra` arguments; with `aof`, every write is fsynced
    /// to an append-only file.
    fn spawn_server(port: u16, dir: &Path, aof: bool, extra: &[&str]) -> Result<Child, String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("redis.log"))
            .map_err(|e| format!("redis.log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("redis.log: {e}"))?;
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if aof { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                format!("spawn redis-server (is it installed? bin/setup installs it): {e}")
            })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// A raw `PING\r\n` → `+PONG`, as the brief of the harness asks: no client needed.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the redis-server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis://127.0.0.1:<port>/<db>`
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    pub fn broker_url(&self) -> String {
        self.url(BROKER_DB)
    }

    pub fn backend_url(&self) -> String {
        self.url(RESULT_DB)
    }

    /// The server's log (its stdout and stderr).
    pub fn log(&self) -> String {
        read_log(self.dir.path().join("redis.log"))
    }

    /// A new connection to database `db`.
    pub fn conn(&self, db: u32) -> RedisConn {
        RedisConn::connect(self.port, db)
            .unwrap_or_else(|e| panic!("connect to redis :{} db {db}: {e}", self.port))
    }

    /// One command on the broker database (db 0).
    pub fn cmd(&self, args: &[&str]) -> Resp {
        self.conn(BROKER_DB).cmd(args)
    }

    /// One command on database `db`.
    pub fn cmd_db(&self, db: u32, args: &[&str]) -> Resp {
        self.conn(db).cmd(args)
    }

    /// The stored result meta of task `id` (`celery-task-meta-<id>` in the
    /// result db), parsed; `None` while there is none.
    pub fn result(&self, id: &str) -> Option<Value> {
        result(self, RESULT_DB, id)
    }

    /// Waits up to `timeout` for a result whose status is final
    /// (SUCCESS, FAILURE, REVOKED).
    pub fn wait_result(&self, id: &str, timeout: Duration) -> Option<Value> {
        wait_for(timeout, || {
            self.result(id).filter(|m| {
                matches!(
                    m["status"].as_str(),
                    Some("SUCCESS" | "FAILURE" | "REVOKED")
                )
            })
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `celery-task-meta-<id>` in database `db`, parsed as JSON.
pub fn result(redis: &RedisServer, db: u32, id: &str) -> Option<Value> {
    let key = format!("celery-task-meta-{id}");
    let raw = redis.cmd_db(db, &["GET", &key]).bytes()?;
    Some(
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {raw:?}")),
    )
}
