//! Log files rotate without loss (issue 13): logrotate's `create` mode
//! renames a node's log files while tasks run; every process follows its
//! file's rename within a second (the inode check) and SIGUSR2 makes the
//! main process reopen at once. No received/succeeded line is lost: each is
//! in the old file or the new one.

mod common;

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant};

use common::*;

const FILES: [&str; 3] = ["w1.log", "w1-1.log", "w1-2.log"];

fn both(dir: &TestDir, name: &str) -> String {
    dir.read(format!("{name}.1")) + &dir.read(name)
}

#[test]
fn renaming_the_logs_under_load_loses_no_line() {
    let (redis, dir, _guard, _pid) = started_node("", &["-c", "2"]);
    let total = 300;
    let ids: Vec<String> = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            (0..total)
                .map(|i| {
                    std::thread::sleep(Duration::from_millis(5));
                    publish_task(&redis, "celery", "proj.tasks.add", &format!("[{i}, 1]"))
                })
                .collect::<Vec<_>>()
        });
        // Rotate in the middle of the stream, as logrotate's `create` does:
        // rename, then a new empty file. w1-2.log is left missing: the child
        // creates it again itself.
        std::thread::sleep(Duration::from_millis(600));
        for name in FILES {
            fs::rename(dir.join(name), dir.join(format!("{name}.1"))).expect("rename");
        }
        for name in ["w1.log", "w1-1.log"] {
            fs::write(dir.join(name), "").expect("create");
        }
        publisher.join().expect("publisher")
    });
    for id in &ids {
        assert!(
            redis.wait_result(id, Duration::from_secs(20)).is_some(),
            "no result for {id}\n{}",
            node_logs(&dir)
        );
    }
    // The last lines may still be in flight to the files.
    let all_there = |dir: &TestDir| {
        let main = both(dir, "w1.log");
        let children = both(dir, "w1-1.log") + &both(dir, "w1-2.log");
        ids.iter().all(|id| {
            main.contains(&format!("Task proj.tasks.add[{id}] received"))
                && children.contains(&format!("Task proj.tasks.add[{id}] succeeded in"))
        })
    };
    let done = wait_until(Duration::from_secs(5), || all_there(&dir));
    let main = both(&dir, "w1.log");
    let children = both(&dir, "w1-1.log") + &both(&dir, "w1-2.log");
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| {
            !main.contains(&format!("Task proj.tasks.add[{id}] received"))
                || !children.contains(&format!("Task proj.tasks.add[{id}] succeeded in"))
        })
        .collect();
    assert!(done && missing.is_empty(), "lines lost for {missing:?}");
    // The rotation was followed: each process writes to the new files.
    let new_main = dir.read("w1.log");
    assert!(
        new_main.contains("received"),
        "main log not reopened: {new_main:?}"
    );
    let new_children = dir.read("w1-1.log") + &dir.read("w1-2.log");
    assert!(
        new_children.contains("succeeded"),
        "child logs not reopened"
    );
    // No line was written twice (a reopen that duplicated a buffer).
    let mut seen = HashSet::new();
    for line in children.lines().filter(|l| l.contains("succeeded in")) {
        assert!(seen.insert(line.to_string()), "duplicate line {line}");
    }
}

#[test]
fn usr2_reopens_the_main_log_at_once() {
    let (redis, dir, _guard, pid) = started_node("", &["-c", "1"]);
    let renamed = Instant::now();
    fs::rename(dir.join("w1.log"), dir.join("w1.log.1")).expect("rename");
    signal(pid, libc::SIGUSR2);
    // Without the signal a missing file is created again only after two
    // checks a second apart.
    assert!(
        wait_until(Duration::from_secs(5), || dir.join("w1.log").exists()),
        "w1.log not reopened after USR2"
    );
    assert!(
        renamed.elapsed() < Duration::from_millis(900),
        "reopened after {:?}: not by USR2",
        renamed.elapsed()
    );
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[1, 1]");
    assert!(redis.wait_result(&id, Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(5), || dir
        .read("w1.log")
        .contains(&format!("[{id}] received"))));
    // The node survives the signal (its default action would kill it).
    assert!(alive(pid));
}
