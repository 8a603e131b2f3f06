"""Side-by-side benchmark: rmulti against Python Celery, same machine, same run.

Driven by bin/bench -> bench/run (which starts a private redis-server and
passes its port). This file owns the run (arguments, machine description,
the JSON and Markdown files in bench/results/) and the helpers the scenarios
share (processes, memory, CPU, Celery messages); the scenarios are
builtin.py (issue 5's drains, client, memory, start/stop, Redis cost),
pytasks.py (the same Python app under both) and djangodemo.py (the Django
example's memory by -c, start and replacements), the table is report.py.
Every measurement is taken for both systems in the same round, alternating
which goes first from one round to the next so that drift cancels.

Nothing here asserts a timing: a benchmark reports, it never fails a build.
Problems seen on the way (tasks missing, wrong results, timeouts, a node that
did not stop) are listed under the table.
"""

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "celery_app"))

PROJ_TOML = """\
broker_url = "redis://127.0.0.1:{port}/0"
result_backend = "redis://127.0.0.1:{port}/1"
[tasks]
"proj.tasks.add" = {{ builtin = "add" }}
"proj.tasks.noop" = {{ builtin = "noop" }}
"proj.tasks.sleep" = {{ builtin = "sleep" }}
"""

PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)
    print("  !! " + msg, file=sys.stderr, flush=True)


T0 = time.monotonic()


