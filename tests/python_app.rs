//! `-A pyproj` where `pyproj` is a Celery project (tests/python_apps/pyproj):
//! its Python tasks run unchanged in one Python host per pool child, and
//! what a Celery client reads back (result metas, exceptions, states) and
//! what the logs say are Celery's.
//!
//! Needs a Python with celery installed: `$RMULTI_PYTHON`, else the repo's
//! `.venv/bin/python` (bin/setup makes it). Without one the tests fail with
//! a message saying so: a silently skipped test would hide a broken setup.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const NODE: &str = TEST_NODE;
const WAIT: Duration = Duration::from_secs(20);

/// The interpreter the tests give `--python`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RMULTI_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "tests/python_app.rs needs a Python with celery[redis]==5.7.0: run bin/setup \
         (it makes {}), or set RMULTI_PYTHON",
        venv.display()
    );
    venv
}

/// Copies the test projects into the test dir (the worker's cwd).
fn copy_projects(dir: &TestDir) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_apps");
    copy_tree(&src, dir.path());
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read tests/python_apps") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if path.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

struct Node {
    redis: RedisServer,
    dir: TestDir,
    _guard: NodeGuard,
}

/// Starts `rmulti worker -A <app>` detached; panics with its output if it fails.
fn start(app: &str, extra: &[&str]) -> Node {
    start_env(app, extra, &[])
}

fn start_env(app: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    copy_projects(&dir);
    let (run, guard) = launch(&redis, &dir, app, extra, env);
    run.success();
    Node {
        redis,
        dir,
        _guard: guard,
    }
}

fn launch(
    redis: &RedisServer,
    dir: &TestDir,
    app: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Run, NodeGuard) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut cmd = Rmulti::new(dir)
        .arg("worker")
        .arg("-A")
        .arg(app)
        .arg("--python")
        .arg(python())
        .args(["-n", NODE, "-l", "info", "-c", "1", "--detach"])
        .args(["--pidfile=%n.pid", "--logfile=%n%I.log"])
        .arg(format!("--broker={}", redis.broker_url()))
        .arg(format!("--result-backend={}", redis.backend_url()))
        .env("PYPROJ_SIGNALS_FILE", dir.join("signals.txt"));
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let run = cmd.args(extra).run();
    guard.remember();
    (run, guard)
}

impl Node {
    /// Waits until every message is acked (nothing held, no slot state
    /// `rmulti.state.<node>.<slot>` left): the host stores a result before
    /// it says the task is done.
    fn wait_idle(&self) {
        wait_nothing_in_flight(&self.redis);
    }

    fn send(&self, task: &str, args: Value) -> String {
        self.send_kw(task, args, json!({}), |_| {})
    }

    /// Publishes `task(*args, **kwargs)` as Celery 5.7 does, after `edit`
    /// had a chance to change the envelope (headers, time limits).
    fn send_kw(
        &self,
        task: &str,
        args: Value,
        kwargs: Value,
        edit: impl FnOnce(&mut Value),
    ) -> String {
        let (id, mut env) =
            task_envelope("celery", &format!("pyproj.tasks.{task}"), &args, &kwargs);
        edit(&mut env);
        publish_raw(&self.redis, "celery", env.to_string().as_bytes());
        id
    }

    /// Waits for a ready state (SUCCESS/FAILURE/REVOKED; intermediate
    /// states such as RETRY or a custom one are stored too, and skipped).
    fn result(&self, id: &str) -> Value {
        self.redis.wait_result(id, WAIT).unwrap_or_else(|| {
            panic!(
                "{id} not ready: {:?}\n--- main log\n{}\n--- child log\n{}",
                self.redis.result(id),
                self.dir.read("w1.log"),
                self.child_log()
            )
        })
    }

    fn child_log(&self) -> String {
        let mut all = String::new();
        for i in 1..=8 {
            all.push_str(&self.dir.read(format!("w1-{i}.log")));
        }
        all
    }

