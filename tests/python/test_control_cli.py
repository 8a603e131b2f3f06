"""`rmulti inspect|control|status` against a real Celery 5.7 worker, compared
with what `celery inspect|control|status` prints for the same question.

Each test module run has its own Redis and a real `celery worker` on the
reference app (tests/python/reference/proj.py, reading the proj.toml written
here); the shutdown test starts a worker of its own. Both CLIs find the
broker through `-A proj` (rmulti reads proj.toml; celery imports proj.py).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APP_TOML, BROKER_DB, REPO, RESULT_DB, _clean_env
from helpers import kill_tree, read_text, start_redis, wait_until

REFERENCE = REPO / "tests" / "python" / "reference"
PYTHON = REPO / ".venv" / "bin" / "python"
READY_TIMEOUT = 30.0
EX_UNAVAILABLE = 69
NO_REPLY = "Error: No nodes replied within time constraint"


def env() -> dict:
    e = _clean_env()
    e["PYTHONPATH"] = str(REFERENCE)
    e.pop("NO_COLOR", None)
    return e


class World:
    """One Redis, a proj.toml, and the Celery workers started on it."""

    def __init__(self, base: Path, rmulti_bin: Path):
        self.redis = start_redis(base)
        self.dir = base / "work"
        self.dir.mkdir()
        (self.dir / "proj.toml").write_text(
            APP_TOML.format(broker=self.redis.url(BROKER_DB), backend=self.redis.url(RESULT_DB),
                            expires=3600, extra="")
        )
        self.rmulti_bin = rmulti_bin
        self.workers: list[subprocess.Popen] = []

    def worker(self, name: str) -> tuple[subprocess.Popen, str]:
        """A real `celery worker` in the foreground; returns it and its node
        name once its log says it is ready."""
        log = self.dir / f"{name}.log"
        proc = subprocess.Popen(
            [str(PYTHON), "-m", "celery", "-A", "proj", "worker", "-n", f"{name}@%h", "-c", "1",
             "-l", "info", f"--logfile={log}", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=self.dir, env=env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        ready = wait_until(READY_TIMEOUT, lambda: " ready." in read_text(log) or proc.poll() is not None)
        if not ready or proc.poll() is not None:
            pytest.fail(f"celery worker {name} did not start:\n{read_text(log)}")
        line = next(l for l in read_text(log).splitlines() if " ready." in l)
        node = line.split("] ", 1)[1].split(" ready.")[0]
        return proc, node

    def rmulti(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.rmulti_bin), *args, "-A", "proj"], cwd=self.dir, env=env(),
                              capture_output=True, text=True, timeout=60)

    def celery(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(PYTHON), "-m", "celery", "-A", "proj", *args], cwd=self.dir,
                              env=env(), capture_output=True, text=True, timeout=60)

    def close(self):
        for proc in self.workers:
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait(timeout=10)
        self.redis.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, rmulti_bin):
    w = World(tmp_path_factory.mktemp("control"), rmulti_bin)
    yield w
    w.close()


@pytest.fixture(scope="module")
def node(world) -> str:
    return world.worker("w1")[1]


def same(world, *args: str) -> subprocess.CompletedProcess:
    """Runs `args` through both CLIs and checks rmulti printed what celery did."""
    ours, theirs = world.rmulti(*args), world.celery(*args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (
        f"rmulti {args}: rc {ours.returncode}\n{ours.stdout}{ours.stderr}\n"
        f"celery {args}: rc {theirs.returncode}\n{theirs.stdout}{theirs.stderr}"
    )
    return ours


def test_inspect_ping_prints_what_celery_prints(world, node):
    out = same(world, "inspect", "ping")
    assert out.returncode == 0
    assert out.stdout == f"->  {node}: OK\n        pong\n\n1 node online.\n"


@pytest.mark.parametrize("command", ["active", "registered", "active_queues", "reserved", "scheduled",
                                     "revoked", "clock", "report"])
def test_inspect_commands_print_what_celery_prints(world, node, command):
    if command == "clock":
        # The clock moves with every message; compare the shape.
        ours = world.rmulti("inspect", "clock", "-j")
        theirs = world.celery("inspect", "clock", "-j")
        assert json.loads(ours.stdout)[node].keys() == json.loads(theirs.stdout)[node].keys()
        return
    out = same(world, "inspect", command)
    assert out.stdout.startswith(f"->  {node}: OK\n")


def test_inspect_stats_has_celerys_keys(world, node):
    ours = world.rmulti("inspect", "stats", "-j")
    theirs = world.celery("inspect", "stats", "-j")
    assert ours.returncode == theirs.returncode == 0
    assert json.loads(ours.stdout)[node].keys() == json.loads(theirs.stdout)[node].keys()
    text = world.rmulti("inspect", "stats")
    assert text.stdout.startswith(f"->  {node}: OK\n    {{\n        \"broker\": {{\n")
    assert text.stdout.endswith("\n    }\n\n1 node online.\n")


def test_json_destination_and_status(world, node):
    same(world, "inspect", "ping", "-j")
    same(world, "inspect", "ping", "-d", node)
    same(world, "inspect", "registered", "-d", f"nobody@x,{node}")
    out = same(world, "status")
    assert out.stdout == f"->  {node}: OK\n\n1 node online.\n"
    same(world, "status", "-j")
    same(world, "control", "enable_events")
    same(world, "control", "disable_events")


def test_control_revoke_is_flagged_by_the_worker(world, node):
    out = same(world, "control", "revoke", "11111111-2222-3333-4444-555555555555")
    assert "flagged as revoked" in out.stdout
    ours = world.rmulti("inspect", "revoked", "-j")
    assert "11111111-2222-3333-4444-555555555555" in json.loads(ours.stdout)[node]
    same(world, "control", "revoke", "a", "b", "-j")


def test_unknown_destination_and_usage_errors(world, node):
    for args in (("inspect", "ping", "-d", "nobody@nowhere"), ("control", "revoke", "x", "-d", "nobody@x")):
        ours, theirs = world.rmulti(*args), world.celery(*args)
        assert ours.returncode == theirs.returncode == EX_UNAVAILABLE
        assert ours.stderr.strip().splitlines()[-1] == theirs.stderr.strip().splitlines()[-1] == NO_REPLY
        assert ours.stdout == theirs.stdout == ""
    ours, theirs = world.rmulti("inspect", "nosuch"), world.celery("inspect", "nosuch")
    assert ours.returncode == theirs.returncode == 2
    assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]


def test_no_workers_exit_69(tmp_path, rmulti_bin):
    w = World(tmp_path, rmulti_bin)
    try:
        for args in (("inspect", "ping"), ("status",), ("control", "shutdown")):
            ours, theirs = w.rmulti(*args, "-t", "0.3"), w.celery(*args, "-t", "0.3")
            assert ours.returncode == theirs.returncode == EX_UNAVAILABLE, args
            assert ours.stderr.strip() == NO_REPLY
            assert theirs.stderr.strip().splitlines()[-1] == NO_REPLY
    finally:
        w.close()


def test_control_shutdown_stops_the_celery_worker(tmp_path, rmulti_bin):
    w = World(tmp_path, rmulti_bin)
    try:
        proc, node = w.worker("w2")
        out = w.rmulti("control", "shutdown", "-d", node)
        # A Python worker exits without replying, so celery's CLI says 69 too.
        assert out.returncode == EX_UNAVAILABLE
        assert wait_until(20, lambda: proc.poll() is not None), "the worker did not exit"
        assert "Got shutdown from remote" in read_text(w.dir / "w2.log")
    finally:
        w.close()


def test_ping_wall_time_against_celery(world, node):
    """Not a race: reports how long a liveness probe takes with each CLI
    (`-d` so neither waits out the timeout after the one reply)."""

    def wall(cmd) -> float:
        start = time.perf_counter()
        out = cmd("inspect", "ping", "-d", node)
        assert out.returncode == 0, out.stderr
        return time.perf_counter() - start

    ours = statistics.median(wall(world.rmulti) for _ in range(10))
    theirs = statistics.median(wall(world.celery) for _ in range(5))
    print(f"\ninspect ping -d {node}: rmulti {ours * 1000:.1f} ms, celery {theirs * 1000:.1f} ms, "
          f"ratio {theirs / ours:.0f}x", file=sys.stderr)
    assert ours < theirs
