"""A real Python Celery 5.7 client against the rmulti worker: what a Django
view does (``add.delay(2, 3)``, ``AsyncResult.get()``) must keep working
unchanged. The worker runs the builtins of ``proj.toml`` (see conftest.py).
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from celery.exceptions import NotRegistered

from conftest import BROKER_DB, RESULT_DB, RESULT_EXPIRES
from helpers import redis_ping, wait_until

GET_TIMEOUT = 10


def test_redis_fixture_answers(redis_server):
    # Runs without a worker: checks the fixtures themselves.
    assert redis_ping(redis_server.port)
    assert redis_server.client(RESULT_DB).ping()


def test_node_is_up_and_logged_ready(node):
    assert node.pidfile.read_text() == f"{node.pid}\n"
    assert wait_until(5, lambda: " ready." in node.log()), node.log()
    assert "%I" not in "".join(p.name for p in node.dir.iterdir())


def test_add_delay(node, tasks):
    assert tasks.add.delay(4, 4).get(timeout=GET_TIMEOUT) == 8


def test_mul_delay(node, tasks):
    assert tasks.mul.delay(6, 7).get(timeout=GET_TIMEOUT) == 42


def test_xsum_delay(node, tasks):
    assert tasks.xsum.delay([1, 2, 3]).get(timeout=GET_TIMEOUT) == 6


def test_countdown_runs_when_due_not_before(node, tasks):
    sent = time.monotonic()
    result = tasks.add.apply_async((2, 2), countdown=2)
    assert result.get(timeout=GET_TIMEOUT) == 4
    took = time.monotonic() - sent
    # Due at +2 s; the issue allows 1 s of lateness (+ the client's own latency).
    assert 2.0 <= took < 4.0, f"countdown=2 result arrived after {took:.2f}s"


def test_apply_async_to_another_queue(node, tasks):
    result = tasks.add.apply_async((1, 2), queue="other")
    assert result.get(timeout=GET_TIMEOUT) == 3


def test_protocol_1_message(node, app_v1, redis_server):
    add = app_v1.tasks["proj.tasks.add"]
    # Park it on a queue nobody consumes, check it really is protocol 1
    # (headers empty, everything in the body), then hand it to the worker.
    result = add.apply_async((3, 4), queue="parked_v1")
    broker = redis_server.client(BROKER_DB)
    raw = broker.lindex("parked_v1", 0)
    envelope = json.loads(raw)
    body = json.loads(base64.b64decode(envelope["body"]))
    assert body["task"] == "proj.tasks.add" and body["id"] == result.id, body
    assert body["args"] == [3, 4]
    assert broker.rpoplpush("parked_v1", "celery") == raw
    assert result.get(timeout=GET_TIMEOUT) == 7


def test_failing_task_raises_through_get(node, tasks):
    result = tasks.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=GET_TIMEOUT)
    assert result.state == "FAILURE"
    assert "Traceback" in (result.traceback or "")


def test_unknown_task_raises_not_registered(node, app):
    result = app.send_task("proj.tasks.nope", args=(1,))
    with pytest.raises(NotRegistered):
        result.get(timeout=GET_TIMEOUT)


def test_ignore_result_stores_nothing(node, tasks, redis_server):
    result = tasks.add.apply_async((5, 5), ignore_result=True)
    # The task ran once its child logged it; only then is "no key" meaningful.
    line = f"Task proj.tasks.add[{result.id}] succeeded"
    assert wait_until(GET_TIMEOUT, lambda: line in node.all_logs()), node.all_logs()[-4000:]
    assert redis_server.client(RESULT_DB).exists(f"celery-task-meta-{result.id}") == 0


def test_result_meta_and_expiry(node, tasks, redis_server):
    result = tasks.add.delay(20, 22)
    assert result.get(timeout=GET_TIMEOUT) == 42
    r = redis_server.client(RESULT_DB)
    key = f"celery-task-meta-{result.id}"
    meta = json.loads(r.get(key))
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == 42
    assert meta["task_id"] == result.id
    assert meta["traceback"] is None
    assert meta["children"] == []
    assert meta["date_done"]
    ttl = r.ttl(key)
    assert RESULT_EXPIRES - 60 <= ttl <= RESULT_EXPIRES, f"TTL {ttl}, result_expires {RESULT_EXPIRES}"


def test_log_lines_use_celerys_format(node, tasks):
    result = tasks.add.delay(1, 1)
    assert result.get(timeout=GET_TIMEOUT) == 2
    received = f"Task proj.tasks.add[{result.id}] received"
    succeeded = f"Task proj.tasks.add[{result.id}] succeeded in "
    assert wait_until(5, lambda: received in node.all_logs() and succeeded in node.all_logs()), node.all_logs()[-4000:]
    line = next(ln for ln in node.all_logs().splitlines() if succeeded in ln)
    assert ": INFO/ForkPoolWorker-" in line and line.endswith(": 2"), line
