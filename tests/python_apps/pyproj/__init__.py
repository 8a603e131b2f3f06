"""A pure-Celery project for rmulti's Rust integration tests (tests/python_app.rs).

`-A pyproj` finds `pyproj.celery:app` as `celery worker -A pyproj` does.
The broker and backend come from CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
"""
