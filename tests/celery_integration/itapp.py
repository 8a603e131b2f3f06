"""The app of Celery 5.7's integration suite as its session worker builds it
(`celery_session_app` from t/integration/conftest.py's `celery_config`), as a
module an external worker can load: `rmulti worker -A itapp` or `celery -A
itapp worker`. Broker and backend come from TEST_BROKER / TEST_BACKEND, as
the suite's own client reads them.
"""

import os

from celery import Celery

app = Celery("celery.tests", set_as_current=False)
app.conf.update(
    broker_url=os.environ["TEST_BROKER"],
    result_backend=os.environ["TEST_BACKEND"],
    result_extended=True,
    task_create_missing_queues=False,
    include=["t.integration.tasks"],
)

# celery_class_tasks of the suite's conftest.
from t.integration.tasks import ClassBasedAutoRetryTask  # noqa: E402

app.register_task(ClassBasedAutoRetryTask)
