"""Chord parts whose outcome the worker decides itself (issue 11/12
follow-up): a Celery project run through the Python hosts with the default
Redis result backend, a chord one of whose header tasks is revoked before
it runs, has expired, loses its host to SIGKILL, hits its hard time
limit or is terminated by `revoke(terminate=True)`. Celery's worker stores that outcome
with `mark_as_revoked` / `mark_as_failure` and the request, which returns
the chord part, so the client's `chord.get()` raises ChordError instead of
waiting forever. Each test runs against rmulti and, to pin the expected
behaviour, against a real `celery worker` on the same project
(tests/python_apps/pyproj)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from celery import Celery, chord
from celery.exceptions import ChordError, TaskRevokedError, WorkerLostError

from helpers import (STARTUP_TIMEOUT, alive, descendants, kill_tree, read_pid, read_text,
                     start_redis, wait_until)

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "python_apps"
# A hung chord is what these tests catch: get() gives up long before pytest's backstop.
CHORD_DEADLINE = 30.0
SHUTDOWN_TIMEOUT = 20.0


def stop(pid: int, pidfile: Path) -> str | None:
    """Warm-stops the worker (TERM); an error text if it or a process of its
    tree outlived it and had to be killed. (conftest.py's stop_node cannot be
    imported here: two conftest modules in one run.)"""
    tree = descendants(pid)
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
    gone = wait_until(SHUTDOWN_TIMEOUT, lambda: not pidfile.exists() and not alive(pid))
    leftovers = [p for p in tree if alive(p)]
    for p in ([] if gone else [pid]) + leftovers:
        kill_tree(p)
    if gone and not leftovers:
        return None
    return f"worker {pid} gone after TERM: {bool(gone)}; processes left behind: {leftovers}"


@pytest.fixture(scope="module", params=["rmulti", "celery"])
def worker(request, tmp_path_factory, rmulti_bin):
    """A node (or Celery worker) serving pyproj at -c 2 on a Redis of its own;
    yields (kind, client app, workdir)."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"chord-{kind}")
    redis = start_redis(tmp)
    env = dict(os.environ, CELERY_BROKER_URL=redis.url(0), CELERY_RESULT_BACKEND=redis.url(1))
    env.pop("C_FAKEFORK", None)
    pidfile = tmp / "w1.pid"
    log = tmp / "w1.log"
    if kind == "rmulti":
        argv = [str(rmulti_bin), "worker", "-A", "pyproj", "--python", sys.executable]
    else:
        argv = [sys.executable, "-m", "celery", "-A", "pyproj", "worker", "-P", "prefork"]
    argv += ["-n", "w1@%h", "-c", "2", "-l", "info", "--detach",
             f"--pidfile={pidfile}", f"--logfile={log}"]
    run = subprocess.run(argv, cwd=APPS, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=STARTUP_TIMEOUT + 10)
    pid = wait_until(STARTUP_TIMEOUT, lambda: read_pid(pidfile)) if run.returncode == 0 else None
    client = Celery("pyproj", broker=redis.url(0), backend=redis.url(1))
    client.conf.update(broker_connection_retry_on_startup=False)
    # Ready once it answers a ping (Celery's detached worker writes its pidfile early).
    ready = pid and wait_until(STARTUP_TIMEOUT, lambda: client.control.ping(timeout=0.5))
    try:
        if not ready:
            pytest.fail(f"{kind} worker did not start (exit {run.returncode}):\n"
                        f"{run.stdout}{run.stderr}{read_text(log)}")
        yield kind, client, tmp
    finally:
        error = stop(pid, pidfile) if pid else None
        client.close()
        redis.stop()
    if error and kind == "rmulti":
        pytest.fail(error)


def logs(tmp: Path) -> str:
    return "".join(read_text(p) for p in sorted(tmp.glob("w1*.log")))


def add(client, x, y, **options):
    return client.signature("pyproj.tasks.add", args=(x, y), **options)


def body_outcome(client, result):
    """The chord body's own result, waited for with a deadline. `result.get()`
    raises a header part's error as soon as that part is stored (it checks
    the parents first), completed chord or not: only the body's result says
    whether the chord was completed."""
    body = client.AsyncResult(result.id)
    with pytest.raises(ChordError) as raised:
        body.get(timeout=CHORD_DEADLINE)
    return str(raised.value)


