"""The demo's tasks, found by `app.autodiscover_tasks()`.

`add`, `mul`, `xsum` and `double_a_integer` are the original demo's. The
rest show, for tests/python/django_demo, what a task gets from a worker
(retries, soft time limits, the ORM, its own request) and what happens when
its process dies.
"""
import os
import signal
import time
from datetime import datetime, timedelta, timezone

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings

UTC_PLUS_8 = timezone(timedelta(hours=8))

# How many times worker_process_init ran in this process: once per pool
# process (a Celery pool child, an rmulti host).
process_inits = 0


@worker_process_init.connect
def count_process_init(**kwargs):
    global process_inits
    process_inits += 1


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task
def double_a_integer(n, event_time):
    """The page's "slow" job: doubles `n`, saying when it was asked for
    (`event_time`, a datetime from the view), started and finished."""
    started = datetime.now(timezone.utc).astimezone(UTC_PLUS_8)
    time.sleep(settings.DEMO_WORK_SECONDS)
    finished = datetime.now(timezone.utc).astimezone(UTC_PLUS_8)
    return event_time, started, finished, 2 * n


@shared_task
def div(x, y):
    return x / y


@shared_task(bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries, "hostname": self.request.hostname}


@shared_task(bind=True, max_retries=5)
def flaky(self, succeed_on_try):
    """Fails until its `succeed_on_try`-th run, retrying quickly."""
    tries = self.request.retries + 1
    if tries < succeed_on_try:
        raise self.retry(exc=ConnectionError(f"try {tries} failed"), countdown=0.2)
    return f"succeeded on try {tries}"


@shared_task(soft_time_limit=1)
def patient(seconds):
    """Works for `seconds` unless the soft time limit stops it first."""
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "stopped by the soft time limit"
    return "finished"


@shared_task
def count_calculations(min_number=None):
    """An ORM query inside a task."""
    from .models import Calculation

    rows = Calculation.objects.all()
    if min_number is not None:
        rows = rows.filter(number__gte=min_number)
    return rows.count()


@shared_task
def die(how="exit"):
    """Ends the process running it, as a crash or the OOM killer would."""
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


@shared_task
def process_info():
    """The process running tasks, and how often it was initialised."""
    return {"pid": os.getpid(), "process_inits": process_inits}


@shared_task
def db_connection_state():
    """Whether a database connection was open when the task started (with
    CONN_MAX_AGE = 0 Celery's Django fix-up closes it around every task),
    then uses the database."""
    from django.db import connection

    from .models import Calculation

    open_at_start = connection.connection is not None
    Calculation.objects.count()
    return {"open_at_start": open_at_start, "pid": os.getpid()}


@shared_task(bind=True, acks_late=True)
def reject_until_redelivered(self):
    """Rejects with requeue the first time; runs when the message comes back."""
    if not (self.request.delivery_info or {}).get("redelivered"):
        raise Reject("first delivery", requeue=True)
    return "ran on redelivery"


@shared_task(bind=True, acks_late=True)
def reject_for_good(self):
    """Rejects without requeue: the message is dropped."""
    raise Reject("not wanted", requeue=False)


@shared_task
def linger(seconds):
    """Sleeps `seconds`: something to revoke, or to stop at a hard time limit."""
    time.sleep(seconds)
    return "done"