    fn main_log(&self) -> String {
        self.dir.read("w1.log")
    }
}

#[test]
fn python_app_runs_tasks_with_celery_results() {
    let node = start("pyproj", &[]);
    let main = node.main_log();
    assert!(
        main.contains("  . pyproj.tasks.add"),
        "banner lists the app's tasks: {main}"
    );

    let id = node.send("add", json!([2, 3]));
    let meta = node.result(&id);
    assert_eq!(meta["status"], "SUCCESS");
    assert_eq!(meta["result"], 5);
    assert_eq!(meta["children"], json!([]));
    // Celery's tracer stores the result before it logs the success.
    let line = format!("INFO/ForkPoolWorker-1] Task pyproj.tasks.add[{id}] succeeded in");
    assert!(
        wait_until(WAIT, || node.child_log().contains(&line)),
        "{}",
        node.child_log()
    );
    // Stored as Celery stores it: Python's json spacing and key order.
    let raw = node
        .redis
        .cmd_db(RESULT_DB, &["GET", &format!("celery-task-meta-{id}")])
        .text()
        .expect("meta stored");
    assert!(
        raw.starts_with("{\"status\": \"SUCCESS\", \"result\": 5, \"traceback\": null, \"children\": [], \"date_done\": \""),
        "{raw}"
    );
    assert!(raw.ends_with(&format!("\"task_id\": \"{id}\"}}")), "{raw}");

    // ZeroDivisionError comes back as itself, with the Python traceback.
    let id = node.send("div", json!([1, 0]));
    let meta = node.result(&id);
    assert_eq!(meta["status"], "FAILURE");
    assert_eq!(
        meta["result"],
        json!({"exc_type": "ZeroDivisionError", "exc_message": ["division by zero"], "exc_module": "builtins"})
    );
    let tb = meta["traceback"].as_str().unwrap_or_default();
    assert!(
        tb.contains("pyproj/tasks.py") && tb.ends_with("ZeroDivisionError: division by zero\n"),
        "{tb}"
    );

    // A project's own exception: its module, and its args as the message.
    let id = node.send("fail_custom", json!([]));
    assert_eq!(
        node.result(&id)["result"],
        json!({"exc_type": "MyError", "exc_message": ["custom", 42], "exc_module": "pyproj.tasks"})
    );

    // The app's JSON encoder: datetimes, dates, UUIDs, Decimals as kombu writes them.
    let id = node.send("rich", json!([]));
    assert_eq!(
        node.result(&id)["result"],
        json!({
            "when": {"__type__": "datetime", "__value__": "2026-01-02T03:04:05.678900+00:00"},
            "day": {"__type__": "date", "__value__": "2026-01-02"},
            "id": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
            "price": {"__type__": "decimal", "__value__": "1.10"},
            "tuple": [1, 2]
        })
    );
    // ... and decodes them in arguments, time zone intact.
    let when = json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05+02:00"});
    let id = node.send("echo_time", json!([when]));
    assert_eq!(
        node.result(&id)["result"],
        json!({"type": "datetime", "iso": "2026-01-02T03:04:05+02:00"})
    );

    // A return value JSON cannot hold fails as Celery's worker fails it.
    let id = node.send("unserializable", json!([]));
    let meta = node.result(&id);
    assert_eq!(meta["result"]["exc_type"], "EncodeError");
    assert_eq!(meta["result"]["exc_module"], "kombu.exceptions");

    // ignore_result: nothing stored. (Celery's client puts the task's
    // ignore_result in the message, and the message's value wins.)
    let quiet = node.send_kw("quiet", json!([]), json!({}), |env| {
        env["headers"]["ignore_result"] = json!(true);
    });
    // A subtask sent from inside a task goes through the same broker.
    let id = node.send("spawn_add", json!([1, 2]));
    let child = node.result(&id)["result"]
        .as_str()
        .expect("child id")
        .to_string();
    assert_eq!(node.result(&child)["result"], 3);
    assert!(
        node.redis.result(&quiet).is_none(),
        "ignore_result stores nothing"
    );
    // Every message was acked: nothing held, no slot state, nothing unacked.
    wait_nothing_in_flight(&node.redis);
}

