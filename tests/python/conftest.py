"""Fixtures for the Python interop tests: a real Celery 5.7 client against
the rmulti worker.

- ``redis_server``: a private ``redis-server`` on a free port of 127.0.0.1
  (session scope; killed at teardown). Broker = db 0, results = db 1, as in
  the captured fixtures and in ``tests/common/mod.rs``.
- ``workdir``: a temp dir holding ``proj.toml`` (the app file) pointing at it.
- ``node``: ``$RMULTI_BIN worker -A proj -n w1@%h -c 2 --detach ...`` in that
  dir; stopped at teardown with SIGTERM (warm shutdown), and SIGKILLed, with
  its pool, if the pidfile has not gone within the deadline. A node that
  needed SIGKILL fails the teardown: warm shutdown is part of the contract.
- ``app`` / ``tasks``: a Celery app object with client-side stubs named
  ``proj.tasks.*`` (the worker runs the builtins; the stubs only name them).

``RMULTI_BIN`` (set by bin/test) is the binary under test; without it the
release build in the repo is used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

REPO = Path(__file__).resolve().parents[2]
BROKER_DB = 0
RESULT_DB = 1
RESULT_EXPIRES = 3600  # in proj.toml; distinct from the 86400 default on purpose
STARTUP_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 20.0


# --------------------------------------------------------------------------
# helpers


def wait_until(timeout: float, cond, interval: float = 0.02):
    """Polls ``cond`` until it returns a truthy value (returned) or the
    deadline passes (returns the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"PING\r\n")
            return s.recv(7) == b"+PONG\r\n"
    except OSError:
        return False


def proc_state(pid: int):
    """(ppid, state) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    st = proc_state(pid)
    return st is not None and st[1] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_state(int(entry))
            if st:
                parent_of[int(entry)] = st[0]
    found = [pid]
    for cur in found:
        found.extend(p for p, pp in parent_of.items() if pp == cur)
    return found[1:]


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, the group it leads and all its descendants."""
    victims = descendants(pid) + [pid]
    for p in victims:
        try:
            if os.getpgid(p) == p:
                os.killpg(p, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    wait_until(5, lambda: not any(alive(p) for p in victims))


def read_pid(path: Path):
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------
# redis


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    dir: Path

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = RESULT_DB):
        import redis  # redis-py, installed with celery[redis]

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10)

    def log(self) -> str:
        return read_text(self.dir / "redis.log")


def _start_redis(base: Path) -> RedisServer:
    last = ""
    for _ in range(5):  # a free port can be taken before redis binds it
        port = free_port()
        d = Path(tempfile.mkdtemp(prefix="redis-", dir=base))
        log = open(d / "redis.log", "wb")
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(d)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        server = RedisServer(port, proc, d)
        wait_until(STARTUP_TIMEOUT, lambda: redis_ping(port) or proc.poll() is not None)
        if redis_ping(port):
            return server
        last = server.log()
        proc.kill()
        proc.wait()
    pytest.fail(f"redis-server did not start; its log:\n{last}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (bin/setup installs it)")
    server = _start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.proc.kill()
    server.proc.wait(timeout=10)


# --------------------------------------------------------------------------
# the app file and the node

APP_TOML = """\
# proj.toml, written by tests/python/conftest.py
broker_url = "{broker}"
result_backend = "{backend}"
result_expires = {expires}

[tasks]
"proj.tasks.add" = {{ builtin = "add" }}
"proj.tasks.mul" = {{ builtin = "mul" }}
"proj.tasks.xsum" = {{ builtin = "xsum" }}
"proj.tasks.noop" = {{ builtin = "noop" }}
"proj.tasks.sleep" = {{ builtin = "sleep" }}
"proj.tasks.echo" = {{ builtin = "echo" }}
"proj.tasks.fail" = {{ builtin = "fail" }}
"""


@pytest.fixture(scope="session")
def rmulti_bin() -> Path:
    path = Path(os.environ.get("RMULTI_BIN") or REPO / "target" / "release" / "rmulti")
    if not os.access(path, os.X_OK):
        pytest.fail(f"rmulti binary not found at {path} (run bin/test, or set RMULTI_BIN)")
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, redis_server) -> Path:
    d = tmp_path_factory.mktemp("work")
    (d / "proj.toml").write_text(
        APP_TOML.format(
            broker=redis_server.url(BROKER_DB),
            backend=redis_server.url(RESULT_DB),
            expires=RESULT_EXPIRES,
        )
    )
    return d


@dataclass
class Node:
    name: str
    pid: int
    dir: Path
    pidfile: Path

    def log(self, index: str = "") -> str:
        """The main log (``index=""``) or a child's (``"-1"``, ``"-2"``)."""
        return read_text(self.dir / f"{self.name}{index}.log")

    def all_logs(self) -> str:
        return "".join(read_text(p) for p in sorted(self.dir.glob(f"{self.name}*.log")))


