"""examples/django-demo (the seed's celeryDemo project) with rmulti workers:
the project's own Django/Celery client code, unchanged, against
`rmulti start worker1 -A celeryDemo`."""

from datetime import datetime, timedelta, timezone

import pytest
from billiard.exceptions import WorkerLostError
from celery.exceptions import Reject

from demo_helpers import child_logs, wait_until

UTC8 = timezone(timedelta(hours=8))
TIMEOUT = 20


@pytest.fixture
def tasks(demo_node):
    from demo import tasks

    return tasks


def test_add(tasks):
    assert tasks.add.delay(2, 3).get(timeout=TIMEOUT) == 5
    assert tasks.mul.delay(4, 5).get(timeout=TIMEOUT) == 20
    assert tasks.xsum.delay([1, 2, 3]).get(timeout=TIMEOUT) == 6


def test_double_a_integer_keeps_time_zones(tasks):
    event = datetime(2026, 11, 24, 10, 30, 0, 123456, tzinfo=UTC8)
    before = datetime.now(timezone.utc)
    event_time, started, finished, doubled = tasks.double_a_integer.delay(21, event).get(timeout=TIMEOUT)
    assert doubled == 42
    assert event_time == event and event_time.utcoffset() == timedelta(hours=8)
    for t in (started, finished):
        assert isinstance(t, datetime) and t.utcoffset() == timedelta(hours=8)
    assert before <= started <= finished
    assert finished - started >= timedelta(seconds=0.5)


def test_zero_division_is_reraised_as_itself(tasks):
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        tasks.div.delay(1, 0).get(timeout=TIMEOUT)


def test_bound_task_sees_its_own_id(tasks, demo_node):
    result = tasks.whoami.delay()
    seen = result.get(timeout=TIMEOUT)
    assert seen["id"] == result.id
    assert seen["retries"] == 0
    assert seen["hostname"].startswith("worker1@")


def test_retrying_task_succeeds_on_its_third_try(tasks):
    assert tasks.flaky.delay(3).get(timeout=TIMEOUT) == "succeeded on try 3"


def test_soft_time_limit_is_caught_inside_the_task(tasks):
    assert tasks.patient.delay(30).get(timeout=TIMEOUT) == "stopped by the soft time limit"


def test_orm_query_inside_a_task(tasks):
    from demo.models import Calculation

    Calculation.objects.create(number=1000001)
    Calculation.objects.create(number=1000002)
    assert tasks.count_calculations.delay(min_number=1000001).get(timeout=TIMEOUT) == 2


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_host_crash_gives_worker_lost_error_then_the_next_task_runs(tasks, how):
    with pytest.raises(WorkerLostError):
        tasks.die.delay(how).get(timeout=TIMEOUT)
    assert tasks.add.delay(20, 22).get(timeout=TIMEOUT) == 42


def test_debug_task_print_reaches_the_child_log(django_project, demo_node):
    from celeryDemo.celery import debug_task

    result = debug_task.delay()
    assert result.get(timeout=TIMEOUT) is None
    line = wait_until(
        10,
        lambda: next((l for l in child_logs(demo_node).splitlines() if result.id in l and "Request: <Context" in l), None),
    )
    assert line, child_logs(demo_node)
    assert "WARNING/ForkPoolWorker-" in line
    # The tracer's own INFO line (its logger's level is read when the
    # template builds the tracers).
    done = wait_until(
        10, lambda: next((l for l in child_logs(demo_node).splitlines() if f"debug_task[{result.id}] succeeded" in l), None)
    )
    assert done and "INFO/ForkPoolWorker-" in done, child_logs(demo_node)[-3000:]


def test_the_async_page_submits_and_polls(demo_node):
    """The page's own views, through Django's test client (the browser test
    drives the same endpoints from the page's JavaScript)."""
    import json

    from django.test import Client

    client = Client(enforce_csrf_checks=False)
    page = client.get("/")
    assert page.status_code == 200
    assert b'id="calc-form"' in page.content
    ids = []
    for n in (1, 2, 3):
        sent = client.post(
            "/calc/",
            data=json.dumps({"number": n, "eventTime": "Tue, 24 Nov 2026 02:40:00 GMT"}),
            content_type="application/json",
        )
        assert sent.status_code == 200, sent.content
        ids.append((n, sent.json()["task_id"]))
    for n, task_id in ids:
        status = wait_until(
            TIMEOUT,
            lambda: (lambda s: s if s["status"] == "SUCCESS" else None)(client.get("/status/", {"task_id": task_id}).json()),
            interval=1.0,
        )
        assert status, f"task {task_id} not done"
        assert status["result"] == 2 * n
        assert status["eventTime"] == "2026-11-24T10:40:00+08:00"
        assert status["processingTime"].endswith("+08:00")


