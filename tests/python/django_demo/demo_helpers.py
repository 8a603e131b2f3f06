"""Helpers shared by the django_demo conftest and tests (a module of its own:
two conftest.py files in one pytest run cannot be imported by name)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "examples" / "django-demo"


def wait_until(timeout, cond, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(7) == b"+PONG\r\n"
    except OSError:
        return False


def rmulti_bin():
    env = os.environ.get("RMULTI_BIN")
    if env:
        return str(Path(env).resolve())
    # The newer build: a stale release binary must not hide a fresh debug one.
    builds = [REPO / "target" / b / "rmulti" for b in ("release", "debug")]
    builds = [p for p in builds if p.exists()]
    if not builds:
        pytest.fail("no rmulti binary: run `cargo build` or set RMULTI_BIN")
    return str(max(builds, key=lambda p: p.stat().st_mtime))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def tree(pid):
    """`pid` and all its descendants (pool children, Python hosts)."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent_of[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found = [pid]
    for cur in found:
        found.extend(p for p, pp in parent_of.items() if pp == cur)
    return found


def child_logs(tmp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("worker1-*.log")))
