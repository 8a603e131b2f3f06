//! `rmulti worker` accepts every flag `celery worker --help` (Celery 5.7)
//! lists, with Celery's meaning, or refuses it with a message (issue 13):
//! `-X`, `--purge`, `--autoscale`, `-I`, `-S`, `--heartbeat-interval`,
//! `-B` refused, `-Q`/`-l` parsed by clap; `rmulti help` and `--version`.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Every option `celery worker --help` prints in Celery 5.7, long and short.
const CELERY_WORKER_FLAGS: &[&str] = &[
    "-n",
    "--hostname",
    "-D",
    "--detach",
    "-S",
    "--statedb",
    "-l",
    "--loglevel",
    "-O",
    "--optimization",
    "--prefetch-multiplier",
    "--disable-prefetch",
    "-c",
    "--concurrency",
    "-P",
    "--pool",
    "-E",
    "--task-events",
    "--events",
    "--time-limit",
    "--soft-time-limit",
    "--max-tasks-per-child",
    "--pool-start-method",
    "--max-memory-per-child",
    "--purge",
    "--discard",
    "-Q",
    "--queues",
    "-X",
    "--exclude-queues",
    "-I",
    "--include",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
    "--heartbeat-interval",
    "--autoscale",
    "-B",
    "--beat",
    "-s",
    "--schedule-filename",
    "--schedule",
    "--scheduler",
    "-f",
    "--logfile",
    "--pidfile",
    "--uid",
    "--gid",
    "--umask",
    "--executable",
];

