//! Redis URLs as Celery and kombu accept them, against real `redis-server`s
//! set up the way production ones are: an ACL user and `requirepass`, a Unix
//! socket, TLS with client certificates. Each test runs a node and sends a
//! task through it with `rmulti call`; where kombu's reading of a URL is in
//! question, a real Python Celery client sends with the same URL.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A `redis-server` with its own arguments (auth, socket, TLS), in its own
/// temp dir; killed on drop. Ready once its log says so (a TLS-only or
/// password-protected server does not answer a plain PING).
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[String]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("rmulti-redis-url-")
            .tempdir()
            .expect("tempdir");
        let log = fs::File::create(dir.path().join("redis.log")).expect("redis.log");
        let child = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        let mut server = Server { child, dir };
        let ready = |s: &Server| {
            s.log()
                .to_lowercase()
                .contains("ready to accept connections")
        };
        let up = wait_until(STARTUP_TIMEOUT, || {
            ready(&server) || !matches!(server.child.try_wait(), Ok(None))
        });
        assert!(
            up && ready(&server),
            "redis-server {args:?} did not start:\n{}",
            server.log()
        );
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        read_log(self.path("redis.log"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `redis-cli <args>`: stdout, trimmed.
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The node's working dir, with `proj.toml` naming `broker` and `backend`.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(broker: &str, backend: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("rmulti-test-")
            .tempdir()
            .expect("tempdir");
        let app = format!(
            "broker_url = {}\nresult_backend = {}\n[tasks]\n{BUILTIN_TASKS}",
            toml_string(broker),
            toml_string(backend)
        );
        fs::write(dir.path().join("proj.toml"), app).expect("write proj.toml");
        Node { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `rmulti worker -A proj ... --detach` with `extra`.
    fn start(&self, extra: &[&str]) -> (Run, NodeGuard) {
        let mut guard = NodeGuard::new(self.path(), &["w1.pid"]);
        let mut args = worker_args(&["-c", "1", "--detach"]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = Rmulti::in_dir(self.path()).args(&args).run();
        guard.remember();
        (run, guard)
    }

    /// `rmulti call proj.tasks.add x y --wait 10`, through the app's URLs:
    /// the result (the line after the task id).
    fn call_add(&self, x: i64, y: i64) -> String {
        let run = Rmulti::in_dir(self.path())
            .args(["call", "-A", "proj", "proj.tasks.add"])
            .args([x.to_string(), y.to_string()])
            .args(["--wait", "10"])
            .run();
        let out = run.stdout();
        assert_eq!(run.code(), Some(0), "call failed: {out}\n{}", run.stderr());
        out.trim().lines().last().unwrap_or_default().to_string()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in fs::read_dir(self.path()).expect("read dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                all.push_str(&format!("--- {name}\n{}\n", read_log(entry.path())));
            }
        }
        all
    }
}

fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A real Celery 5.7 client: sends `add(x, y)` with these URLs and prints
/// the result. Kombu and Celery parse the URLs their own way.
fn celery_client_add(broker: &str, backend: &str, x: i64, y: i64) -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = "import sys\nfrom celery import Celery\napp = Celery('proj', broker=sys.argv[1], backend=sys.argv[2])\nprint(app.send_task('proj.tasks.add', (int(sys.argv[3]), int(sys.argv[4]))).get(timeout=20))\n";
    let mut cmd = Command::new(&python);
    cmd.args(["-c", script, broker, backend])
        .args([x.to_string(), y.to_string()])
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND");
    let run = run_with_deadline(&mut cmd, format!("{} -c <celery client>", python.display()));
    assert_eq!(
        run.code(),
        Some(0),
        "celery client failed:\n{}",
        run.stderr()
    );
    run.stdout().trim().to_string()
}

#[test]
fn acl_user_and_requirepass_urls_work_and_passwords_never_show() {
    let port = free_port().to_string();
    let server = Server::start(&strings(&[
        "--port",
        &port,
        "--requirepass",
        "default-secret",
        "--user",
        "alice",
        "on",
        ">alice-secret",
        "~*",
        "&*",
        "+@all",
    ]));
    let broker = format!("redis://alice:alice-secret@127.0.0.1:{port}/0");
    let backend = format!("redis://:default-secret@127.0.0.1:{port}/1");
    let node = Node::new(&broker, &backend);
    let (run, _guard) = node.start(&[]);
    let run = run.success();
    assert_eq!(node.call_add(2, 3), "5");
    assert_eq!(celery_client_add(&broker, &backend, 4, 5), "9");

    // The ACL user wrote to db 0, the default user's result to db 1.
    let keys = redis_cli(&[
        "-p",
        &port,
        "--user",
        "alice",
        "--pass",
        "alice-secret",
        "--no-auth-warning",
        "-n",
        "1",
        "--scan",
        "--pattern",
        "celery-task-meta-*",
    ]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    let logs = node.logs();
    assert!(
        logs.contains(&format!("redis://alice:**@127.0.0.1:{port}/0"))
            && logs.contains(&format!("redis://:**@127.0.0.1:{port}/1")),
        "{logs}"
    );
    for secret in ["alice-secret", "default-secret"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        assert!(!run.stderr().contains(secret));
    }
    drop(server);
}

#[test]
fn a_wrong_password_fails_the_start_at_once_with_the_url_masked() {
    let port = free_port().to_string();
    let _server = Server::start(&strings(&[
        "--port",
        &port,
        "--requirepass",
        "default-secret",
        "--user",
        "alice",
        "on",
        ">alice-secret",
        "~*",
        "&*",
        "+@all",
    ]));
    for (url, shown) in [
        (
            format!("redis://alice:not-her-password@127.0.0.1:{port}/0"),
            format!("redis://alice:**@127.0.0.1:{port}/0"),
        ),
        (
            format!("redis://:not-the-password@127.0.0.1:{port}/0"),
            format!("redis://:**@127.0.0.1:{port}/0"),
        ),
        // No password at all: Redis answers NOAUTH.
        (
            format!("redis://127.0.0.1:{port}/0"),
            format!("redis://127.0.0.1:{port}/0"),
        ),
    ] {
        let node = Node::new(&url, &url);
        let started = std::time::Instant::now();
        let (run, _guard) = node.start(&[]);
        let run = run.code_is(1);
        let err = run.stderr();
        assert!(
            err.contains(&format!("Cannot connect to {shown}")) && err.contains("uthentication"),
            "{err}"
        );
        assert!(!err.contains("not-"), "password shown: {err}");
        assert!(!node.logs().contains("not-"), "password in the logs");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a wrong password is not worth retrying at start: {:?}",
            started.elapsed()
        );
        assert!(!node.path().join("w1.pid").exists());
    }
    // The broker takes us, the result backend does not: the error names the backend.
    let node = Node::new(
        &format!("redis://alice:alice-secret@127.0.0.1:{port}/0"),
        &format!("redis://:not-the-password@127.0.0.1:{port}/1"),
    );
    let (run, _guard) = node.start(&[]);
    let run = run.code_is(1);
    assert!(
        run.stderr()
            .contains(&format!("Cannot connect to redis://:**@127.0.0.1:{port}/1")),
        "{}",
        run.stderr()
    );
}

#[test]
fn unix_socket_urls_reach_the_database_kombu_means() {
    let dir = tempfile::Builder::new()
        .prefix("rmulti-sock-")
        .tempdir()
        .expect("tempdir");
    let sock = dir.path().join("redis.sock");
    let sock_text = sock.display().to_string();
    let _server = Server::start(&strings(&[
        "--port",
        "0",
        "--unixsocket",
        &sock_text,
        "--unixsocketperm",
        "700",
    ]));
    // kombu's broker form with its db parameter; redis-py's form for results.
    let broker = format!("redis+socket://{sock_text}?virtual_host=2");
    let backend = format!("unix://{sock_text}?db=3");
    let node = Node::new(&broker, &backend);
    let (run, _guard) = node.start(&[]);
    run.success();
    assert_eq!(node.call_add(20, 3), "23");
    // Celery names the same backend redis+socket:// (redis-py's unix:// is no Celery URL).
    let celery_backend = format!("redis+socket://{sock_text}?virtual_host=3");
    assert_eq!(celery_client_add(&broker, &celery_backend, 30, 4), "34");

    let scan = |db: &str, pattern: &str| {
        redis_cli(&["-s", &sock_text, "-n", db, "--scan", "--pattern", pattern])
    };
    assert_eq!(scan("3", "celery-task-meta-*").lines().count(), 2);
    assert_eq!(scan("2", "_kombu.binding.*").lines().count(), 1);
    assert_eq!(scan("0", "*"), "", "nothing in db 0");
    assert!(node
        .logs()
        .contains(&format!("redis+socket://{sock_text}?virtual_host=2")));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with `openssl` in `dir`.
fn make_certificates(dir: &Path) {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for ca in ["ca", "other-ca"] {
        sh(&format!(
            "openssl req -x509 {key} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN=rmulti-test-{ca}"
        ));
    }
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        sh(&format!(
            "openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name} && \
             printf '{ext}\\n' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
               -out {name}.crt -days 2 -extfile {name}.ext"
        ));
    }
}

fn enc(p: &Path) -> String {
    p.display().to_string().replace('/', "%2F")
}

#[test]
fn rediss_urls_with_celerys_ssl_options() {
    let certs = tempfile::Builder::new()
        .prefix("rmulti-certs-")
        .tempdir()
        .expect("tempdir");
    make_certificates(certs.path());
    let c = |n: &str| certs.path().join(n);
    let port = free_port().to_string();
    let _server = Server::start(&strings(&[
        "--port",
        "0",
        "--tls-port",
        &port,
        "--tls-cert-file",
        &c("server.crt").display().to_string(),
        "--tls-key-file",
        &c("server.key").display().to_string(),
        "--tls-ca-cert-file",
        &c("ca.crt").display().to_string(),
        "--tls-auth-clients",
        "yes",
    ]));
    let client = format!(
        "ssl_certfile={}&ssl_keyfile={}",
        enc(&c("client.crt")),
        enc(&c("client.key"))
    );

    // Verified against our CA, with a client certificate (mutual TLS).
    let url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}&{client}",
        enc(&c("ca.crt"))
    );
    let backend = url.replacen("/0?", "/1?", 1);
    let node = Node::new(&url, &backend);
    let (run, guard) = node.start(&[]);
    run.success();
    assert_eq!(node.call_add(1, 2), "3");
    assert_eq!(celery_client_add(&url, &backend, 5, 6), "11");
    drop(guard);

    // CERT_NONE: no verification, and Celery's warning in the log.
    let url = format!("rediss://127.0.0.1:{port}/0?ssl_cert_reqs=CERT_NONE&{client}");
    let node = Node::new(&url, &url.replacen("/0?", "/1?", 1));
    let (run, guard) = node.start(&[]);
    run.success();
    assert_eq!(node.call_add(2, 2), "4");
    assert!(
        node.logs()
            .contains("Setting ssl_cert_reqs=CERT_NONE when connecting to redis means that celery will not validate"),
        "{}",
        node.logs()
    );
    drop(guard);

    // A server certificate our CA did not sign is refused.
    let url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}&{client}",
        enc(&c("other-ca.crt"))
    );
    let node = Node::new(&url, &url);
    let (run, _guard) = node.start(&[]);
    let run = run.code_is(1);
    assert!(
        run.stderr()
            .contains(&format!("Cannot connect to rediss://127.0.0.1:{port}/0"))
            && run.stderr().to_lowercase().contains("certificate"),
        "{}",
        run.stderr()
    );

    // Without the client certificate the server refuses us.
    let url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        enc(&c("ca.crt"))
    );
    let node = Node::new(&url, &url);
    let (run, _guard) = node.start(&[]);
    let run = run.code_is(1);
    assert!(
        run.stderr()
            .contains(&format!("Cannot connect to rediss://127.0.0.1:{port}/0"))
            && run.stderr().contains("CertificateRequired"),
        "{}",
        run.stderr()
    );
}