#[test]
fn bound_task_sees_its_request() {
    let node = start("pyproj", &[]);
    let id = node.send_kw("whoami", json!([1]), json!({"a": 2}), |_| {});
    let r = node.result(&id)["result"].clone();
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["retries"], 0);
    assert_eq!(r["args"], json!([1]));
    assert_eq!(r["kwargs"], json!({"a": 2}));
    assert_eq!(r["hostname"], NODE);
    assert_eq!(r["is_eager"], false);
    assert_eq!(r["correlation_id"], id.as_str());
    assert_eq!(r["root_id"], id.as_str());
    assert_eq!(
        r["delivery_info"],
        json!({"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": false})
    );
}

#[test]
fn retry_republishes_with_the_same_id_and_stores_retry() {
    let node = start("pyproj", &[]);
    // Succeeds on the third try (countdown 0.1 s: parked, then run again).
    let id = node.send("flaky", json!([3]));
    let meta = node.result(&id);
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], "ok after 3");
    let log = node.child_log();
    assert_eq!(
        log.matches(&format!(
            "Task pyproj.tasks.flaky[{id}] retry: Retry in 0.1s: KeyError('try again')"
        ))
        .count(),
        2,
        "{log}"
    );

    // max_retries exceeded: the original exception is the failure.
    let id = node.send("always_retry", json!([]));
    let meta = node.result(&id);
    assert_eq!(
        meta["result"],
        json!({"exc_type": "ValueError", "exc_message": ["nope"], "exc_module": "builtins"})
    );

    // A retry far in the future: RETRY meta as result-retry.json, and the
    // republished message (same id, retries 1, an eta) parked until due.
    let id = node.send("retry_later", json!([]));
    let meta = wait_for(WAIT, || {
        node.redis.result(&id).filter(|m| m["status"] == "RETRY")
    })
    .unwrap_or_else(|| panic!("no RETRY meta\n{}", node.child_log()));
    assert_eq!(
        meta["result"],
        json!({"exc_type": "KeyError", "exc_message": ["try again"], "exc_module": "builtins"})
    );
    assert_eq!(meta["children"], json!([[[id, null], null]]));
    assert_eq!(meta["date_done"], Value::Null);
    assert!(meta["traceback"]
        .as_str()
        .unwrap_or_default()
        .contains("celery.exceptions.Retry: Retry in 600s"));
    let parked = wait_for(WAIT, || {
        let all = node.redis.cmd(&["HVALS", "rmulti.eta.messages"]).strings();
        all.into_iter().find(|m| m.contains(&id))
    })
    .expect("retried message parked");
    let raw = &parked[parked.find('\n').map_or(0, |i| i + 1)..];
    let env: Value = serde_json::from_str(raw).expect("envelope");
    assert_eq!(env["headers"]["id"], id.as_str());
    assert_eq!(env["headers"]["retries"], 1);
    assert_eq!(env["headers"]["parent_id"], id.as_str());
    assert!(env["headers"]["eta"].is_string());
    assert_ne!(env["properties"]["delivery_tag"], Value::Null);
}

#[test]
fn an_idle_pool_runs_a_due_retry_in_the_child_that_ran_the_try_before() {
    // Four children waiting idle: a countdown retry goes to the one that
    // ran the try before, as in Celery's pool (a task object's attributes
    // carry over); each of three retries lands elsewhere 3 times in 4 by chance.
    let node = start("pyproj", &["-c", "4"]);
    for round in 0..2 {
        let id = node.send("counted_retry", json!([4]));
        let meta = node.result(&id);
        assert_eq!(meta["status"], "SUCCESS", "round {round}: {meta}");
        assert_eq!(
            meta["result"][0],
            4,
            "round {round}: tries seen in one process: {meta}\n{}",
            node.child_log()
        );
    }
}

