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
import socket
import sys

import pytest

from demo_helpers import DEMO, wait_until
from helpers import http, running_flower

pytestmark = pytest.mark.timeout(180)

NODE = f"worker1@{socket.gethostname()}"


def get_json(url: str):
    """The decoded body of a 200 answer, else None."""
    status, body = http("GET", url)
    try:
        return json.loads(body) if status == 200 else None
    except ValueError:
        return None


@pytest.fixture
def flower(demo_node, demo_env, demo_tmp):
    with running_flower(sys.executable, "celeryDemo", DEMO, dict(os.environ, **demo_env),
                        demo_tmp / "flower.log") as url:
        yield url


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