# What Celery's Django fix-up and the worker signals see in the hosts
# (issue 12): the worker object has what the fix-up reads, so nothing is
# logged as a traceback; Django's connections are closed around every task
# as under Celery; worker_process_init runs once per host; Reject requeues
# marked redelivered, or stores a FAILURE.


def node_logs(tmp, since=None):
    """The node's logs, each from the size it had in `since` (a previous
    `log_sizes`)."""
    since = since or {}
    return "".join(p.read_text(errors="replace")[since.get(p, 0):] for p in sorted(tmp.glob("worker1*.log")))


def log_sizes(tmp):
    return {p: len(p.read_text(errors="replace")) for p in tmp.glob("worker1*.log")}


def test_a_thousand_tasks_log_no_traceback(tasks, demo_node):
    before = log_sizes(demo_node)
    results = [tasks.add.delay(i, i) for i in range(1000)]
    assert [r.get(timeout=TIMEOUT) for r in results] == [2 * i for i in range(1000)]
    assert tasks.db_connection_state.delay().get(timeout=TIMEOUT)
    new = node_logs(demo_node, before)
    at = new.find("Traceback")
    assert at < 0, new[max(0, at - 1500) : at + 2500]
    assert "pool_cls" not in new


def test_no_database_connection_is_carried_from_task_to_task(tasks):
    # More runs than hosts: each host runs several in a row.
    seen = [tasks.db_connection_state.delay().get(timeout=TIMEOUT) for _ in range(12)]
    assert not any(s["open_at_start"] for s in seen), seen


def test_worker_process_init_ran_once_in_each_host(tasks):
    seen = [tasks.process_info.delay().get(timeout=TIMEOUT) for _ in range(12)]
    assert {s["process_inits"] for s in seen} == {1}, seen


def test_reject_with_requeue_comes_back_redelivered(tasks):
    assert tasks.reject_until_redelivered.delay().get(timeout=TIMEOUT) == "ran on redelivery"


def test_reject_without_requeue_stores_a_failure(tasks):
    result = tasks.reject_for_good.delay()
    with pytest.raises(Reject):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"


# One loaded interpreter per node (issue 12): hosts are forked by the
# node's template, each in its pool child's process group.


def node_processes(tmp, name="worker1"):
    """(main pid, {pool child pid: host pid}, template pid) of node `name`."""
    import os

    from demo_helpers import alive
    from helpers import descendants, is_rmulti, read_pid

    main = read_pid(tmp / f"{name}.pid")
    procs = [p for p in descendants(main) if alive(p)]
    children = [p for p in procs if is_rmulti(p)]
    pythons = [p for p in procs if not is_rmulti(p)]
    hosts = {}
    template = None
    for p in pythons:
        try:
            pgid = os.getpgid(p)
        except ProcessLookupError:
            continue
        if parent(p) == main:
            template = p
        elif pgid in children:
            hosts[pgid] = p
    return main, hosts, template


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def test_hosts_are_forked_from_one_template(tasks, demo_node):
    import os

    main, hosts, template = node_processes(demo_node)
    assert template and len(hosts) == 2, (template, hosts)
    for child, host in hosts.items():
        assert parent(host) == template
        assert os.getpgid(host) == child


def test_a_killed_pool_child_takes_its_host_along(tasks, demo_node):
    import os
    import signal

    from demo_helpers import alive

    _, hosts, _ = node_processes(demo_node)
    child, host = next(iter(hosts.items()))
    os.kill(child, signal.SIGKILL)
    assert wait_until(10, lambda: not alive(host)), f"host {host} outlived its child {child}"
    # The replacement child gets a host of its own, and tasks run.
    assert wait_until(20, lambda: len(node_processes(demo_node)[1]) == 2)
    assert tasks.add.delay(1, 2).get(timeout=TIMEOUT) == 3


def test_a_killed_template_is_replaced_and_tasks_still_run(tasks, demo_node):
    import os
    import signal

    _, hosts, template = node_processes(demo_node)
    os.kill(template, signal.SIGKILL)
    assert wait_until(20, lambda: (lambda t: t and t != template)(node_processes(demo_node)[2]))
    assert tasks.add.delay(2, 2).get(timeout=TIMEOUT) == 4
    # Hosts forked by the dead template go on serving their children.
    assert all(alive_pid(h) for h in hosts.values()), (hosts, node_processes(demo_node), child_logs(demo_node)[-3000:])


def alive_pid(pid):
    from demo_helpers import alive

    return alive(pid)
