//! The fault suite of issue 6 ("Nothing lost"), with figures. Each scenario
//! sends a batch of tasks through a node, injects one kind of fault (pool
//! children SIGKILLed, the main process SIGKILLed, Redis restarted or down at
//! start, time limits, child recycling, a warm restart under parked
//! countdowns), stops the node, and prints one line:
//!
//!     fault_suite: <scenario>: sent 400, finished 400, lost 0, executed twice 3
//!
//! - *finished*: a final result (SUCCESS, FAILURE) is stored;
//! - *lost*: no result, and the message is nowhere on the broker (no queue,
//!   held list, `unacked` entry or ETA park) once the node has stopped;
//! - *executed twice*: the task's command ran more than once. The task counts
//!   itself: it is an exec task that appends its id to `runs.txt` with one
//!   `O_APPEND` write.
//!
//! Every scenario asserts lost == 0, and what else its fault promises (no
//! duplicate under early ack, the right exception). `-- --nocapture` shows
//! the figures; README "Delivery guarantees" cites them. The single-fault
//! tests with more detail are in worker_faults.rs, worker_signals.rs and
//! worker_redis_errors.rs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const PIDFILE: &str = "w1.pid";
const MAIN_LOG: &str = "w1.log";
/// Where the counting task appends its id, one line per run.
const RUNS: &str = "runs.txt";
/// The counting task's name in every app of this file.
const COUNTED: &str = "proj.tasks.counted";
const LATE_ACK: &str = "task_acks_late = true\ntask_reject_on_worker_lost = true";
/// Longest a scenario waits for its tasks' results.
const RESULTS_TIMEOUT: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------
// The counting task, sending, and the figures
// ---------------------------------------------------------------------------

