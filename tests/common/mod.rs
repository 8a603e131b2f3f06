//! The harness every integration test uses (in the manner of ripgrep's
//! `tests/util.rs`): a private `redis-server` per test, a temp dir with an
//! app file, a command builder around the real `rmulti` binary, and guards
//! that kill every process a test started when the test ends, even when it
//! panics.
//!
//! Nothing here needs a tool beyond `redis-server` itself: Redis is spoken
//! to with a tiny RESP client over `TcpStream` (no `redis-cli`), and task
//! messages are built by hand in the exact shape Celery 5.7 sends
//! (`fixtures/celery-5.7/task-v2-delay.json`).
//!
//! Conventions shared with `tests/python/conftest.py`:
//! - broker = db 0, result backend = db 1 of the test's own server
//!   ([`BROKER_DB`], [`RESULT_DB`]), as in the captured fixtures;
//! - the app file is `<name>.toml` in the test dir, with the builtins under
//!   the seed's names `proj.tasks.add`, `mul`, `xsum`, `sleep`, `echo`,
//!   `fail`, `noop`.
//!
//! Include it with `mod common;` and `use common::*;`. Each test crate uses
//! only part of it, hence the `dead_code` allowance below.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The database the app files use as broker.
pub const BROKER_DB: u32 = 0;
/// The database the app files use as result backend.
pub const RESULT_DB: u32 = 1;

/// How long to wait for things that should take milliseconds on an idle
/// machine, generously sized for a loaded 2-core CI runner.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

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

/// The contents of a log file, or "" when it does not exist (yet).
pub fn read_log(path: impl AsRef<Path>) -> String {
    fs::read(path.as_ref())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A port that was free a moment ago on 127.0.0.1 (the caller retries if it
/// loses the race).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

// ---------------------------------------------------------------------------
// RESP: just enough of the Redis protocol for tests
// ---------------------------------------------------------------------------

/// One Redis reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the nil bulk string (GET of a missing key).
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array (BLPOP timeout).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// Integer replies (LLEN, TTL, EXISTS, LPUSH, ...). Panics otherwise.
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// A bulk or simple string as text; `None` for nil. Panics on other replies.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Resp::Bulk(None) => None,
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The raw bytes of a bulk string; `None` for nil.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Resp::Bulk(b) => b.clone(),
            Resp::Simple(s) => Some(s.clone().into_bytes()),
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }

    /// An array of strings (LRANGE, KEYS, ZRANGE, HGETALL flat). Nil array = empty.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Resp::Array(Some(items)) => {
                items.iter().map(|r| r.text().unwrap_or_default()).collect()
            }
            Resp::Array(None) => Vec::new(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// HGETALL as a map.
    pub fn map(&self) -> HashMap<String, String> {
        let flat = self.strings();
        flat.chunks(2)
            .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
            .collect()
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Resp::Bulk(None) | Resp::Array(None))
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(s) => write!(f, "-{s}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(None) => write!(f, "(nil)"),
            Resp::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::Array(None) => write!(f, "(nil array)"),
            Resp::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short RESP line {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad {what}: {body:?}"),
        )
    };
    match line[0] {
        b'+' => Ok(Resp::Simple(body)),
        b'-' => Ok(Resp::Error(body)),
        b':' => body.parse().map(Resp::Int).map_err(|_| bad("integer")),
        b'$' => {
            let n: i64 = body.parse().map_err(|_| bad("bulk length"))?;
            if n < 0 {
                return Ok(Resp::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Resp::Bulk(Some(buf)))
        }
        b'*' => {
            let n: i64 = body.parse().map_err(|_| bad("array length"))?;
            if n < 0 {
                return Ok(Resp::Array(None));
            }
            (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Resp::Array(Some(v)))
        }
        _ => Err(bad("reply type")),
    }
}

/// One connection to a Redis server, for tests that send several commands
/// (or MULTI/EXEC). Every read has a timeout, so a test never hangs on Redis.
pub struct RedisConn {
    reader: BufReader<TcpStream>,
}

impl RedisConn {
    pub fn connect(port: u16, db: u32) -> std::io::Result<RedisConn> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut conn = RedisConn {
            reader: BufReader::new(stream),
        };
        if db != 0 {
            let r = conn.cmd_bytes(&[b"SELECT", db.to_string().as_bytes()])?;
            if r != Resp::Simple("OK".into()) {
                return Err(std::io::Error::other(format!("SELECT {db}: {r:?}")));
            }
        }
        Ok(conn)
    }

    /// Sends one command; arguments are binary-safe.
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> std::io::Result<Resp> {
        self.reader.get_mut().write_all(&encode_command(args))?;
        read_reply(&mut self.reader)
    }

    /// Sends one command. Panics on I/O errors (the test's Redis is gone).
    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&raw)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

