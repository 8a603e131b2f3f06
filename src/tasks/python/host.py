"""rmulti's Python task host: runs an existing Celery app's tasks for a Rust pool child.

Shipped inside the rmulti binary and started as

    python -c BOOT describe APP NAMES (once, by the node's main process)
    python -c BOOT serve APP         (once per pool child, long-lived)

where BOOT reads this script from stdin (a decimal byte count on the first
line, then the script), so `ps` shows a short command line.

`describe` imports the app the way `celery worker` does and prints one JSON
object on stdout: the app's settings and its tasks with their options.
Anything the app prints while importing goes to stderr, so stdout carries
only the JSON. An import error exits 1 with the traceback on stderr.

`serve` speaks the pipe protocol (version 1, see docs/python-host.md): JSON
lines in on stdin, JSON lines out on fd 3. stdout and stderr stay ordinary
streams, which the Rust child reads and logs as WARNING lines, as Celery's
worker redirects a task's print(). Tasks run through Celery's own tracer
(`celery.app.trace.build_tracer`), so the request context, signals, result
storage, retry, Reject/Ignore, callbacks and chains are Celery's.
"""

import base64
import json
import logging
import os
import signal
import sys
import threading
import traceback

PROTOCOL = 1
# `describe`'s exit status when the app's top-level module does not exist.
NO_MODULE = 3


def find_app(name):
    """Celery's `-A` resolution: module, module.celery, module:attr, or the only app."""
    # `celery -A proj` imports from the working directory first.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from celery.app.utils import find_app as celery_find_app

    return celery_find_app(name)


class _Worker:
    """Stands in for Celery's WorkController, the `sender`/`instance` that
    `celeryd_init`, `worker_init` and the fixups see: the attributes they
    and common extensions read, with the values a prefork worker has
    (DjangoFixup checks `pool_cls` to decide on closing connection pools)."""

    def __init__(self, app, hostname, loglevel=logging.WARNING):
        from datetime import datetime, timezone

        from celery.concurrency import get_implementation

        conf = app.conf
        self.app = app
        self.hostname = hostname
        self.pid = os.getpid()
        self.startup_time = datetime.now(timezone.utc)
        # The node sets RMULTI_CONCURRENCY (-c) for its processes.
        self.concurrency = _int(os.environ.get("RMULTI_CONCURRENCY")) or conf.worker_concurrency or os.cpu_count()
        self.min_concurrency = self.concurrency
        self.pool_cls = get_implementation("prefork")
        self.loglevel = loglevel
        self.logfile = None
        self.pidfile = None
        self.options = {}
        self.task_events = conf.worker_send_task_events
        self.max_tasks_per_child = conf.worker_max_tasks_per_child
        self.max_memory_per_child = conf.worker_max_memory_per_child
        self.time_limit = conf.task_time_limit
        self.soft_time_limit = conf.task_soft_time_limit
        self.prefetch_multiplier = conf.worker_prefetch_multiplier
        self.use_eventloop = False
        self.include = tuple(conf.include or ())
        # The Rust processes own these; nothing Python can drive.
        self.consumer = None
        self.pool = None
        self.timer = None
        self.hub = None
        self.autoscaler = None
        self.steps = []

    def __repr__(self):
        return "<Worker: %s (running)>" % self.hostname

    __str__ = __repr__


def _int(value):
    try:
        return int(value) if value else None
    except ValueError:
        return None


def load(name, conf, hostname, worker_signals=True, loglevel=logging.WARNING):
    """Imports the app and prepares it as a worker would be.

    `describe` passes worker_signals=False: it only looks at the app, so the
    project's worker_init/celeryd_init receivers run in the hosts only.
    """
    from celery import signals
    from celery.app import trace

    if conf:
        # Celery reads these variables before its settings: the node's
        # broker and backend must win over a stale shell environment too.
        for key, var in (("broker_url", "CELERY_BROKER_URL"), ("result_backend", "CELERY_RESULT_BACKEND")):
            if conf.get(key):
                os.environ[var] = conf[key]
    app = find_app(name)
    if conf:
        # rmulti's -b/--result-backend/`-- key=value` win over the app's own settings.
        app.conf.update(conf)
    # `rmulti worker -I a,b` (the node sets RMULTI_INCLUDE): added to the
    # app's own include, as WorkController.setup_includes does.
    include = [m for m in os.environ.get("RMULTI_INCLUDE", "").split(",") if m]
    if include:
        app.conf.include = tuple(app.conf.include or ()) + tuple(include)
    worker = _Worker(app, hostname, loglevel)
    # As WorkController.__init__: loader init (imports, Django setup through
    # the fixup, autodiscovery), then finalize, celeryd_init, worker_init.
    app.loader.init_worker()
    trace.setup_worker_optimizations(app, hostname)
    if worker_signals:
        signals.celeryd_init.send(sender=hostname, instance=worker, conf=app.conf, options={})
        signals.worker_init.send(sender=worker)
    return app, worker


