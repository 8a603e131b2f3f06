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
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

UTC_PLUS_8 = timezone(timedelta(hours=8))


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
