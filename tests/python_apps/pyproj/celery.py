import os

from celery import Celery

app = Celery(
    "pyproj",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://localhost:6379/1"),
    include=["pyproj.tasks"],
)
# Loads for `describe`, fails where tasks are to be served (the template, a host).
if os.environ.get("PYPROJ_FAIL_IN_SERVE") and os.environ.get("RMULTI_HOST") in ("serve", "template"):
    raise RuntimeError("pyproj refuses to load in a serving host")

app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
)
