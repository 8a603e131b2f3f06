//! The LSB init script `packaging/init.d/rmulti`, run with `sh` against a
//! temporary `/etc/default`-style file (CELERY_DEFAULTS) that drives two
//! real nodes of the built rmulti against a private `redis-server`:
//! start, status, graceful (HUP: same pid, new pool), stop, status → 3; the
//! kill verb; stale and foreign pidfiles in `status` and `graceful`; usage
//! (exit 64), `dryrun`, a failed start, and the config file checks.
//!
//! Not root, the script is run with RMULTI_INIT_TESTING=1 so that it accepts
//! a defaults file owned by the test's user. As root (CI) the file is
//! root-owned 0644 anyway, and CELERYD_USER is left unset, so nothing
//! switches user. Every node is killed by a `NodeGuard`, even on panic.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const NODES: [&str; 2] = ["w1", "w2"];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/init.d/rmulti")
}

struct Env {
    // Field order is drop order: nodes die before Redis and the dir go.
    guard: NodeGuard,
    dir: TestDir,
    redis: RedisServer,
    defaults: PathBuf,
}

/// The defaults file for the test's dir; `extra` lines are appended.
fn defaults_text(dir: &TestDir, app: &str, extra: &str) -> String {
    let d = dir.path().display();
    format!(
        "# written by tests/packaging_init.rs\n\
         CELERYD_NODES=\"w1 w2\"\n\
         CELERY_BIN=\"{bin}\"\n\
         CELERY_APP={app}\n\
         CELERYD_CHDIR=\"{d}\"\n\
         CELERYD_PID_FILE=\"{d}/run/%n.pid\"\n\
         CELERYD_LOG_FILE=\"{d}/log/%n%I.log\"\n\
         CELERYD_OPTS=\"-c 1\"\n\
         {extra}",
        bin = env!("CARGO_BIN_EXE_rmulti"),
    )
}

