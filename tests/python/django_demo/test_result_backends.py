"""Any result backend the app configures works through rmulti's hosts
(issue 12): the celeryDemo example with django-celery-results
(`CELERY_RESULT_BACKEND = "django-db"`, celeryDemo.settings_django_db),
SQLAlchemy (`db+sqlite:///...`) and Redis on another server than the
broker. For each, the project's own client (backend_client.py) reads
through that backend, exactly as under Celery: a result, a task's failure,
a killed host's WorkerLostError, a hard time limit, a revoked id and a
terminated task — the last four decided by rmulti's Rust processes and
stored through the app's backend — and a group and a chord. Nothing lands on the broker's Redis when
the backend is not Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo_helpers import DEMO, demo_worker, start_redis

BACKENDS = ["django-db", "sqlalchemy", "redis-elsewhere"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend_node(request, tmp_path_factory):
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"backend-{kind}")
    servers = [start_redis(tmp)]
    broker = f"redis://127.0.0.1:{servers[0].port}/0"
    env = dict(os.environ, CELERY_BROKER_URL=broker, DEMO_DB=str(tmp / "db.sqlite3"),
               DEMO_WORK_SECONDS="0.1", DEMO_COUNTDOWN="0.1",
               DJANGO_SETTINGS_MODULE="celeryDemo.settings")
    env.pop("CELERY_RESULT_BACKEND", None)
    if kind == "django-db":
        env["DJANGO_SETTINGS_MODULE"] = "celeryDemo.settings_django_db"
    elif kind == "sqlalchemy":
        env["CELERY_RESULT_BACKEND"] = f"db+sqlite:///{tmp}/results.sqlite3"
    else:
        servers.append(start_redis(tmp))
        env["CELERY_RESULT_BACKEND"] = f"redis://127.0.0.1:{servers[1].port}/3"
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=DEMO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    try:
        with demo_worker("worker1", tmp, env):
            yield kind, env, servers, tmp
    finally:
        for s in servers:
            s.stop()


def test_results_failures_and_lost_tasks_reach_the_apps_backend(backend_node):
    kind, env, servers, tmp = backend_node
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("backend_client.py"))],
                         cwd=DEMO, env=env, capture_output=True, text=True, timeout=240)
    logs = "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("worker1*.log")))
    assert run.returncode == 0, run.stderr[-3000:] + logs[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    expected_backend = {"django-db": "DatabaseBackend", "sqlalchemy": "DatabaseBackend",
                        "redis-elsewhere": "RedisBackend"}[kind]
    assert seen["backend"] == expected_backend
    assert seen["add"] == {"value": 5}
    assert seen["div"]["error"] == "ZeroDivisionError" and seen["div"]["state"] == "FAILURE"
    for problem in ("cannot store the outcome", "Cannot hand", "did not take"):
        assert problem not in logs, logs[-4000:]
    assert seen["killed_host"]["error"] == "WorkerLostError", seen
    assert "signal 9 (SIGKILL)" in seen["killed_host"]["text"]
    assert seen["time_limit"]["error"] == "TimeLimitExceeded", seen
    assert seen["revoked"]["error"] == "TaskRevokedError" and seen["revoked"]["state"] == "REVOKED", seen
    assert seen["terminate_seen_running"]
    assert seen["terminated"]["error"] == "TaskRevokedError", seen
    assert "terminated" in seen["terminated"]["text"]
    assert seen["after"] == {"value": 42}
    assert seen["group"] == {"value": [0, 2, 4]}, seen
    assert seen["chord"] == {"value": 6}, seen
    # The Rust side stored nothing of its own next to the broker.
    if kind != "redis-elsewhere":
        keys = subprocess.run(["redis-cli", "-p", str(servers[0].port), "-n", "0", "--scan",
                               "--pattern", "celery-task-meta-*"], capture_output=True, text=True)
        assert keys.stdout.strip() == "", keys.stdout
