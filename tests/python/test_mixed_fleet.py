"""A mixed fleet: rmulti nodes and real Celery 5.7 workers on one Redis and
one queue recover each other's messages when one of them is SIGKILLed.

Both keep a reserved message in kombu's ``unacked`` hash and
``unacked_index`` (score = when it was reserved) until it is acked, and both
run kombu's visibility-timeout sweep under ``unacked_mutex``: an entry older
than ``visibility_timeout`` belongs to a dead consumer and goes back to its
queue. The app acks late (``task_acks_late``): under early ack a started
task is acked before it runs, and its loss is recorded (WorkerLostError),
never re-run, by rmulti and Celery alike.

When each side sweeps (so the tests wait on results, never on sleeps):
- a Celery worker (kombu/transport/redis.py, ``QoS.restore_visible``) scans
  when its event loop starts, then every ``unacked_restore_interval`` s
  (10), but only on every ``unacked_restore_throttle``-th tick (10). The
  reference app (``reference/proj.py``) sets both to 1 when asked, so the
  recovering Celery worker scans every second;
- an rmulti node (src/broker/sweep.rs) scans once at start, then every 100 s.

A sweeper holds ``unacked_mutex`` (300 s expiry, kombu's) while it scans; one
killed in the middle of a scan blocks every sweep for five minutes. So the
Celery worker that is killed here keeps kombu's default cadence: it scanned
at start, seconds before it is killed, and not since.

Each test has its own Redis, app file and processes, killed at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from celery.exceptions import TimeoutError

from conftest import APP_TOML, BROKER_DB, REPO, RESULT_DB, _clean_env, launch_node, make_app
from helpers import alive, descendants, kill_tree, read_text, start_redis, wait_until

VISIBILITY_TIMEOUT = 2
# Long enough that the kill lands while it runs; short, since it runs twice.
SLEEP = 3
RECOVERY_TIMEOUT = 20

FLEET_SETTINGS = f"""\
task_acks_late = true
task_track_started = true

[broker_transport_options]
visibility_timeout = {VISIBILITY_TIMEOUT}
"""

CELERY_WORKER = REPO / "tests" / "python" / "reference" / "rmulti-celery"


class Fleet:
    """One Redis, one app file, and every process the test started."""

    def __init__(self, base: Path, rmulti_bin: Path):
        self.redis = start_redis(base)
        self.dir = base / "work"
        self.dir.mkdir()
        (self.dir / "proj.toml").write_text(
            APP_TOML.format(
                broker=self.redis.url(BROKER_DB),
                backend=self.redis.url(RESULT_DB),
                expires=3600,
                extra=FLEET_SETTINGS,
            )
        )
        self.rmulti_bin = rmulti_bin
        self.broker = self.redis.client(BROKER_DB)
        self.backend = self.redis.client(RESULT_DB)
        self.app = make_app(self.redis)
        # (pid, start time): a killed node's pid may be reused by then.
        self.nodes: list[tuple[int, str | None]] = []
        self.celery: list[subprocess.Popen] = []

    def rmulti_node(self, name: str, *extra: str):
        node = launch_node(self.rmulti_bin, self.dir, name, *extra)
        self.nodes.append((node.pid, start_time(node.pid)))
        return node

    def celery_worker(self, name: str, *extra: str, restore_every_second=False) -> subprocess.Popen:
        """A real ``celery worker`` on the reference app, in the foreground."""
        env = _clean_env()
        if restore_every_second:
            env["RMULTI_REFERENCE_RESTORE_EVERY_SECOND"] = "1"
        with open(self.dir / f"{name}.stderr", "wb") as stderr:
            proc = subprocess.Popen(
                [str(CELERY_WORKER), "worker", "-A", "proj", "-n", f"{name}@%h", "-l", "info",
                 f"--logfile={self.dir / name}.log", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", *extra],
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        self.celery.append(proc)
        return proc

    def result(self, async_result, timeout: float = RECOVERY_TIMEOUT):
        """The task's result, or a failure that shows the fleet's state."""
        try:
            return async_result.get(timeout=timeout)
        except TimeoutError as e:
            pytest.fail(f"no result for {async_result.id} in {timeout}s ({e!r}):\n{self.state()}")

    def state(self) -> str:
        b = self.broker
        return (
            f"unacked {b.hgetall('unacked')}\nunacked_index {b.zrange('unacked_index', 0, -1, withscores=True)}"
            f" (now {time.time()})\nunacked_mutex {b.get('unacked_mutex')} ttl {b.ttl('unacked_mutex')}\n"
            f"keys {b.keys('*')}\ncelery {b.lrange('celery', 0, -1)}\n{self.logs()}"
        )

    def meta(self, task_id: str):
        raw = self.backend.get(f"celery-task-meta-{task_id}")
        return json.loads(raw) if raw else None

    def status(self, task_id: str):
        meta = self.meta(task_id)
        return meta and meta["status"]

    def unacked(self) -> dict[str, str]:
        """kombu's ``unacked``: delivery tag -> task id of the envelope."""
        out = {}
        for tag, entry in self.broker.hgetall("unacked").items():
            envelope = json.loads(entry)[0]
            out[tag.decode()] = envelope["headers"]["id"]
        return out

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{read_text(p)[-6000:]}"
            for p in sorted(self.dir.iterdir())
            if p.suffix in (".log", ".stderr")
        )

    def close(self):
        for proc in self.celery:
            if proc.poll() is None:  # not reaped: the pid is still its own
                kill_tree(proc.pid)
                proc.wait(timeout=10)
        for pid, started in self.nodes:
            if alive(pid) and start_time(pid) == started:
                kill_tree(pid)
        self.app.close()
        self.redis.stop()