#[test]
fn ignore_reject_and_custom_states() {
    let node = start("pyproj", &[]);
    let id = node.send("ignored", json!([]));
    assert!(
        wait_until(WAIT, || node
            .child_log()
            .contains(&format!("Task pyproj.tasks.ignored[{id}] ignored"))),
        "{}",
        node.child_log()
    );
    assert!(node.redis.result(&id).is_none(), "Ignore stores nothing");

    // Reject(requeue=True) under acks_late: the message comes back and runs again.
    let marker = node.dir.join("rejected-once");
    let id = node.send("rejected", json!([true, marker.to_string_lossy()]));
    assert_eq!(node.result(&id)["result"], "second delivery");
    let log = node.child_log();
    assert!(
        log.contains(&format!(
            "WARNING/ForkPoolWorker-1] Task pyproj.tasks.rejected[{id}] reject requeue=True: no thanks"
        )),
        "{log}"
    );

    // Reject(requeue=False): acked and gone, a FAILURE stored (Celery 5.7).
    let marker = node.dir.join("rejected-drop");
    let id = node.send("rejected", json!([false, marker.to_string_lossy()]));
    assert!(wait_until(WAIT, || marker.exists()));
    assert!(wait_until(WAIT, || {
        node.redis.cmd(&["LLEN", "celery"]).int() == 0
            && node.redis.cmd(&["HLEN", "unacked"]).int() == 0
    }));
    let meta = node.result(&id);
    assert_eq!(meta["status"], "FAILURE", "{meta}");
    assert_eq!(meta["result"]["exc_type"], "Reject", "{meta}");

    // update_state: a custom state with its meta, published as it happens.
    let id = node.send("progress", json!([3]));
    let meta = wait_for(WAIT, || {
        node.redis.result(&id).filter(|m| m["status"] == "PROGRESS")
    })
    .expect("PROGRESS state stored");
    assert_eq!(meta["result"]["total"], 3);
    assert_eq!(node.result(&id)["result"], 3);
}

#[test]
fn soft_time_limit_raises_inside_the_task() {
    let node = start("pyproj", &[]);
    // The task's own soft_time_limit (0.5 s), caught by the task.
    let id = node.send("soft_limited", json!([5]));
    assert_eq!(node.result(&id)["result"], "caught soft limit");
    // A message's soft limit, not caught: SoftTimeLimitExceeded as Celery stores it.
    let id = node.send_kw("soft_uncaught", json!([5]), json!({}), |env| {
        env["headers"]["timelimit"] = json!([null, 0.5]);
    });
    let meta = node.result(&id);
    assert_eq!(
        meta["result"],
        json!({"exc_type": "SoftTimeLimitExceeded", "exc_message": [], "exc_module": "billiard.exceptions"})
    );
    // The host lives on.
    let id = node.send("add", json!([1, 1]));
    assert_eq!(node.result(&id)["result"], 2);
}

#[test]
fn task_output_and_logging_reach_the_child_log() {
    let node = start("pyproj", &[]);
    let id = node.send("noisy", json!(["hello"]));
    assert_eq!(node.result(&id)["result"], "hello");
    // The child writes the lines as it reads them; the result may be first.
    node.wait_idle();
    let log = node.child_log();
    for want in [
        "WARNING/ForkPoolWorker-1] hello\n".to_string(),
        "WARNING/ForkPoolWorker-1] second line\n".to_string(),
        format!("WARNING/ForkPoolWorker-1] pyproj.tasks.noisy[{id}]: task logger says hello\n"),
        "ERROR/ForkPoolWorker-1] plain logger says hello\n".to_string(),
    ] {
        assert!(log.contains(&want), "{want:?} not in\n{log}");
    }
}