/// Writes `counted.sh` and returns the `[tasks]` line of an exec task that
/// runs it: it appends its task id to [`RUNS`] (one short `O_APPEND` write,
/// so concurrent runs never interleave), sleeps `secs` and returns
/// `[id, pid of its pool child]`.
fn counted_task(dir: &TestDir, secs: &str) -> String {
    // The request is compact JSON that starts `{"id":"<id>",...`.
    let runs = dir.join(RUNS);
    let script = [
        "read -r j".to_string(),
        r#"t=${j#*'"id":"'}"#.to_string(),
        r#"id=${t%%'"'*}"#.to_string(),
        format!(r#"echo "$id" >> '{}'"#, runs.display()),
        format!("sleep {secs}"),
        r#"printf '["%s", %s]\n' "$id" "$PPID""#.to_string(),
    ]
    .join("\n");
    let path = dir.write("counted.sh", script);
    format!(
        "\"{COUNTED}\" = {{ exec = [\"sh\", \"{}\"] }}\n",
        path.display()
    )
}

/// Writes the app: `settings`, the builtins and the counting task.
fn write_counting_app(dir: &TestDir, settings: &str, secs: &str) {
    let task = counted_task(dir, secs);
    dir.write_app_tasks("proj", settings, &task);
}

/// Sends `n` counting tasks on one connection; returns their ids.
fn send(redis: &RedisServer, n: usize) -> Vec<String> {
    send_with(redis, n, |_| {})
}

/// As [`send`], letting `edit` change each envelope first (ETA, time limits).
fn send_with(redis: &RedisServer, n: usize, edit: impl Fn(&mut Value)) -> Vec<String> {
    push_tasks(redis, COUNTED, &json!([]), n, edit)
}

/// The final results (SUCCESS, FAILURE, REVOKED) stored for `ids`, by id.
fn results(redis: &RedisServer, ids: &[String]) -> HashMap<String, Value> {
    results_in(redis, ids, &["SUCCESS", "FAILURE", "REVOKED"])
}

fn all_finished(redis: &RedisServer, ids: &[String]) -> bool {
    results(redis, ids).len() == ids.len()
}

/// Waits (polling every 50 ms) until every task of `ids` has a final result.
fn wait_all_finished(redis: &RedisServer, dir: &TestDir, ids: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !all_finished(redis, ids) {
        assert!(
            Instant::now() < deadline,
            "{} of {} tasks finished after {timeout:?}\n{}",
            results(redis, ids).len(),
            ids.len(),
            node_logs(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times each task ran, from [`RUNS`].
fn runs(dir: &TestDir) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for line in dir.read(RUNS).lines() {
        *count.entry(line.to_string()).or_insert(0) += 1;
    }
    count
}

/// Everything a message can sit in on the broker, as one text: every list
/// (queues, held lists) but the dead-letter list, and every hash (kombu's
/// `unacked`, the ETA park's `rmulti.eta.messages`).
fn broker_contents(redis: &RedisServer) -> String {
    let mut con = redis.conn(BROKER_DB);
    let mut text = String::new();
    for key in con.cmd(&["KEYS", "*"]).strings() {
        let kind = con.cmd(&["TYPE", &key]).text().unwrap_or_default();
        let values = match kind.as_str() {
            "list" if key != "rmulti.deadletter" => con.cmd(&["LRANGE", &key, "0", "-1"]),
            "hash" => con.cmd(&["HVALS", &key]),
            _ => continue,
        };
        for v in values.strings() {
            text.push_str(&v);
            text.push('\n');
        }
    }
    text
}

/// One scenario's figures.
struct Figures {
    results: HashMap<String, Value>,
    runs: HashMap<String, usize>,
    /// Tasks without a result whose message is still on the broker.
    waiting: usize,
}

impl Figures {
    fn executed_twice(&self) -> usize {
        self.runs.values().filter(|&&n| n > 1).count()
    }

    /// `(id, exc_type)` of every task whose result is not SUCCESS.
    fn failures(&self) -> Vec<(String, String)> {
        let mut failed: Vec<(String, String)> = self
            .results
            .iter()
            .filter(|(_, m)| m["status"] != "SUCCESS")
            .map(|(id, m)| (id.clone(), exc_type(m).to_string()))
            .collect();
        failed.sort();
        failed
    }

    fn ran(&self, id: &str) -> usize {
        self.runs.get(id).copied().unwrap_or(0)
    }
}

/// Counts what became of `ids` once the node has stopped, prints the
/// scenario's line (with `extra` appended) and asserts that nothing was
/// lost, nothing dead-lettered and nothing left in flight.
fn tally(
    scenario: &str,
    redis: &RedisServer,
    dir: &TestDir,
    ids: &[String],
    extra: &str,
) -> Figures {
    let results = results(redis, ids);
    let on_broker = broker_contents(redis);
    let (mut waiting, mut lost) = (0, Vec::new());
    for id in ids.iter().filter(|id| !results.contains_key(*id)) {
        if on_broker.contains(id.as_str()) {
            waiting += 1;
        } else {
            lost.push(id.clone());
        }
    }
    let figures = Figures {
        results,
        runs: runs(dir),
        waiting,
    };
    // "finished 60 (FAILURE: WorkerLostError 13)": the failures by exception.
    let mut by_exc: BTreeMap<String, usize> = BTreeMap::new();
    for (_, exc) in figures.failures() {
        *by_exc.entry(exc).or_insert(0) += 1;
    }
    let failed = if by_exc.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = by_exc.iter().map(|(e, n)| format!("{e} {n}")).collect();
        format!(" (FAILURE: {})", parts.join(", "))
    };
    println!(
        "fault_suite: {scenario}: sent {}, finished {}{failed}, lost {}, executed twice {}{extra}",
        ids.len(),
        figures.results.len(),
        lost.len(),
        figures.executed_twice()
    );
    assert!(
        lost.is_empty(),
        "{scenario}: {} task(s) lost, e.g. {:?}\n{}",
        lost.len(),
        lost.first(),
        node_logs(dir)
    );
    let dead = redis
        .cmd(&["LRANGE", "rmulti.deadletter", "0", "-1"])
        .strings();
    assert!(dead.is_empty(), "{scenario}: dead-lettered: {dead:?}");
    // A stopped node leaves nothing half-done: no held list, no `unacked`.
    let left = in_flight(redis);
    assert!(left.is_empty(), "{scenario}: left in flight: {left:?}");
    figures
}

/// Asserts that every task finished with SUCCESS (and nothing waits).
fn assert_all_succeeded(figures: &Figures, ids: &[String]) {
    assert_eq!(figures.waiting, 0, "tasks still waiting on the broker");
    assert_eq!(figures.results.len(), ids.len(), "tasks without a result");
    assert_eq!(figures.failures(), vec![], "tasks that failed");
    for id in ids {
        assert!(figures.ran(id) >= 1, "{id} succeeded without running");
        assert_eq!(figures.results[id]["result"][0], id.as_str());
    }
}

// ---------------------------------------------------------------------------
// Node helpers
// ---------------------------------------------------------------------------

/// The node's pool children (its direct children that are rmulti; an
/// exec task's orphan adopted for a moment is not one).
fn pool_of(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|&p| is_rmulti(p))
        .collect()
}

/// A number below `n`, at random (`n` > 0).
fn random_below(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n as u128) as usize
}

/// SIGKILLs one of the node's pool children at random; false if it had none
/// (all being replaced) or the victim was already gone.
fn kill_random_child(pid: i32) -> bool {
    let pool = pool_of(pid);
    if pool.is_empty() {
        return false;
    }
    let victim = pool[random_below(pool.len())];
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(victim, libc::SIGKILL) == 0 }
}

