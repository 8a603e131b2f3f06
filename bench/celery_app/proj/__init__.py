"""The benchmark's Celery app: add, noop and sleep (which rmulti also runs as
builtins, for the builtin scenario), and sumrange (the python scenario, where
rmulti runs this module itself)."""
from .celery import app

__all__ = ("app",)
