//! stop/stopwait/kill/restart/start of the multi front end against pidfiles
//! that must never be trusted (garbage, 0, negative, dead pid, a live foreign
//! process), and against a stand-in worker: a small Python launcher given
//! with `--executable`, which daemonizes a process whose argv looks like
//! `rmulti worker -n <node>` (so the identity check accepts it), writes the
//! pidfile, and removes it on TERM. This exercises multi's side of the
//! worker contract without the real worker; `multi_worker.rs` runs the real
//! one.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const FAKE_LAUNCHER: &str = r#"#!/usr/bin/env python3
import os, sys, time
args = sys.argv[1:]
def opt(name):
    for i, a in enumerate(args):
        if a.startswith(name + '='):
            return a.split('=', 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None
node = opt('-n')
wd = opt('--workdir')
if wd:
    os.chdir(wd)
if '--fail' in args:
    print('fake worker: refusing to start', file=sys.stderr)
    sys.exit(78)
pidfile = os.path.abspath(opt('--pidfile'))
if os.path.exists(pidfile):
    try:
        pid = int(open(pidfile).read())
        os.kill(pid, 0)
        print(f'ERROR: Pidfile ({pidfile}) already exists.', file=sys.stderr)
        sys.exit(73)
    except (ValueError, ProcessLookupError):
        os.unlink(pidfile)
DAEMON = r'''
import os, sys, signal, time, ctypes
pidfile, mode = sys.argv[1], sys.argv[2]
def term(*a):
    if mode == 'ignore':
        return
    time.sleep(0.05)
    try:
        os.unlink(pidfile)
    except OSError:
        pass
    os._exit(0)
signal.signal(signal.SIGTERM, term)
if os.fork() == 0:
    ctypes.CDLL(None).prctl(1, 9)
    while True:
        time.sleep(1)
tmp = pidfile + '.tmp'
with open(tmp, 'w') as f:
    f.write(f'{os.getpid()}\n')
os.rename(tmp, pidfile)
while True:
    time.sleep(1)
'''
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        fd = os.open('/dev/null', os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        mode = 'ignore' if '--ignore-term' in args else 'term'
        os.execv(sys.executable, [sys.argv[0], '-c', DAEMON, pidfile, mode, 'worker', '-n', node])
    os._exit(0)
deadline = time.time() + 10
while time.time() < deadline:
    if os.path.exists(pidfile):
        sys.exit(0)
    time.sleep(0.01)
print('fake worker: not ready', file=sys.stderr)
sys.exit(1)
"#;

/// A temp dir with the fake launcher at `bin/rmulti`. On drop, even on
/// panic, every live stand-in worker whose pidfile is anywhere below the dir
/// (`wd/run/w1.pid` included) is killed with its child; a pidfile that
/// points at anything else (the garbage, dead and foreign pids the tests
/// write) is never acted on.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        let exe = dir.path().join("bin/rmulti");
        fs::write(&exe, FAKE_LAUNCHER).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn exe_opt(&self) -> String {
        format!("--executable={}", self.path().join("bin/rmulti").display())
    }

    /// `rmulti <args>` in the sandbox, with a deadline (tests/common).
    fn run(&self, args: &[&str]) -> Output {
        Rmulti::in_dir(self.path()).args(args).run().out
    }

    /// Runs a command against the fake worker.
    fn fake(&self, args: &[&str]) -> Output {
        let exe = self.exe_opt();
        let mut argv: Vec<&str> = args.to_vec();
        argv.push(&exe);
        self.run(&argv)
    }

    fn pid(&self, node: &str) -> Option<i32> {
        read_pidfile(self.path().join(format!("{node}.pid")))
    }
}

/// Every `*.pid` file below `dir`.
fn pidfiles_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            found.extend(pidfiles_below(&path));
        } else if path.extension().is_some_and(|x| x == "pid") {
            found.push(path);
        }
    }
    found
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in pidfiles_below(self.path()).iter().filter_map(read_pidfile) {
            // The stand-in's argv[0] is `.../bin/rmulti`: is_rmulti() accepts
            // it and refuses the foreign and recycled pids the tests write.
            if alive(pid) && is_rmulti(pid) {
                kill_group_and_tree(pid);
            }
        }
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits up to 5 s for `pid` to be gone (or a zombie).
fn gone(pid: i32) -> bool {
    wait_until(Duration::from_secs(5), || !alive(pid))
}