/// Warm shutdown (TERM) and wait until the node is gone: main process dead,
/// pidfile removed.
fn stop_node(dir: &TestDir, pid: i32) {
    signal(pid, libc::SIGTERM);
    let gone = wait_until(Duration::from_secs(20), || {
        !alive(pid) && !dir.join(PIDFILE).exists()
    });
    assert!(
        gone,
        "node {pid} did not stop after TERM\n{}",
        node_logs(dir)
    );
}

/// Sends a random child SIGKILL every `period` until every task of `ids`
/// has a result; returns how many children were killed.
fn kill_children_until_finished(
    redis: &RedisServer,
    dir: &TestDir,
    pid: i32,
    ids: &[String],
    period: Duration,
) -> usize {
    let deadline = Instant::now() + RESULTS_TIMEOUT;
    let mut kills = 0;
    while !all_finished(redis, ids) {
        assert!(
            Instant::now() < deadline,
            "{} of {} tasks finished after {RESULTS_TIMEOUT:?} ({kills} kills)\n{}",
            results(redis, ids).len(),
            ids.len(),
            node_logs(dir)
        );
        assert!(alive(pid), "the main process died\n{}", node_logs(dir));
        kills += usize::from(kill_random_child(pid));
        // The fault's period, not a wait for something.
        std::thread::sleep(period);
    }
    kills
}

// ---------------------------------------------------------------------------
// 1. Pool children SIGKILLed under late ack
// ---------------------------------------------------------------------------

#[test]
fn late_ack_tasks_while_a_random_child_is_sigkilled_every_100_ms() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    write_counting_app(&dir, LATE_ACK, "0.02");
    let (_guard, pid) = start_detached(&dir, &["-c", "4"]);

    let ids = send(&redis, 400);
    let kills = kill_children_until_finished(&redis, &dir, pid, &ids, Duration::from_millis(100));
    stop_node(&dir, pid);

    let figures = tally(
        "400 late-ack tasks, a random child SIGKILLed every 100 ms",
        &redis,
        &dir,
        &ids,
        &format!(", children killed {kills}"),
    );
    assert_all_succeeded(&figures, &ids);
    assert!(kills >= 5, "only {kills} children were killed");
}

// ---------------------------------------------------------------------------
// 2. The node's main process SIGKILLed
// ---------------------------------------------------------------------------

