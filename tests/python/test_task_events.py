"""Task events from rmulti nodes as Celery 5.7's own event consumers see
them: a Python ``app.events.Receiver`` gets task-received / -started /
-succeeded / -failed with the fields Flower reads (name, args, result,
runtime, exception, traceback), a long task shows STARTED while it runs,
``enable_events``/``disable_events`` switch a node without ``-E`` at
runtime, and ``celery events --dump`` prints them.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from contextlib import contextmanager

import pytest

from conftest import BROKER_DB, _clean_env, launch_node, stop_node
from helpers import wait_until
from test_control_cli import PYTHON, REFERENCE

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ev_node(rmulti_bin, workdir):
    n = launch_node(rmulti_bin, workdir, "evt", "-c", "2", "-E", "-Q", "evq")
    yield n
    error = stop_node(n.pid, n.pidfile)
    if error:
        pytest.fail(error)


def hostname(node) -> str:
    return f"{node.name}@{socket.gethostname()}"


@contextmanager
def receiver(app, name: str, redis_server):
    """Collects the task events of node `name` while the block runs; the
    block starts once the receiver's PSUBSCRIBE is on (Redis counts one
    more pattern: the nodes' own are on the pidbox, not `celeryev`)."""
    seen: list[dict] = []
    broker = redis_server.client(BROKER_DB)
    patterns = broker.pubsub_numpat()

    def on_event(event):
        if event.get("hostname") == name and event["type"].startswith("task-"):
            seen.append(event)

    with app.connection() as conn:
        recv = app.events.Receiver(conn, handlers={"*": on_event})
        thread = threading.Thread(target=lambda: recv.capture(limit=None, timeout=None, wakeup=False),
                                  daemon=True)
        thread.start()
        assert wait_until(10, lambda: broker.pubsub_numpat() > patterns), "the receiver did not subscribe"
        try:
            yield seen
        finally:
            recv.should_stop = True
            thread.join(10)


def of(seen, task_id, kind):
    return [e for e in seen if e.get("uuid") == task_id and e["type"] == kind]


