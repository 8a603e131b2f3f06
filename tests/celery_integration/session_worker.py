
# --- appended by rmulti's tests/celery_integration/run -------------------
# The session worker is external (`rmulti worker -A itapp -c 4`, or `celery
# -A itapp worker -c 4` for the reference run), started by the script before
# pytest; the client app only gets the task modules and class tasks the
# embedded worker fixture would have registered on it.
import sys  # noqa: E402


@pytest.fixture(scope='session')
def celery_session_worker(celery_session_app, celery_includes, celery_class_tasks):
    for module in celery_includes:
        celery_session_app.loader.import_task_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    # test_inspect expects the embedded worker's name (gen<pid>@host).
    inspect_module = sys.modules.get('t.integration.test_inspect')
    if inspect_module is not None:
        inspect_module.NODENAME = os.environ['CELERY_IT_WORKER']
    yield None
