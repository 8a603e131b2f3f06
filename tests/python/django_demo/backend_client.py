"""The celeryDemo project's own client, in a process of its own (Django's
settings are set once per process, and the other tests load the plain
ones): sends the demo's tasks to a running node and prints, as one JSON
object, what `AsyncResult.get()` gave for each through the result backend
the settings configure (`DJANGO_SETTINGS_MODULE`, `CELERY_RESULT_BACKEND`).

Used by test_result_backends.py; run from the example's directory.
"""

import json
import os
import sys
import time

TIMEOUT = 30


def outcome(result):
    try:
        return {"value": result.get(timeout=TIMEOUT)}
    except Exception as e:  # the task's own exception, rebuilt by the backend
        return {"error": type(e).__name__, "text": str(e), "state": result.state}


def wait_started(result, deadline=TIMEOUT):
    """Polls the backend until the task is seen running (task_track_started
    is off: the node's `inspect active` says it)."""
    from celeryDemo.celery import app

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        active = app.control.inspect(timeout=1).active() or {}
        if any(t["id"] == result.id for tasks in active.values() for t in tasks):
            return True
    return False


def main():
    import django

    sys.path.insert(0, os.getcwd())
    django.setup()
    from celeryDemo.celery import app
    from demo import tasks

    out = {"backend": type(app.backend).__name__}
    out["add"] = outcome(tasks.add.delay(2, 3))
    out["div"] = outcome(tasks.div.delay(1, 0))
    out["killed_host"] = outcome(tasks.die.delay("kill"))
    out["time_limit"] = outcome(tasks.linger.apply_async((30,), time_limit=1))
    # A revoked id the node meets later: REVOKED, stored by the child's record.
    early = tasks.add.signature((1, 1)).freeze()
    # Waits for the node's reply: the revoke and the message travel apart.
    assert app.control.revoke(early.id, reply=True, timeout=5), "no node answered the revoke"
    tasks.add.apply_async((1, 1), task_id=early.id)
    out["revoked"] = outcome(early)
    # revoke(terminate=True) of a running task: REVOKED by the main process.
    running = tasks.linger.delay(30)
    out["terminate_seen_running"] = wait_started(running)
    running.revoke(terminate=True)
    out["terminated"] = outcome(running)
    out["after"] = outcome(tasks.add.delay(20, 22))
    # Groups and chords go through the same backend (a chord's counter,
    # or chord_unlock where the backend has none).
    from celery import chord, group

    out["group"] = outcome(group(tasks.add.s(i, i) for i in range(3)).delay())
    out["chord"] = outcome(chord(tasks.add.s(i, i) for i in range(3))(tasks.xsum.s()))
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