/// 200 tasks through a `-c 4` node whose main process is SIGKILLed once a
/// quarter of them finished, then started again; returns the figures once
/// every task has a result.
fn across_a_node_sigkill(scenario: &str, settings: &str) -> (Vec<String>, Figures) {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    write_counting_app(&dir, settings, "0.02");
    let (mut guard, pid) = start_detached(&dir, &["-c", "4"]);

    let ids = send(&redis, 200);
    assert!(
        wait_until(RESULTS_TIMEOUT, || results(&redis, &ids).len() >= 50),
        "the node did not get going\n{}",
        node_logs(&dir)
    );
    let left = kill_node(pid, &pool_of(pid), Duration::from_secs(3));
    assert!(
        left.is_empty(),
        "the pool outlived its main process (pdeathsig): {left:?}"
    );
    let held: i64 = redis
        .cmd(&["KEYS", "rmulti.held.*"])
        .strings()
        .iter()
        .map(|k| redis.cmd(&["LLEN", k]).int())
        .sum();
    let done_at_kill = results(&redis, &ids).len();
    assert!(held >= 1, "no message was in flight when the node died");

    let (_guard2, pid2) = start_detached(&dir, &["-c", "4"]);
    guard.remember();
    wait_all_finished(&redis, &dir, &ids, RESULTS_TIMEOUT);
    stop_node(&dir, pid2);

    let figures = tally(
        scenario,
        &redis,
        &dir,
        &ids,
        &format!(", finished before the kill {done_at_kill}, held at the kill {held}"),
    );
    (ids, figures)
}

#[test]
fn late_ack_tasks_across_a_sigkill_of_the_main_process_and_a_restart() {
    let (ids, figures) = across_a_node_sigkill(
        "200 late-ack tasks, the main process SIGKILLed and restarted",
        "task_acks_late = true",
    );
    assert_all_succeeded(&figures, &ids);
}

/// Early ack: what had started when the node died is recorded
/// `WorkerLostError` at its restart, everything else runs; nothing twice.
#[test]
fn early_ack_tasks_across_a_sigkill_of_the_main_process_and_a_restart() {
    let (ids, figures) = across_a_node_sigkill(
        "200 early-ack tasks, the main process SIGKILLed and restarted",
        "",
    );
    assert_eq!(figures.results.len(), ids.len());
    for (id, exc) in figures.failures() {
        assert_eq!(exc, "WorkerLostError", "{id}");
    }
    assert_eq!(figures.executed_twice(), 0, "early ack ran a task twice");
}

// ---------------------------------------------------------------------------
// 3. Redis restarting under a running node
// ---------------------------------------------------------------------------

/// Keys of ballast in db 2, loaded one per [`LOAD_DELAY_US`] by a restarted
/// Redis: about a second during which it answers `LOADING`.
const BALLAST_KEYS: usize = 1000;
const LOAD_DELAY_US: &str = "1000";

/// Gives `redis` (AOF on) a data set that takes a while to load: ballast in
/// a db the app does not use, in the AOF's RDB part, which a restart with
/// `--key-load-delay` loads key by key.
fn add_ballast(redis: &RedisServer) {
    let mut ballast: Vec<String> = vec!["MSET".into()];
    for i in 0..BALLAST_KEYS {
        ballast.extend([format!("ballast:{i}"), "x".to_string()]);
    }
    let ballast: Vec<&str> = ballast.iter().map(String::as_str).collect();
    assert_eq!(redis.conn(2).cmd(&ballast), Resp::Simple("OK".into()));
    redis.rewrite_aof();
}

