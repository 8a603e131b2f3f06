"""The benchmark's Celery app: the same three tasks rmulti runs as builtins."""
from .celery import app

__all__ = ("app",)
