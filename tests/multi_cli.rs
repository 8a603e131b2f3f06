//! The printing commands of the multi front end, run through the built
//! binary: show/names/get/expand/help output and exit statuses, the spec's
//! §5.1/§5.2 examples, the grammar edge cases of §17, and that no command but
//! start/restart creates directories.

mod common;

use std::process::{Command, Output};

use common::{hostname as host, is_root, nobody, Rmulti};

fn rmulti(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    rmulti_in(dir.path(), args)
}

/// `rmulti <args>` in `dir`, with a deadline (tests/common), NO_COLOR unset.
fn rmulti_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Rmulti::in_dir(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .run()
        .out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `names` output with the host replaced by `vm`, the spec's host.
fn names(args: &str) -> String {
    let mut argv = vec!["names"];
    argv.extend(args.split(' ').filter(|s| !s.is_empty()));
    let o = rmulti(&argv);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o).replace(&format!("@{}\n", host()), "@vm\n")
}

fn show(args: &[&str]) -> Vec<String> {
    let mut argv = vec!["show"];
    argv.extend(args);
    let o = rmulti(&argv);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o).lines().map(str::to_string).collect()
}

#[test]
fn spec_5_1_names() {
    assert_eq!(names("3"), "celery1@vm\ncelery2@vm\ncelery3@vm\n");
    assert_eq!(names("a b c"), "a@vm\nb@vm\nc@vm\n");
    assert_eq!(names("2 --range-prefix=worker"), "worker1@vm\nworker2@vm\n");
    assert_eq!(
        names("2 --prefix=pre- --suffix=host.x"),
        "celery1@host.x\ncelery2@host.x\n"
    );
    assert_eq!(names("a b --prefix=pre-"), "pre-a@vm\npre-b@vm\n");
    assert_eq!(
        names("2 --hostname=worker.example.com"),
        "celery1@worker.example.com\ncelery2@worker.example.com\n"
    );
    assert_eq!(names("w1 -n box.example.org"), "w1@box.example.org\n");
    assert_eq!(names("a b --suffix=''"), "a@\nb@\n");
    assert_eq!(
        names("foo@%h bar@example.com"),
        format!("foo@vm\nbar@example.com\n")
    );
}

#[test]
fn spec_17_name_edge_cases() {
    assert_eq!(names("0"), "\n");
    assert_eq!(names("-1"), "\n");
    assert_eq!(names("3-5"), "3-5@vm\n");
    assert_eq!(names("w1 w1"), "w1@vm\nw1@vm\n");
    assert_eq!(names("2 3"), "2@vm\n3@vm\n");
    assert_eq!(names("w1 -E w2"), "w1@vm\n");
    let o = rmulti(&["names", " 3 "]);
    assert_eq!(stdout(&o).lines().count(), 3);
}

#[test]
fn spec_5_2_namespaces_through_show() {
    let c_values = |args: &[&str], opt: &str| -> Vec<String> {
        show(args)
            .iter()
            .map(|l| {
                let words: Vec<&str> = l.split(' ').collect();
                let i = words.iter().position(|w| *w == opt).unwrap();
                words[i + 1].to_string()
            })
            .collect()
    };
    let h = host();
    assert_eq!(
        c_values(&["3", "-c", "2", "-c:1", "4"], "-c"),
        ["4", "2", "2"]
    );
    assert_eq!(
        c_values(&["3", "-Q:1-2", "q1", "-Q", "default"], "-Q"),
        ["q1", "q1", "default"]
    );
    assert_eq!(
        c_values(&["5", "-c", "3", "-c:1-3", "10", "-c:4,5", "2"], "-c"),
        ["10", "10", "10", "2", "2"]
    );
    assert_eq!(
        c_values(&["a", "b", "c", "-c", "3", "-c:b", "10"], "-c"),
        ["3", "10", "3"]
    );
    let lines = show(&["a", "b", &format!("-Q:a@{h}"), "x"]);
    assert!(lines[0].contains(" -Q x "));
    assert!(!lines[1].contains("-Q"));
    // spec §5.2 item 4: namespace options come after the global ones
    let lines = show(&[
        "a",
        "b",
        "c",
        "-c:1,3",
        "5",
        "--pidfile=%n.pid",
        "--logfile=%n%I.log",
    ]);
    assert!(lines[0].ends_with(&format!(
        " --detach --pidfile=a.pid --logfile=a%I.log -c 5 -n a@{h} "
    )));
    assert!(!lines[1].contains("-c 5"));
    assert!(lines[2].contains(" -c 5 "));
    assert_eq!(c_values(&["worker-1", "-c:worker-1", "5"], "-c"), ["5"]);
}

