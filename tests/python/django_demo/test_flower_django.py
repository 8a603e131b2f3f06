"""Real Flower watching an rmulti node that runs the Django example
(`rmulti start worker1 -A celeryDemo`, started without `-E`): Flower lists
the node with its stats and the project's tasks (`/api/workers`), switches
its task events on by itself (`enable_events`, as it does for Celery
workers) and then shows the project's tasks with state, worker and runtime
(`/api/tasks`). Flower is started the way a Django user starts it,
`celery -A celeryDemo flower`, in the project's directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from demo_helpers import DEMO, free_port, wait_until

pytestmark = pytest.mark.timeout(180)

NODE = f"worker1@{socket.gethostname()}"


def get_json(url: str):
    """The decoded body of a 200 answer, else None."""
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return json.loads(r.read().decode()) if r.status == 200 else None
    except (OSError, ValueError):
        return None


@pytest.fixture
def flower(demo_node, demo_env, demo_tmp):
    env = dict(os.environ, **demo_env)
    # Flower 2 refuses its API without auth unless told otherwise.
    env["FLOWER_UNAUTHENTICATED_API"] = "true"
    port = free_port()
    with open(demo_tmp / "flower.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celeryDemo", "flower", "--address=127.0.0.1", f"--port={port}"],
            cwd=DEMO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        up = wait_until(30, lambda: proc.poll() is not None or get_json(url + "/api/workers") is not None,
                        interval=0.2)
        if not up or proc.poll() is not None:
            pytest.fail("flower did not start:\n" + (demo_tmp / "flower.log").read_text(errors="replace")[-3000:])
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_flower_lists_the_django_node_and_its_tasks(flower, demo_tmp):
    from demo import tasks

    def workers():
        return get_json(flower + "/api/workers?refresh=1") or {}

    assert wait_until(30, lambda: NODE in workers(), interval=0.5), workers()
    info = workers()[NODE]
    assert info["stats"]["pid"] == int((demo_tmp / "worker1.pid").read_text().strip())
    assert info["stats"]["pool"]["max-concurrency"] == 2
    assert {"demo.tasks.add", "demo.tasks.double_a_integer"} <= set(info["registered"]), info["registered"]

    # The node runs without -E: a task shows in Flower once Flower's own
    # enable_events reached it, so send until one does (each is a fresh id).
    sent = []

    def one_shown():
        sent.append(tasks.add.delay(len(sent), 1))
        sent[-1].get(timeout=20)
        shown = get_json(flower + "/api/tasks") or {}
        return next((shown[r.id] for r in sent if shown.get(r.id, {}).get("state") == "SUCCESS"), None)

    task = wait_until(60, one_shown, interval=0.5)
    assert task, get_json(flower + "/api/tasks")
    assert task["name"] == "demo.tasks.add" and task["worker"] == NODE, task
    assert isinstance(task["runtime"], float), task
