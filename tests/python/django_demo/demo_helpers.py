"""Helpers shared by the django_demo fixtures and tests (a module of its own:
two conftest.py files in one pytest run cannot be imported by name). The
generic ones (polling, /proc, Redis) come from tests/python/helpers.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# tests/python, for helpers.py, also when this directory is run on its own.
_TESTS_PYTHON = str(Path(__file__).resolve().parents[1])
if _TESTS_PYTHON not in sys.path:
    sys.path.insert(0, _TESTS_PYTHON)

from helpers import (  # noqa: E402
    alive,
    descendants,
    free_port,
    is_rmulti,
    kill_tree,
    read_pid,
    start_redis,
    wait_until,
)

__all__ = ["DEMO", "alive", "child_logs", "demo_worker", "free_port", "kill_tree", "rmulti_bin",
           "start_redis", "tree", "wait_until"]

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "examples" / "django-demo"


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


def tree(pid):
    """`pid` and all its descendants (pool children, Python hosts)."""
    return [pid] + descendants(pid)


def child_logs(tmp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("worker1-*.log")))


@contextlib.contextmanager
def demo_worker(name: str, tmp: Path, env: dict, cwd: Path = DEMO, extra: tuple = ()):
    """`rmulti start NAME -A celeryDemo` in the example's directory (or a
    copy of it, `cwd`) with this interpreter as `--python` and `extra`
    arguments, pidfile and logs (`NAME.log`, `NAME-N.log`) in `tmp`;
    `rmulti stopwait` on leaving, which must stop every process of the node.
    Whatever is left of the node then (or after a failed start, a command
    that timed out, a failing test) is SIGKILLed."""
    files = [f"--pidfile={tmp}/%n.pid", f"--logfile={tmp}/%n%I.log"]
    args = [name, "-A", "celeryDemo"] + files
    pidfile = tmp / f"{name}.pid"
    procs = []
    try:
        run = subprocess.run(
            [rmulti_bin(), "start"] + args + [f"--python={sys.executable}", "-c", "2", "-l", "info", *extra],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        )
        assert run.returncode == 0, f"rmulti start {name} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
        pid = read_pid(pidfile)
        assert pid, f"rmulti start {name}: no pid in {pidfile}"
        procs = tree(pid)
        yield
        stop = subprocess.run(
            [rmulti_bin(), "stopwait"] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        stopped = wait_until(20, lambda: not any(alive(p) for p in procs))
        assert stop.returncode == 0 and stopped, f"stopwait {name}: {stop.stdout}{stop.stderr}"
    finally:
        pid = read_pid(pidfile)
        if pid and alive(pid) and is_rmulti(pid):
            procs.append(pid)
        for p in procs:
            if alive(p):
                kill_tree(p)
