"""Process, polling, Redis and Flower helpers shared by tests/python/conftest.py,
the test modules and tests/python/django_demo (a plain module, not a
conftest: two conftest.py files in one pytest run cannot both be imported by
name).

Nothing here is a fixture; the fixtures that use these are in conftest.py,
django_demo/demo_fixtures.py and the test modules.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 20.0


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
    """Every live descendant of ``pid`` (children, grandchildren, ...)."""
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


def is_rmulti(pid: int) -> bool:
    """True if ``pid`` runs a program named ``rmulti*`` (argv[0]): a pidfile
    can point at anything, so only such a process is killed on its word."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0).startswith(b"rmulti")


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


def stop_node(pid: int, pidfile: Path) -> str | None:
    """Warm-stops a node (or a detached Celery worker) with SIGTERM; returns
    an error text if it, or a process of its tree, had to be killed."""
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


@dataclass
class RedisServer:
    """A private ``redis-server`` on 127.0.0.1; ``stop()`` kills it."""

    port: int
    proc: subprocess.Popen
    dir: Path

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int):
        import redis  # redis-py, installed with celery[redis]

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10)

    def log(self) -> str:
        return read_text(self.dir / "redis.log")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def start_redis(base: Path) -> RedisServer:
    """Starts ``redis-server`` on a free port, persisting nothing, with its
    files in a new dir under ``base``; returns once it answers PING. Raises
    RuntimeError (with the server's log) if it cannot, leaving no server."""
    last = ""
    for _ in range(5):  # a free port can be taken before redis binds it
        port = free_port()
        d = Path(tempfile.mkdtemp(prefix="redis-", dir=base))
        with open(d / "redis.log", "wb") as log:
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(d)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        server = RedisServer(port, proc, d)
        wait_until(STARTUP_TIMEOUT, lambda: redis_ping(port) or proc.poll() is not None)
        if redis_ping(port):
            return server
        last = server.log()
        server.stop()
    raise RuntimeError(f"redis-server did not start; its log:\n{last}")


def http(method: str, url: str, timeout: float = 20):
    """(status, body) of one request; errors are answers too (status 0: no
    HTTP answer at all)."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


FLOWER_STARTUP_TIMEOUT = 30.0


@contextlib.contextmanager
def running_flower(python, app: str, cwd: Path, env: dict, log: Path):
    """Real Flower, ``python -m celery -A <app> flower``, run in ``cwd`` with
    ``env`` on a free port of 127.0.0.1, its output appended to ``log``;
    yields its URL once its HTTP server answers. Fails the test (with the
    log's tail) if it exits or does not answer in time. On leaving, also
    after a failed start or a failing test, its process group gets SIGTERM,
    then SIGKILL if it lingers."""
    # Flower 2 refuses its API without auth unless told otherwise.
    env = dict(env, FLOWER_UNAUTHENTICATED_API="true")
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "celery", "-A", app, "flower", "--address=127.0.0.1", f"--port={port}"],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the kill below reaches all it started
        )
    url = f"http://127.0.0.1:{port}"
    try:
        up = wait_until(FLOWER_STARTUP_TIMEOUT,
                        lambda: proc.poll() is not None or http("GET", url + "/healthcheck")[0] == 200,
                        interval=0.2)
        if not up or proc.poll() is not None:
            pytest.fail(f"flower did not start (exit {proc.poll()}):\n{read_text(log)[-3000:]}")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
