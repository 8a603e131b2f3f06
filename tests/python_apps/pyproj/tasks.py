"""Tasks that exercise what a Celery worker gives a task."""

import datetime
import decimal
import logging
import os
import time
import uuid

from celery import shared_task, signals
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from .celery import app

logger = get_task_logger(__name__)
SIGNALS_FILE = os.environ.get("PYPROJ_SIGNALS_FILE")


class MyError(Exception):
    pass


@app.task
def add(x, y):
    return x + y


@shared_task
def div(x, y):
    return x / y


@app.task
def fail_custom():
    raise MyError("custom", 42)


@app.task
def rich():
    return {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 1, 2),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "price": decimal.Decimal("1.10"),
        "tuple": (1, 2),
    }


@app.task
def echo_time(when):
    # kombu decodes datetimes in arguments back to datetime objects.
    return {"type": type(when).__name__, "iso": when.isoformat() if hasattr(when, "isoformat") else when}


@app.task(bind=True)
def whoami(self, *args, **kwargs):
    r = self.request
    return {
        "id": r.id,
        "retries": r.retries,
        "args": list(r.args),
        "kwargs": r.kwargs,
        "delivery_info": r.delivery_info,
        "hostname": r.hostname,
        "is_eager": r.is_eager,
        "correlation_id": r.correlation_id,
        "root_id": r.root_id,
    }


@app.task(bind=True, max_retries=5)
def flaky(self, succeed_on):
    if self.request.retries + 1 < succeed_on:
        raise self.retry(exc=KeyError("try again"), countdown=0.1)
    return "ok after %d" % (self.request.retries + 1)


@app.task(bind=True, max_retries=5)
def counted_retry(self, tries):
    """Counts its tries on the task object, as Celery's own integration
    test (`retry`) does: they add up only if every retry runs in the
    process of the try before."""
    seen = getattr(self, "seen", 0) + 1
    if seen < tries:
        self.seen = seen
        raise self.retry(exc=KeyError("again"), countdown=0.3)
    self.seen = 0
    return [seen, os.getpid()]


@app.task(bind=True, max_retries=1)
def always_retry(self):
    raise self.retry(exc=ValueError("nope"), countdown=0.1)


@app.task
def ignored():
    raise Ignore()


@app.task(acks_late=True)
def rejected(requeue, marker):
    # Rejects its first delivery; a requeued message runs again and succeeds.
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise Reject("no thanks", requeue=requeue)
    return "second delivery"


@app.task(bind=True)
def retry_later(self):
    raise self.retry(exc=KeyError("try again"), countdown=600)


@app.task
def crash_leaving_a_child():
    # The forked child keeps every fd of the host (fd 3 included) for a while.
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    os._exit(5)


@app.task
def crash_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "survived"


@app.task(bind=True)
def progress(self, steps):
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"current": i + 1, "total": steps})
        time.sleep(0.3)
    return steps


@app.task(soft_time_limit=0.5)
def soft_limited(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "caught soft limit"
    return "finished"


@app.task
def soft_uncaught(seconds):
    time.sleep(seconds)
    return "finished"


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task
def noisy(text):
    print(text)
    print("second line")
    logger.warning("task logger says %s", text)
    logging.getLogger("pyproj.plain").error("plain logger says %s", text)
    return text


@app.task
def crash(how):
    if how == "exit":
        os._exit(3)
    if how == "kill":
        os.kill(os.getpid(), 9)
    if how == "segv":
        import ctypes

        ctypes.string_at(0)
    return "no crash"


@app.task
def pid():
    return os.getpid()


@app.task(ignore_result=True)
def quiet():
    return "not stored"


@app.task
def unserializable():
    return object()


@app.task
def spawn_add(x, y):
    # Subtasks are published by the host with the app's own producer.
    return add.delay(x, y).id


def _record(name, **kw):
    if SIGNALS_FILE:
        with open(SIGNALS_FILE, "a") as f:
            f.write("%s %d %s\n" % (name, os.getpid(), kw.get("task_id", "")))


@signals.worker_process_init.connect
def _wpi(**kw):
    _record("worker_process_init")


@signals.worker_init.connect
def _wi(**kw):
    _record("worker_init")


@signals.task_prerun.connect
def _pre(task_id=None, **kw):
    _record("task_prerun", task_id=task_id)


@signals.task_postrun.connect
def _post(task_id=None, **kw):
    _record("task_postrun", task_id=task_id)


@signals.task_success.connect
def _succ(sender=None, **kw):
    _record("task_success", task_id=sender.request.id)


@signals.task_failure.connect
def _fail(task_id=None, **kw):
    _record("task_failure", task_id=task_id)


@app.task
def tsum(values):
    # A chord's body: the header's results, in order.
    return sum(values)