def log(msg):
    """A progress line on stderr, with the minutes:seconds since the start."""
    t = time.monotonic() - T0
    print("[%2d:%02d] %s" % (t // 60, t % 60, msg), file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------


def proc_state(pid):
    """The /proc state letter of pid, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def alive(pid):
    return proc_state(pid) not in (None, "Z", "X")


def children_of(pid):
    """Direct children of pid, from /proc/*/stat."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(d))
    return out


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children_of(p))
    return seen


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid):
    pids = tree(pid)
    return sum(rss_kib(p) for p in pids) / 1024.0, len(pids)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


# --- the two workers -------------------------------------------------------


class Node:
    """One worker node started detached, known by its pidfile."""

    label = "?"

    def __init__(self, workdir, env):
        self.workdir = workdir
        self.env = env
        self.pidfile = os.path.join(workdir, self.nodename + ".pid")
        self.logfile = os.path.join(workdir, self.nodename + ".log")
        self.pid = None
        os.makedirs(workdir, exist_ok=True)

    def command(self, loglevel):
        raise NotImplementedError

    def start(self, loglevel="warning", redis=None, timeout=60.0, wait=True):
        """Launch detached; returns seconds from launch to ready (to the
        launcher returning when not wait)."""
        for f in os.listdir(self.workdir):
            if f.endswith(".log"):
                os.unlink(os.path.join(self.workdir, f))
        t0 = time.perf_counter()
        r = subprocess.run(self.command(loglevel), cwd=self.workdir, env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError("%s start failed (%d): %s" % (self.label, r.returncode,
                                                             r.stdout.decode(errors="replace")))
        if wait:
            self.wait_ready(t0, loglevel, redis, timeout)
        elapsed = time.perf_counter() - t0
        deadline = time.monotonic() + 10
        while self.pid is None and time.monotonic() < deadline:
            self.pid = read_pid(self.pidfile)
            if self.pid is None:
                time.sleep(0.005)
        if self.pid is None:
            raise RuntimeError("%s: no pidfile %s" % (self.label, self.pidfile))
        return elapsed

    def wait_ready(self, t0, loglevel, redis, timeout):
        raise NotImplementedError

    def stop(self, timeout=60.0):
        """SIGTERM (warm shutdown); seconds until the pidfile is gone."""
        pid = self.pid or read_pid(self.pidfile)
        if pid is None:
            return None
        procs = tree(pid)
        self.stop_all = None
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not os.path.exists(self.pidfile):
                elapsed = time.perf_counter() - t0
                break
            if not alive(pid):
                # Gone but left its pidfile behind: report it, count the time.
                elapsed = time.perf_counter() - t0
                problem("%s: process %d exited but left its pidfile" % (self.label, pid))
                os.unlink(self.pidfile)
                break
            time.sleep(0.002)
        else:
            problem("%s: pidfile still there %.0f s after SIGTERM; killing" % (self.label, timeout))
            self.kill()
            return None
        # The pidfile goes last: the main process and every pool child
        # should be gone by now (a zombie counts as gone: PID 1 here is slow
        # to reap orphans).
        left = [p for p in procs if alive(p)]
        if not left:
            self.stop_all = elapsed
        else:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(alive(p) for p in left):
                time.sleep(0.002)
            still = [p for p in left if alive(p)]
            if left == [pid] and not still:
                # Only the main process, finishing its exit after removing
                # its pidfile: expected, noted in the table, not a problem.
                self.stop_all = time.perf_counter() - t0
                self.pid = None
                return elapsed
            problem("%s: pidfile gone after %.0f ms but %d of its %d pool children still running; "
                    "all gone after %.0f ms%s" % (
                        self.label, 1000 * elapsed, len(left) - (pid in left), len(procs) - 1,
                        1000 * (time.perf_counter() - t0),
                        (" (NOT gone: %s)" % still) if still else ""))
            for p in still:
                os.kill(p, signal.SIGKILL)
        self.stop_all = time.perf_counter() - t0
        self.pid = None
        return elapsed

    def scan_logs(self, what):
        """Report ERROR/CRITICAL lines and tracebacks the node logged."""
        bad = []
        for f in sorted(os.listdir(self.workdir)):
            if not f.endswith(".log"):
                continue
            with open(os.path.join(self.workdir, f), errors="replace") as fh:
                for line in fh:
                    if "ERROR" in line or "CRITICAL" in line or "Traceback" in line:
                        bad.append("%s: %s" % (f, line.strip()))
        if bad:
            problem("%s %s: %d error line(s) in its logs, first: %s" % (
                self.label, what, len(bad), bad[0][:300]))

    def kill(self):
        pid = self.pid or read_pid(self.pidfile)
        if pid is None:
            return
        for p in reversed(tree(pid)):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        self.pid = None

    def rss(self):
        return tree_rss_mib(self.pid)


class Rmulti(Node):
    label = "rmulti"
    nodename = "w1"

    def __init__(self, binary, workdir, env, port):
        self.binary = binary
        super().__init__(workdir, env)
        with open(os.path.join(workdir, "proj.toml"), "w") as f:
            f.write(PROJ_TOML.format(port=port))

    def command(self, loglevel):
        return [self.binary, "worker", "-A", "proj", "-n", "w1@%h", "-c", "2", "-l", loglevel,
                "--detach", "--pidfile=%n.pid", "--logfile=%n%I.log"]

    def wait_ready(self, t0, loglevel, redis, timeout):
        pass  # --detach returns once the node is ready


class Celery(Node):
    label = "Celery"
    nodename = "c1"

    def __init__(self, celery, workdir, env):
        self.celery = celery
        super().__init__(workdir, env)

    def command(self, loglevel):
        return [self.celery, "-A", "proj", "worker", "-c", "2", "-l", loglevel, "-n", "c1@%h",
                "--detach", "--pidfile=" + self.pidfile, "--logfile=" + self.logfile]

    def wait_ready(self, t0, loglevel, redis, timeout):
        deadline = time.monotonic() + timeout
        if loglevel.lower() in ("info", "debug"):
            # celery logs "<hostname> ready." at INFO once it consumes.
            while time.monotonic() < deadline:
                try:
                    with open(self.logfile, errors="replace") as f:
                        if " ready." in f.read():
                            return
                except FileNotFoundError:
                    pass
                time.sleep(0.005)
            raise RuntimeError("Celery did not log ready within %.0f s" % timeout)
        # At WARNING there is no ready line: a round trip is the probe.
        from proj.tasks import add
        add.delay(1, 1).get(timeout=timeout)


# --- Redis helpers ---------------------------------------------------------


def template_for(r0, task, *args):
    """One real Celery message for task, as the client puts it on Redis
    (also used by pytasks.py)."""
    r0.delete("celery")
    task.delay(*args)
    raw = r0.rpop("celery")
    assert raw, "the Celery client did not put the message on the 'celery' list"
    return json.loads(raw)


def template_message(redis_db0):
    """One real Celery 5.7 message for proj.tasks.add, as the client puts it on Redis."""
    from proj.tasks import add
    redis_db0.flushall()
    template = template_for(redis_db0, add, 0, 0)
    redis_db0.flushall()
    return template


class Encoder:
    """Copies of one captured message with a new task id and positional
    args: the template is serialised once with markers, each copy fills
    them in (fast enough to encode 100k messages in about a second)."""

    MARKS = ("@@TID@@", "@@TAG@@", "@@REPR@@", "@@BODY@@")

    def __init__(self, template):
        m = json.loads(json.dumps(template))
        h, p = m["headers"], m["properties"]
        h["id"] = h["root_id"] = p["correlation_id"] = "@@TID@@"
        h["argsrepr"] = "@@REPR@@"
        m["body"] = "@@BODY@@"
        p["delivery_tag"] = "@@TAG@@"
        self.text = json.dumps(m)
        self.embed = ', {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'

    def encode(self, args):
        """(task id, raw message)."""
        tid = str(uuid.uuid4())
        body = "[" + json.dumps(list(args)) + self.embed
        return tid, (self.text.replace("@@TID@@", tid)
                     .replace("@@TAG@@", str(uuid.uuid4()))
                     .replace("@@REPR@@", json.dumps(repr(tuple(args)))[1:-1])
                     .replace("@@BODY@@", base64.b64encode(body.encode()).decode()))


def encode(template, args):
    """A copy of template for a new task id and positional args
    (used by pytasks.py); returns (task id, raw message)."""
    return Encoder(template).encode(args)


def preload(r0, template, n):
    ids = []
    pipe = r0.pipeline(transaction=False)
    for i in range(n):
        tid, raw = encode(template, [i, i])
        ids.append(tid)
        pipe.lpush("celery", raw)
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    assert r0.llen("celery") == n
    return ids


def wait_results(r1, n, deadline_s, t_first_box=None):
    """Poll DBSIZE of the result db until n keys; returns (t_first, t_last, count)."""
    t_first = None
    deadline = time.monotonic() + deadline_s
    count = 0
    while time.monotonic() < deadline:
        count = r1.dbsize()
        now = time.perf_counter()
        if count and t_first is None:
            t_first = now
        if count >= n:
            return t_first, now, count
        time.sleep(0.002 if count == 0 else 0.01)
    return t_first, None, count


# --- the busy warm shutdown (opt-in) ---------------------------------------


def measure_busy_stop(node, r0, r1, template, n, out):
    """Warm shutdown of a node busy on a pre-loaded queue: the time to stop,
    and an account of every message (result stored, or back on the queue,
    or still reserved in kombu's unacked hash for the visibility timeout)."""
    r0.flushall()
    ids = preload(r0, template, n)
    node.start(loglevel="warning", timeout=120, wait=False)
    deadline = time.monotonic() + 120
    while r1.dbsize() < n // 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    t_stop = node.stop()
    node.scan_logs("busy stop")
    metas = [json.loads(v) for v in r1.mget(["celery-task-meta-" + t for t in ids]) if v is not None]
    done = len(metas)
    failed = [m for m in metas if m.get("status") != "SUCCESS"]
    if failed:
        # A warm shutdown lets running tasks finish: no task should fail.
        problem("%s busy stop: %d task(s) stored as %s by a warm shutdown, e.g. %s" % (
            node.label, len(failed), failed[0].get("status"), json.dumps(failed[0].get("result"))[:200]))
    queued = r0.llen("celery")
    unacked = r0.hlen("unacked")
    # rmulti may keep the message it held per child elsewhere; count every list.
    other = {}
    for k in r0.scan_iter(count=1000):
        k = k.decode()
        if k == "celery" or r0.type(k) != b"list":
            continue
        other[k] = r0.llen(k)
    accounted = done + queued + unacked
    if t_stop is not None:
        out.setdefault("stop_busy", []).append(t_stop)
    log("    %s busy stop: %s; %d done, %d back on the queue, %d unacked, other lists %s" % (
        node.label, "%.0f ms" % (1000 * t_stop) if t_stop is not None else "FAILED",
        done, queued, unacked, other or "none"))
    if accounted != n:
        problem("%s busy stop: %d of %d messages accounted for (%d results, %d queued, %d unacked; other lists %s)" % (
            node.label, accounted, n, done, queued, unacked, other))



def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)



def med(xs):
    return statistics.median(xs) if xs else float("nan")


def row(name, unit, a, b, better, fmt="%.0f", ratios=None):
    """Absolute medians, and the ratio: the median of the per-round ratios
    when given (paired, so drift between rounds cancels), else a/b."""
    if ratios:
        ratio = med(ratios)
    else:
        ratio = a / b if b and a == a and b == b else float("nan")
    return "| %s | %s | %s | %s | %s |" % (
        name, fmt % a + " " + unit, fmt % b + " " + unit, fmt_ratio(ratio), better)


def fmt_ratio(x):
    if x != x:
        return "n/a"
    return ("%.2g×" if x < 0.1 else "%.2f×") % x


def pss_kib(pid):
    """Proportional set size (shared pages divided among their users); 0 when
    /proc/<pid>/smaps_rollup is not readable."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """User + system CPU seconds of pid so far (0 when gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(TICK)
    except (OSError, IndexError, ValueError):
        return 0.0


def redis_cpu_s(r):
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --- the run -----------------------------------------------------------------


def run_busy_stop(args, env, r0, r1, rounds_out):
    """Opt-in (--busy-stop): a warm shutdown of a node half-way through a
    pre-loaded queue, every message accounted for afterwards."""
    template = template_message(r0)
    nodes = {
        "rmulti": Rmulti(os.path.abspath(args.rmulti), os.path.join(args.tmp, "rmulti-busy"), env, args.port),
        "Celery": Celery(args.celery, os.path.join(args.tmp, "celery-busy"), env),
    }
    try:
        for rnd in range(args.rounds):
            for name in (["rmulti", "Celery"] if rnd % 2 == 0 else ["Celery", "rmulti"]):
                try:
                    measure_busy_stop(nodes[name], r0, r1, template, args.n_busy,
                                      rounds_out.setdefault(name, {}))
                except Exception as e:  # noqa: BLE001 - report, carry on with the other
                    problem("%s busy-stop run aborted: %r" % (name, e))
                    nodes[name].kill()
    finally:
        for n in nodes.values():
            n.kill()


def machine(r0):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=HERE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    except OSError:
        commit = "?"
    import celery

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "celery_version": celery.__version__,
        "redis_version": r0.info("server").get("redis_version", "?"),
        "python": sys.version.split()[0],
        "rmulti_commit": commit or "?",
        "load_start": "%.1f" % os.getloadavg()[0],
    }


def main():
    # bench/run stops us with SIGTERM on failure, and Ctrl-C reaches us
    # directly (bash starts us with SIGINT ignored: take it back): unwind so
    # that the finally blocks kill the nodes we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rmulti", required=True)
    ap.add_argument("--celery", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--quick", action="store_true", help="only labels the run in the table")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=10000, help="tasks per drain")
    ap.add_argument("--n-big", type=int, default=100000, help="the big noop -c 2 drain (0: none)")
    ap.add_argument("--big-rounds-celery", type=int, default=0, help="rounds in which Celery runs the big drain")
    ap.add_argument("--n-monitor", type=int, default=1000, help="tasks drained under MONITOR (round trips)")
    ap.add_argument("--n-prod", type=int, default=1000, help="producer-driven tasks")
    ap.add_argument("--n-lat", type=int, default=300, help="round trips per round")
    ap.add_argument("--concurrency", default="2,1,4", help="-c values of the drains")
    ap.add_argument("--no-stop-cycles", dest="stop_cycles", action="store_false",
                    help="skip the 8-node start/stop cycles")
    ap.add_argument("--n-ceiling", type=int, default=50000, help="redis-benchmark -n")
    ap.add_argument("--redis-benchmark", default="", help="its path; empty: no ceiling")
    ap.add_argument("--busy-stop", action="store_true", help="also the busy warm-shutdown check")
    ap.add_argument("--n-busy", type=int, default=4000, help="pre-loaded for the busy stop")
    ap.add_argument("--scenario", choices=("builtin", "python", "django", "all"), default="all",
                    help="builtin: rmulti's builtin tasks vs a Celery worker; python: the same "
                         "Python app under celery multi and rmulti (pytasks.py); django: the Django "
                         "example's memory, start and replacements (django.py); all: every one")
    ap.add_argument("--django-concurrency", default="1,2,4,8", help="django scenario: the -c values")
    ap.add_argument("--python", default=sys.executable, help="the interpreter rmulti's hosts run")
    ap.add_argument("--py-n", type=int, default=1500, help="python scenario: pre-loaded add tasks")
    ap.add_argument("--py-heavy", type=int, default=400, help="python scenario: pre-loaded sumrange tasks")
    ap.add_argument("--py-work", type=int, default=20000, help="python scenario: sumrange's n")
    args = ap.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    t_begin = time.monotonic()

    broker = "redis://127.0.0.1:%d/0" % args.port
    backend = "redis://127.0.0.1:%d/1" % args.port
    os.environ["BENCH_BROKER_URL"] = broker
    os.environ["BENCH_RESULT_BACKEND"] = backend
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(HERE, "celery_app") + os.pathsep + env.get("PYTHONPATH", "")

    import redis as redislib

    import builtin
    import report

    r0 = redislib.Redis.from_url(broker)
    r1 = redislib.Redis.from_url(backend)
    meta = machine(r0)
    log("bench: %s, %d cores, Redis %s, Celery %s, rmulti %s; %d round(s)" % (
        meta["cpu"], meta["cores"], meta["redis_version"], meta["celery_version"], meta["rmulti_commit"],
        args.rounds))

    res = pyres = None
    busy = {}
    if args.scenario in ("builtin", "all"):
        if not args.redis_benchmark:
            problem("no redis-benchmark: the Redis ceiling is not measured")
        res = builtin.run(sys.modules[__name__], args, env, redislib)
        if args.busy_stop:
            run_busy_stop(args, env, r0, r1, busy)
    if args.scenario in ("python", "all"):
        import pytasks

        pyres = pytasks.run(sys.modules[__name__], args, env, r0, r1, os.path.abspath(args.python))

    djres = None
    if args.scenario in ("django", "all"):
        import djangodemo

        djres = djangodemo.run(sys.modules[__name__], args, env, r0, os.path.abspath(args.python))

    elapsed = time.monotonic() - t_begin
    meta["elapsed"] = "%d min %02d s" % (elapsed // 60, elapsed % 60)
    meta["elapsed_s"] = elapsed
    meta["load_end"] = "%.1f" % os.getloadavg()[0]
    # redis-benchmark ran at the start of every round: the median per command.
    rounds = (res or {}).get("ceiling_ops", [])
    ceiling_ops = {k: statistics.median([r[k] for r in rounds if k in r])
                   for k in sorted(set(k for r in rounds for k in r))}
    text = report.render(sys.modules[__name__], res, pyres, ceiling_ops, args, meta, djres)
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    raw = {"meta": meta, "args": vars(args), "builtin": res, "python": pyres, "django": djres, "busy_stop": busy,
           "redis_benchmark": ceiling_ops, "problems": PROBLEMS}
    for name in (stamp + ".json", "latest.json"):
        with open(os.path.join(args.out_dir, name), "w") as f:
            json.dump(raw, f, indent=1)
    for name in (stamp + ".md", "latest.md"):
        with open(os.path.join(args.out_dir, name), "w") as f:
            f.write(text)
    log("bench: done in %s; wrote %s/%s.{json,md} and latest.md" % (meta["elapsed"], args.out_dir, stamp))
    print(text)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("bench: interrupted; every node it started is stopped")
        sys.exit(130)