def _per_task(task, attr, conf_value):
    """A task option only when the task sets it itself (else rmulti applies the app's)."""
    value = getattr(task, attr, None)
    if value is None or value == conf_value:
        return None
    return value


def describe(name, settings):
    # Whatever the app prints while importing must not corrupt the JSON.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    app, _ = load(name, None, "describe@rmulti", worker_signals=False)
    conf = app.conf
    tasks = {}
    for task_name, task in sorted(app.tasks.items()):
        tasks[task_name] = {
            "acks_late": _per_task(task, "acks_late", conf.task_acks_late),
            "reject_on_worker_lost": _per_task(task, "reject_on_worker_lost", conf.task_reject_on_worker_lost),
            "time_limit": _per_task(task, "time_limit", conf.task_time_limit),
            "soft_time_limit": _per_task(task, "soft_time_limit", conf.task_soft_time_limit),
            "ignore_result": bool(getattr(task, "ignore_result", False)),
            "max_retries": getattr(task, "max_retries", None),
        }
    out = {
        "hello": PROTOCOL,
        "main": app.main,
        "broker_use_ssl": _ssl_options(conf.broker_use_ssl),
        "redis_backend_use_ssl": _ssl_options(conf.redis_backend_use_ssl),
        "tasks": tasks,
    }
    # rmulti names the settings it reads (its settings table); it checks
    # each value itself, as a worker would ignore what it cannot use.
    for path in settings:
        out[path] = _plain(_setting(conf, path))
    os.write(real_stdout, (json.dumps(out) + "\n").encode())
    os.close(real_stdout)


def _ssl_options(value):
    """broker_use_ssl / redis_backend_use_ssl as URL query values, or None."""
    if not isinstance(value, dict):
        return None
    import ssl

    names = {ssl.CERT_REQUIRED: "required", ssl.CERT_OPTIONAL: "optional", ssl.CERT_NONE: "none"}
    out = {}
    for key, v in value.items():
        if v is None:
            continue
        if key == "ssl_cert_reqs" and not isinstance(v, str):
            v = names.get(v, str(v))
        out[str(key)] = v if isinstance(v, str) else json.dumps(v)
    return out


def _setting(conf, path):
    """conf's value at a dotted path (`broker_transport_options.visibility_timeout`)."""
    first, _, rest = path.partition(".")
    # An attribute, not conf.get: Celery's broker_url and result_backend
    # properties put CELERY_BROKER_URL / CELERY_RESULT_BACKEND first.
    value = getattr(conf, first, None)
    for part in rest.split(".") if rest else ():
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _plain(value):
    """A setting as JSON: timedeltas in seconds, the first of a failover list, dicts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    if isinstance(value, (list, tuple)):
        # Failover URLs: rmulti uses the first, as kombu does until it fails.
        return _plain(value[0]) if value else None
    if isinstance(value, dict):
        # sentinel_kwargs: a table of plain values.
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class Channel:
    """The protocol's output side: one JSON object per line on fd 3."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        # Log records may come from a task's own threads.
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]


class ProtocolLogHandler(logging.Handler):
    """Sends log records to the Rust child, which writes them to the child's log."""

    def __init__(self, channel):
        super().__init__()
        self.channel = channel
        from celery.app.log import TaskFormatter

        self.task_formatter = TaskFormatter("%(task_name)s[%(task_id)s]: %(message)s", use_color=False)
        self.plain = logging.Formatter("%(message)s")

    def emit(self, record):
        try:
            fmt = self.task_formatter if _is_task_logger(record.name) else self.plain
            self.channel.send({"log": [record.levelno, fmt.format(record)]})
        except Exception:
            self.handleError(record)


def _is_task_logger(name):
    logger = logging.getLogger(name)
    while logger is not None:
        if logger.name == "celery.task":
            return True
        logger = logger.parent
    return False


