//! The multi front end driving real `rmulti worker` nodes against a private
//! `redis-server` (tests/common): start/stop/stopwait/restart/kill, `OK` only
//! when ready, `FAILED` with the worker's reason and a non-zero status, no
//! duplicate start, parallel stopwait, `--timeout` escalation on a node stuck
//! in a long task, and eight nodes leaving no process and no pidfile behind.
//! Every node a test starts is killed by a `NodeGuard`, even on panic.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

struct Env {
    // Field order is drop order: nodes die before Redis and the dir go.
    guard: NodeGuard,
    dir: TestDir,
    redis: RedisServer,
}

fn setup(nodes: &[&str]) -> Env {
    let (redis, dir) = redis_with_app("");
    let pidfiles: Vec<String> = nodes.iter().map(|n| format!("{n}.pid")).collect();
    let guard = NodeGuard::new(dir.path(), &pidfiles);
    Env { guard, dir, redis }
}

impl Env {
    fn multi(&self, args: &[&str]) -> Run {
        Rmulti::new(&self.dir).args(args).run()
    }

    /// A multi command that starts nodes; the guard learns their pids
    /// before anything is asserted.
    fn launch(&mut self, args: &[&str]) -> Run {
        let run = self.multi(args);
        self.guard.remember();
        run
    }

    fn pid(&self, node: &str) -> Option<i32> {
        read_pidfile(self.dir.join(format!("{node}.pid")))
    }
}