fn bin() -> std::path::PathBuf {
    rmulti_bin()
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND")
        .stdin(Stdio::null())
        .output()
        .expect("run rmulti")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_celery_worker_flag_is_in_the_help() {
    let out = run_in(Path::new("."), &["worker", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in CELERY_WORKER_FLAGS {
        let shown = if flag.starts_with("--") {
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag},"))
                || help.contains(&format!("{flag}]"))
                || help.contains(&format!("{flag}\n"))
        } else {
            help.contains(&format!("{flag}, "))
        };
        assert!(shown, "{flag} is not in rmulti worker --help:\n{help}");
    }
}

#[test]
fn beat_is_refused_naming_celery_beat() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["-B", "--beat"] {
        let out = run_in(dir.path(), &["worker", "-A", "proj", flag]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("celery beat"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bad_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["worker", "-A", "proj", "-l", "chatty"][..],
        &["worker", "-A", "proj", "--autoscale", "a,b"],
        &["worker", "-A", "proj", "--autoscale", "1,2,3"],
        &["worker", "-A", "proj", "-c", "many"],
        &["worker", "-A", "proj", "-O", "fast"],
        &["worker", "-A", "proj", "--pool-start-method", "spawn"],
        &["worker", "-A", "proj", "-P", "gevent"],
    ] {
        let out = run_in(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty(), "{args:?}");
    }
}

#[test]
fn include_is_refused_for_an_app_file() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write_app("proj", "");
    let out = run_in(dir.path(), &["worker", "-A", "proj", "-I", "more.tasks"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a Python app"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exclude_queues_removes_from_the_queues_and_may_not_remove_all() {
    let (redis, dir) = redis_with_app("");
    let out = run_in(
        dir.path(),
        &["worker", "-A", "proj", "-Q", "a,b", "-X", "a,b"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("-X/--exclude-queues"),
        "{}",
        text(&out.stderr)
    );

    // -Q given twice and split on commas, minus -X: consumes a and c only.
    let (_node, _guard, _pid) =
        start_foreground(&dir, &["-c", "1", "-Q", "a,b", "-Q", "c", "-X", "b"]);
    let on_a = publish_task(&redis, "a", "proj.tasks.add", "[1, 2]");
    let on_c = publish_task(&redis, "c", "proj.tasks.add", "[2, 2]");
    let on_b = publish_task(&redis, "b", "proj.tasks.add", "[3, 3]");
    for id in [&on_a, &on_c] {
        let meta = redis
            .wait_result(id, Duration::from_secs(10))
            .expect("result");
        assert_eq!(meta["status"], "SUCCESS", "{meta}");
    }
    assert_eq!(
        redis.cmd(&["LLEN", "b"]).int(),
        1,
        "the excluded queue was consumed"
    );
    assert!(redis.result(&on_b).is_none());
}

#[test]
fn purge_erases_the_waiting_messages_and_says_so_as_celery() {
    let (redis, dir) = redis_with_app("");
    let ids: Vec<String> = (0..3)
        .map(|i| publish_task(&redis, "celery", "proj.tasks.add", &format!("[{i}, 1]")))
        .collect();
    let _prio = publish_task(&redis, "other", "proj.tasks.add", "[0, 0]");
    let stdout = dir.join("stdout.txt");
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut child = Command::new(bin())
        .args(worker_args(&["-c", "1", "--purge"]))
        .current_dir(dir.path())
        .stdout(File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let ready = format!("{TEST_NODE} ready.");
    assert!(
        wait_until(STARTUP_TIMEOUT, || dir.read("w1.log").contains(&ready)),
        "{}",
        node_logs(&dir)
    );
    guard.remember();
    signal(child.id() as i32, libc::SIGTERM);
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let printed = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        printed.contains("purge: Erased 3 messages from the queue."),
        "{printed}"
    );
    for id in &ids {
        assert!(redis.result(id).is_none(), "a purged task ran: {id}");
    }
    // Only the node's own queues are purged.
    assert_eq!(redis.cmd(&["LLEN", "other"]).int(), 1);
}

#[test]
fn statedb_and_heartbeat_interval_are_accepted() {
    let (redis, dir) = redis_with_app("");
    let (_node, _guard, _pid) = start_foreground(
        &dir,
        &[
            "-c",
            "1",
            "-S",
            "worker.state",
            "--heartbeat-interval",
            "5",
            "--without-mingle",
            "-O",
            "fair",
            "--disable-prefetch",
            "-E",
        ],
    );
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[1, 2]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .expect("result");
    assert_eq!(meta["result"], 3);
    assert!(!dir.join("worker.state").exists() && !dir.join("worker.state.db").exists());
    let out = run_in(
        dir.path(),
        &["worker", "-A", "proj", "--heartbeat-interval", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn autoscale_grows_with_waiting_tasks_and_shrinks_when_quiet() {
    let (redis, dir) = redis_with_app("task_track_started = true");
    let mut node = Command::new(bin());
    node.args(worker_args(&["--autoscale", "3,1"]))
        .current_dir(dir.path())
        .env("AUTOSCALE_KEEPALIVE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let child = Spawned::adopt(node.spawn().unwrap(), "rmulti worker --autoscale 3,1");
    let ready = format!("{TEST_NODE} ready.");
    assert!(
        wait_until(STARTUP_TIMEOUT, || dir.read("w1.log").contains(&ready)),
        "{}",
        node_logs(&dir)
    );
    guard.remember();
    let ids: Vec<String> = (0..3)
        .map(|_| publish_task(&redis, "celery", "proj.tasks.sleep", "[2]"))
        .collect();
    // Two more children, in one step or two: a child that has just taken a
    // message but not yet said so is counted in neither busy nor waiting.
    assert!(
        wait_until(Duration::from_secs(10), || scaled_up(&dir.read("w1.log"))
            == 2),
        "{}",
        node_logs(&dir)
    );
    // All three run at once on three children.
    let started = wait_until(Duration::from_secs(10), || {
        ids.iter().all(|id| {
            redis
                .result(id)
                .is_some_and(|m| m["status"] == "STARTED" || m["status"] == "SUCCESS")
        })
    });
    assert!(started, "{}", node_logs(&dir));
    for id in &ids {
        let meta = redis
            .wait_result(id, Duration::from_secs(15))
            .expect("result");
        assert_eq!(meta["status"], "SUCCESS", "{meta}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || dir
            .read("w1.log")
            .contains("Scaling down 2 processes.")),
        "{}",
        node_logs(&dir)
    );
    assert!(wait_until(Duration::from_secs(10), || descendants(
        child.pid()
    )
    .len()
        == 1));
}

/// How many processes the autoscaler added, over all its "Scaling up N
/// processes." lines.
fn scaled_up(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("Scaling up ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

#[test]
fn include_imports_more_task_modules_into_a_python_app() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run bin/setup",
        python.display()
    );
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_apps/pyproj"),
        &dir.join("pyproj"),
    );
    dir.write(
        "extra_tasks.py",
        "from pyproj.celery import app\n\n@app.task(name='extra.hello')\ndef hello(who):\n    return 'hi ' + who\n",
    );
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let out = Command::new(bin())
        .args(["worker", "-A", "pyproj", "--python"])
        .arg(&python)
        .args([
            "-n",
            TEST_NODE,
            "-l",
            "info",
            "-c",
            "1",
            "--detach",
            "--pidfile=%n.pid",
            "--logfile=%n%I.log",
        ])
        .args(["-I", "extra_tasks"])
        .arg(format!("--broker={}", redis.broker_url()))
        .arg(format!("--result-backend={}", redis.backend_url()))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    guard.remember();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        node_logs(&dir)
    );
    let id = publish_task(&redis, "celery", "extra.hello", "[\"there\"]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(20))
        .expect("result");
    assert_eq!(meta["status"], "SUCCESS", "{meta}\n{}", node_logs(&dir));
    assert_eq!(meta["result"], "hi there");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn help_and_version_agree() {
    let version = run_in(Path::new("."), &["--version"]);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("rmulti {}", env!("CARGO_PKG_VERSION"))
    );
    let long = text(&run_in(Path::new("."), &["--help"]).stdout);
    let help = run_in(Path::new("."), &["help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    // Each points to the other, and to the commands' own help.
    for page in [&long, &help] {
        assert!(page.contains("rmulti help worker|call"), "{page}");
        assert!(page.contains("rmulti --version"), "{page}");
    }
    let worker = run_in(Path::new("."), &["help", "worker"]);
    assert!(worker.status.success());
    assert_eq!(
        text(&worker.stdout),
        text(&run_in(Path::new("."), &["worker", "--help"]).stdout)
    );
}
