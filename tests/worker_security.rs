//! Security basics an operator can check from outside: `--uid/--gid` drop
//! every privilege (supplementary groups too) before any pool child exists,
//! root without `--uid` gets Celery's superuser warning but still runs (as in
//! a container), and pid and log files are never written through a symlink.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use common::*;

const ROOT_WARNING: &str = "SecurityWarning: You're running the worker with superuser privileges: this is\nabsolutely not recommended!\n\nPlease specify a different user using the --uid option.\n\nUser information: uid=0 euid=0 gid=0 egid=0";

/// Groups the launcher is given on top of root's own, which a dropped node must not keep.
const EXTRA_GROUPS: [libc::gid_t; 3] = [0, 4, 27];
const NOBODY: u32 = 65534;

/// `Uid:`, `Gid:` and `Groups:` of /proc/<pid>/status, as written there.
fn credentials(pid: i32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// Starts w1 detached as root with `extra`, the launcher holding EXTRA_GROUPS.
fn start_as_root_with_groups(dir: &TestDir, extra: &[&str]) -> (Run, NodeGuard) {
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut args = worker_args(&["-c", "2", "--detach"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut rmulti = Rmulti::new(dir).args(&args);
    // SAFETY: setgroups is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        rmulti.command().pre_exec(|| {
            if libc::setgroups(EXTRA_GROUPS.len(), EXTRA_GROUPS.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = rmulti.run();
    guard.remember();
    (run, guard)
}

#[test]
#[ignore = "needs root: run by bin/test as root"]
fn as_root_uid_and_gid_drop_user_group_and_supplementary_groups_before_any_child_runs() {
    assert!(is_root(), "needs root to switch users");
    let redis = RedisServer::start();
    let dir = TestDir::new(&redis);
    dir.write_app_tasks(
        "proj",
        "",
        "\"proj.tasks.whoami\" = { exec = [\"sh\", \"-c\", \"printf '\\\"%s|%s\\\"' \\\"$(id -u)\\\" \\\"$(id -G)\\\"\"] }\n",
    );
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown test dir");

    let (run, _guard) = start_as_root_with_groups(&dir, &["--uid", "nobody", "--gid", "nogroup"]);
    run.success();
    let main = read_pidfile(dir.join("w1.pid")).expect("pidfile");
    let children = descendants(main);
    assert_eq!(children.len(), 2);
    let want = (
        "65534 65534 65534 65534".to_string(),
        "65534 65534 65534 65534".to_string(),
        "65534".to_string(),
    );
    for pid in std::iter::once(main).chain(children) {
        assert_eq!(credentials(pid), want, "pid {pid}");
    }
    for file in ["w1.pid", "w1.log", "w1-1.log", "w1-2.log"] {
        let meta = std::fs::metadata(dir.join(file)).expect(file);
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{file}");
    }
    let id = publish_task(&redis, "celery", "proj.tasks.whoami", "[]");
    let meta = redis
        .wait_result(&id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no result\n{}", node_logs(&dir)));
    assert_eq!(meta["result"], "65534|65534", "{meta}");
    assert!(!dir.read("w1.log").contains("SecurityWarning"));
}

#[test]
#[ignore = "needs root: run by bin/test as root"]
fn as_root_without_uid_runs_with_celerys_superuser_warning_and_gid_alone_drops_groups() {
    assert!(is_root(), "needs root");
    let (redis, dir) = redis_with_app("");
    let (run, guard) = start_as_root_with_groups(&dir, &[]);
    run.success();
    let log = dir.read("w1.log");
    assert!(
        log.contains(&format!("WARNING/MainProcess] {ROOT_WARNING}")),
        "{log}"
    );
    let id = publish_task(&redis, "celery", "proj.tasks.add", "[1, 1]");
    assert!(redis.wait_result(&id, Duration::from_secs(10)).is_some());
    drop(guard);

    // --gid alone: still root, so still the warning, but root's
    // supplementary groups are gone, not only the primary group changed.
    let dir = TestDir::new(&redis);
    dir.write_app("proj", "");
    let (run, _guard) = start_as_root_with_groups(&dir, &["--gid", "nogroup"]);
    run.success();
    let main = read_pidfile(dir.join("w1.pid")).expect("pidfile");
    for pid in std::iter::once(main).chain(descendants(main)) {
        let (uid, gid, groups) = credentials(pid);
        assert_eq!(uid, "0 0 0 0");
        assert_eq!(gid, "65534 65534 65534 65534");
        assert_eq!(groups, "65534", "pid {pid}");
    }
    assert!(dir
        .read("w1.log")
        .contains("User information: uid=0 euid=0 gid=65534 egid=65534"));
}

#[test]
fn log_and_pid_files_are_never_followed_through_symlinks() {
    let (_redis, dir) = redis_with_app("");
    let victim = dir.write("victim.txt", "precious\n");

    // The main log, then a child's log: the start fails and says why.
    for link in ["w1.log", "w1-1.log"] {
        std::os::unix::fs::symlink(&victim, dir.join(link)).expect("symlink");
        let (run, _guard) = start_worker(&dir, &["-c", "1"]);
        let run = run.code_is(1);
        assert!(
            run.stderr().contains(link) && run.stderr().contains("symbolic link"),
            "{link}: {}",
            run.stderr()
        );
        // The launcher has its answer; the node may still be leaving.
        assert!(wait_until(Duration::from_secs(5), || !dir
            .join("w1.pid")
            .exists()));
        assert_eq!(dir.read("victim.txt"), "precious\n");
        std::fs::remove_file(dir.join(link)).expect("rm link");
    }

    // A pidfile that is a symlink is replaced, not written through.
    std::os::unix::fs::symlink(&victim, dir.join("w1.pid")).expect("symlink");
    let (run, _guard) = start_worker(&dir, &["-c", "1"]);
    let run = run.success();
    assert!(run.stderr().contains("Removing it."), "{}", run.stderr());
    assert_eq!(dir.read("victim.txt"), "precious\n");
    let meta = std::fs::symlink_metadata(dir.join("w1.pid")).expect("pidfile");
    assert!(meta.file_type().is_file());
    assert!(read_pidfile(dir.join("w1.pid")).is_some_and(alive));
}