/// Writes a defaults file with mode `mode`.
fn write_defaults(dir: &TestDir, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.write(name, text);
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn setup() -> Env {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write_app("proj", "");
    let defaults = write_defaults(&dir, "defaults", &defaults_text(&dir, "proj", ""), 0o644);
    let pidfiles: Vec<String> = NODES.iter().map(|n| format!("run/{n}.pid")).collect();
    let guard = NodeGuard::new(dir.path(), &pidfiles);
    Env {
        guard,
        dir,
        redis,
        defaults,
    }
}

/// `sh packaging/init.d/rmulti <args>` with CELERY_DEFAULTS=`defaults`, in a
/// clean environment, killed if it runs for more than 60 s.
fn init_script(defaults: &Path, args: &[&str], testing: bool) -> Run {
    let shown = format!("sh packaging/init.d/rmulti {}", args.join(" "));
    let mut cmd = Command::new("sh");
    cmd.arg(script()).args(args).env_clear();
    for var in ["PATH", "HOME", "LANG"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("CELERY_DEFAULTS", defaults);
    if testing {
        cmd.env("RMULTI_INIT_TESTING", "1");
    }
    cmd.current_dir(defaults.parent().unwrap())
        .stdin(Stdio::null());
    run_with_deadline(&mut cmd, shown)
}

impl Env {
    fn init(&self, args: &[&str]) -> Run {
        init_script(&self.defaults, args, true)
    }

    fn pidfile(&self, node: &str) -> PathBuf {
        self.dir.join(format!("run/{node}.pid"))
    }

    fn pid(&self, node: &str) -> Option<i32> {
        read_pidfile(self.pidfile(node))
    }

    fn pids(&self) -> Vec<i32> {
        NODES
            .iter()
            .map(|n| self.pid(n).unwrap_or_else(|| panic!("no pid in {n}.pid")))
            .collect()
    }

    fn start(&mut self) -> Vec<i32> {
        let run = self.init(&["start"]);
        self.guard.remember();
        let run = run.success();
        let out = run.stdout();
        assert!(out.contains("Using config script: "), "{out}");
        for n in NODES {
            assert!(out.contains(&format!("> {n}@")), "{out}");
            assert!(
                self.pidfile(n).exists(),
                "{n}.pid missing after start\n{out}"
            );
        }
        assert_eq!(out.matches(": OK").count(), 2, "{out}");
        self.pids()
    }

    fn add(&self, x: i64, y: i64) -> serde_json::Value {
        let id = publish_task(
            &self.redis,
            "celery",
            "proj.tasks.add",
            &format!("[{x}, {y}]"),
        );
        let meta = self
            .redis
            .wait_result(&id, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no result for add({x}, {y})"));
        assert_eq!(meta["status"], "SUCCESS", "{meta}");
        meta["result"].clone()
    }
}

/// Waits until every pid (and every one of its children) is gone.
fn assert_gone(pids: &[i32], what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || pids.iter().all(|&p| !alive(p))),
        "{what}: processes still alive: {:?}",
        pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}

#[test]
fn start_status_graceful_stop_status() {
    let mut env = setup();
    let pids = env.start();
    assert_eq!(env.add(4, 4), 8);

    let run = env.init(&["status"]).code_is(0);
    let out = run.stdout();
    for (n, pid) in NODES.iter().zip(&pids) {
        assert!(
            out.contains(&format!("rmulti (node {n}) (pid {pid}) is up...")),
            "{out}"
        );
    }

    // graceful: HUP restarts each node in place, same pid, new pool children.
    let children: Vec<Vec<i32>> = pids.iter().map(|&p| descendants(p)).collect();
    assert!(children.iter().all(|c| !c.is_empty()), "{children:?}");
    let run = env.init(&["graceful"]).code_is(0);
    let out = run.stdout();
    for pid in &pids {
        assert!(
            out.contains(&format!("rmulti worker (pid {pid}) received SIGHUP")),
            "{out}"
        );
    }
    assert!(!out.contains("WARNING"), "{out}");
    for (pid, old) in pids.iter().zip(&children) {
        let replaced = wait_until(Duration::from_secs(10), || {
            let now = descendants(*pid);
            !now.is_empty() && now.iter().all(|c| !old.contains(c))
        });
        assert!(
            replaced,
            "pool of {pid} not replaced: {old:?} -> {:?}",
            descendants(*pid)
        );
    }
    assert_eq!(env.pids(), pids, "graceful changed the pids");
    assert_eq!(env.add(20, 22), 42);

    // stop = stopwait: returns once the nodes are gone.
    let all: Vec<i32> = pids.iter().copied().chain(children.concat()).collect();
    let run = env.init(&["stop"]).code_is(0);
    assert!(
        run.stdout().contains("> Stopping nodes..."),
        "{}",
        run.stdout()
    );
    for n in NODES {
        assert!(!env.pidfile(n).exists(), "{n}.pid left after stop");
    }
    assert_gone(&all, "stop");
    for pid in &pids {
        assert!(descendants(*pid).is_empty());
    }

    let run = env.init(&["status"]).code_is(3);
    assert!(
        run.stdout().contains("rmulti down: no pidfiles found"),
        "{}",
        run.stdout()
    );
}

#[test]
fn kill_and_pidfiles_without_their_node() {
    let mut env = setup();
    let pids = env.start();
    let all: Vec<i32> = pids
        .iter()
        .flat_map(|&p| std::iter::once(p).chain(descendants(p)))
        .collect();
    let run = env.init(&["kill"]).code_is(0);
    assert!(
        run.stdout().contains("Sending KILL to node w1@"),
        "{}",
        run.stdout()
    );
    assert_gone(&all, "kill");
    env.init(&["status"]).code_is(3);

    // A dead pid in a pidfile: LSB 1, "down, but pidfile exists".
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    fs::create_dir_all(env.dir.join("run")).unwrap();
    fs::write(env.pidfile("w1"), format!("{dead_pid}\n")).unwrap();
    let run = env.init(&["status"]).code_is(1);
    assert!(
        run.stdout().contains(&format!(
            "rmulti (node w1) (pid {dead_pid}) is down, but pidfile exists!"
        )),
        "{}",
        run.stdout()
    );

    // A live process that is not the node: down for status, never signalled.
    // A process that is not a node, killed on drop.
    let foreign = Spawned::adopt(Command::new("sleep").arg("30").spawn().unwrap(), "sleep 30");
    let fpid = foreign.pid();
    fs::write(env.pidfile("w1"), format!("{fpid}\n")).unwrap();
    fs::write(env.pidfile("w2"), "garbage\n").unwrap();
    let run = env.init(&["status"]).code_is(1);
    let out = run.stdout();
    assert!(
        out.contains(&format!("(pid {fpid}) is down, but pidfile exists!")),
        "{out}"
    );
    assert!(out.contains("bad pid file ("), "{out}");
    let run = env.init(&["graceful"]).code_is(1);
    assert!(
        !run.stdout().contains("received SIGHUP"),
        "{}",
        run.stdout()
    );
    assert!(alive(fpid), "graceful signalled a foreign process");
}

#[test]
fn usage_dryrun_failed_start_and_config_checks() {
    let env = setup();

    let run = env.init(&["bogus"]).code_is(64);
    assert!(
        run.stdout()
            .contains("Usage: /etc/init.d/rmulti {start|stop|"),
        "{}",
        run.stdout()
    );
    let run = env.init(&[]).code_is(64);
    assert!(run.stdout().contains("Usage:"), "{}", run.stdout());
    let run = env.init(&["reload"]).code_is(0);
    assert!(run.stdout().contains("Use restart"), "{}", run.stdout());

    // dryrun prints each node's command line and starts nothing.
    let run = env.init(&["dryrun"]).code_is(0);
    let out = run.stdout();
    let d = env.dir.path().display();
    for n in NODES {
        let line = out
            .lines()
            .find(|l| l.contains(&format!(" -n {n}@")))
            .unwrap_or_else(|| panic!("no command line for {n}:\n{out}"));
        for part in [
            " worker ",
            "--app=proj",
            &format!("--workdir={d}"),
            &format!("--pidfile={d}/run/{n}.pid"),
            &format!("--logfile={d}/log/{n}%I.log"),
            "--loglevel=INFO",
            "-c 1",
        ] {
            assert!(line.contains(part), "{part:?} missing in {line:?}");
        }
    }
    assert!(
        !env.dir.join("run").exists(),
        "dryrun created the pid directory"
    );

    // A node that cannot start: the script's exit status is rmulti's.
    let bad = write_defaults(
        &env.dir,
        "defaults-badapp",
        &defaults_text(&env.dir, "nosuchapp", ""),
        0o644,
    );
    let run = init_script(&bad, &["start"], true);
    assert_ne!(run.code(), Some(0), "{}", run.stdout());
    assert!(run.stdout().contains("FAILED"), "{}", run.stdout());
    assert!(env.pid("w1").is_none() && env.pid("w2").is_none());

    // CELERYD_OPTS are shell words: an unbalanced quote is refused up front.
    let unbalanced = write_defaults(
        &env.dir,
        "defaults-quote",
        &defaults_text(&env.dir, "proj", "CELERYD_OPTS=\"-c 1 -Q 'a b\"\n"),
        0o644,
    );
    let run = init_script(&unbalanced, &["start"], true).code_is(1);
    assert!(
        run.stderr()
            .contains("CELERYD_OPTS is not a valid list of shell words"),
        "{}",
        run.stderr()
    );
    assert!(env.pid("w1").is_none() && env.pid("w2").is_none());
    assert!(!run.stdout().contains("Starting nodes"), "{}", run.stdout());

    // A config file that group or others can write is refused.
    for mode in [0o664, 0o646] {
        let loose = write_defaults(
            &env.dir,
            "defaults-loose",
            &defaults_text(&env.dir, "proj", ""),
            mode,
        );
        let run = init_script(&loose, &["status"], true).code_is(1);
        assert!(
            run.stderr()
                .contains("cannot be writable by group or others"),
            "{:o}: {}",
            mode,
            run.stderr()
        );
        assert!(
            !run.stdout().contains("Using config script"),
            "{}",
            run.stdout()
        );
    }

    // A config file not owned by root is refused: as root, even in test mode;
    // not root, without RMULTI_INIT_TESTING.
    let other = write_defaults(
        &env.dir,
        "defaults-other",
        &defaults_text(&env.dir, "proj", ""),
        0o644,
    );
    let run = if is_root() {
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        init_script(&other, &["status"], true)
    } else {
        init_script(&other, &["status"], false)
    };
    let run = run.code_is(1);
    assert!(
        run.stderr().contains("must be owned by root"),
        "{}",
        run.stderr()
    );
}
