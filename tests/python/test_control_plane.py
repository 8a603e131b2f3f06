"""An rmulti node on the control plane, driven by the real Celery 5.7 CLI
and client: ``celery inspect ping/active/stats/registered/active_queues``,
``celery status``, ``celery control revoke`` of a countdown task (REVOKED,
never run), ``celery control shutdown``, and a Python event receiver
(``app.events.Receiver``) seeing the node's worker heartbeats; a mixed fleet
(a Celery worker and an rmulti node) answers both CLIs' ping.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import _clean_env, launch_node, stop_node
from helpers import alive, wait_until
from test_control_cli import PYTHON, REFERENCE, World

pytestmark = pytest.mark.timeout(120)


def celery(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = _clean_env()
    env["PYTHONPATH"] = str(REFERENCE)
    return subprocess.run([str(PYTHON), "-m", "celery", "-A", "proj", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ctl_node(rmulti_bin, workdir):
    n = launch_node(rmulti_bin, workdir, "ctl", "-c", "2", "-E")
    yield n
    error = stop_node(n.pid, n.pidfile)
    if error:
        pytest.fail(error)


def node_name(node) -> str:
    import socket
    return f"{node.name}@{socket.gethostname()}"


def test_celery_inspect_ping_and_status(ctl_node, workdir):
    name = node_name(ctl_node)
    run = celery(workdir, "inspect", "ping", "-d", name)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"->  {name}: OK" in run.stdout and "pong" in run.stdout
    run = celery(workdir, "status", "-d", name)
    assert run.returncode == 0 and "1 node online." in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize("command", ["stats", "registered", "active_queues", "active", "revoked", "conf"])
def test_celery_inspect_commands(ctl_node, workdir, command):
    name = node_name(ctl_node)
    run = celery(workdir, "inspect", command, "-d", name, "-j")
    assert run.returncode == 0, run.stdout + run.stderr
    reply = json.loads(run.stdout)[name]
    if command == "stats":
        assert reply["pid"] == ctl_node.pid and isinstance(reply["total"], dict)
        assert reply["pool"]["max-concurrency"] == 2
    if command == "registered":
        assert "proj.tasks.add" in reply
    if command == "active_queues":
        assert {"name", "exclusive", "durable", "routing_key", "no_ack", "alias"} <= set(reply[0])


def test_active_shows_a_running_task(ctl_node, workdir, app):
    name = node_name(ctl_node)
    r = app.send_task("proj.tasks.sleep", (3,))
    def running():
        run = celery(workdir, "inspect", "active", "-d", name, "-j")
        return run.returncode == 0 and r.id in run.stdout
    assert wait_until(20, running)
    assert r.get(timeout=20) is None or r.state == "SUCCESS"


def test_celery_control_revoke_of_a_countdown_task(ctl_node, workdir, app):
    name = node_name(ctl_node)
    r = app.send_task("proj.tasks.add", (2, 2), countdown=3)
    run = celery(workdir, "control", "revoke", r.id, "-d", name)
    assert run.returncode == 0 and "flagged as revoked" in run.stdout, run.stdout + run.stderr
    assert r.state == "REVOKED"
    # Once due (3 s), the child discards it instead of running it.
    discarded = f"Discarding revoked task: proj.tasks.add[{r.id}]"
    assert wait_until(15, lambda: discarded in ctl_node.all_logs()), ctl_node.all_logs()
    assert r.state == "REVOKED"


def test_revoke_by_stamped_headers_from_the_celery_client(ctl_node, app):
    """Canvas stamping as Celery 5.7's client sends it: a task stamped with a
    revoked `monitoring_id` is not run (REVOKED), another stamp runs, and
    with `terminate` a running task stamped so is killed."""
    import uuid

    from celery.canvas import StampingVisitor
    from celery.exceptions import TaskRevokedError

    name = node_name(ctl_node)
    revoked_id, kept_id = uuid.uuid4().hex, uuid.uuid4().hex

    def stamped(sig, monitoring_id):
        class Visitor(StampingVisitor):
            def on_signature(self, sig, **headers):
                return {"monitoring_id": monitoring_id}

        sig.stamp(visitor=Visitor())
        return sig

    reply = app.control.revoke_by_stamped_headers({"monitoring_id": [revoked_id]}, destination=[name],
                                                  reply=True, timeout=5)
    assert reply == [{name: {"ok": f"headers {{'monitoring_id': ['{revoked_id}']}} "
                                   "flagged as revoked, but not terminated"}}], reply
    gone = stamped(app.signature("proj.tasks.add", (1, 1)), revoked_id).apply_async()
    kept = stamped(app.signature("proj.tasks.add", (2, 2)), kept_id).apply_async()
    assert kept.get(timeout=20) == 4
    with pytest.raises(TaskRevokedError):
        gone.get(timeout=20)
    assert gone.state == "REVOKED"
    assert f"(revoked by header: {{'monitoring_id': '{revoked_id}'}})" in ctl_node.all_logs()

    running_id = uuid.uuid4().hex
    long = stamped(app.signature("proj.tasks.sleep", (30,)), running_id).apply_async()
    assert wait_until(20, lambda: any(t["id"] == long.id for t in (app.control.inspect(
        destination=[name], timeout=1).active() or {}).get(name, [])), interval=0.2)
    reply = app.control.revoke_by_stamped_headers({"monitoring_id": running_id}, terminate=True,
                                                  signal="SIGKILL", destination=[name], reply=True, timeout=5)
    assert reply == [{name: {"ok": "headers defaultdict(<class 'set'>, "
                                   f"{{'monitoring_id': {{'{running_id}'}}}}) revoked"}}], reply
    with pytest.raises(TaskRevokedError):
        long.get(timeout=20)
    assert long.state == "REVOKED"


def test_event_receiver_sees_worker_heartbeats(ctl_node, app):
    name = node_name(ctl_node)
    seen: list[dict] = []
    def on_event(event):
        if event.get("hostname") == name:
            seen.append(event)
    with app.connection() as conn:
        recv = app.events.Receiver(conn, handlers={"*": on_event})
        thread = threading.Thread(target=lambda: recv.capture(limit=None, timeout=1, wakeup=True),
                                  daemon=True)
        thread.start()
        wait_until(15, lambda: any(e["type"] == "worker-heartbeat" for e in seen))
        recv.should_stop = True
        thread.join(10)
    kinds = {e["type"] for e in seen}
    assert "worker-heartbeat" in kinds, seen


def test_celery_control_shutdown(rmulti_bin, workdir):
    n = launch_node(rmulti_bin, workdir, "byebye", "-c", "1")
    name = node_name(n)
    celery(workdir, "control", "shutdown", "-d", name)
    assert wait_until(20, lambda: not alive(n.pid)), "node still running after remote shutdown"
    assert not n.pidfile.exists()


def test_mixed_fleet_answers_both_pings(tmp_path, rmulti_bin):
    world = World(tmp_path, rmulti_bin)
    try:
        _, celery_name = world.worker("py")
        n = launch_node(rmulti_bin, world.dir, "rs", "-c", "1")
        try:
            rs_name = node_name(n)
            run = celery(world.dir, "inspect", "ping", "-d", f"{celery_name},{rs_name}")
            assert run.returncode == 0, run.stdout + run.stderr
            assert celery_name in run.stdout and rs_name in run.stdout
            run = subprocess.run([str(rmulti_bin), "inspect", "ping", "-A", "proj", "-d", f"{celery_name},{rs_name}"],
                                 cwd=world.dir, env=_clean_env(), capture_output=True, text=True, timeout=30)
            assert run.returncode == 0, run.stdout + run.stderr
            assert celery_name in run.stdout and rs_name in run.stdout
        finally:
            stop_node(n.pid, n.pidfile)
    finally:
        world.close()
