"""What Celery's Django fix-up and the worker signals see in rmulti's
Python hosts (issue 12): the worker object has what the fix-up reads, so no
traceback is logged; Django's database connections are closed around every
task as under Celery; `worker_process_init` runs once per host; Reject
requeues marked redelivered, or stores a FAILURE."""

import pytest
from celery.exceptions import Reject

from demo_fixtures import demo_env, demo_node, demo_redis, demo_tmp, django_project  # noqa: F401 (fixtures)
from demo_helpers import DEMO, child_logs, wait_until  # noqa: F401

TIMEOUT = 30


@pytest.fixture
def tasks(demo_node):
    from demo import tasks

    return tasks


def node_logs(tmp):
    return "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("worker1*.log")))


def test_a_thousand_tasks_log_no_traceback(tasks, demo_node):
    before = len(node_logs(demo_node))
    results = [tasks.add.delay(i, i) for i in range(1000)]
    assert [r.get(timeout=TIMEOUT) for r in results] == [2 * i for i in range(1000)]
    assert tasks.db_connection_state.delay().get(timeout=TIMEOUT)
    new = node_logs(demo_node)[before:]
    assert "Traceback" not in new, new[-4000:]
    assert "pool_cls" not in new, new[-4000:]


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