#[test]
fn untrusted_pidfiles_are_down_and_never_signalled() {
    let sb = Sandbox::new();
    let h = hostname();
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id() as i32
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "abc\n".into(), "holds no valid pid"),
        ("zero", "0\n".into(), "holds no valid pid"),
        ("neg", "-1\n".into(), "holds no valid pid"),
        ("negbig", "-999999\n".into(), "holds no valid pid"),
        ("nonl", "123".into(), "holds no valid pid"),
        ("empty", "".into(), "holds no valid pid"),
        ("dead", format!("{dead}\n"), "is stale"),
    ];
    for (node, content, note) in &cases {
        fs::write(sb.path().join(format!("{node}.pid")), content).unwrap();
        for cmd in ["stop", "stopwait", "kill"] {
            let o = sb.run(&[cmd, node]);
            assert_eq!(o.status.code(), Some(0), "{cmd} {node}: {}", err(&o));
            let text = out(&o);
            assert!(
                text.contains(&format!("> {node}@{h}: DOWN\n")),
                "{cmd} {node}: {text}"
            );
            assert!(text.contains(note), "{cmd} {node}: {text}");
            assert!(
                !text.contains("TERM ->") && !text.contains("Sending KILL"),
                "{text}"
            );
        }
        // the pidfile is left as it was
        assert_eq!(
            &fs::read_to_string(sb.path().join(format!("{node}.pid"))).unwrap(),
            content
        );
    }
}

