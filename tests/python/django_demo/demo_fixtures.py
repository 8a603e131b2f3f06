"""Fixtures for driving examples/django-demo with rmulti workers (registered
once by tests/python/conftest.py: a second conftest.py would shadow that one,
which test modules import by name, and importing them into each test module
would make one instance per module).

- ``demo_redis``: a private ``redis-server`` on a free port (session scope).
- ``demo_node``: ``rmulti start worker1 -A celeryDemo`` in the example's
  directory with this interpreter as ``--python``, logs and pidfile in a temp
  dir; ``rmulti stopwait`` at teardown (killed if it lingers). The start and
  stop are ``demo_helpers.demo_worker``, which test_page_e2e.py's second
  node uses too.
- ``django_project``: the example's Django settings loaded in this process
  (its own client code is what the tests call), against the same Redis and
  a temp SQLite database migrated for the session.

They do not use tests/python/conftest.py's fixtures (only the plain helpers
of tests/python/helpers.py), so the example can be tested on its own:
``pytest tests/python/django_demo``.
``RMULTI_BIN`` is the binary under test; without it the newer of the repo's
release and debug builds is used.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from demo_helpers import DEMO, demo_worker, start_redis


@pytest.fixture(scope="session")
def demo_redis(tmp_path_factory):
    try:
        server = start_redis(tmp_path_factory.mktemp("demo-redis"))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server.port
    server.stop()


@pytest.fixture(scope="session")
def demo_tmp():
    with tempfile.TemporaryDirectory(prefix="rmulti-django-demo-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def demo_env(demo_redis, demo_tmp):
    """The environment the project's settings read: given to the workers,
    and set in this process only while Django loads them (other tests in
    the same pytest run start nodes of their own from os.environ)."""
    return {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{demo_redis}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{demo_redis}/1",
        "DEMO_DB": str(demo_tmp / "db.sqlite3"),
        "DEMO_WORK_SECONDS": "0.5",
        "DEMO_COUNTDOWN": "0.5",
        "DJANGO_SETTINGS_MODULE": "celeryDemo.settings",
    }


@pytest.fixture(scope="session")
def django_project(demo_env):
    if str(DEMO) not in sys.path:
        sys.path.insert(0, str(DEMO))
    saved = dict(os.environ)
    os.environ.update(demo_env)
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from celeryDemo.celery import app

        # Celery reads CELERY_BROKER_URL from the environment before the
        # settings, and lazily: pin the values while they are visible.
        app.conf.broker_url = demo_env["CELERY_BROKER_URL"]
        app.conf.result_backend = demo_env["CELERY_RESULT_BACKEND"]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return app


@pytest.fixture(scope="session")
def demo_node(django_project, demo_env, demo_tmp):
    """`rmulti start worker1 -A celeryDemo`, as the README says, with its
    pidfile and logs (`worker1.log`, `worker1-N.log`) in `demo_tmp`;
    `rmulti stopwait` at teardown."""
    with demo_worker("worker1", demo_tmp, dict(os.environ, **demo_env)):
        yield demo_tmp