#[test]
fn show_and_get_lines() {
    let h = host();
    let exe = env!("CARGO_BIN_EXE_rmulti");
    let lines = show(&[
        "w1",
        "-A",
        "proj",
        "-l",
        "info",
        "--pidfile=/srv/run/%n.pid",
        "--logfile=/srv/log/%n%I.log",
    ]);
    assert_eq!(
        lines,
        [format!(
            "{exe} worker -A proj --detach -l info --pidfile=/srv/run/w1.pid --logfile=/srv/log/w1%I.log -n w1@{h} "
        )]
    );
    let o = rmulti(&[
        "get",
        &format!("w2@{h}"),
        "w1",
        "w2",
        "-A",
        "proj",
        "-c:2",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("worker -A proj --detach -c 3 -n w2@{h} --pidfile=w2.pid --logfile=w2%I.log \n")
    );
    // a miss prints nothing on stdout and fails
    let o = rmulti(&["get", "w1", "w1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    // passthrough, --cmd and --append
    let lines = show(&["w1", "--cmd=worker", "--append=--foo=%n", "--", "a=1"]);
    assert!(lines[0].ends_with(&format!(
        "-n w1@{h} --pidfile=w1.pid --logfile=w1%I.log -- a=1 --foo=w1"
    )));
    // no nodes: one empty line
    assert_eq!(show(&["0"]), [""]);
}

#[test]
fn expand_spec_3_1() {
    let o = rmulti(&[
        "expand",
        "[n=%n][h=%h][d=%d][i=%i][I=%I][p=%p][N=%N][pct=%%]",
        "w1",
        "foo@box.example.org",
        "3",
    ]);
    let h = host();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!(
            "[n=w1][h=w1@{h}][d={h}][i=%i][I=%I][p=w1@{h}][N=w1][pct=%]\n\
             [n=foo][h=foo@box.example.org][d=box.example.org][i=%i][I=%I][p=foo@box.example.org][N=foo][pct=%]\n\
             [n=3][h=3@{h}][d={h}][i=%i][I=%I][p=3@{h}][N=3][pct=%]\n"
        )
    );
    let o = rmulti(&["expand", "%n.pid"]);
    assert_eq!(stdout(&o), "\n");
    let o = rmulti(&["expand", "%x", "w1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown format %x"));
    let o = rmulti(&["expand"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_usage_and_exit_statuses() {
    let o = rmulti(&["help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("Start multiple worker instances from the command-line."));
    let o = rmulti(&["multi", "help"]);
    assert_eq!(o.status.code(), Some(0));

    let o = rmulti(&["multi", "dopts", "w1"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "Invalid command: dopts\n");
    assert!(stdout(&o).starts_with(&format!(
        "rmulti multi v{}\nusage: multi start",
        env!("CARGO_PKG_VERSION")
    )));

    let o = rmulti(&["multi"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("usage: multi start"));
    let o = rmulti(&["multi", "-x", "start"]);
    assert_eq!(o.status.code(), Some(2));

    let o = rmulti(&["start", "w1", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("usage: multi start"));

    for bad in [
        &["names", "w1", "-"][..],
        &["names", "w1", "-c:1:2", "3"],
        &["names", "3", "-c:5", "2"],
        &["show", "a", "b", "-c:0", "2"],
        &["stopwait", "w1", "--timeout=soon"],
    ] {
        let o = rmulti(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&o).starts_with("rmulti "), "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn no_colour_unless_tty_and_quiet_and_nosplash() {
    let dir = tempfile::tempdir().unwrap();
    let o = rmulti_in(dir.path(), &["stop", "w1"]);
    let out = stdout(&o);
    assert!(!out.contains('\x1b'));
    assert_eq!(
        out,
        format!(
            "rmulti multi v{}\n> w1@{}: DOWN\n",
            env!("CARGO_PKG_VERSION"),
            host()
        )
    );
    let o = rmulti_in(dir.path(), &["stop", "w1", "--quiet"]);
    assert_eq!(stdout(&o), "");
    let o = rmulti_in(dir.path(), &["stop", "w1", "--nosplash"]);
    assert_eq!(stdout(&o), format!("> w1@{}: DOWN\n", host()));
    // stop with no nodes prints only the splash
    let o = rmulti_in(dir.path(), &["stop"]);
    assert_eq!(
        stdout(&o),
        format!("rmulti multi v{}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn only_start_creates_directories() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--pidfile=run/%n/%n.pid", "--logfile=log/%n%I.log"];
    for cmd in ["names", "show", "get", "expand", "stop", "stopwait", "kill"] {
        let mut argv = vec![cmd];
        if cmd == "get" || cmd == "expand" {
            argv.push("w1@x");
        }
        argv.push("w1");
        argv.extend(args);
        rmulti_in(dir.path(), &argv);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn deliberate_grammar_fixes() {
    let h = host();
    // §17 #16: `--logfile /x.log` takes the value (Celery 5.7 crashes)
    let lines = show(&["w1", "--logfile", "/x/%n%I.log"]);
    assert!(
        lines[0].ends_with(&format!(
            " --logfile=/x/w1%I.log -n w1@{h} --pidfile=w1.pid "
        )),
        "{lines:?}"
    );
    // §17 #17: `-p FILE` is the pidfile (Celery forwards `-p`, which the worker rejects)
    let lines = show(&["w1", "-p", "/run/%n.pid"]);
    assert!(lines[0].contains(" --pidfile=/run/w1.pid -n "), "{lines:?}");
    assert!(!lines[0].contains(" -p "));
}

#[test]
fn values_reach_the_worker_intact() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-rmulti");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > argv.txt\necho 'no thanks' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = format!("--executable={}", script.display());
    let o = rmulti_in(
        dir.path(),
        &[
            "start",
            "w1",
            "-Q",
            "a b",
            "--x=it's \"quoted\"",
            "-c:w1",
            "$HOME",
            &exe,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let h = host();
    assert!(
        stdout(&o).ends_with(&format!(
            "\t> w1@{h}: * Child terminated with exit code 3\nFAILED\n"
        )),
        "{}",
        stdout(&o)
    );
    assert_eq!(stderr(&o), "\t  no thanks\n");
    let argv = std::fs::read_to_string(dir.path().join("argv.txt")).unwrap();
    assert_eq!(
        argv,
        format!("worker\n--detach\n-Q\na b\n--x=it's \"quoted\"\n-c\n$HOME\n-n\nw1@{h}\n--pidfile=w1.pid\n--logfile=w1%I.log\n")
    );
    // --quiet: nothing on stdout, the reason still on stderr
    let o = rmulti_in(dir.path(), &["start", "w1", "--quiet", &exe]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "\t  no thanks\n");
    // --verbose shows the command line
    let o = rmulti_in(
        dir.path(),
        &["start", "w1", "--verbose", "--nosplash", &exe],
    );
    assert!(
        stdout(&o).starts_with(&format!(
            "> Starting nodes...\n\t> w1@{h}:   {} worker --detach -n w1@{h}",
            script.display()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn start_creates_expanded_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let o = rmulti_in(
        dir.path(),
        &[
            "start",
            "w1",
            "--pidfile=run/%n/%n.pid",
            "--logfile=log/%n%I.log",
            "--executable=/bin/false",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    // §17 #19: Celery makes a literal `%n` directory; rmulti the node's
    assert!(dir.path().join("run/w1").is_dir());
    assert!(dir.path().join("log").is_dir());
    assert!(!dir.path().join("run/%n").exists());
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    // `script` (util-linux; Debian's essential bsdutils) provides the terminal.
    assert!(
        Command::new("script").arg("--version").output().is_ok(),
        "this test needs `script` (util-linux) to provide a terminal"
    );
    let dir = tempfile::tempdir().unwrap();
    let line = format!("{} stop w1", env!("CARGO_BIN_EXE_rmulti"));
    let on_tty = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .current_dir(dir.path());
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        stdout(&cmd.output().unwrap())
    };
    let coloured = on_tty(false);
    assert!(
        coloured.contains("\x1b[1;36mrmulti multi v"),
        "{coloured:?}"
    );
    assert!(coloured.contains("\x1b[1;35mDOWN\x1b[0m"), "{coloured:?}");
    assert!(!on_tty(true).contains('\x1b'));
}

#[test]
#[ignore = "needs root: run by bin/test as root"]
fn as_root_created_directories_belong_to_the_uid() {
    use std::os::unix::fs::MetadataExt;
    assert!(is_root(), "needs root");
    let nobody = nobody();
    let dir = tempfile::tempdir().unwrap();
    rmulti_in(
        dir.path(),
        &[
            "start",
            "w1",
            "--uid=nobody",
            "--pidfile=run/%n.pid",
            "--logfile=log/x/%n%I.log",
            "--executable=/bin/false",
        ],
    );
    for d in ["run", "log", "log/x"] {
        let m = std::fs::metadata(dir.path().join(d)).unwrap();
        assert_eq!(m.uid(), nobody.uid.as_raw(), "{d}");
        assert_eq!(m.gid(), nobody.gid.as_raw(), "{d}");
    }
    assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 0);
}