def _clean_env() -> dict:
    env = dict(os.environ)
    for var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "C_FAKEFORK"):
        env.pop(var, None)
    return env


def stop_node(pid: int, pidfile: Path) -> str | None:
    """Warm-stops a node; returns an error text if it had to be killed."""
    pool = descendants(pid)
    if not alive(pid):
        return None
    os.kill(pid, signal.SIGTERM)
    gone = wait_until(SHUTDOWN_TIMEOUT, lambda: not pidfile.exists() and not alive(pid))
    leftovers = [p for p in pool if alive(p)]
    if gone and not leftovers:
        return None
    kill_tree(pid)
    for p in leftovers:
        kill_tree(p)
    return (
        f"node {pid} did not shut down within {SHUTDOWN_TIMEOUT}s of SIGTERM "
        f"(pidfile {'still there' if pidfile.exists() else 'gone'}, "
        f"leftover children {leftovers}); it was SIGKILLed"
    )


@pytest.fixture(scope="session")
def node(rmulti_bin, workdir):
    name = "w1"
    pidfile = workdir / f"{name}.pid"
    argv = [
        str(rmulti_bin), "worker", "-A", "proj", "-n", f"{name}@%h", "-c", "2",
        "-l", "info", "--detach", f"--pidfile={pidfile}",
        f"--logfile={workdir / name}%I.log", "-Q", "celery,other",
    ]
    try:
        run = subprocess.run(
            argv, cwd=workdir, env=_clean_env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=STARTUP_TIMEOUT + 10,
        )
    except subprocess.TimeoutExpired as e:
        pid = read_pid(pidfile)
        if pid:
            kill_tree(pid)
        pytest.fail(f"`rmulti worker --detach` did not return: {e}")
    pid = wait_until(STARTUP_TIMEOUT, lambda: read_pid(pidfile)) if run.returncode == 0 else read_pid(pidfile)
    if run.returncode != 0 or not pid:
        if pid and alive(pid):
            kill_tree(pid)
        logs = "".join(f"--- {p.name}\n{read_text(p)}" for p in sorted(workdir.glob(f"{name}*.log")))
        pytest.fail(
            f"worker did not start (exit {run.returncode}, pid {pid})\n"
            f"$ {' '.join(argv)}\n--- stdout\n{run.stdout}--- stderr\n{run.stderr}{logs}"
        )
    n = Node(name=name, pid=pid, dir=workdir, pidfile=pidfile)
    yield n
    error = stop_node(pid, pidfile)
    if error:
        pytest.fail(f"{error}\n--- {name}.log\n{n.log()[-4000:]}")


# --------------------------------------------------------------------------
# the Celery client


def make_app(redis_server, **conf) -> Celery:
    app = Celery("proj", broker=redis_server.url(BROKER_DB), backend=redis_server.url(RESULT_DB))
    app.conf.update(broker_connection_retry_on_startup=False, **conf)

    # Client-side stubs: only their names matter; the worker runs the builtins.
    @app.task(name="proj.tasks.add", shared=False)
    def add(x, y):
        raise NotImplementedError("runs on the worker")

    @app.task(name="proj.tasks.mul", shared=False)
    def mul(x, y):
        raise NotImplementedError("runs on the worker")

    @app.task(name="proj.tasks.xsum", shared=False)
    def xsum(numbers):
        raise NotImplementedError("runs on the worker")

    @app.task(name="proj.tasks.sleep", shared=False)
    def sleep(seconds):
        raise NotImplementedError("runs on the worker")

    @app.task(name="proj.tasks.echo", shared=False)
    def echo(value):
        raise NotImplementedError("runs on the worker")

    @app.task(name="proj.tasks.fail", shared=False)
    def fail(message):
        raise NotImplementedError("runs on the worker")

    return app


@pytest.fixture(scope="session")
def app(redis_server):
    a = make_app(redis_server)
    yield a
    a.close()


@pytest.fixture(scope="session")
def app_v1(redis_server):
    """A second client that sends protocol 1 messages."""
    a = make_app(redis_server, task_protocol=1)
    yield a
    a.close()


class Tasks:
    def __init__(self, app: Celery):
        self.add = app.tasks["proj.tasks.add"]
        self.mul = app.tasks["proj.tasks.mul"]
        self.xsum = app.tasks["proj.tasks.xsum"]
        self.sleep = app.tasks["proj.tasks.sleep"]
        self.echo = app.tasks["proj.tasks.echo"]
        self.fail = app.tasks["proj.tasks.fail"]


@pytest.fixture(scope="session")
def tasks(app) -> Tasks:
    return Tasks(app)