class SoftLimit:
    """SIGUSR1 from the Rust child means the soft time limit passed, as billiard signals it."""

    running = False

    @classmethod
    def handler(cls, signum, frame):
        if cls.running:
            from billiard.exceptions import SoftTimeLimitExceeded

            raise SoftTimeLimitExceeded()


def decode_request(raw, hostname, app):
    """The request dict Celery's worker builds from a message (celery.worker.request)."""
    from kombu.compression import decompress
    from kombu.serialization import loads
    from celery.app.trace import prepare_accept_content

    env = json.loads(raw)
    props = env.get("properties") or {}
    headers = env.get("headers") or {}
    body = env.get("body") or ""
    if props.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    elif isinstance(body, str):
        body = body.encode()
    if headers.get("compression"):
        body = decompress(body, headers["compression"])
    accept = prepare_accept_content(app.conf.accept_content)
    payload = loads(body, env.get("content-type"), env.get("content-encoding"), accept=accept)
    if "task" in headers:
        request = dict(headers)
        args, kwargs, embed = payload
    else:
        # Protocol 1: everything is in the body.
        request = {
            "lang": "py",
            "task": payload["task"],
            "id": payload["id"],
            "eta": payload.get("eta"),
            "expires": payload.get("expires"),
            "group": payload.get("group") or payload.get("taskset"),
            "retries": payload.get("retries", 0),
            "timelimit": payload.get("timelimit") or (None, None),
            "root_id": None,
            "parent_id": None,
        }
        request.update(headers)
        args, kwargs = payload.get("args") or (), payload.get("kwargs") or {}
        embed = {
            "callbacks": payload.get("callbacks"),
            "errbacks": payload.get("errbacks"),
            "chord": payload.get("chord"),
            "chain": None,
        }
    delivery_info = props.get("delivery_info") or {}
    request.update(
        {
            "properties": props,
            "reply_to": props.get("reply_to"),
            "correlation_id": props.get("correlation_id"),
            "hostname": hostname,
            "delivery_info": {
                "exchange": delivery_info.get("exchange"),
                "routing_key": delivery_info.get("routing_key"),
                "priority": props.get("priority"),
                "redelivered": bool(delivery_info.get("redelivered", False)),
            },
        }
    )
    request.update({"args": args, "kwargs": kwargs, "hostname": hostname, "is_eager": False}, **(embed or {}))
    return request, args, kwargs


class Outcome:
    """A finished task's result meta, encoded as Celery's Redis backend would
    store it, handed to the Rust child instead of written here: the child
    stores it in the same Redis step as the ack and the next reservation
    (Celery's own write is a GET and a SETEX+PUBLISH round trip, most of a
    trivial task's time in the host)."""

    wanted = False
    meta = None


def hand_outcomes_to_the_child(app):
    """Lets `Outcome` take the final result of the app's Redis backend; any
    other backend (or state: STARTED, RETRY, custom) is written as usual."""
    from celery import states
    from celery.backends.redis import RedisBackend

    backend = app.backend
    if not isinstance(backend, RedisBackend):
        return
    write = backend._store_result

    def store_result(task_id, result, state, traceback=None, request=None, **kwargs):
        if Outcome.wanted and state in states.READY_STATES:
            meta = backend._get_result_meta(result=result, state=state, traceback=traceback, request=request)
            meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
            value = backend.encode(meta)
            if isinstance(value, str):
                Outcome.meta = value
                return result
        return write(task_id, result, state, traceback, request, **kwargs)

    backend._store_result = store_result


def reject_for_good(task, request, args, kwargs, exc, einfo):
    """As Celery 5.7's worker does for Reject(requeue=False): the task will
    never run again, so its result becomes a FAILURE (not PENDING for ever)
    and task_failure fires. The child drops the message."""
    from celery import signals
    from celery.app.task import Context

    ignored = request.get("ignore_result") or task.ignore_result
    store = not ignored or task.store_errors_even_if_ignored
    task.backend.mark_as_failure(request["id"], exc, request=Context(request), store_result=store)
    signals.task_failure.send(
        sender=task,
        task_id=request["id"],
        exception=exc,
        args=args,
        kwargs=kwargs,
        traceback=getattr(einfo, "traceback", None),
        einfo=einfo,
    )