#[test]
fn signals_fire_in_the_host() {
    let node = start("pyproj", &[]);
    let ok = node.send("add", json!([1, 2]));
    node.result(&ok);
    let bad = node.send("div", json!([1, 0]));
    node.result(&bad);
    // The result is stored before task_postrun, as in Celery's tracer.
    assert!(wait_until(WAIT, || node
        .dir
        .read("signals.txt")
        .matches("task_postrun")
        .count()
        == 2));
    let text = node.dir.read("signals.txt");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let names: Vec<&str> = lines.iter().map(|l| l[0]).collect();
    assert!(
        names.starts_with(&["worker_init", "worker_process_init"]),
        "{text}"
    );
    let host_pid = lines[1][1];
    for (signal, id) in [
        ("task_prerun", &ok),
        ("task_success", &ok),
        ("task_postrun", &ok),
        ("task_prerun", &bad),
        ("task_failure", &bad),
        ("task_postrun", &bad),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l[0] == signal && l[1] == host_pid && l.get(2) == Some(&id.as_str())),
            "{signal} {id} from the host\n{text}"
        );
    }
}

#[test]
fn host_crash_is_worker_lost_and_the_host_restarts() {
    let node = start("pyproj", &[]);
    let first = node.send("pid", json!([]));
    let host1 = node.result(&first)["result"].as_i64().expect("pid");
    for (how, status) in [
        ("exit", "exitcode 3"),
        ("kill", "signal 9 (SIGKILL)"),
        ("segv", "signal 11 (SIGSEGV)"),
    ] {
        let id = node.send("crash", json!([how]));
        let meta = node.result(&id);
        assert_eq!(meta["status"], "FAILURE");
        assert_eq!(meta["result"]["exc_type"], "WorkerLostError");
        assert_eq!(meta["result"]["exc_module"], "billiard.exceptions");
        let message = meta["result"]["exc_message"][0]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("Worker exited prematurely: {status}")),
            "{message}"
        );
        // The next task runs, in a new host.
        let id = node.send("add", json!([2, 2]));
        assert_eq!(node.result(&id)["result"], 4);
    }
    let last = node.send("pid", json!([]));
    let host2 = node.result(&last)["result"].as_i64().expect("pid");
    assert_ne!(host1, host2);
    assert!(!alive(host1 as i32), "the crashed host is gone");
}

#[test]
fn host_crash_is_noticed_even_when_a_forked_process_keeps_its_pipes() {
    let node = start("pyproj", &[]);
    let id = node.send("crash_leaving_a_child", json!([]));
    let meta = node.result(&id);
    assert_eq!(meta["result"]["exc_type"], "WorkerLostError");
    let message = meta["result"]["exc_message"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("Worker exited prematurely: exitcode 5"),
        "{message}"
    );
}

#[test]
fn host_crash_requeues_under_acks_late_and_reject_on_worker_lost() {
    let node = start(
        "pyproj",
        &[
            "--",
            "task_acks_late=true",
            "task_reject_on_worker_lost=true",
        ],
    );
    let marker = node.dir.join("crashed-once");
    let id = node.send("crash_once", json!([marker.to_string_lossy()]));
    assert_eq!(node.result(&id)["result"], "survived");
}

#[test]
fn hard_time_limit_kills_the_host_too() {
    let node = start("pyproj", &[]);
    let first = node.send("pid", json!([]));
    let host1 = node.result(&first)["result"].as_i64().expect("pid") as i32;
    let id = node.send_kw("sleep", json!([60]), json!({}), |env| {
        env["headers"]["timelimit"] = json!([1, null]);
    });
    let meta = node.result(&id);
    assert_eq!(meta["result"]["exc_type"], "TimeLimitExceeded");
    assert!(
        wait_until(WAIT, || !alive(host1)),
        "host killed with its child"
    );
    let id = node.send("add", json!([3, 3]));
    assert_eq!(node.result(&id)["result"], 6);
}