/// 300 tasks through a `-c 4` node while Redis (AOF on) is killed for half a
/// second and restarted, then loads its data for about a second; returns
/// the figures, all tasks having succeeded and no process having exited.
fn across_a_redis_restart(scenario: &str, settings: &str) -> Figures {
    let mut redis = RedisServer::start_with_aof();
    let dir = TestDir::new(&redis);
    write_counting_app(&dir, settings, "0.02");
    let (_guard, pid) = start_detached(&dir, &["-c", "4"]);
    let pool = pool_of(pid);

    let ids = send(&redis, 300);
    assert!(
        wait_until(RESULTS_TIMEOUT, || results(&redis, &ids).len() >= 60),
        "the node did not get going\n{}",
        node_logs(&dir)
    );
    add_ballast(&redis);
    redis.stop();
    let child_logs = || {
        (1..=4)
            .map(|i| dir.read(format!("w1-{i}.log")))
            .collect::<String>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || child_logs().contains("ERROR/")),
        "no child noticed that Redis went away\n{}",
        node_logs(&dir)
    );
    // The outage's length, not a wait: long enough for tasks to end, and
    // their results and acks to fail, while Redis is away.
    std::thread::sleep(Duration::from_millis(500));
    let loading = Instant::now();
    redis.restart_with(&["--key-load-delay", LOAD_DELAY_US]);
    let loading = loading.elapsed();
    wait_all_finished(&redis, &dir, &ids, RESULTS_TIMEOUT);

    // Nothing exited: the same main process, the same pool children.
    assert!(alive(pid), "the main process died\n{}", node_logs(&dir));
    let mut now = pool_of(pid);
    now.sort();
    let mut before = pool.clone();
    before.sort();
    assert_eq!(
        now,
        before,
        "pool children were replaced\n{}",
        node_logs(&dir)
    );
    assert!(
        !dir.read(MAIN_LOG).contains(" exited with "),
        "{}",
        dir.read(MAIN_LOG)
    );
    stop_node(&dir, pid);

    let figures = tally(
        scenario,
        &redis,
        &dir,
        &ids,
        &format!(", Redis loading for {:.1} s", loading.as_secs_f64()),
    );
    assert_all_succeeded(&figures, &ids);
    figures
}

#[test]
fn early_ack_tasks_across_a_redis_restart_with_aof() {
    let figures =
        across_a_redis_restart("300 tasks across a Redis restart (AOF, slow to load)", "");
    // Early ack: a task is never run twice.
    assert_eq!(figures.executed_twice(), 0);
}

#[test]
fn late_ack_tasks_across_a_redis_restart_with_aof() {
    across_a_redis_restart(
        "300 late-ack tasks across a Redis restart (AOF, slow to load)",
        "task_acks_late = true",
    );
}

// ---------------------------------------------------------------------------
// 4. Redis down when the node starts
// ---------------------------------------------------------------------------

#[test]
fn a_node_started_while_redis_is_down_serves_once_it_is_up() {
    let mut redis = RedisServer::start_with_aof();
    let dir = TestDir::new(&redis);
    write_counting_app(&dir, "", "0");
    add_ballast(&redis);
    redis.stop();

    let mut guard = NodeGuard::new(dir.path(), &[PIDFILE]);
    let mut args = worker_args(&["-c", "2"]);
    args.push("--detach".to_string());
    let launcher = Rmulti::new(&dir).args(&args);
    let launched = std::thread::spawn(move || launcher.run());

    // The node is up (its pidfile names a live process), and its log says,
    // twice at least (it retries), which Redis it cannot reach.
    let address = format!("127.0.0.1:{}", redis.port());
    let complaints = || {
        dir.read(MAIN_LOG)
            .lines()
            .filter(|l| l.contains(&address) && (l.contains("WARNING/") || l.contains("ERROR/")))
            .count()
    };
    let waiting = wait_until(Duration::from_secs(10), || {
        read_pidfile(dir.join(PIDFILE)).is_some_and(alive) && complaints() >= 2
    });
    guard.remember();
    assert!(
        waiting,
        "no pidfile, or no retried connection error naming {address}\n{}",
        node_logs(&dir)
    );
    let pid = read_pidfile(dir.join(PIDFILE)).expect("pidfile");

    // It comes back slowly, answering LOADING for about a second.
    redis.restart_with(&["--key-load-delay", LOAD_DELAY_US]);
    let ids = send(&redis, 50);
    let run = launched.join().expect("launcher thread");
    run.success();
    wait_all_finished(&redis, &dir, &ids, RESULTS_TIMEOUT);
    assert_eq!(read_pidfile(dir.join(PIDFILE)), Some(pid));
    stop_node(&dir, pid);

    let figures = tally(
        "50 tasks sent as Redis came up (and loaded) after the node started",
        &redis,
        &dir,
        &ids,
        "",
    );
    assert_all_succeeded(&figures, &ids);
    assert_eq!(figures.executed_twice(), 0);
}