@pytest.fixture
def fleet(tmp_path, rmulti_bin):
    f = Fleet(tmp_path, rmulti_bin)
    yield f
    f.close()


def start_time(pid: int) -> str | None:
    """When ``pid`` started (field 22 of /proc/<pid>/stat): with the pid, it
    names one process, not whichever has the pid now."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def sigkill_tree(pid: int) -> list[int]:
    """SIGKILLs a worker's main process and its pool at once (a node lost
    with its machine, an OOM kill of the group); returns the pids."""
    victims = [pid, *descendants(pid)]
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert wait_until(5, lambda: not any(alive(p) for p in victims)), victims
    return victims


def test_a_celery_worker_recovers_a_message_of_a_killed_rmulti_node(fleet):
    node = fleet.rmulti_node("w1", "-c", "1")
    sleep = fleet.app.tasks["proj.tasks.sleep"]
    result = sleep.delay(SLEEP)

    # Running in the rmulti child, reserved in kombu's unacked (late ack).
    assert wait_until(10, lambda: fleet.status(result.id) == "STARTED"), fleet.logs()
    assert list(fleet.unacked().values()) == [result.id]
    sigkill_tree(node.pid)
    assert list(fleet.unacked().values()) == [result.id], "the kill lost the message"

    # A Celery worker joins and, past the visibility timeout, restores and runs it.
    fleet.celery_worker("py1", "-c", "1", restore_every_second=True)
    assert fleet.result(result) == SLEEP
    assert f"Task proj.tasks.sleep[{result.id}] received" in read_text(fleet.dir / "py1.log")
    assert f"proj.tasks.sleep[{result.id}] succeeded" not in node.all_logs()
    assert wait_until(5, lambda: not fleet.unacked()), fleet.unacked()

    # The killed node's held copy of the message is still in Redis (rmulti's
    # own list; the reference Celery has none). Started again (on another
    # queue, so a wrongly requeued copy would stay visible), the node drops
    # it: the message went back through the sweep already.
    for proc in fleet.celery:
        kill_tree(proc.pid)
    if fleet.rmulti_bin.name != CELERY_WORKER.name:
        held = f"rmulti.held.{node.name}@"
        assert [k for k in fleet.broker.keys("rmulti.held.*") if k.decode().startswith(held)]
    fleet.rmulti_node("w1", "-c", "1", "-Q", "other")
    assert fleet.broker.keys("rmulti.held.*") == []
    assert fleet.broker.llen("celery") == 0, "run twice: the held copy was requeued"
    assert fleet.status(result.id) == "SUCCESS"


def test_an_rmulti_node_recovers_messages_of_a_killed_celery_worker(fleet):
    sleep = fleet.app.tasks["proj.tasks.sleep"]
    add = fleet.app.tasks["proj.tasks.add"]
    worker = fleet.celery_worker("py1", "-c", "1")

    # One task running in the pool, one prefetched behind it: both reserved
    # in kombu's unacked, neither acked (late ack).
    running = sleep.delay(SLEEP)
    assert wait_until(15, lambda: fleet.status(running.id) == "STARTED"), fleet.logs()
    waiting = add.delay(2, 3)
    assert wait_until(5, lambda: sorted(fleet.unacked().values()) == sorted([running.id, waiting.id])), (
        fleet.unacked(), fleet.logs())
    assert fleet.broker.get("unacked_mutex") is None
    sigkill_tree(worker.pid)
    worker.wait(timeout=10)
    assert sorted(fleet.unacked().values()) == sorted([running.id, waiting.id]), "the kill lost a message"

    # An rmulti node sweeps once at start: start it once both entries are
    # past the visibility timeout (reserved longer ago than that).
    def expired() -> bool:
        scores = [s for _, s in fleet.broker.zrange("unacked_index", 0, -1, withscores=True)]
        return len(scores) == 2 and max(scores) + VISIBILITY_TIMEOUT < time.time()

    assert wait_until(VISIBILITY_TIMEOUT + 5, expired)
    node = fleet.rmulti_node("w1", "-c", "2")
    assert fleet.result(waiting) == 5
    assert fleet.result(running) == SLEEP
    for task in (running, waiting):
        assert f"[{task.id}] received" in node.all_logs()
    assert wait_until(5, lambda: not fleet.unacked()), fleet.unacked()
    assert fleet.broker.llen("celery") == 0