#[test]
fn an_app_that_cannot_be_imported_fails_start_with_the_traceback() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    copy_projects(&dir);
    let (run, _guard) = launch(&redis, &dir, "broken", &[], &[]);
    let run = run.code_is(78);
    let err = run.stderr();
    assert!(
        err.contains("ModuleNotFoundError: No module named 'module_that_does_not_exist'"),
        "{err}"
    );
    assert!(err.contains("broken.py"), "{err}");
    assert!(!dir.join("w1.pid").exists());

    let (run, _guard) = launch(&redis, &dir, "nosuchmodule", &[], &[]);
    let err = run.code_is(78).stderr();
    assert!(err.contains("nosuchmodule.toml not found"), "{err}");
    assert!(err.contains("no Python module nosuchmodule"), "{err}");
}

#[test]
fn a_host_that_fails_in_the_child_fails_start_with_the_traceback() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    copy_projects(&dir);
    let (run, _guard) = launch(
        &redis,
        &dir,
        "pyproj",
        &[],
        &[("PYPROJ_FAIL_IN_SERVE", "1")],
    );
    assert_ne!(run.code(), Some(0));
    let err = run.stderr();
    assert!(
        err.contains("RuntimeError: pyproj refuses to load in a serving host"),
        "{err}"
    );
    // The template's own traceback reaches the detached node's log (its
    // stdio is /dev/null), before the line saying it died.
    let log = dir.read("w1.log");
    let said = log.find("Python template:");
    let died = log.find("The Python template pid:");
    assert!(
        said.is_some() && said < died,
        "no template output before its death in the log:\n{log}"
    );
    let output = &log[said.unwrap_or(0)..];
    assert!(
        output.contains("RuntimeError: pyproj refuses to load in a serving host"),
        "{log}"
    );
}

#[test]
fn an_app_file_can_add_a_python_apps_tasks() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    copy_projects(&dir);
    dir.write_app("mixed", "python = \"pyproj\"");
    let (run, _guard) = launch(&redis, &dir, "mixed", &[], &[]);
    run.success();
    let builtin = publish_task(&redis, "celery", "proj.tasks.add", "[1, 2]");
    let python = publish_task(&redis, "celery", "pyproj.tasks.add", "[3, 4]");
    assert_eq!(
        redis.wait_result(&builtin, WAIT).expect("builtin result")["result"],
        3
    );
    assert_eq!(
        redis.wait_result(&python, WAIT).expect("python result")["result"],
        7
    );
    let main = dir.read("w1.log");
    assert!(
        main.contains("  . proj.tasks.add") && main.contains("  . pyproj.tasks.add"),
        "{main}"
    );
}