// ---------------------------------------------------------------------------
// 5. Pool children SIGKILLed under early ack
// ---------------------------------------------------------------------------

#[test]
fn early_ack_tasks_of_killed_children_fail_with_worker_lost_error_and_never_run_twice() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    write_counting_app(&dir, "", "0.1");
    let (_guard, pid) = start_detached(&dir, &["-c", "3"]);

    let ids = send(&redis, 60);
    let kills = kill_children_until_finished(&redis, &dir, pid, &ids, Duration::from_millis(150));
    stop_node(&dir, pid);

    let figures = tally(
        "60 early-ack tasks, a random child SIGKILLed every 150 ms",
        &redis,
        &dir,
        &ids,
        &format!(", children killed {kills}"),
    );
    assert_eq!(figures.results.len(), ids.len());
    let failures = figures.failures();
    for (id, exc) in &failures {
        assert_eq!(exc, "WorkerLostError", "{id}");
        assert!(figures.ran(id) <= 1, "{id} ran {} times", figures.ran(id));
    }
    assert!(
        !failures.is_empty(),
        "no kill hit a running task ({kills} kills)"
    );
    for id in ids
        .iter()
        .filter(|id| figures.results[*id]["status"] == "SUCCESS")
    {
        assert_eq!(figures.ran(id), 1, "{id}");
    }
    assert_eq!(figures.executed_twice(), 0, "early ack ran a task twice");
}

// ---------------------------------------------------------------------------
// 6. Time limits, from the flags, the app file and the message
// ---------------------------------------------------------------------------

/// Where a time limit comes from.
enum Source {
    Flag(&'static str),
    App(&'static str),
    Header(Value),
}

/// Four 10 s counting tasks under a 1 s limit from `source`, on 4 children:
/// all must end with `expected` after about 1 s, each having run once.
fn time_limit_case(scenario: &str, source: Source, expected: &str) {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let (settings, flag) = match &source {
        Source::App(setting) => (format!("{setting} = 1"), None),
        Source::Flag(flag) => (String::new(), Some(*flag)),
        Source::Header(_) => (String::new(), None),
    };
    write_counting_app(&dir, &settings, "10");
    let mut flags = vec!["-c", "4"];
    flags.extend(flag.iter().flat_map(|f| [*f, "1"]));
    let (_guard, pid) = start_detached(&dir, &flags);

    let sent = Instant::now();
    let ids = send_with(&redis, 4, |env| {
        if let Source::Header(limits) = &source {
            env["headers"]["timelimit"] = limits.clone();
        }
    });
    wait_all_finished(&redis, &dir, &ids, Duration::from_secs(8));
    let took = sent.elapsed();
    stop_node(&dir, pid);

    let figures = tally(
        scenario,
        &redis,
        &dir,
        &ids,
        &format!(", ended after {:.2} s", took.as_secs_f64()),
    );
    let failures = figures.failures();
    let logs = || node_logs(&dir);
    assert_eq!(failures.len(), 4, "{failures:?}\n{}", logs());
    for (id, exc) in failures {
        assert_eq!(exc, expected, "{id}\n{}", logs());
        assert_eq!(figures.ran(&id), 1, "{id}\n{}", logs());
    }
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "limit of 1 s ended the tasks after {took:?}\n{}",
        logs()
    );
}

#[test]
fn hard_time_limit_from_the_flag() {
    time_limit_case(
        "hard time limit from --time-limit",
        Source::Flag("--time-limit"),
        "TimeLimitExceeded",
    );
}

#[test]
fn soft_time_limit_from_the_flag() {
    time_limit_case(
        "soft time limit from --soft-time-limit",
        Source::Flag("--soft-time-limit"),
        "SoftTimeLimitExceeded",
    );
}

#[test]
fn hard_time_limit_from_the_app() {
    time_limit_case(
        "hard time limit from task_time_limit",
        Source::App("task_time_limit"),
        "TimeLimitExceeded",
    );
}

#[test]
fn soft_time_limit_from_the_app() {
    time_limit_case(
        "soft time limit from task_soft_time_limit",
        Source::App("task_soft_time_limit"),
        "SoftTimeLimitExceeded",
    );
}

#[test]
fn hard_time_limit_from_the_message() {
    time_limit_case(
        "hard time limit from the message's timelimit [1, null]",
        Source::Header(json!([1, null])),
        "TimeLimitExceeded",
    );
}

#[test]
fn soft_time_limit_from_the_message() {
    time_limit_case(
        "soft time limit from the message's timelimit [null, 1]",
        Source::Header(json!([null, 1])),
        "SoftTimeLimitExceeded",
    );
}

// ---------------------------------------------------------------------------
// 7. max-tasks-per-child
// ---------------------------------------------------------------------------

#[test]
fn max_tasks_per_child_recycles_children_and_loses_nothing() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    write_counting_app(&dir, "", "0");
    let (_guard, pid) = start_detached(&dir, &["-c", "2", "--max-tasks-per-child", "5"]);

