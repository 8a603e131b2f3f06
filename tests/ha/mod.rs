//! Helpers for the high-availability tests (Sentinel, partitions, fleets):
//! a Sentinel group of real `redis-server` processes on free ports in a temp
//! dir, and the app file for it. Kept apart from `tests/common` (to be
//! folded in later); uses its `RedisConn`, `free_port` and `wait_until`.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server` (or sentinel) process, killed and reaped on drop.
pub struct Proc {
    child: Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, port: u16, args: &[String]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server for {name}: {e}"));
        let p = Proc { child, port, log };
        let up = wait_until(STARTUP_TIMEOUT, || {
            RedisConn::connect(port, 0)
                .ok()
                .and_then(|mut c| c.cmd_bytes(&[b"PING"]).ok())
                .is_some()
        });
        assert!(up, "{name} on {port} did not start:\n{}", p.log());
        p
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, as a crashed machine.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn cmd(&self, args: &[&str]) -> Resp {
        self.conn(0).cmd(args)
    }

    pub fn conn(&self, db: u32) -> RedisConn {
        RedisConn::connect(self.port, db).unwrap_or_else(|e| panic!("connect {}: {e}", self.port))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master, a replica and three sentinels watching them (quorum 2, a
/// master declared down after 1 s).
pub struct SentinelGroup {
    pub dir: tempfile::TempDir,
    pub master: Proc,
    pub replica: Proc,
    pub sentinels: Vec<Proc>,
}

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let dir = tempfile::Builder::new()
            .prefix("rmulti-sentinel-")
            .tempdir()
            .expect("tempdir");
        let server = |name: &str, extra: &[String]| {
            let port = free_port();
            let d = dir.path().join(name);
            fs::create_dir_all(&d).expect("mkdir");
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                d.to_str().expect("utf-8 path"),
                "--logfile",
                dir.path()
                    .join(format!("{name}.log"))
                    .to_str()
                    .expect("path"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().cloned());
            Proc::spawn(dir.path(), name, port, &args)
        };
        let master = server("master", &[]);
        let replica = server(
            "replica",
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        );
        let synced = wait_until(STARTUP_TIMEOUT, || {
            info_field(&replica, "master_link_status").as_deref() == Some("up")
        });
        assert!(synced, "replica did not sync:\n{}", replica.log());
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir.path().display(),
                    dir.path().join(format!("sentinel{i}.log")).display(),
                    master.port
                ),
            )
            .expect("write sentinel.conf");
            let args = vec![
                conf.to_str().expect("path").to_string(),
                "--sentinel".into(),
            ];
            sentinels.push(Proc::spawn(
                dir.path(),
                &format!("sentinel{i}"),
                port,
                &args,
            ));
        }
        let group = SentinelGroup {
            dir,
            master,
            replica,
            sentinels,
        };
        // Every sentinel knows the replica and the other sentinels before a
        // test relies on a failover.
        let ready = wait_until(Duration::from_secs(20), || {
            group.sentinels.iter().all(|s| {
                let m = s
                    .conn(0)
                    .cmd(&["SENTINEL", "master", MASTER_NAME])
                    .strings();
                let field = |k: &str| {
                    m.iter()
                        .position(|x| x == k)
                        .and_then(|i| m.get(i + 1))
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0)
                };
                field("num-slaves") >= 1 && field("num-other-sentinels") >= 2
            })
        });
        assert!(
            ready,
            "sentinels did not discover each other:\n{}",
            group.logs()
        );
        group
    }

    /// `sentinel://127.0.0.1:A;sentinel://127.0.0.1:B;...` with `db`
    /// (the master's credentials go in the first entry, as kombu reads them).
    pub fn url(&self, db: u32) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("sentinel://127.0.0.1:{}/{db}", s.port))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The port the sentinels name as master now.
    pub fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let Ok(mut c) = RedisConn::connect(s.port, 0) else {
                continue;
            };
            if let Ok(r) = c.cmd_bytes(&[
                b"SENTINEL",
                b"get-master-addr-by-name",
                MASTER_NAME.as_bytes(),
            ]) {
                if let Some(p) = r.strings().get(1).and_then(|p| p.parse().ok()) {
                    return Some(p);
                }
            }
        }
        None
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["master", "replica", "sentinel0", "sentinel1", "sentinel2"] {
            out.push_str(&format!(
                "--- {name}\n{}\n",
                read_log(self.dir.path().join(format!("{name}.log")))
            ));
        }
        out
    }
}

/// A field of `INFO replication`.
pub fn info_field(p: &Proc, key: &str) -> Option<String> {
    let mut c = RedisConn::connect(p.port, 0).ok()?;
    let info = c.cmd_bytes(&[b"INFO", b"replication"]).ok()?.text()?;
    info.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_string())
    })
}

/// A temp dir for the test's rmulti processes (kept with
/// `RMULTI_KEEP_TESTDIR=1`).
pub fn work_dir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("rmulti-test-")
        .tempdir()
        .expect("create temp dir");
    if std::env::var_os("RMULTI_KEEP_TESTDIR").is_some() {
        dir.disable_cleanup(true);
        eprintln!("test dir kept: {}", dir.path().display());
    }
    dir
}

/// Writes `proj.toml` in `dir` for the group: broker db 0, backend db 1,
/// `master_name` in both transport options; `settings` are top-level
/// lines, `transport` more `broker_transport_options` lines.
pub fn write_sentinel_app(dir: &Path, group: &SentinelGroup, settings: &str, transport: &str) {
    let text = format!(
        "broker_url = \"{}\"\nresult_backend = \"{}\"\n{settings}\n\
         [broker_transport_options]\nmaster_name = \"{MASTER_NAME}\"\n{transport}\n\
         [result_backend_transport_options]\nmaster_name = \"{MASTER_NAME}\"\n\n\
         [tasks]\n{BUILTIN_TASKS}",
        group.url(BROKER_DB),
        group.url(RESULT_DB)
    );
    fs::write(dir.join("proj.toml"), text).expect("write proj.toml");
}

/// Sends `name(*args)` to the `celery` queue on the server at `port`, as
/// `delay` would; returns the task id.
pub fn publish_on(port: u16, name: &str, args: serde_json::Value) -> String {
    let (id, envelope) = task_envelope("celery", name, &args, &serde_json::json!({}));
    let r = RedisConn::connect(port, BROKER_DB)
        .expect("connect")
        .cmd_bytes(&[b"LPUSH", b"celery", envelope.to_string().as_bytes()])
        .expect("LPUSH");
    assert!(matches!(r, Resp::Int(_)), "LPUSH: {r:?}");
    id
}

/// The stored result of `id` on the server at `port`, if any.
pub fn result_on(port: u16, id: &str) -> Option<serde_json::Value> {
    let mut c = RedisConn::connect(port, RESULT_DB).ok()?;
    let raw = c
        .cmd_bytes(&[b"GET", format!("celery-task-meta-{id}").as_bytes()])
        .ok()?
        .text()?;
    serde_json::from_str(&raw).ok()
}