#[test]
fn a_host_that_died_between_tasks_is_restarted_before_the_next() {
    let node = start("pyproj", &[]);
    let first = node.send("pid", json!([]));
    let host1 = node.result(&first)["result"].as_i64().expect("pid") as i32;
    node.wait_idle();
    // SAFETY: kill(2) on a pid this test's node started.
    unsafe { libc::kill(host1, libc::SIGKILL) };
    // Reaped, not just a zombie leader: the host's other thread holds its
    // pipes open until the whole thread group is gone, and a task written
    // before that is one it died running.
    let proc_dir = format!("/proc/{host1}");
    assert!(wait_until(WAIT, || !std::path::Path::new(&proc_dir).exists()));
    let second = node.send("pid", json!([]));
    let meta = node.result(&second);
    let host2 = meta["result"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {meta}\n{}", node.child_log())) as i32;
    assert_ne!(host1, host2);
    let log = node.child_log();
    assert!(
        log.contains(&format!(
            "Python host pid:{host1} had exited; starting a new one"
        )),
        "{log}"
    );
    // The same pool child carried on: no task was lost, no child replaced.
    assert!(
        !node.main_log().contains("exited with"),
        "{}",
        node.main_log()
    );
}

#[test]
fn command_line_settings_reach_the_host() {
    // A stale CELERY_BROKER_URL in the environment must not win over -b,
    // and `-- key=value` settings apply to the app the host loads.
    let node = start_env(
        "pyproj",
        &["--", "task_track_started=true"],
        &[("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")],
    );
    let id = node.send("sleep", json!([1]));
    let started = wait_for(WAIT, || {
        node.redis.result(&id).filter(|m| m["status"] == "STARTED")
    })
    .unwrap_or_else(|| panic!("no STARTED meta\n{}", node.child_log()));
    assert_eq!(started["result"]["hostname"], NODE);
    assert!(started["result"]["pid"].is_number());
    assert_eq!(node.result(&id)["result"], 1);
    // A subtask goes to the node's broker, not the environment's.
    let id = node.send("spawn_add", json!([5, 6]));
    let child = node.result(&id)["result"]
        .as_str()
        .expect("child id")
        .to_string();
    assert_eq!(node.result(&child)["result"], 11);
}

#[test]
fn warm_shutdown_lets_a_running_python_task_finish() {
    let node = start("pyproj", &[]);
    let pid = read_pidfile(node.dir.join("w1.pid")).expect("pidfile");
    let first = node.send("pid", json!([]));
    let host = node.result(&first)["result"].as_i64().expect("pid") as i32;
    let id = node.send("sleep", json!([1.5]));
    assert!(wait_until(WAIT, || node
        .main_log()
        .contains(&format!("Task pyproj.tasks.sleep[{id}] received"))));
    // SAFETY: kill(2) on the node this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(node.result(&id)["result"], 1.5);
    assert!(wait_until(WAIT, || !alive(pid)), "node stopped");
    assert!(!alive(host), "its Python host too");
}

/// A link callback is sent by Celery's tracer after its task's result is
/// stored, so a task with one stores its own result in the host; a plain task
/// hands its result to the child. Both must read back as Celery writes them.
#[test]
fn a_link_callback_runs_with_the_result_and_both_results_are_stored() {
    use base64::Engine as _;
    let node = start("pyproj", &[]);
    let callback_id = "5d7a0c52-1d3a-4a9b-8f0e-6c2d1b9e0a11";
    let parent = node.send_kw("add", json!([1, 2]), json!({}), |env| {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = env["body"].as_str().expect("base64 body").to_string();
        let mut parts: Value =
            serde_json::from_slice(&b64.decode(body).expect("base64")).expect("body json");
        parts[2]["callbacks"] = json!([{
            "task": "pyproj.tasks.add",
            "args": [100],
            "kwargs": {},
            "options": {"task_id": callback_id},
            "subtask_type": null,
            "immutable": false,
        }]);
        env["body"] = json!(b64.encode(parts.to_string()));
    });
    let plain = node.send("add", json!([20, 22]));
    let first = node.result(&parent);
    assert_eq!(first["status"], "SUCCESS");
    assert_eq!(first["result"], 3);
    let linked = node.result(callback_id);
    assert_eq!(linked["status"], "SUCCESS", "{linked}");
    assert_eq!(linked["result"], 103);
    let second = node.result(&plain);
    assert_eq!(second["result"], 42);
    // The meta the child stored for the host has Celery's keys, in order.
    let raw = node
        .redis
        .cmd_db(1, &["GET", &format!("celery-task-meta-{plain}")])
        .text()
        .expect("stored meta");
    assert!(
        raw.starts_with(r#"{"status": "SUCCESS", "result": 42, "traceback": null, "children": [], "date_done": ""#),
        "{raw}"
    );
    assert!(
        raw.ends_with(&format!(r#""task_id": "{plain}"}}"#)),
        "{raw}"
    );
    node.wait_idle();
}
