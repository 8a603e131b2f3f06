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
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from helpers import (
    STARTUP_TIMEOUT,
    alive,
    kill_tree,
    read_pid,
    read_text,
    start_redis,
    stop_node,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
BROKER_DB = 0
RESULT_DB = 1
RESULT_EXPIRES = 3600  # in proj.toml; distinct from the 86400 default on purpose


# --------------------------------------------------------------------------
# redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (bin/setup installs it)")
    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


# --------------------------------------------------------------------------
# the app file and the node

APP_TOML = """\
# proj.toml, written by tests/python/conftest.py
broker_url = "{broker}"
result_backend = "{backend}"
result_expires = {expires}
{extra}
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
            extra="",
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


def launch_node(rmulti_bin: Path, workdir: Path, name: str, *extra: str) -> Node:
    """``$RMULTI_BIN worker -A proj -n <name>@%h -l info --detach ...`` in
    ``workdir``; returns once it is ready, or fails the test with the
    launcher's output and the node's logs (killing what it left running)."""
    pidfile = workdir / f"{name}.pid"
    argv = [
        str(rmulti_bin), "worker", "-A", "proj", "-n", f"{name}@%h", "-l", "info",
        "--detach", f"--pidfile={pidfile}", f"--logfile={workdir / name}%I.log", *extra,
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
    return Node(name=name, pid=pid, dir=workdir, pidfile=pidfile)


@pytest.fixture(scope="session")
def node(rmulti_bin, workdir):
    n = launch_node(rmulti_bin, workdir, "w1", "-c", "2", "-Q", "celery,other")
    yield n
    error = stop_node(n.pid, n.pidfile)
    if error:
        pytest.fail(f"{error}\n--- {n.name}.log\n{n.log()[-4000:]}")


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


# The Django example's fixtures (django_demo/demo_fixtures.py), registered
# here once for the whole run: imported into each test module they were one
# instance per module, so a second Redis and a second node named worker1,
# while the example's Celery app, configured once per process, still talked
# to the first. (A conftest.py in django_demo would shadow this one, which
# test modules import by name.)
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "django_demo"))
from demo_fixtures import demo_env, demo_node, demo_redis, demo_tmp, django_project  # noqa: E402,F401