// ---------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Task messages, as Celery 5.7 sends them
// ---------------------------------------------------------------------------

/// Builds a protocol-2 task envelope in the exact shape of
/// `fixtures/celery-5.7/task-v2-delay.json` (`add.delay(2, 3)`), key order
/// included. Returns `(task_id, envelope)`; tests may edit the envelope
/// before [`publish_raw`].
pub fn task_envelope(queue: &str, name: &str, args: &Value, kwargs: &Value) -> (String, Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let body =
        json!([args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let body_b64 = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let envelope = json!({
        "body": body_b64,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": name,
            "id": id,
            "shadow": null,
            "eta": null,
            "expires": null,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": id,
            "parent_id": null,
            "argsrepr": py_args_repr(args),
            "kwargsrepr": "{}",
            "origin": format!("gen{}@127.0.0.1", std::process::id()),
            "ignore_result": false,
            "replaced_task_nesting": 0,
            "stamped_headers": null,
            "stamps": {}
        },
        "properties": {
            "correlation_id": id,
            "reply_to": uuid::Uuid::new_v4().to_string(),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string()
        }
    });
    (id, envelope)
}

/// Python's repr of an args tuple, near enough for `argsrepr`: `(2, 3)`, `(1,)`.
fn py_args_repr(args: &Value) -> String {
    let items: Vec<String> = match args {
        Value::Array(a) => a.iter().map(Value::to_string).collect(),
        other => vec![other.to_string()],
    };
    if items.len() == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}

/// LPUSHes raw bytes onto `queue` in the broker db, as kombu does.
pub fn publish_raw(redis: &RedisServer, queue: &str, raw: &[u8]) {
    let r = redis
        .conn(BROKER_DB)
        .cmd_bytes(&[b"LPUSH", queue.as_bytes(), raw])
        .unwrap_or_else(|e| panic!("LPUSH {queue}: {e}"));
    assert!(matches!(r, Resp::Int(_)), "LPUSH {queue}: {r:?}");
}

/// Sends task `name` with positional `args_json` (a JSON array, e.g.
/// `"[4, 4]"`) to `queue`, as `name.delay(*args)` would. Returns the task id.
pub fn publish_task(redis: &RedisServer, queue: &str, name: &str, args_json: &str) -> String {
    let args: Value =
        serde_json::from_str(args_json).unwrap_or_else(|e| panic!("args {args_json:?}: {e}"));
    let (id, envelope) = task_envelope(queue, name, &args, &json!({}));
    publish_raw(redis, queue, envelope.to_string().as_bytes());
    id
}

// ---------------------------------------------------------------------------
// TestDir and the app file
// ---------------------------------------------------------------------------

/// The `[tasks]` every test app has: the builtins under the seed's names.
pub const BUILTIN_TASKS: &str = r#""proj.tasks.add" = { builtin = "add" }
"proj.tasks.mul" = { builtin = "mul" }
"proj.tasks.xsum" = { builtin = "xsum" }
"proj.tasks.noop" = { builtin = "noop" }
"proj.tasks.sleep" = { builtin = "sleep" }
"proj.tasks.echo" = { builtin = "echo" }
"proj.tasks.fail" = { builtin = "fail" }
"#;

/// A temp dir that is the working directory of the test's `rmulti`
/// processes, tied to the test's Redis. Removed on drop (keep it with
/// `RMULTI_KEEP_TESTDIR=1` to look at the logs after a failure).
pub struct TestDir {
    dir: tempfile::TempDir,
    broker_url: String,
    backend_url: String,
}

impl TestDir {
    pub fn new(redis: &RedisServer) -> TestDir {
        let mut dir = tempfile::Builder::new()
            .prefix("rmulti-test-")
            .tempdir()
            .expect("create temp dir");
        if std::env::var_os("RMULTI_KEEP_TESTDIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("test dir kept: {}", dir.path().display());
        }
        TestDir {
            dir,
            broker_url: redis.broker_url(),
            backend_url: redis.backend_url(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path()/name`
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file relative to the dir, creating parent folders.
    pub fn write(&self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Reads a file relative to the dir ("" when missing), e.g. `w1.log`.
    pub fn read(&self, name: impl AsRef<Path>) -> String {
        read_log(self.join(name))
    }

    /// Writes `<name>.toml`: broker and backend at the test's Redis, then
    /// `extra_toml` (settings and tables, e.g. `result_expires = 60`), then
    /// `[tasks]` with [`BUILTIN_TASKS`].
    pub fn write_app(&self, name: &str, extra_toml: &str) -> PathBuf {
        self.write_app_tasks(name, extra_toml, "")
    }

    /// As [`write_app`](Self::write_app), with `extra_tasks` lines added to
    /// `[tasks]` (e.g. `"proj.tasks.cat" = { exec = ["cat"] }`).
    pub fn write_app_tasks(&self, name: &str, extra_toml: &str, extra_tasks: &str) -> PathBuf {
        let text = format!(
            "# written by tests/common\nbroker_url = \"{}\"\nresult_backend = \"{}\"\n{extra_toml}\n\n[tasks]\n{BUILTIN_TASKS}{extra_tasks}\n",
            self.broker_url, self.backend_url
        );
        self.write(format!("{name}.toml"), text)
    }
}

// ---------------------------------------------------------------------------
// The rmulti command builder
// ---------------------------------------------------------------------------

/// The binary under test.
pub fn rmulti_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rmulti"))
}

/// `rmulti <args>` run in a test dir, with the Celery variables of the
/// developer's shell removed so only the test's app file counts.
pub struct Rmulti {
    cmd: Command,
    display: Vec<String>,
}

impl Rmulti {
    pub fn new(dir: &TestDir) -> Rmulti {
        Rmulti::in_dir(dir.path())
    }

    pub fn in_dir(cwd: &Path) -> Rmulti {
        let mut cmd = Command::new(rmulti_bin());
        cmd.current_dir(cwd).stdin(Stdio::null());
        for var in ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "C_FAKEFORK"] {
            cmd.env_remove(var);
        }
        Rmulti {
            cmd,
            display: vec!["rmulti".into()],
        }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Rmulti {
        self.display.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Rmulti
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Rmulti {
        self.cmd.env(k, v);
        self
    }

    /// The underlying command, for anything not covered here.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Removes `k` from the environment the command gets.
    pub fn env_remove(mut self, k: &str) -> Rmulti {
        self.cmd.env_remove(k);
        self
    }

    /// Runs to completion, with a deadline: a hung `rmulti` is killed and
    /// the test fails instead of hanging CI.
    pub fn run(mut self) -> Run {
        let shown = self.display.join(" ");
        run_with_deadline(&mut self.cmd, shown)
    }

    /// Starts it in the background (a foreground worker, say) in its own
    /// process group; the returned guard kills the group on drop.
    pub fn spawn(mut self) -> Spawned {
        let shown = self.display.join(" ");
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        Spawned { child, shown }
    }
}

/// Runs `cmd` to completion in a process group of its own, its output
/// captured; if it has not finished within 60 s, its group and every
/// descendant are SIGKILLed and the test fails (with `shown` and the output
/// so far) instead of hanging CI.
pub fn run_with_deadline(cmd: &mut Command, shown: String) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let pid = child.id() as i32;
    let done = wait_until(Duration::from_secs(60), || {
        !matches!(child.try_wait(), Ok(None))
    });
    if !done {
        kill_group_and_tree(pid);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {shown}: {e}"));
    assert!(
        done,
        "{shown} did not finish within 60 s (killed)\n{}",
        Run::describe_output(&out)
    );
    Run { shown, out }
}

/// The outcome of [`Rmulti::run`] and [`run_with_deadline`].
pub struct Run {
    pub shown: String,
    pub out: Output,
}

impl Run {
    fn describe_output(out: &Output) -> String {
        format!(
            "status: {}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Asserts exit 0 and returns self; the failure message shows both streams.
    pub fn success(self) -> Run {
        assert!(
            self.out.status.success(),
            "{} failed\n{}",
            self.shown,
            Run::describe_output(&self.out)
        );
        self
    }

    /// Asserts the exit status.
    pub fn code_is(self, code: i32) -> Run {
        assert_eq!(
            self.out.status.code(),
            Some(code),
            "{}: unexpected exit status\n{}",
            self.shown,
            Run::describe_output(&self.out)
        );
        self
    }
}

/// A process started by [`Rmulti::spawn`] (or handed over with
/// [`Spawned::adopt`]); it, its process group if it leads one, and its
/// descendants are SIGKILLed and reaped on drop unless it already exited.
pub struct Spawned {
    pub child: Child,
    pub shown: String,
}

impl Spawned {
    /// Guards a child the test spawned itself (a `sleep` standing in for a
    /// foreign process, say), so that it dies with the test even on panic.
    pub fn adopt(child: Child, shown: impl Into<String>) -> Spawned {
        Spawned {
            child,
            shown: shown.into(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits up to `timeout` for it to exit; returns its status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_group_and_tree(self.pid());
        }
        let _ = self.child.wait();
    }
}

/// What is still in flight in the broker db: a non-empty `unacked` or
/// `unacked_index`, non-empty held lists, slot states. Empty when every
/// message was acked.
pub fn in_flight(redis: &RedisServer) -> Vec<String> {
    let mut busy = Vec::new();
    for key in ["unacked", "unacked_index"] {
        let n = match key {
            "unacked" => redis.cmd(&["HLEN", key]).int(),
            _ => redis.cmd(&["ZCARD", key]).int(),
        };
        if n > 0 {
            busy.push(format!("{key} ({n})"));
        }
    }
    for key in redis.cmd(&["KEYS", "rmulti.held.*"]).strings() {
        if redis.cmd(&["LLEN", &key]).int() > 0 {
            busy.push(key);
        }
    }
    busy.extend(redis.cmd(&["KEYS", "rmulti.state.*"]).strings());
    busy
}

/// Waits until nothing is in flight ([`in_flight`]). A task's result is
/// stored just before its message is acked, so a test that has seen the
/// result polls for this instead of asserting at once.
pub fn wait_nothing_in_flight(redis: &RedisServer) {
    let settled = wait_until(Duration::from_secs(5), || in_flight(redis).is_empty());
    assert!(settled, "still in flight: {:?}", in_flight(redis));
}

/// Nothing of any message is left: nothing in flight ([`in_flight`]: kombu's
/// `unacked` and `unacked_index`, non-empty held lists, slot states) and the
/// default queue `celery` empty.
pub fn assert_broker_clean(redis: &RedisServer) {
    wait_nothing_in_flight(redis);
    assert_eq!(redis.cmd(&["LLEN", "celery"]).int(), 0, "queue not empty");
}

/// Waits up to 10 s for the task's STARTED meta (needs `task_track_started`).
pub fn wait_started(redis: &RedisServer, id: &str) {
    let started = wait_for(Duration::from_secs(10), || {
        redis.result(id).filter(|m| m["status"] == "STARTED")
    });
    assert!(started.is_some(), "task {id} never STARTED");
}

/// The `exc_type` of a FAILURE meta ("" when there is none).
pub fn exc_type(meta: &Value) -> &str {
    meta["result"]["exc_type"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// One worker node, the way most tests start it
// ---------------------------------------------------------------------------

/// The node name tests use, so log lines and held-list keys are predictable.
pub const TEST_NODE: &str = "w1@testhost";

/// `worker -A proj -n w1@testhost -l info --pidfile=%n.pid --logfile=%n%I.log`
/// followed by `extra` (no `--detach`: foreground tests use it too).
pub fn worker_args(extra: &[&str]) -> Vec<String> {
    let base = ["worker", "-A", "proj", "-n", TEST_NODE, "-l", "info"];
    let files = ["--pidfile=%n.pid", "--logfile=%n%I.log"];
    base.iter()
        .chain(files.iter())
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect()
}

/// Runs `rmulti worker ... --detach` for w1 in `dir`; the launcher's outcome is
/// not asserted, and the guard kills whatever it started.
pub fn start_worker(dir: &TestDir, extra: &[&str]) -> (Run, NodeGuard) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut args = worker_args(extra);
    args.push("--detach".to_string());
    let run = Rmulti::new(dir).args(&args).run();
    guard.remember();
    (run, guard)
}

/// Starts w1 detached with `extra` flags and asserts it started: exit 0, a
/// pidfile, a live main process. Returns the guard, the main pid and the
/// launcher's outcome.
pub fn start_detached_run(dir: &TestDir, extra: &[&str]) -> (NodeGuard, i32, Run) {
    let (run, guard) = start_worker(dir, extra);
    let run = run.success();
    let pid = read_pidfile(dir.join("w1.pid")).expect("pidfile after a successful start");
    assert!(alive(pid), "main process {pid} not alive after start");
    (guard, pid, run)
}

/// [`start_detached_run`] without the launcher's outcome.
pub fn start_detached(dir: &TestDir, extra: &[&str]) -> (NodeGuard, i32) {
    let (guard, pid, _) = start_detached_run(dir, extra);
    (guard, pid)
}

/// Starts w1 in the foreground (so its exit status can be seen) and waits
/// for `ready.` in its log. Returns the process, its guard and the pid its
/// pidfile holds.
pub fn start_foreground(dir: &TestDir, extra: &[&str]) -> (Spawned, NodeGuard, i32) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let node = Rmulti::new(dir).args(worker_args(extra)).spawn();
    let ready = format!("{TEST_NODE} ready.");
    assert!(
        wait_until(STARTUP_TIMEOUT, || dir.read("w1.log").contains(&ready)),
        "foreground node not ready:\n{}",
        node_logs(dir)
    );
    guard.remember();
    let pid = read_pidfile(dir.join("w1.pid")).expect("pidfile of a ready node");
    (node, guard, pid)
}

/// A fresh redis-server and a test dir holding the builtin app `proj`, with
/// `extra_toml` in its config.
pub fn redis_with_app(extra_toml: &str) -> (RedisServer, TestDir) {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write_app("proj", extra_toml);
    (redis, dir)
}

/// [`redis_with_app`] with w1 started on it as [`start_detached`] does.
/// Bind all four in this order: the guard then drops before the dir and
/// the redis-server it uses.
pub fn started_node(extra_toml: &str, extra: &[&str]) -> (RedisServer, TestDir, NodeGuard, i32) {
    let (redis, dir) = redis_with_app(extra_toml);
    let (guard, pid) = start_detached(&dir, extra);
    (redis, dir, guard, pid)
}

/// Every `*.log` file of the test dir, sorted by name, each after a
/// `--- <name>` line: for failure messages, and for asserting that a line
/// is (or is not) in any of a node's logs.
pub fn node_logs(dir: &TestDir) -> String {
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| format!("--- {n}\n{}", dir.read(n)))
        .collect()
}

/// Sends `sig` to `pid`; panics if kill(2) fails (the process is gone).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// The machine's host name: what `%h` and a bare node name expand to.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------
// NodeGuard: no process survives a test
// ---------------------------------------------------------------------------

/// Parent pid and state of a live process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

/// Every live descendant of `pid` (children, grandchildren, ...).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some((ppid, _)) = proc_stat(p) {
                    parent_of.push((p, ppid));
                }
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let cur = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The live direct children of `pid` (a node's pool children, say, with
/// whatever orphans it adopted as subreaper).
pub fn children_of(pid: i32) -> Vec<i32> {
    descendants(pid)
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((ppid, _)) if ppid == pid))
        .collect()
}

/// SIGKILLs `pid`, its process group (if it leads one) and every
/// descendant (which may have groups of their own), then waits up to 5 s
/// for them to be gone or zombies.
pub fn kill_group_and_tree(pid: i32) {
    if pid <= 1 {
        return;
    }
    let mut victims = descendants(pid);
    victims.push(pid);
    for &p in &victims {
        // SAFETY: kill(2) has no memory-safety preconditions. A negative
        // pid addresses the group that p leads, if any.
        unsafe {
            if libc::getpgid(p) == p {
                libc::kill(-p, libc::SIGKILL);
            }
            libc::kill(p, libc::SIGKILL);
        }
    }
    wait_until(Duration::from_secs(5), || {
        victims.iter().all(|&p| !alive(p))
    });
}

/// The pid in a pidfile (`<pid>\n`), if it holds one.
pub fn read_pidfile(path: impl AsRef<Path>) -> Option<i32> {
    fs::read_to_string(path.as_ref())
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 1)
}

/// True if `pid` is not this test process and its argv[0] is named
/// `rmulti*`: the only processes a [`NodeGuard`] may kill, since a pidfile
/// (or a remembered pid) can point at anything.
pub fn is_rmulti(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    Path::new(argv0.as_ref())
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("rmulti"))
}

/// Watches pidfiles of detached nodes; on drop, every node (and its pool)
/// still alive is SIGKILLed, so a failed test leaves nothing running.
/// Call [`NodeGuard::remember`] after a start so a node whose pidfile
/// vanished is still found.
pub struct NodeGuard {
    pidfiles: Vec<PathBuf>,
    seen: Vec<i32>,
}

impl NodeGuard {
    /// Pidfile paths, relative ones resolved against `dir`.
    pub fn new<P: AsRef<Path>>(dir: &Path, pidfiles: &[P]) -> NodeGuard {
        let pidfiles = pidfiles.iter().map(|p| dir.join(p.as_ref())).collect();
        NodeGuard {
            pidfiles,
            seen: Vec::new(),
        }
    }

    /// Watches one more pidfile.
    pub fn watch(&mut self, pidfile: impl Into<PathBuf>) {
        self.pidfiles.push(pidfile.into());
    }

    /// Records the pids the pidfiles hold now.
    pub fn remember(&mut self) {
        for pid in self.pidfiles.iter().filter_map(read_pidfile) {
            if !self.seen.contains(&pid) {
                self.seen.push(pid);
            }
        }
    }

    /// The pids the pidfiles hold now, in pidfile order (None: no/garbage file).
    pub fn pids(&self) -> Vec<Option<i32>> {
        self.pidfiles.iter().map(read_pidfile).collect()
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.remember();
        for &pid in &self.seen {
            // A pid may be stale or reused: kill only rmulti processes.
            if alive(pid) && is_rmulti(pid) {
                kill_group_and_tree(pid);
            }
        }
    }
}
