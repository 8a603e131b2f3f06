import time

from .celery import app


@app.task(name="proj.tasks.add")
def add(x, y):
    return x + y


@app.task(name="proj.tasks.noop")
def noop(*args, **kwargs):
    return None


@app.task(name="proj.tasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return None
