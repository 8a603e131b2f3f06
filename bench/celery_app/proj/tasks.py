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


@app.task(name="proj.tasks.sumrange")
def sumrange(n):
    """A slightly heavier pure-Python task (the python scenario): an
    interpreted loop, about 1 ms for n=20000 on CPython 3.11."""
    total = 0
    for i in range(n):
        total += i
    return total
