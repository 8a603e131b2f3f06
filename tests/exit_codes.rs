//! Exit statuses are a property of the failure, not of the command: the
//! same bad app file, bad Redis URL or bad command line exits the same from
//! `rmulti worker`, `rmulti call` and the multi commands (docs/ARCHITECTURE.md,
//! "Exit codes"). None of these failures gets as far as Redis, so no test
//! here starts one; the deadline only guards against a regression that
//! makes a command wait for one.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

const CONFIG: i32 = 78;
const USAGE: i32 = 2;
const FAILURE: i32 = 1;

/// Port 1: nothing listens there, so a command that got as far as
/// connecting fails fast instead of reaching someone's Redis.
const NOWHERE: &str = "redis://127.0.0.1:1/0";

/// `rmulti ARGS` in `dir`, with no Celery variables from the caller's shell.
fn rmulti(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::cargo_bin("rmulti")
        .expect("the rmulti binary")
        .args(args)
        .current_dir(dir)
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND")
        .env_remove("VIRTUAL_ENV")
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run rmulti");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A timeout kills the command: no code, which fails every assertion.
    (out.status.code().unwrap_or(-1), text)
}

/// A temp dir holding `proj.toml` with `text`.
fn app_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("proj.toml"), text).expect("write proj.toml");
    dir
}

const GOOD_APP: &str =
    "broker_url = \"redis://127.0.0.1:1/0\"\n[tasks]\n\"proj.tasks.add\" = { builtin = \"add\" }\n";

/// `worker` and `call` with the same app and extra arguments.
fn worker_and_call(dir: &Path, app: &str, extra: &[&str]) -> [(i32, String); 2] {
    let mut worker = vec!["worker", "-A", app];
    worker.extend(extra);
    let mut call = vec!["call", "-A", app];
    call.extend(extra);
    call.push("proj.tasks.add");
    [rmulti(dir, &worker), rmulti(dir, &call)]
}

#[test]
fn a_missing_app_file_is_a_config_error_from_worker_and_call() {
    let dir = app_dir(GOOD_APP);
    for (code, text) in worker_and_call(dir.path(), "other.toml", &[]) {
        assert_eq!(code, CONFIG, "{text}");
        assert!(text.contains("other.toml"), "{text}");
    }
}

#[test]
fn an_invalid_app_file_is_a_config_error_from_worker_and_call() {
    let dir = app_dir("task_acks_late = true\n\nbrokr_url = \"redis://x\"\n");
    for (code, text) in worker_and_call(dir.path(), "proj", &[]) {
        assert_eq!(code, CONFIG, "{text}");
        assert!(
            text.contains("proj.toml: line 3, column 1: unknown field `brokr_url`"),
            "{text}"
        );
    }
    let dir = app_dir("task_time_limit = 0\n");
    for (code, text) in worker_and_call(dir.path(), "proj", &[]) {
        assert_eq!(code, CONFIG, "{text}");
        assert!(
            text.contains("task_time_limit must be a positive"),
            "{text}"
        );
    }
}

#[test]
fn a_bad_redis_url_is_a_config_error_from_worker_and_call() {
    let dir = app_dir(GOOD_APP);
    // From the flag.
    for (code, text) in worker_and_call(dir.path(), "proj", &["-b", "redis://127.0.0.1:1/zero"]) {
        assert_eq!(code, CONFIG, "{text}");
        assert!(text.contains("the database is a number"), "{text}");
    }
    for (code, text) in worker_and_call(dir.path(), "proj", &["--result-backend", "amqp://h//"]) {
        assert_eq!(code, CONFIG, "{text}");
        assert!(text.contains("unsupported scheme"), "{text}");
    }
    // From the app file.
    let dir = app_dir("broker_url = \"amqp://guest@127.0.0.1//\"\n");
    for (code, text) in worker_and_call(dir.path(), "proj", &[]) {
        assert_eq!(code, CONFIG, "{text}");
        assert!(text.contains("unsupported scheme"), "{text}");
    }
    // `call` without an app.
    let (code, text) = rmulti(dir.path(), &["call", "-b", "amqp://h//", "t"]);
    assert_eq!(code, CONFIG, "{text}");
}

#[test]
fn inspect_meets_the_same_app_and_url_errors() {
    let dir = app_dir(GOOD_APP);
    for args in [
        &["inspect", "ping", "-A", "other.toml"][..],
        &["inspect", "ping", "-b", "amqp://h//"],
        &["control", "shutdown", "-b", "redis://127.0.0.1:1/zero"],
    ] {
        let (code, text) = rmulti(dir.path(), args);
        assert_eq!(code, CONFIG, "{args:?}: {text}");
    }
}

#[test]
fn a_bad_setting_after_double_dash_is_a_config_error() {
    let dir = app_dir(GOOD_APP);
    for setting in [
        "brokr_url=x",
        "worker_concurrency=0",
        "task_acks_late=maybe",
    ] {
        let (code, text) = rmulti(dir.path(), &["worker", "-A", "proj", "--", setting]);
        assert_eq!(code, CONFIG, "{setting}: {text}");
        assert!(text.contains("bad setting after `--`"), "{text}");
    }
}

#[test]
fn usage_errors_exit_2_from_every_command() {
    let dir = app_dir(GOOD_APP);
    for args in [
        &["worker", "--no-such-flag"][..],
        &["worker", "-A", "proj", "-l", "loud"],
        &["worker", "-A", "proj", "-c", "0"],
        &["worker"],
        &["call"],
        &["call", "-A", "proj", "--priority", "12", "proj.tasks.add"],
        &["call", "-A", "proj", "--kwargs", "[1]", "proj.tasks.add"],
        &["call", "-A", "proj", "--countdown", "-1", "proj.tasks.add"],
        &["frobnicate"],
        &["get"],
        &["show", "w1", "-"],
        &["start", "w1", "--logfile=%z"],
    ] {
        let (code, text) = rmulti(dir.path(), args);
        assert_eq!(code, USAGE, "{args:?}: {text}");
    }
}

#[test]
fn a_call_that_reaches_no_redis_is_a_runtime_failure() {
    let dir = app_dir(GOOD_APP);
    let (code, text) = rmulti(
        dir.path(),
        &["call", "-A", "proj", "-b", NOWHERE, "proj.tasks.add"],
    );
    assert_eq!(code, FAILURE, "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
}

#[test]
fn multi_start_shows_the_nodes_config_error() {
    // `start` fails (1: a node failed) and shows the node's own status.
    let dir = app_dir(GOOD_APP);
    let (code, text) = rmulti(dir.path(), &["start", "w1", "-A", "other"]);
    assert_eq!(code, FAILURE, "{text}");
    assert!(
        text.contains("Child terminated with exit code 78"),
        "{text}"
    );
}
