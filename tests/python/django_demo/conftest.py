"""The Django example's fixtures (demo_fixtures.py), registered once for the
whole directory: a session fixture imported into each test module would be
one instance per module — a second Redis and a second node named worker1,
while the example's Celery app, configured once per process, still talks to
the first."""

from demo_fixtures import demo_env, demo_node, demo_redis, demo_tmp, django_project  # noqa: F401 (fixtures)
