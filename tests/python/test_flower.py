"""Real Flower (unchanged, from PyPI) watching rmulti nodes running the TOML
app: its HTTP API lists the node with stats (`/api/workers`), shows tasks
with state, runtime and worker (`/api/tasks`, from the node's task events),
exports the `flower_*` Prometheus series (`/metrics`), and its actions —
revoke/terminate, pool grow/shrink, queue add/cancel, worker shutdown — work
on rmulti nodes. One headless-Chromium check shows its dashboard's workers
page with the rmulti node online.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from conftest import _clean_env, launch_node
from helpers import alive, http, running_flower, stop_node, wait_until
from test_control_cli import PYTHON, REFERENCE

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"


def hostname(node) -> str:
    return f"{node.name}@{socket.gethostname()}"


@pytest.fixture(scope="module")
def fl_node(rmulti_bin, workdir):
    n = launch_node(rmulti_bin, workdir, "flw", "-c", "2", "-E", "-Q", "flq")
    yield n
    if alive(n.pid):
        error = stop_node(n.pid, n.pidfile)
        if error:
            pytest.fail(error)


@pytest.fixture(scope="module")
def flower(fl_node, workdir):
    """`celery -A proj flower` on a free port of 127.0.0.1; yields its URL."""
    env = dict(_clean_env(), PYTHONPATH=str(REFERENCE))
    with running_flower(PYTHON, "proj", workdir, env, workdir / "flower.log") as url:
        yield url


def workers(url: str) -> dict:
    status, body = http("GET", url + "/api/workers?refresh=1")
    return json.loads(body) if status == 200 else {}


def test_api_workers_lists_the_node_with_stats(fl_node, flower):
    name = hostname(fl_node)
    assert wait_until(30, lambda: name in workers(flower), interval=0.5)
    info = workers(flower)[name]
    assert info["stats"]["pid"] == fl_node.pid
    assert info["stats"]["pool"]["max-concurrency"] == 2
    assert "proj.tasks.add" in info["registered"]
    assert [q["name"] for q in info["active_queues"]] == ["flq"]


def test_api_tasks_shows_state_runtime_and_worker(fl_node, flower, app):
    name = hostname(fl_node)
    ids = [app.send_task("proj.tasks.add", (i, i), queue="flq").id for i in range(5)]
    for i in ids:
        app.AsyncResult(i).get(timeout=20)

    def tasks():
        status, body = http("GET", flower + "/api/tasks")
        return json.loads(body) if status == 200 else {}

    assert wait_until(20, lambda: all(tasks().get(i, {}).get("state") == "SUCCESS" for i in ids),
                      interval=0.5), tasks()
    t = tasks()[ids[0]]
    assert t["worker"] == name and t["name"] == "proj.tasks.add"
    assert isinstance(t["runtime"], float) and t["result"] == "0"
    status, body = http("GET", flower + "/metrics")
    assert status == 200
    series = {line.split("{")[0].split(" ")[0] for line in body.splitlines()
              if line.startswith("flower_")}
    assert {"flower_events_total", "flower_worker_online", "flower_task_runtime_seconds_sum"} <= series, series
    assert f'flower_worker_online{{worker="{name}"}} 1.0' in body


def test_revoke_with_terminate_from_flower(fl_node, flower, app):
    name = hostname(fl_node)
    assert wait_until(30, lambda: name in workers(flower), interval=0.5)
    r = app.send_task("proj.tasks.sleep", (30,), queue="flq")
    assert wait_until(10, lambda: r.state == "STARTED" or r.id in http("GET", flower + "/api/tasks")[1],
                      interval=0.2)
    # The node knows it runs it (so the revoke terminates it) once
    # `inspect active` lists it.
    assert wait_until(10, lambda: any(t["id"] == r.id for t in (app.control.inspect(
        destination=[name], timeout=1).active() or {}).get(name, [])), interval=0.2)
    status, body = http("POST", f"{flower}/api/task/revoke/{r.id}?terminate=true")
    assert status == 200 and "Revoked" in body, body
    assert wait_until(15, lambda: r.state == "REVOKED", interval=0.2), r.state

    def flower_state():
        status, body = http("GET", f"{flower}/api/task/info/{r.id}")
        return json.loads(body).get("state") if status == 200 else None

    # From the node's task-revoked (terminated) event.
    assert wait_until(10, lambda: flower_state() == "REVOKED", interval=0.3), flower_state()


def test_pool_and_queue_actions_from_flower(fl_node, flower):
    name = hostname(fl_node)
    assert wait_until(30, lambda: name in workers(flower), interval=0.5)
    q = urllib.parse.quote(name)
    status, body = http("POST", f"{flower}/api/worker/pool/grow/{q}?n=1")
    assert status == 200, body
    assert wait_until(10, lambda: workers(flower)[name]["stats"]["pool"]["max-concurrency"] == 3, interval=0.5)
    status, body = http("POST", f"{flower}/api/worker/pool/shrink/{q}?n=1")
    assert status == 200, body
    assert wait_until(10, lambda: workers(flower)[name]["stats"]["pool"]["max-concurrency"] == 2, interval=0.5)
    status, body = http("POST", f"{flower}/api/worker/queue/add-consumer/{q}?queue=extra")
    assert status == 200, body
    assert wait_until(10, lambda: "extra" in [x["name"] for x in workers(flower)[name]["active_queues"]],
                      interval=0.5)
    status, body = http("POST", f"{flower}/api/worker/queue/cancel-consumer/{q}?queue=extra")
    assert status == 200, body
    assert wait_until(10, lambda: "extra" not in [x["name"] for x in workers(flower)[name]["active_queues"]],
                      interval=0.5)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_dashboard_shows_the_node_online_in_chromium(fl_node, flower):
    name = hostname(fl_node)
    assert wait_until(30, lambda: name in workers(flower), interval=0.5)
    profile = tempfile.mkdtemp(prefix="flower-chromium-")
    try:
        run = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", flower + "/workers"],
            capture_output=True, text=True, timeout=90,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = run.stdout
    assert name in dom, dom[-3000:] + run.stderr[-2000:]
    assert "Online" in dom, dom[-3000:]


def test_worker_shutdown_from_flower(fl_node, flower):
    """Last: the node is gone afterwards."""
    name = hostname(fl_node)
    assert wait_until(30, lambda: name in workers(flower), interval=0.5)
    status, body = http("POST", f"{flower}/api/worker/shutdown/{urllib.parse.quote(name)}")
    assert status == 200, body
    assert wait_until(20, lambda: not alive(fl_node.pid)), "node still running after Flower's shutdown"
    assert not fl_node.pidfile.exists()