#[test]
fn start_then_stopwait() {
    let mut env = setup(&["w1", "w2"]);
    let h = hostname();
    let run = env.launch(&["start", "w1", "w2", "-A", "proj", "-c", "2", "-l", "info"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(
        run.stdout(),
        format!(
            "rmulti multi v{}\n> Starting nodes...\n\t> w1@{h}: OK\n\t> w2@{h}: OK\n",
            version()
        )
    );
    // OK means ready: the pidfiles are there the moment start returns
    let (p1, p2) = (env.pid("w1").unwrap(), env.pid("w2").unwrap());
    assert!(alive(p1) && alive(p2));
    let kids = descendants(p1);
    assert_eq!(kids.len(), 2, "pool children of w1: {kids:?}");

    // a task runs on them
    let id = publish_task(&env.redis, "celery", "proj.tasks.add", "[2, 3]");
    let res = env
        .redis
        .wait_result(&id, STARTUP_TIMEOUT)
        .expect("a result");
    assert_eq!(res["result"], 5);

    let t = Instant::now();
    let run = env.multi(&["stopwait", "w1", "w2"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stopwait took {:?}",
        t.elapsed()
    );
    let out = run.stdout();
    assert!(
        out.contains(&format!(
            "> Stopping nodes...\n\t> w1@{h}: TERM -> {p1}\n\t> w2@{h}: TERM -> {p2}\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("> Waiting for 2 nodes -> {p1}, {p2}...")),
        "{out}"
    );
    assert!(
        out.contains(&format!("\t> w1@{h}: OK\n> w1@{h}: DOWN\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("\t> w2@{h}: OK\n> w2@{h}: DOWN\n")),
        "{out}"
    );
    assert!(!alive(p1) && !alive(p2));
    assert!(kids.iter().all(|k| !alive(*k)));
    assert!(env.pid("w1").is_none() && env.pid("w2").is_none());

    // stopping again: DOWN, status 0
    let run = env.multi(&["stop", "w1", "w2"]);
    assert_eq!(run.code(), Some(0));
    assert_eq!(
        run.stdout(),
        format!(
            "rmulti multi v{}\n> w1@{h}: DOWN\n> w2@{h}: DOWN\n",
            version()
        )
    );
}

#[test]
fn starting_a_running_node_fails_and_leaves_it_alone() {
    let mut env = setup(&["w1"]);
    let h = hostname();
    env.launch(&["start", "w1", "-A", "proj", "-c", "1"])
        .success();
    let pid = env.pid("w1").unwrap();
    let run = env.multi(&["start", "w1", "-A", "proj", "-c", "1"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stdout().contains(&format!(
            "\t> w1@{h}: already running (pid {pid})\nFAILED\n"
        )),
        "{}",
        run.stdout()
    );
    assert_eq!(env.pid("w1"), Some(pid));
    assert!(alive(pid));
    env.multi(&["stopwait", "w1"]).success();
}

#[test]
fn failed_starts_show_the_workers_reason() {
    let env = setup(&["w1"]);
    let h = hostname();
    let run = env.multi(&["start", "w1", "-A", "nonexistent_app"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stdout().contains(&format!(
            "\t> w1@{h}: * Child terminated with exit code 78\nFAILED\n"
        )),
        "{}",
        run.stdout()
    );
    assert!(run.stderr().contains("nonexistent_app"), "{}", run.stderr());

    let run = env.multi(&["start", "w1", "-A", "proj", "-Z"]);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stdout().contains("exit code 2\nFAILED\n"),
        "{}",
        run.stdout()
    );
    assert!(run.stderr().contains("'-Z'"), "{}", run.stderr());

    // one bad node among good ones: the others start, the status is 1
    let mut env = setup(&["a", "b"]);
    let run = env.launch(&[
        "start",
        "a",
        "b",
        "-A",
        "proj",
        "-c",
        "1",
        "--pidfile:b=/proc/nope/%n.pid",
    ]);
    assert_eq!(run.code(), Some(1), "{}", run.stdout());
    assert!(run.stdout().contains(&format!("\t> a@{h}: OK\n")));
    assert!(
        run.stdout().contains(&format!("\t> b@{h}: FAILED\n")),
        "{}",
        run.stdout()
    );
    assert!(env.pid("a").is_some());
    env.multi(&["stopwait", "a"]).success();
}

#[test]
fn restart_replaces_the_node_and_drops_the_signal() {
    let mut env = setup(&["w1", "w7"]);
    let h = hostname();
    env.launch(&["start", "w1", "-A", "proj", "-c", "1"])
        .success();
    let old = env.pid("w1").unwrap();
    let run = env.launch(&["restart", "w1", "w7", "-KILL", "-A", "proj", "-c", "1"]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let out = run.stdout();
    assert!(out.starts_with(&format!("rmulti multi v{}\n> Restarting node w7@{h}: OK\n> Stopping nodes...\n\t> w1@{h}: KILL -> {old}\n", version())), "{out}");
    assert!(
        out.contains(&format!("\t> w1@{h}: OK\n> Restarting node w1@{h}: OK\n")),
        "{out}"
    );
    let new = env.pid("w1").unwrap();
    assert_ne!(new, old);
    assert!(!alive(old) && alive(new));
    let argv = std::fs::read(format!("/proc/{new}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains("KILL"));
    env.multi(&["stopwait", "w1", "w7"]).success();
}

#[test]
fn restart_right_after_start_and_stop_then_start() {
    let mut env = setup(&["w1"]);
    env.launch(&["start", "w1", "-A", "proj", "-c", "1"])
        .success();
    env.launch(&["restart", "w1", "-A", "proj", "-c", "1"])
        .success();
    assert!(env.pid("w1").is_some_and(alive));
    // stop does not wait; stopwait does, so start right after it works
    env.multi(&["stopwait", "w1"]).success();
    env.launch(&["start", "w1", "-A", "proj", "-c", "1"])
        .success();
    env.multi(&["stopwait", "w1"]).success();
}

#[test]
fn kill_takes_the_pool_with_it_and_cleans_the_pidfile() {
    let mut env = setup(&["w1", "w3"]);
    let h = hostname();
    env.launch(&["start", "w1", "-A", "proj", "-c", "2"])
        .success();
    let pid = env.pid("w1").unwrap();
    let kids = descendants(pid);
    let run = env.multi(&["kill", "w1", "w3"]);
    assert_eq!(run.code(), Some(0));
    assert_eq!(
        run.stdout(),
        format!(
            "rmulti multi v{}\nSending KILL to node w1@{h} ({pid})\n> w3@{h}: DOWN\n",
            version()
        )
    );
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)
        && kids.iter().all(|k| !alive(*k))));
    assert!(env.pid("w1").is_none());
}

#[test]
fn stopwait_timeout_kills_a_node_stuck_in_a_long_task() {
    let mut env = setup(&["w1"]);
    let h = hostname();
    env.launch(&["start", "w1", "-A", "proj", "-c", "1", "-l", "info"])
        .success();
    let pid = env.pid("w1").unwrap();
    let kids = descendants(pid);
    let id = publish_task(&env.redis, "celery", "proj.tasks.sleep", "[60]");
    // the main process logs "received" once the child has the task in hand
    assert!(wait_until(STARTUP_TIMEOUT, || env
        .dir
        .read("w1.log")
        .contains(&format!("[{id}] received"))));
    let t = Instant::now();
    let run = env.multi(&["stopwait", "w1", "--timeout=1"]);
    assert_eq!(run.code(), Some(1), "{}", run.stdout());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let out = run.stdout();
    assert!(
        out.contains(&format!(
            "Sending KILL to node w1@{h} ({pid}): still running after 1s"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("\t> w1@{h}: KILLED\n> w1@{h}: DOWN\n")),
        "{out}"
    );
    assert!(!alive(pid));
    assert!(wait_until(Duration::from_secs(5), || kids
        .iter()
        .all(|k| !alive(*k))));
    assert!(env.pid("w1").is_none());
}

#[test]
fn eight_nodes_leave_nothing_behind() {
    let names: Vec<String> = (1..=8).map(|i| format!("celery{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut env = setup(&refs);
    let run = env.launch(&["start", "8", "-A", "proj", "-c", "1"]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let pids: Vec<i32> = refs.iter().map(|n| env.pid(n).unwrap()).collect();
    let mut all: Vec<i32> = pids.iter().flat_map(|p| descendants(*p)).collect();
    all.extend(&pids);
    let t = Instant::now();
    let run = env.multi(&["stopwait", "8"]);
    assert_eq!(run.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(all.iter().all(|p| !alive(*p)));
    let pidfiles: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .collect();
    assert!(pidfiles.is_empty(), "{pidfiles:?}");
}

#[test]
fn workdir_relative_pidfile_is_found_by_stop() {
    let mut env = setup(&[]);
    let h = hostname();
    let wd = env.dir.join("wd");
    std::fs::create_dir(&wd).unwrap();
    std::fs::copy(env.dir.join("proj.toml"), wd.join("proj.toml")).unwrap();
    env.guard.watch(wd.join("run/w1.pid"));
    let wd_opt = format!("--workdir={}", wd.display());
    let run = env.launch(&[
        "start",
        "w1",
        "-A",
        "proj",
        "-c",
        "1",
        &wd_opt,
        "--pidfile=run/%n.pid",
        "--logfile=log/%n%I.log",
    ]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let pid = read_pidfile(wd.join("run/w1.pid")).unwrap();
    assert!(wd.join("log/w1.log").exists());
    let run = env.multi(&["stopwait", "w1", &wd_opt, "--pidfile=run/%n.pid"]);
    assert!(
        run.stdout().contains(&format!("\t> w1@{h}: TERM -> {pid}")),
        "{}",
        run.stdout()
    );
    assert!(!alive(pid));
}

#[test]
#[ignore = "needs root: run by bin/test as root"]
fn as_root_uid_works_under_multi() {
    use std::os::unix::fs::PermissionsExt;
    assert!(is_root(), "needs root");
    let nobody = nobody();
    let mut env = setup(&[]);
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.guard.watch(env.dir.join("run/w1.pid"));
    let run = env.launch(&[
        "start",
        "w1",
        "-A",
        "proj",
        "-c",
        "1",
        "--uid=nobody",
        "--pidfile=run/%n.pid",
        "--logfile=log/%n%I.log",
    ]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let pid = read_pidfile(env.dir.join("run/w1.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == nobody.uid.to_string()),
        "{uid_line}"
    );
    let id = publish_task(&env.redis, "celery", "proj.tasks.add", "[1, 2]");
    assert_eq!(
        env.redis
            .wait_result(&id, STARTUP_TIMEOUT)
            .expect("a result")["result"],
        3
    );
    env.multi(&["stopwait", "w1", "--pidfile=run/%n.pid"])
        .success();
    assert!(!alive(pid));
}