def record(app, rec, hostname):
    """Stores an outcome the Rust side decided (a task lost with its child,
    a hard time limit, a revoke, an expired or unregistered task) through the
    app's own backend, as Celery's worker does: mark_as_failure /
    mark_as_revoked with the message's request, so chord parts and errbacks
    go on; anything else with store_result."""
    from celery import states
    from celery.app.task import Context

    meta = rec["meta"]
    task_id = meta["task_id"]
    request = None
    if rec.get("raw"):
        try:
            request, _, _ = decode_request(rec["raw"], hostname, app)
        except Exception:
            request = None
    if request is None:
        request = {"id": task_id, "task": rec.get("task"), "group": meta.get("group_id"),
                   "parent_id": meta.get("parent_id"), "hostname": hostname}
    task = app.tasks.get(request.get("task") or "")
    backend = task.backend if task is not None else app.backend
    context = Context(request)
    state = meta["status"]
    if state in states.EXCEPTION_STATES:
        exc = backend.exception_to_python(meta["result"])
        if state == states.REVOKED:
            reason = exc.args[0] if getattr(exc, "args", None) else ""
            backend.mark_as_revoked(task_id, reason, request=context)
        else:
            backend.mark_as_failure(task_id, exc, traceback=meta.get("traceback"), request=context)
    else:
        backend.store_result(task_id, meta.get("result"), state, traceback=meta.get("traceback"), request=context)


def run_one(app, req, hostname):
    from celery import states

    request, args, kwargs = decode_request(req["raw"], hostname, app)
    name = request["task"]
    task = app.tasks[name]
    # The tracer sends callbacks, the next link of a chain and a chord's
    # part after the result is stored; a task with any of those stores its
    # own result, so nothing it sends can look for a result not there yet.
    Outcome.wanted = task.backend is app.backend and not any(
        request.get(k) for k in ("callbacks", "errbacks", "chain", "chord")
    )
    Outcome.meta = None
    SoftLimit.running = True
    try:
        R, I, T, Rstr = task.__trace__(request["id"], args, kwargs, request)
        if I is not None and I.state == states.REJECTED and not getattr(I.retval, "requeue", False):
            reject_for_good(task, request, args, kwargs, I.retval, R)
    finally:
        SoftLimit.running = False
        Outcome.wanted = False
    done = {"state": states.SUCCESS, "runtime": T}
    if Outcome.meta is not None:
        done["meta"] = Outcome.meta
    if I is not None:
        done["state"] = I.state
        if I.state == states.REJECTED:
            done["requeue"] = bool(getattr(I.retval, "requeue", False))
    return done


def prepare(name, conf, hostname, loglevel):
    """Loads the app as a worker's main process does, and builds the tracers."""
    app, worker = load(name, conf, hostname, loglevel=loglevel)
    from celery.app.trace import build_tracer

    for task_name, task in app.tasks.items():
        task.__trace__ = build_tracer(task_name, task, app.loader, hostname, app=app)
    hand_outcomes_to_the_child(app)
    return app, worker


def become_host(loglevel):
    """This process's streams and signals as a host: requests on fd 0 (moved
    to a private descriptor), messages on fd 3. Returns (channel, requests)."""
    channel = Channel(3)
    os.set_inheritable(3, False)
    # Requests come on stdin; tasks must not read them (input()), so the
    # protocol gets a private copy and fd 0 becomes /dev/null.
    proto_in = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Lines reach the log as they are printed, not when a buffer fills.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)

    root = logging.getLogger()
    root.handlers[:] = [ProtocolLogHandler(channel)]
    root.setLevel(loglevel)
    task_logger = logging.getLogger("celery.task")
    task_logger.setLevel(loglevel)

    # Ctrl-C and the node's TERM are for the Rust processes; this host
    # ends when its child closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, SoftLimit.handler)
    return channel, proto_in


def process_init(app, hostname):
    """As billiard's process_initializer in each pool child."""
    from celery import signals
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(True)
    app.loader.init_worker_process()
    signals.worker_process_init.send(sender=hostname)


def serve(name, conf, hostname, loglevel):
    channel, proto_in = become_host(loglevel)
    try:
        app, _ = prepare(name, conf, hostname, loglevel)
        process_init(app, hostname)
    except BaseException:
        channel.send({"fatal": traceback.format_exc()})
        return 1
    return serve_loaded(app, hostname, channel, proto_in)


