//! A network partition between a node and Redis: a TCP proxy that can
//! blackhole (stop forwarding, keep the sockets open). A node cut off for
//! longer than the visibility timeout has its held `acks_late` task requeued
//! by another node's sweep and run there; when the partition heals the first
//! node notices, does not overwrite the redelivered copy's outcome, and
//! serves again. Nothing is lost; no SUCCESS is overwritten.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Forwards 127.0.0.1:<port> to Redis; `cut` drops everything both ways
/// while the connections stay open, as a partition does.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let flag = flag.clone();
                    std::thread::spawn(move || pump(from, to, &flag));
                }
            }
        });
        Proxy { port, cut }
    }

    fn blackhole(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if cut.load(Ordering::SeqCst) {
                    continue; // dropped on the floor
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn app(dir: &TestDir, name: &str, port: u16) {
    dir.write(
        format!("{name}.toml"),
        format!(
            "broker_url = \"redis://127.0.0.1:{port}/{BROKER_DB}\"\n\
             result_backend = \"redis://127.0.0.1:{port}/{RESULT_DB}\"\n\
             task_acks_late = true\n\
             [broker_transport_options]\nvisibility_timeout = 2\n\n[tasks]\n{BUILTIN_TASKS}"
        ),
    );
}

fn start(dir: &TestDir, app: &str, node: &str) -> i32 {
    let name = node.split('@').next().unwrap_or(node);
    Rmulti::new(dir)
        .args(["worker", "-A", app, "-n", node, "-l", "info", "-c", "1"])
        .args(["--pidfile=%n.pid", "--logfile=%n%I.log", "--detach"])
        .run()
        .success();
    let pidfile = dir.join(format!("{name}.pid"));
    assert!(wait_until(STARTUP_TIMEOUT, || dir
        .read(format!("{name}.log"))
        .contains(&format!("{node} ready."))));
    read_pidfile(pidfile).expect("pidfile")
}

#[test]
fn a_partitioned_node_gives_up_its_requeued_task_and_serves_again() {
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    let proxy = Proxy::start(redis.port());
    app(&dir, "cut", proxy.port);
    app(&dir, "direct", redis.port());
    let _guard = NodeGuard::new(dir.path(), &["w1.pid", "w2.pid"]);
    let w1 = start(&dir, "cut", "w1@testhost");

    let id = publish_task(&redis, "celery", "proj.tasks.sleep", "[3]");
    assert!(
        wait_until(STARTUP_TIMEOUT, || redis.cmd(&["HLEN", "unacked"]).int()
            == 1),
        "w1 did not reserve:\n{}",
        node_logs(&dir)
    );
    proxy.blackhole(true);
    // The visibility timeout (2 s) must pass: time itself is the condition.
    std::thread::sleep(Duration::from_millis(2500));

    // w2's start-up sweep requeues w1's held message; w2 runs it.
    let w2 = start(&dir, "direct", "w2@testhost");
    let meta = redis
        .wait_result(&id, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the requeued task did not run on w2:\n{}", node_logs(&dir)));
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    let stored = redis
        .cmd_db(RESULT_DB, &["GET", &format!("celery-task-meta-{id}")])
        .text();

    // Heal: w1 comes back, finds its copy requeued elsewhere, and gives it up.
    proxy.blackhole(false);
    signal(w2, libc::SIGTERM);
    assert!(wait_until(STARTUP_TIMEOUT, || !alive(w2)));
    let next = publish_task(&redis, "celery", "proj.tasks.add", "[20, 22]");
    let meta = redis
        .wait_result(&next, Duration::from_secs(40))
        .unwrap_or_else(|| {
            panic!(
                "w1 did not serve again after the partition:\n{}",
                node_logs(&dir)
            )
        });
    assert_eq!(meta["result"], 42);
    assert!(alive(w1), "w1 died:\n{}", node_logs(&dir));
    let after = redis
        .cmd_db(RESULT_DB, &["GET", &format!("celery-task-meta-{id}")])
        .text();
    assert_eq!(
        after, stored,
        "the redelivered copy's outcome was overwritten"
    );
    assert!(
        wait_until(Duration::from_secs(10), || redis
            .cmd(&["HLEN", "unacked"])
            .int()
            == 0
            && redis.cmd(&["LLEN", "celery"]).int() == 0),
        "messages left:\n{}",
        node_logs(&dir)
    );
}
