"""The project's Celery app, set up the usual Django way.

`celery -A celeryDemo worker` and `rmulti start worker1 -A celeryDemo` both
find `app` here and configure it from Django's settings (CELERY_* keys).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celeryDemo.settings")

app = Celery("celeryDemo")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Finds demo/tasks.py (and every other installed app's tasks module).
app.autodiscover_tasks()


@app.task(bind=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