def serve_loaded(app, hostname, channel, proto_in):
    """The request loop of a host whose app is loaded and initialised."""
    channel.send({"hello": PROTOCOL, "pid": os.getpid(), "tasks": sorted(app.tasks.keys())})
    for line in proto_in:
        try:
            msg = json.loads(line)
        except ValueError:
            channel.send({"error": "bad request line"})
            continue
        if "run" not in msg:
            channel.send({"error": "unknown request"})
            continue
        try:
            done = run_one(app, msg["run"], hostname)
        except BaseException as exc:
            from billiard.exceptions import SoftTimeLimitExceeded

            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, SoftTimeLimitExceeded):
                # The limit passed just as the task ended: its outcome stands.
                done = {"state": "SUCCESS", "runtime": 0.0}
            else:
                done = {"state": "FAILURE", "runtime": 0.0, "error": traceback.format_exc()}
        channel.send({"done": done})
    from celery import signals

    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    return 0


def die_with(pid):
    """A forked host's PR_SET_PDEATHSIG: its parent is the template, so a
    thread watches the pool child it serves and kills the host when the
    child is gone, whatever killed it."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except OSError:
        os._exit(1)  # the child is already gone

    def watch():
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="rmulti-die-with-child", daemon=True).start()


class Template:
    """`template`: loads the app once and forks a host for each pool child
    that asks (docs/python-host.md, "The template").

    A child connects to the unix socket and sends one message with its
    pipes as SCM_RIGHTS — the host's requests (read end), protocol (write
    end), output (write end) and a status pipe (write end) — and its
    process group as JSON. The template forks; the host joins that group
    (a hard time limit's killpg takes it with the child), adopts the pipes
    as fd 0, 3, 1 and 2, runs worker_process_init and serves. The template
    answers the host's pid, and when it reaps the host writes its raw wait
    status to the status pipe, so the child can leave the way its host did.
    """

    def __init__(self, app, hostname, loglevel, listener):
        self.app = app
        self.hostname = hostname
        self.loglevel = loglevel
        self.listener = listener
        self.status = {}  # host pid -> status pipe fd
        self.spare = None  # (pid, socket) of the host forked ahead of need

    def reap(self, *_):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.status.pop(pid, None)
            if fd is not None:
                try:
                    os.write(fd, b"%d\n" % status)
                except OSError:
                    pass
                os.close(fd)

    def run(self):
        import socket
        import struct

        signal.signal(signal.SIGCHLD, self.reap)
        me = os.getuid()
        while True:
            if self.spare is None:
                self.make_spare()
            conn, _ = self.listener.accept()
            with conn:
                uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
                if uid != me:
                    continue
                try:
                    data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                except OSError:
                    continue
                if not fds and data.startswith(b'{"record"'):
                    self.fork_recorder(conn, data)
                    continue
                if len(fds) != 4:
                    for fd in fds:
                        os.close(fd)
                    continue
                request = json.loads(data or b"{}")
                pgid, child = request.get("pgid", 0), request.get("pid", 0)
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
                try:
                    pid = self.give_spare(data, fds)
                    if pid is None:
                        pid = os.fork()
                        if pid == 0:
                            self.listener.close()
                            conn.close()
                            self.host(fds, pgid, child)  # never returns
                    self.status[pid] = fds[3]
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
                for fd in fds[:3]:
                    os.close(fd)
                try:
                    conn.sendall(b"%d\n" % pid)
                except OSError:
                    pass

    def make_spare(self):
        """Forks the next host ahead of need: it waits on a socket pair for
        its pool child's request and pipes, so a replacement does not wait
        for the fork (a few ms of copying a loaded interpreter's page
        tables). It leaves on EOF: the template is gone."""
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    # The listener first: the template's address must die with it.
                    self.listener.close()
                    ours.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
                    data, fds, _, _ = socket.recv_fds(theirs, 65536, 4)
                    theirs.close()
                    if len(fds) == 4:
                        request = json.loads(data or b"{}")
                        self.host(fds, request.get("pgid", 0), request.get("pid", 0))  # never returns
                    code = 0
                finally:
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
        theirs.close()
        self.spare = (pid, ours)

    def give_spare(self, data, fds):
        """Hands a request to the spare host; its pid, or None when there is
        no spare (or it died: the caller forks one then)."""
        import socket

        spare, self.spare = self.spare, None
        if spare is None:
            return None
        pid, ours = spare
        try:
            socket.send_fds(ours, [data], fds)
        except OSError:
            return None
        finally:
            ours.close()
        return pid

    def fork_recorder(self, conn, data):
        """A record from the node (see `record`): read to EOF, stored by a
        forked process, so this one never opens the backend's connections
        (its hosts would inherit them) nor waits on a slow database."""
        conn.settimeout(10)
        try:
            while True:
                more = conn.recv(1 << 20)
                if not more:
                    break
                data += more
            rec = json.loads(data)["record"]
        except (OSError, ValueError, KeyError):
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    self.listener.close()
                    conn.close()
                    # The spare's end too: the spare leaves on its EOF.
                    if self.spare is not None:
                        self.spare[1].close()
                    for fd in self.status.values():
                        os.close(fd)
                    record(self.app, rec, self.hostname)
                    code = 0
                except BaseException:
                    sys.stderr.write("rmulti: cannot store the outcome of task %s:\n" % (rec.get("meta") or {}).get("task_id"))
                    traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
        try:
            conn.sendall(b"ok\n")
        except OSError:
            pass

    def host(self, fds, pgid, child):
        import fcntl

        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
            for fd in self.status.values():
                os.close(fd)
            os.close(fds[3])
            if pgid:
                os.setpgid(0, pgid)
            if child:
                die_with(child)
            # Copies above the targets first, so no dup2 overwrites a pipe
            # still to be moved.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds[:3]]
            for fd in fds[:3]:
                os.close(fd)
            for fd, target in zip(high, (0, 3, 1)):
                os.dup2(fd, target)
                os.close(fd)
            os.dup2(1, 2)
            os.environ["RMULTI_HOST"] = "serve"
            channel, proto_in = become_host(self.loglevel)
            try:
                process_init(self.app, self.hostname)
            except BaseException:
                channel.send({"fatal": traceback.format_exc()})
            else:
                code = serve_loaded(self.app, self.hostname, channel, proto_in)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)


def template(name, conf, hostname, loglevel, address):
    import gc
    import socket

    # Its stderr goes to the node's log (the main process adds the time):
    # warnings and errors only, not the debug lines of loading the app. The
    # loggers keep the node's level: Celery's tracers, built here, decide
    # once whether to log a task's success.
    logging.basicConfig(level=loglevel, format="%(levelname)s/Template: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(max(loglevel, logging.WARNING))
    # The node's INT and TERM are for the Rust processes; the main process
    # ends the template with SIGKILL (and it dies with it: PR_SET_PDEATHSIG).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + address)
    try:
        app, _ = prepare(name, conf, hostname, loglevel)
    except BaseException:
        traceback.print_exc()
        return 1
    # Forked hosts share the app's pages; moving what exists now out of the
    # collector's reach keeps its passes from writing to (unsharing) them.
    gc.collect()
    gc.freeze()
    listener.listen(64)
    Template(app, hostname, loglevel, listener).run()
    return 0


def main(argv):
    # Lets a project tell the two apart (e.g. skip work at describe time).
    if argv:
        os.environ["RMULTI_HOST"] = argv[0]
    if len(argv) >= 2 and argv[0] == "describe":
        # Before importing celery: "not a Python app at all" is a different
        # error from "this app fails to import".
        import importlib.util

        top = argv[1].replace(":", ".").split(".")[0]
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(top) if top.isidentifier() else None
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            sys.stderr.write("No module named %r\n" % top)
            return NO_MODULE
        try:
            describe(argv[1], json.loads(argv[2]) if len(argv) > 2 else [])
        except BaseException:
            traceback.print_exc()
            return 1
        return 0
    if len(argv) >= 2 and argv[0] in ("serve", "template"):
        opts = json.loads(argv[2]) if len(argv) > 2 else {}
        args = (argv[1], opts.get("conf") or {}, opts.get("hostname") or "celery@localhost", opts.get("loglevel", logging.WARNING))
        if argv[0] == "serve":
            code = serve(*args)
        else:
            code = template(*args, opts["address"])
        # As billiard's pool processes do: leave without the interpreter's
        # teardown (hundreds of ms for a Django project) once
        # worker_process_shutdown has run.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
    sys.stderr.write("usage: host.py describe APP [NAMES_JSON] | serve APP [OPTIONS_JSON]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