#[test]
fn bad_urls_and_missing_certificate_files_are_config_errors_before_detaching() {
    for (url, says) in [
        ("redis://127.0.0.1:1/zero", "the database is a number"),
        (
            "redis://:pw@127.0.0.1:1/0?ssl_cert_reqs=required",
            "rediss://",
        ),
        (
            "rediss://127.0.0.1:1/0?ssl_cert_reqs=sometimes",
            "ssl_cert_reqs",
        ),
        (
            "rediss://127.0.0.1:1/0?ssl_ca_certs=%2Fnonexistent%2Fca.pem",
            "/nonexistent/ca.pem",
        ),
        ("amqp://guest:pw@127.0.0.1//", "unsupported scheme"),
    ] {
        let node = Node::new(url, url);
        let (run, _guard) = node.start(&[]);
        let run = run.code_is(78);
        assert!(run.stderr().contains(says), "{url}: {}", run.stderr());
        assert!(!run.stderr().contains(":pw@"), "{}", run.stderr());
    }
}

/// A Celery project that configures TLS the other way Celery allows, with
/// `broker_use_ssl` / `redis_backend_use_ssl` dicts next to a bare
/// `rediss://` URL: rmulti's own connections use those options too (the
/// server demands a client certificate, so without them nothing connects).
#[test]
fn a_python_apps_broker_use_ssl_and_redis_backend_use_ssl_are_honoured() {
    let certs = tempfile::Builder::new()
        .prefix("rmulti-certs-")
        .tempdir()
        .expect("tempdir");
    make_certificates(certs.path());
    let c = |n: &str| certs.path().join(n).display().to_string();
    let port = free_port().to_string();
    let _server = Server::start(&strings(&[
        "--port",
        "0",
        "--tls-port",
        &port,
        "--tls-cert-file",
        &c("server.crt"),
        "--tls-key-file",
        &c("server.key"),
        "--tls-ca-cert-file",
        &c("ca.crt"),
        "--tls-auth-clients",
        "yes",
    ]));
    let dir = tempfile::Builder::new()
        .prefix("rmulti-test-")
        .tempdir()
        .expect("tempdir");
    let ssl = format!(
        "{{'ssl_cert_reqs': ssl.CERT_REQUIRED, 'ssl_ca_certs': {:?}, 'ssl_certfile': {:?}, 'ssl_keyfile': {:?}}}",
        c("ca.crt"),
        c("client.crt"),
        c("client.key")
    );
    fs::write(
        dir.path().join("tlsproj.py"),
        format!(
            "import ssl\nfrom celery import Celery\n\n\
             app = Celery('tlsproj', broker='rediss://127.0.0.1:{port}/0', backend='rediss://127.0.0.1:{port}/1')\n\
             app.conf.broker_use_ssl = {ssl}\napp.conf.redis_backend_use_ssl = {ssl}\n\n\
             @app.task(name='tlsproj.add')\ndef add(x, y):\n    return x + y\n"
        ),
    )
    .expect("write tlsproj.py");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let mut guard = NodeGuard::new(dir.path(), &["w1.pid"]);
    let mut args = worker_args(&["-c", "1", "--detach", "--python"]);
    args[2] = "tlsproj".to_string();
    args.push(python.display().to_string());
    let run = Rmulti::in_dir(dir.path()).args(&args).run();
    guard.remember();
    let log = read_log(dir.path().join("w1.log"));
    assert_eq!(run.code(), Some(0), "{}\n{log}", run.stderr());
    assert!(
        log.contains(&format!("rediss://127.0.0.1:{port}/0?ssl_ca_certs=")),
        "{log}"
    );
    let script = "import sys\nsys.path.insert(0, sys.argv[1])\nfrom tlsproj import app\nprint(app.send_task('tlsproj.add', (7, 8)).get(timeout=20))\n";
    let mut cmd = Command::new(&python);
    cmd.args(["-c", script, &dir.path().display().to_string()]);
    let client = run_with_deadline(&mut cmd, "celery client of tlsproj".into());
    assert_eq!(client.stdout().trim(), "15", "{}", client.stderr());
}