def test_a_chord_with_a_revoked_part_fails_instead_of_hanging(worker):
    kind, client, tmp = worker
    revoked = str(uuid.uuid4())
    # Revoked before it is sent: the worker meets the id in its revoked set.
    # reply=True: the worker has it before the chord goes out.
    assert client.control.revoke(revoked, reply=True, limit=1, timeout=5), "no worker acknowledged the revoke"
    header = [add(client, 1, 1), add(client, 2, 2, task_id=revoked)]
    result = chord(header)(client.signature("pyproj.tasks.tsum"))
    error = body_outcome(client, result)
    assert f"Dependency {revoked} raised TaskRevokedError('revoked')" in error, error
    with pytest.raises((ChordError, TaskRevokedError)):
        result.get(timeout=CHORD_DEADLINE)
    assert client.AsyncResult(revoked).state == "REVOKED"
    assert "Cannot hand" not in logs(tmp) and "cannot store the outcome" not in logs(tmp), logs(tmp)[-3000:]


def test_a_chord_with_an_expired_part_fails_instead_of_hanging(worker):
    kind, client, tmp = worker
    expired = str(uuid.uuid4())
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    header = [add(client, 1, 1), add(client, 2, 2, task_id=expired, expires=past)]
    result = chord(header)(client.signature("pyproj.tasks.tsum"))
    error = body_outcome(client, result)
    assert f"Dependency {expired} raised TaskRevokedError('expired')" in error, error
    assert client.AsyncResult(expired).state == "REVOKED"


def test_a_chord_whose_part_loses_its_host_fails_instead_of_hanging(worker):
    kind, client, tmp = worker
    killed = str(uuid.uuid4())
    header = [add(client, 1, 1),
              client.signature("pyproj.tasks.crash", args=("kill",), task_id=killed)]
    result = chord(header)(client.signature("pyproj.tasks.tsum"))
    error = body_outcome(client, result)
    assert f"Dependency {killed} raised WorkerLostError(" in error, error
    assert "signal 9 (SIGKILL)" in error, error
    with pytest.raises((ChordError, WorkerLostError)):
        result.get(timeout=CHORD_DEADLINE)
    assert client.AsyncResult(killed).state == "FAILURE"
    # The pool carries on: a chord without trouble still completes.
    ok = chord([add(client, 1, 1), add(client, 2, 3)])(client.signature("pyproj.tasks.tsum"))
    assert ok.get(timeout=CHORD_DEADLINE) == 7
    assert "Cannot hand" not in logs(tmp) and "cannot store the outcome" not in logs(tmp), logs(tmp)[-3000:]


def test_a_chord_whose_part_hits_its_hard_time_limit_fails_instead_of_hanging(worker):
    kind, client, tmp = worker
    limited = str(uuid.uuid4())
    header = [add(client, 1, 1),
              client.signature("pyproj.tasks.sleep", args=(60,), task_id=limited, time_limit=1)]
    result = chord(header)(client.signature("pyproj.tasks.tsum"))
    error = body_outcome(client, result)
    assert f"Dependency {limited} raised TimeLimitExceeded(" in error, error
    assert client.AsyncResult(limited).state == "FAILURE"


def test_a_chord_whose_running_part_is_terminated_fails_instead_of_hanging(worker):
    kind, client, tmp = worker
    running = str(uuid.uuid4())
    header = [add(client, 1, 1),
              client.signature("pyproj.tasks.sleep", args=(60,), task_id=running)]
    result = chord(header)(client.signature("pyproj.tasks.tsum"))

    def is_running():
        active = client.control.inspect(timeout=0.5).active() or {}
        return any(t["id"] == running for tasks in active.values() for t in tasks)

    assert wait_until(CHORD_DEADLINE, is_running), "the part never ran"
    client.control.revoke(running, terminate=True)
    error = body_outcome(client, result)
    assert f"Dependency {running} raised TaskRevokedError('terminated')" in error, error
    assert client.AsyncResult(running).state == "REVOKED"
