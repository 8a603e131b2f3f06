"""Chord parts whose outcome the worker decides itself (issue 11/12
follow-up): a Celery project run through the Python hosts with the default
Redis result backend, a chord one of whose header tasks is revoked before
it runs, has expired, loses its host to SIGKILL, hits its hard time
limit or is terminated by `revoke(terminate=True)`. Celery's worker stores that outcome
with `mark_as_revoked` / `mark_as_failure` and the request, which returns
the chord part, so the client's `chord.get()` raises ChordError instead of
waiting forever. Each case is one row of CASES and runs against rmulti
and, to pin the expected behaviour, against a real `celery worker` on the
same project (tests/python_apps/pyproj)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest
from celery import Celery, chord
from celery.canvas import Signature
from celery.exceptions import ChordError, TaskRevokedError, WorkerLostError

from helpers import STARTUP_TIMEOUT, read_pid, read_text, start_redis, stop_node, wait_until

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "python_apps"
# A hung chord is what these tests catch: get() gives up long before pytest's backstop.
CHORD_DEADLINE = 30.0


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
        error = stop_node(pid, pidfile) if pid else None
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


def revoke_ahead(client, part_id):
    # Revoked before it is sent: the worker meets the id in its revoked set.
    # reply=True: the worker has it before the chord goes out.
    assert client.control.revoke(part_id, reply=True, limit=1, timeout=5), "no worker acknowledged the revoke"


def terminate_once_running(client, part_id):
    def is_running():
        active = client.control.inspect(timeout=0.5).active() or {}
        return any(t["id"] == part_id for tasks in active.values() for t in tasks)

    assert wait_until(CHORD_DEADLINE, is_running), "the part never ran"
    client.control.revoke(part_id, terminate=True)


@dataclass(frozen=True)
class Case:
    """One way the worker decides a header part's outcome itself. The chord
    is [add(1, 1), part]; the body's ChordError must say
    `Dependency <part id> raised <raised>` (and hold each of `also`), and
    the part's stored state is `state`."""

    part: Callable[[Celery, str], Signature]  # (client, part id) -> the troubled part
    raised: str
    state: str
    also: tuple[str, ...] = ()
    before_send: Callable[[Celery, str], None] | None = None
    after_send: Callable[[Celery, str], None] | None = None
    # The errors `result.get()` may raise for it, when checked (ChordError or the part's own).
    result_raises: tuple[type[BaseException], ...] = ()
    # A chord without trouble still completes afterwards (the pool carries on).
    pool_carries_on: bool = False
    # The node's logs show no part outcome it failed to hand over or store.
    clean_logs: bool = False


CASES = [
    pytest.param(Case(
        part=lambda client, part_id: add(client, 2, 2, task_id=part_id),
        before_send=revoke_ahead,
        raised="TaskRevokedError('revoked')", state="REVOKED",
        result_raises=(ChordError, TaskRevokedError), clean_logs=True,
    ), id="revoked"),
    pytest.param(Case(
        part=lambda client, part_id: add(client, 2, 2, task_id=part_id,
                                         expires=datetime.now(timezone.utc) - timedelta(seconds=5)),
        raised="TaskRevokedError('expired')", state="REVOKED",
    ), id="expired"),
    pytest.param(Case(
        part=lambda client, part_id: client.signature("pyproj.tasks.crash", args=("kill",), task_id=part_id),
        raised="WorkerLostError(", also=("signal 9 (SIGKILL)",), state="FAILURE",
        result_raises=(ChordError, WorkerLostError), pool_carries_on=True, clean_logs=True,
    ), id="host-killed"),
    pytest.param(Case(
        part=lambda client, part_id: client.signature("pyproj.tasks.sleep", args=(60,), task_id=part_id,
                                                      time_limit=1),
        raised="TimeLimitExceeded(", state="FAILURE",
    ), id="hard-time-limit"),
    pytest.param(Case(
        part=lambda client, part_id: client.signature("pyproj.tasks.sleep", args=(60,), task_id=part_id),
        after_send=terminate_once_running,
        raised="TaskRevokedError('terminated')", state="REVOKED",
    ), id="terminated"),
]


@pytest.mark.parametrize("case", CASES)
def test_a_chord_with_a_troubled_part_fails_instead_of_hanging(worker, case):
    kind, client, tmp = worker
    part_id = str(uuid.uuid4())
    if case.before_send:
        case.before_send(client, part_id)
    result = chord([add(client, 1, 1), case.part(client, part_id)])(client.signature("pyproj.tasks.tsum"))
    if case.after_send:
        case.after_send(client, part_id)
    error = body_outcome(client, result)
    for expected in (f"Dependency {part_id} raised {case.raised}", *case.also):
        assert expected in error, error
    if case.result_raises:
        with pytest.raises(case.result_raises):
            result.get(timeout=CHORD_DEADLINE)
    assert client.AsyncResult(part_id).state == case.state
    if case.pool_carries_on:
        ok = chord([add(client, 1, 1), add(client, 2, 3)])(client.signature("pyproj.tasks.tsum"))
        assert ok.get(timeout=CHORD_DEADLINE) == 7
    if case.clean_logs:
        assert "Cannot hand" not in logs(tmp) and "cannot store the outcome" not in logs(tmp), logs(tmp)[-3000:]
