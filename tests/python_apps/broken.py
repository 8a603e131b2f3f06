"""An app whose import fails, for the start-failure test."""
from celery import Celery

app = Celery("broken")

import module_that_does_not_exist  # noqa: E402,F401