def test_a_receiver_sees_received_started_succeeded_and_failed(ev_node, app, redis_server):
    name = hostname(ev_node)
    with receiver(app, name, redis_server) as seen:
        ok = app.send_task("proj.tasks.add", (20, 22), queue="evq")
        bad = app.send_task("proj.tasks.fail", ("boom",), queue="evq")
        assert ok.get(timeout=20) == 42
        with pytest.raises(Exception):
            bad.get(timeout=20)
        assert wait_until(10, lambda: of(seen, ok.id, "task-succeeded") and of(seen, bad.id, "task-failed"))
    received = of(seen, ok.id, "task-received")[0]
    assert received["name"] == "proj.tasks.add"
    assert received["args"] == "(20, 22)" and received["kwargs"] == "{}"
    assert received["retries"] == 0 and received["eta"] is None
    assert of(seen, ok.id, "task-started")
    done = of(seen, ok.id, "task-succeeded")[0]
    assert done["result"] == "42"
    assert isinstance(done["runtime"], float) and 0 <= done["runtime"] < 5
    assert received["clock"] < done["clock"]
    failed = of(seen, bad.id, "task-failed")[0]
    assert "boom" in failed["exception"] and isinstance(failed["traceback"], str)
    for e in seen:
        assert {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"} <= set(e)


def test_a_long_task_shows_started_while_it_runs(ev_node, app, redis_server):
    name = hostname(ev_node)
    with receiver(app, name, redis_server) as seen:
        r = app.send_task("proj.tasks.sleep", (4,), queue="evq")
        assert wait_until(3, lambda: of(seen, r.id, "task-started")), seen
        assert not of(seen, r.id, "task-succeeded")
        r.get(timeout=20)
        assert wait_until(5, lambda: of(seen, r.id, "task-succeeded"))


def test_enable_and_disable_events_switch_a_node_at_runtime(rmulti_bin, workdir, app, redis_server):
    n = launch_node(rmulti_bin, workdir, "quiet", "-c", "1", "-Q", "quietq")
    name = hostname(n)
    try:
        with receiver(app, name, redis_server) as seen:
            quiet = app.send_task("proj.tasks.add", (1, 1), queue="quietq")
            quiet.get(timeout=20)
            assert app.control.enable_events(destination=[name], reply=True, timeout=5)
            # The child learns it at its next reservation.
            r = app.send_task("proj.tasks.add", (2, 2), queue="quietq")
            r.get(timeout=20)
            assert wait_until(5, lambda: of(seen, r.id, "task-succeeded")), seen
            # One child (-c 1) publishes its events in order: whatever the
            # first task sent would have come before these.
            assert [e for e in seen if e["uuid"] == quiet.id] == [], "events sent without -E"
            assert app.control.disable_events(destination=[name], reply=True, timeout=5)
            off = app.send_task("proj.tasks.add", (3, 3), queue="quietq")
            off.get(timeout=20)
            # On again: the next task's events bound the silence of `off`'s.
            assert app.control.enable_events(destination=[name], reply=True, timeout=5)
            last = app.send_task("proj.tasks.add", (4, 4), queue="quietq")
            last.get(timeout=20)
            assert wait_until(5, lambda: of(seen, last.id, "task-succeeded")), seen
            assert [e for e in seen if e["uuid"] == off.id] == [], "events sent after disable_events"
    finally:
        error = stop_node(n.pid, n.pidfile)
        if error:
            pytest.fail(error)


def test_celery_events_dump_prints_task_events(ev_node, app, workdir):
    name = hostname(ev_node)
    env = _clean_env()
    env["PYTHONPATH"] = str(REFERENCE)
    dump = subprocess.Popen([str(PYTHON), "-m", "celery", "-A", "proj", "events", "--dump"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The dumper flushes each line; a thread collects them as they come.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(dump.stdout.readline, "")), daemon=True)
    reader.start()

    def printed(*words):
        return any(all(w in line for w in words) for line in list(lines))

    try:
        # Subscribed once it prints the node's heartbeat (every 2 s).
        assert wait_until(30, lambda: printed(name, "heartbeat"), interval=0.1), "".join(lines)[-3000:]
        r = app.send_task("proj.tasks.add", (5, 6), queue="evq")
        assert r.get(timeout=20) == 11
        assert wait_until(10, lambda: printed(r.id, "succeeded"), interval=0.1), "".join(lines)[-3000:]
    finally:
        dump.terminate()
        dump.wait(timeout=20)
        reader.join(10)
    text = "\n".join(line for line in lines if r.id in line)
    assert f"{name} [" in text and "task received" in text, text
    assert "succeeded" in text, text


def test_inspect_scheduled_lists_the_nodes_parked_eta_messages(ev_node, app, workdir):
    """Not an event, but the same node: `celery inspect scheduled` lists a
    countdown task this node parked in Redis, and no longer once it ran."""
    import json
    name = hostname(ev_node)
    env = _clean_env()
    env["PYTHONPATH"] = str(REFERENCE)

    def scheduled():
        run = subprocess.run([str(PYTHON), "-m", "celery", "-A", "proj", "inspect", "scheduled", "-d", name, "-j"],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout)[name]

    r = app.send_task("proj.tasks.add", (4, 4), queue="evq", countdown=4)
    assert wait_until(3, lambda: "parked in" in ev_node.all_logs() and r.id in ev_node.all_logs())
    entries = scheduled()
    mine = [e for e in entries if e["request"]["id"] == r.id]
    assert mine, entries
    assert mine[0]["eta"] and mine[0]["request"]["args"] == [4, 4]
    assert mine[0]["request"]["hostname"] == name
    assert r.get(timeout=20) == 8
    assert all(e["request"]["id"] != r.id for e in scheduled())


def test_worker_send_task_events_setting_is_minus_e(rmulti_bin, workdir, app, redis_server):
    n = launch_node(rmulti_bin, workdir, "setev", "-c", "1", "-Q", "setevq", "--",
                    "worker_send_task_events=true")
    name = hostname(n)
    try:
        with receiver(app, name, redis_server) as seen:
            r = app.send_task("proj.tasks.add", (1, 2), queue="setevq")
            assert r.get(timeout=20) == 3
            assert wait_until(5, lambda: of(seen, r.id, "task-succeeded")), seen
    finally:
        error = stop_node(n.pid, n.pidfile)
        if error:
            pytest.fail(error)