#[test]
fn foreign_live_process_is_left_alone() {
    let sb = Sandbox::new();
    let h = hostname();
    let sleeper = Spawned::adopt(Command::new("sleep").arg("60").spawn().unwrap(), "sleep 60");
    let pid = sleeper.pid();
    fs::write(sb.path().join("w3.pid"), format!("{pid}\n")).unwrap();
    for args in [
        &["stop", "w3"][..],
        &["stop", "w3", "-KILL"],
        &["stopwait", "w3", "--timeout=0"],
        &["kill", "w3"],
        &["stop", "w3", "-9"],
    ] {
        let o = sb.run(args);
        let text = out(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(
            text.contains(&format!(
                "points at pid {pid}, a process that is not this node: left alone"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("> w3@{h}: DOWN")), "{text}");
        // Nothing to poll for: the test is that the sleeper does NOT die,
        // so give a wrongly sent signal a moment to land before looking.
        std::thread::sleep(Duration::from_millis(50));
        assert!(alive(pid), "{args:?} signalled the foreign process");
    }
    assert!(sb.path().join("w3.pid").exists());
}

#[test]
fn start_stopwait_with_stand_in_worker() {
    let sb = Sandbox::new();
    let h = hostname();
    let o = sb.fake(&["start", "w1", "w2", "-c", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        out(&o),
        format!(
            "rmulti multi v{}\n> Starting nodes...\n\t> w1@{h}: OK\n\t> w2@{h}: OK\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let (p1, p2) = (sb.pid("w1").unwrap(), sb.pid("w2").unwrap());
    assert!(alive(p1) && alive(p2));

    // starting a running node fails and leaves it alone
    let o = sb.fake(&["start", "w1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains(&format!("\t> w1@{h}: already running (pid {p1})\nFAILED\n")),
        "{}",
        out(&o)
    );
    assert!(alive(p1));
    assert_eq!(sb.pid("w1"), Some(p1));

    let t = Instant::now();
    let o = sb.fake(&["stopwait", "w1", "w2"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.contains(&format!(
            "> Stopping nodes...\n\t> w1@{h}: TERM -> {p1}\n\t> w2@{h}: TERM -> {p2}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("> Waiting for 2 nodes -> {p1}, {p2}...")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\t> w1@{h}: OK\n> w1@{h}: DOWN\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\t> w2@{h}: OK\n> w2@{h}: DOWN\n")),
        "{text}"
    );
    assert!(took < Duration::from_secs(2), "stopwait took {took:?}");
    assert!(!alive(p1) && !alive(p2));
    assert!(sb.pid("w1").is_none() && sb.pid("w2").is_none());
}

#[test]
fn stop_does_not_wait_and_signal_argument_is_used() {
    let sb = Sandbox::new();
    let h = hostname();
    assert!(sb.fake(&["start", "w1"]).status.success());
    let p1 = sb.pid("w1").unwrap();
    let o = sb.fake(&["stop", "w1", "-KILL"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        out(&o).ends_with(&format!("> Stopping nodes...\n\t> w1@{h}: KILL -> {p1}\n")),
        "{}",
        out(&o)
    );
    assert!(gone(p1), "{p1} survived KILL");
}

#[test]
fn failed_start_shows_reason_and_fails() {
    let sb = Sandbox::new();
    let h = hostname();
    let o = sb.fake(&["start", "w1", "--fail"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains(&format!(
            "\t> w1@{h}: * Child terminated with exit code 78\nFAILED\n"
        )),
        "{}",
        out(&o)
    );
    assert_eq!(err(&o), "\t  fake worker: refusing to start\n");
    // a missing program is a failed node, not a crash
    let o = sb.run(&["start", "w1", "--executable=/nonexistent/rmulti"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("FAILED"));
    assert!(err(&o).contains("cannot run /nonexistent/rmulti"));
}

#[test]
fn stopwait_timeout_kills_stuck_nodes() {
    let sb = Sandbox::new();
    let h = hostname();
    assert!(sb
        .fake(&["start", "w1", "w2", "--ignore-term"])
        .status
        .success());
    let p1 = sb.pid("w1").unwrap();
    let children = descendants(p1);
    assert_eq!(children.len(), 1, "{children:?}");
    let t = Instant::now();
    let o = sb.fake(&["stopwait", "w1", "w2", "--timeout=0.5"]);
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    assert!(
        text.contains(&format!(
            "Sending KILL to node w1@{h} ({p1}): still running after 0.5s"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\t> w1@{h}: KILLED\n> w1@{h}: DOWN\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\t> w2@{h}: KILLED\n> w2@{h}: DOWN\n")),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!alive(p1));
    assert!(gone(children[0]), "the stand-in's child outlived it");
    // killed nodes cannot remove their pidfiles: multi does
    assert!(sb.pid("w1").is_none() && sb.pid("w2").is_none());
}

#[test]
fn restart_waits_and_drops_the_signal_argument() {
    let sb = Sandbox::new();
    let h = hostname();
    assert!(sb.fake(&["start", "w1"]).status.success());
    let old = sb.pid("w1").unwrap();
    let o = sb.fake(&["restart", "w1", "w9", "-KILL", "-c", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    let new = sb.pid("w1").unwrap();
    assert_ne!(old, new);
    assert!(!alive(old));
    assert!(alive(new));
    assert!(
        text.contains(&format!(
            "> Restarting node w9@{h}: OK\n> Stopping nodes...\n\t> w1@{h}: KILL -> {old}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\t> w1@{h}: OK\n> Restarting node w1@{h}: OK\n")),
        "{text}"
    );
    // the verbose line shows what was spawned: no -KILL in it
    let o = sb.fake(&["restart", "w1", "-TERM", "--verbose"]);
    assert!(out(&o).contains(" -n w1@"), "{}", out(&o));
    assert!(!out(&o).contains("-TERM "), "{}", out(&o));
    assert!(o.status.success());
    sb.fake(&["stopwait", "w1", "w9"]);
}

#[test]
fn kill_removes_stale_pidfile() {
    let sb = Sandbox::new();
    let h = hostname();
    assert!(sb.fake(&["start", "w1", "w2"]).status.success());
    let p1 = sb.pid("w1").unwrap();
    let o = sb.fake(&["kill", "w1", "w3"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        out(&o),
        format!(
            "rmulti multi v{}\nSending KILL to node w1@{h} ({p1})\n> w3@{h}: DOWN\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(!alive(p1));
    assert!(sb.pid("w1").is_none());
    assert!(sb.pid("w2").is_some());
    sb.fake(&["stopwait", "w2"]);
}

#[test]
fn eight_nodes_start_and_stopwait_clean() {
    let sb = Sandbox::new();
    assert!(sb.fake(&["start", "8"]).status.success());
    let pids: Vec<i32> = (1..=8)
        .map(|i| sb.pid(&format!("celery{i}")).unwrap())
        .collect();
    let t = Instant::now();
    let o = sb.fake(&["stopwait", "8"]);
    assert!(o.status.success());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(out(&o).contains("> Waiting for 8 nodes -> "));
    for p in pids {
        assert!(!alive(p));
    }
    let left: Vec<PathBuf> = fs::read_dir(sb.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn start_creates_dirs_and_stop_reads_pidfile_in_workdir() {
    let sb = Sandbox::new();
    let h = hostname();
    let wd = sb.path().join("wd");
    fs::create_dir(&wd).unwrap();
    let wd_opt = format!("--workdir={}", wd.display());
    let o = sb.fake(&[
        "start",
        "w1",
        &wd_opt,
        "--pidfile=run/%n.pid",
        "--logfile=log/%n%I.log",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(wd.join("log").is_dir());
    let pid: i32 = fs::read_to_string(wd.join("run/w1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Celery looks in its own cwd and says DOWN (§10.6); rmulti finds it.
    let o = sb.fake(&["stopwait", "w1", &wd_opt, "--pidfile=run/%n.pid"]);
    assert!(
        out(&o).contains(&format!("\t> w1@{h}: TERM -> {pid}")),
        "{}",
        out(&o)
    );
    assert!(
        !alive(pid),
        "{} {:?}",
        out(&o),
        fs::read_to_string(format!("/proc/{pid}/stat"))
    );
}
