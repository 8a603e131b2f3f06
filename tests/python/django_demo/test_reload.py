"""HUP reloads the project's code (issue 12): a node started from a copy
of examples/django-demo gets its task module edited and `kill -HUP`; the
next tasks return the new code's results, run by hosts forked from a new
template (the old one, with the old code loaded, is gone)."""

from __future__ import annotations

import os
import shutil
import signal

from celery import Celery

from demo_helpers import DEMO, alive, demo_worker, wait_until
from helpers import read_pid
from test_django_demo import node_processes, parent

TIMEOUT = 20
QUEUE = "reload"
# Not worker1: the other tests' node of that name may be running on the same Redis.
NODE = "reloader"


def test_hup_reload_runs_the_changed_task_code(demo_env, tmp_path):
    # A client of its own: pytest gives each test module its own instance of
    # the session fixtures (another Redis than django_project's client uses).
    client = Celery("reload-client", broker=demo_env["CELERY_BROKER_URL"], backend=demo_env["CELERY_RESULT_BACKEND"])
    project = tmp_path / "project"
    shutil.copytree(DEMO, project, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3"))
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, **demo_env)

    def add(x, y):
        return client.send_task("demo.tasks.add", (x, y), queue=QUEUE).get(timeout=TIMEOUT)

    with demo_worker(NODE, logs, env, cwd=project, extra=("-Q", QUEUE)):
        assert add(2, 3) == 5
        main, hosts, template = node_processes(logs, NODE)
        assert template and len(hosts) == 2, (template, hosts)

        module = project / "demo" / "tasks.py"
        code = module.read_text()
        old = "def add(x, y):\n    return x + y\n"
        assert old in code
        module.write_text(code.replace(old, "def add(x, y):\n    return x + y + 100\n"))
        os.kill(main, signal.SIGHUP)

        # Children retire after their task; the new ones' hosts load the new code.
        assert wait_until(TIMEOUT, lambda: add(2, 3) == 105, interval=0.1), "the old code still runs"
        assert [add(i, 1) for i in range(8)] == [i + 101 for i in range(8)]
        assert read_pid(logs / f"{NODE}.pid") == main, "HUP restarts in place: the pid stays"
        _, new_hosts, new_template = node_processes(logs, NODE)
        assert new_template and new_template != template and not alive(template)
        assert len(new_hosts) == 2 and not set(new_hosts.values()) & set(hosts.values())
        assert all(parent(h) == new_template for h in new_hosts.values()), (new_hosts, new_template)
