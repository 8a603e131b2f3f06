"""The reference: the same app as rmulti's test proj.toml, as a real Celery
project, so the interop tests can be run against Celery itself
(``RMULTI_BIN=tests/python/reference/rmulti-celery``). A test that fails
there tests something Celery does not do.

Broker, backend and the settings below come from ``proj.toml`` in the
working directory, the file the tests write for rmulti.
"""

import os
import time
import tomllib
from pathlib import Path

from celery import Celery

_conf = tomllib.loads(Path(os.environ.get("RMULTI_REFERENCE_APP", "proj.toml")).read_text())

app = Celery("proj", broker=_conf["broker_url"], backend=_conf["result_backend"])
app.conf.result_expires = _conf.get("result_expires", 86400)
app.conf.task_default_queue = _conf.get("task_default_queue", "celery")
for _key in ("task_acks_late", "task_reject_on_worker_lost", "task_track_started"):
    app.conf[_key] = _conf.get(_key, False)
app.conf.broker_transport_options = dict(_conf.get("broker_transport_options", {}))
if os.environ.get("RMULTI_REFERENCE_RESTORE_EVERY_SECOND"):
    # kombu scans for messages past their visibility timeout when the worker
    # starts, then only on every 10th tick of 10 s; a test that wants a
    # Celery worker to recover them within seconds asks for a scan a second.
    app.conf.broker_transport_options.update(
        unacked_restore_interval=1, unacked_restore_throttle=1
    )


@app.task(name="proj.tasks.add")
def add(x, y):
    return x + y


@app.task(name="proj.tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="proj.tasks.xsum")
def xsum(numbers):
    return sum(numbers)


@app.task(name="proj.tasks.noop")
def noop(*args, **kwargs):
    return None


@app.task(name="proj.tasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="proj.tasks.echo")
def echo(value):
    return value


@app.task(name="proj.tasks.fail")
def fail(message):
    raise ValueError(message)
