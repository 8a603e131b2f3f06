"""The client-side change that removes the Celery client's round-trip tail
with a fast worker (issue 15; bench/README.md, "The round-trip tail").

Celery 5.7's Redis result consumer subscribes to a task's channel when the
task is sent and reads its pub/sub socket one message per turn of its drain
loop. A `get()` whose result is already stored when it starts takes it with
a GET (`on_wait_for_pending`) and never reads the socket, so that task's
subscribe confirmation, the worker's PUBLISH and the unsubscribe
confirmation stay queued; the next `get()` that has to wait first reads the
whole backlog, one loop turn a message. The faster the worker, the more
results beat their `get()`, the longer the backlog. `install()` patches
`on_wait_for_pending` to read whatever is already on the socket in one tight
loop after such a GET, so no backlog builds up.
"""


def install():
    from celery.backends import redis as celery_redis

    consumer = celery_redis.ResultConsumer
    if getattr(consumer, "_bench_backlog_drained", False):
        return
    original = consumer.on_wait_for_pending

    def on_wait_for_pending(self, result, **kwargs):
        original(self, result, **kwargs)
        with self._locked():
            ps = self._pubsub
            while ps is not None and ps.connection is not None and ps.connection.can_read(timeout=0):
                message = ps.get_message(timeout=0)
                if message and message["type"] == "message":
                    self.on_state_change(self._decode_result(message["data"]), message)

    consumer.on_wait_for_pending = on_wait_for_pending
    consumer._bench_backlog_drained = True


def uninstall():
    from celery.backends import redis as celery_redis

    consumer = celery_redis.ResultConsumer
    if getattr(consumer, "_bench_backlog_drained", False):
        del consumer.on_wait_for_pending
        del consumer._bench_backlog_drained
