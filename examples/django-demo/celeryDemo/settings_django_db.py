"""The celeryDemo settings with results stored by django-celery-results
(`CELERY_RESULT_BACKEND = "django-db"`), as many Django projects keep them:
select with DJANGO_SETTINGS_MODULE=celeryDemo.settings_django_db (and run
`manage.py migrate` once, for the results table).
"""
from .settings import *  # noqa: F401,F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = INSTALLED_APPS + ["django_celery_results"]
CELERY_RESULT_BACKEND = "django-db"
# Task name, args and worker in the result row, as the admin shows them.
CELERY_RESULT_EXTENDED = True
# Several pool processes write results to one SQLite file: take the write
# lock when a transaction begins (a chord's counter is read, then updated),
# and wait for it, instead of failing with "database is locked".
DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}  # noqa: F405