    let ids = send(&redis, 60);
    wait_all_finished(&redis, &dir, &ids, RESULTS_TIMEOUT);
    stop_node(&dir, pid);

    // Each result names the pool child that ran it.
    let mut per_child: HashMap<i64, usize> = HashMap::new();
    for meta in results(&redis, &ids).values() {
        let child = meta["result"][1].as_i64().expect("child pid in the result");
        *per_child.entry(child).or_insert(0) += 1;
    }
    let figures = tally(
        "60 tasks with --max-tasks-per-child 5",
        &redis,
        &dir,
        &ids,
        &format!(", children used {}", per_child.len()),
    );
    assert_all_succeeded(&figures, &ids);
    assert_eq!(figures.executed_twice(), 0);
    assert!(
        per_child.values().all(|&n| n <= 5),
        "a child ran more than 5 tasks: {per_child:?}"
    );
}

// ---------------------------------------------------------------------------
// 8. Countdowns across a warm restart
// ---------------------------------------------------------------------------

#[test]
fn countdown_tasks_survive_a_warm_restart_and_run_once_despite_a_short_visibility_timeout() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let settings = "[broker_transport_options]\nvisibility_timeout = 1";
    write_counting_app(&dir, settings, "0");
    let (mut guard, pid) = start_detached(&dir, &["-c", "2"]);

    let eta = chrono::Utc::now() + chrono::Duration::seconds(4);
    let eta_text = eta.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let ids = send_with(&redis, 20, |env| env["headers"]["eta"] = json!(eta_text));
    assert!(
        wait_until(Duration::from_secs(3), || redis
            .cmd(&["ZCARD", "rmulti.eta"])
            .int()
            == 20),
        "not parked\n{}",
        node_logs(&dir)
    );
    stop_node(&dir, pid);
    assert_eq!(redis.cmd(&["ZCARD", "rmulti.eta"]).int(), 20);
    // The visibility timeout must have run out before the node comes back
    // (its start-up sweep then restores whatever is overdue in `unacked`).
    std::thread::sleep(Duration::from_millis(1500));
    let (_guard2, pid2) = start_detached(&dir, &["-c", "2"]);
    guard.remember();

    wait_all_finished(&redis, &dir, &ids, Duration::from_secs(10));
    stop_node(&dir, pid2);
    let figures = tally(
        "20 countdown tasks (4 s, visibility_timeout 1 s) across a warm restart",
        &redis,
        &dir,
        &ids,
        "",
    );
    assert_all_succeeded(&figures, &ids);
    for id in &ids {
        assert_eq!(figures.ran(id), 1, "{id}");
        let done = figures.results[id]["date_done"]
            .as_str()
            .unwrap_or_default();
        let done = chrono::DateTime::parse_from_rfc3339(done)
            .unwrap_or_else(|e| panic!("date_done {done:?}: {e}"));
        assert!(done >= eta, "{id} ran at {done}, before its ETA {eta}");
    }
    assert_eq!(redis.cmd(&["ZCARD", "rmulti.eta"]).int(), 0);
}
