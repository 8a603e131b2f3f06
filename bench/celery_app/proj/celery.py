import os

from celery import Celery

app = Celery(
    "proj",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/1"),
    include=["proj.tasks"],
)
