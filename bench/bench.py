"""Side-by-side benchmark: rmulti against Python Celery, same machine, same run.

Driven by bench/run (which starts a private redis-server and passes its port).
Every measurement is taken for both workers in the same round, alternating
which goes first from one round to the next so that drift cancels; the table
reports the median of the rounds and the rmulti/Celery ratio.

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


def log(msg):
    print(msg, file=sys.stderr, flush=True)


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


def encode(template, args):
    """A copy of template for a new task id and positional args
    (also used by pytasks.py); returns (task id, raw message)."""
    m = json.loads(json.dumps(template))
    tid = str(uuid.uuid4())
    h = m["headers"]
    h["id"] = tid
    h["root_id"] = tid
    h["argsrepr"] = repr(tuple(args))
    body = [list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    m["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    p = m["properties"]
    p["correlation_id"] = tid
    p["delivery_tag"] = str(uuid.uuid4())
    return tid, json.dumps(m)


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


def check_results(r1, ids, label, what):
    """Every task stored SUCCESS with 2*i; returns (ok, missing, wrong)."""
    missing = wrong = 0
    example = None
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        vals = r1.mget(["celery-task-meta-" + t for t in chunk])
        for k, (tid, v) in enumerate(zip(chunk, vals)):
            i = start + k
            if v is None:
                missing += 1
                continue
            meta = json.loads(v)
            if meta.get("status") != "SUCCESS" or meta.get("result") != 2 * i:
                wrong += 1
                example = example or meta
    if missing or wrong:
        problem("%s %s: %d of %d results missing, %d wrong%s" % (
            label, what, missing, len(ids), wrong,
            (" (e.g. %s)" % json.dumps(example)[:300]) if example else ""))
    return len(ids) - missing - wrong


# --- measurements ----------------------------------------------------------


def measure_startup_stop(node, r0, reps, out):
    for _ in range(reps):
        r0.flushall()
        t_start = node.start(loglevel="info")
        time.sleep(1.0)  # let it settle to idle
        mib, nproc = node.rss()
        t_stop = node.stop()
        node.scan_logs("start/stop")
        out.setdefault("startup", []).append(t_start)
        out.setdefault("rss_idle", []).append(mib)
        out.setdefault("nproc", []).append(nproc)
        if t_stop is not None:
            out.setdefault("stop_idle", []).append(t_stop)
            out.setdefault("stop_idle_all", []).append(node.stop_all)
        log("    %s start %.3f s, idle RSS %.1f MiB (%d processes), stop %s" % (
            node.label, t_start, mib, nproc, "%.3f s" % t_stop if t_stop is not None else "FAILED"))


def measure_load(node, r0, r1, template, n, n_stream, n_lat, out):
    from proj.tasks import add

    # 1. Throughput from a pre-loaded queue.
    r0.flushall()
    ids = preload(r0, template, n)
    t_launch = time.perf_counter()
    # No readiness probe here: a probe task would queue behind the N.
    node.start(loglevel="warning", timeout=120, wait=False)
    t_ready = time.perf_counter()
    t_first, t_last, count = wait_results(r1, n, deadline_s=max(120.0, n / 100.0))
    if t_last is None:
        problem("%s throughput: only %d of %d results after the deadline (queue left: %d)" % (
            node.label, count, n, r0.llen("celery")))
    else:
        # Launch-to-done includes start-up; first-to-last is the steady rate.
        out.setdefault("tput_wall", []).append(n / (t_last - t_launch))
        out.setdefault("tput", []).append((n - 1) / (t_last - t_first))
        log("    %s throughput: %d tasks, %.0f/s first-to-last, %.0f/s launch-to-done (launcher returned after %.2f s)" % (
            node.label, n, (n - 1) / (t_last - t_first), n / (t_last - t_launch), t_ready - t_launch))
    check_results(r1, ids, node.label, "throughput")
    mib, _ = node.rss()
    out.setdefault("rss_loaded", []).append(mib)

    # 2. Streaming: the real client sends while the worker runs.
    r1.flushdb()
    t0 = time.perf_counter()
    sids = [add.delay(i, i).id for i in range(n_stream)]
    t_sent = time.perf_counter()
    _, t_last, count = wait_results(r1, n_stream, deadline_s=max(60.0, n_stream / 100.0))
    if t_last is None:
        problem("%s streaming: only %d of %d results after the deadline" % (node.label, count, n_stream))
    else:
        out.setdefault("stream", []).append(n_stream / (t_last - t0))
        out.setdefault("stream_send", []).append(n_stream / (t_sent - t0))
        log("    %s streaming: %d tasks, %.0f/s end to end (client sent at %.0f/s)" % (
            node.label, n_stream, n_stream / (t_last - t0), n_stream / (t_sent - t0)))
    check_results(r1, sids, node.label, "streaming")

    # 3. Latency: sequential round trips through the Celery client.
    r1.flushdb()
    lat = []
    failures = 0
    for i in range(n_lat):
        t = time.perf_counter()
        try:
            v = add.delay(i, i).get(timeout=10)
            if v != 2 * i:
                failures += 1
        except Exception as e:  # noqa: BLE001 - report, carry on
            failures += 1
            if failures <= 3:
                problem("%s latency: round trip %d failed: %r" % (node.label, i, e))
            continue
        lat.append((time.perf_counter() - t) * 1000.0)
    if failures:
        problem("%s latency: %d of %d round trips failed" % (node.label, failures, n_lat))
    out.setdefault("lat", []).extend(lat)
    if lat:
        log("    %s latency: p50 %.2f ms, p99 %.2f ms" % (node.label, pct(lat, 50), pct(lat, 99)))

    t_stop = node.stop()
    node.scan_logs("load run")
    if t_stop is not None:
        out.setdefault("stop_loaded", []).append(t_stop)


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


# --- report ----------------------------------------------------------------


KEYS = ("tput", "tput_wall", "stream", "stream_send", "lat", "startup", "stop_idle",
        "stop_idle_all", "stop_loaded", "stop_busy", "rss_idle", "rss_loaded", "nproc")


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


def paired(R, C, key, agg=None):
    """Per-round rmulti/Celery ratios of a per-round list of samples."""
    rr, cc = R.get("rounds", {}).get(key, []), C.get("rounds", {}).get(key, [])
    out = []
    for a, b in zip(rr, cc):
        if a and b:
            va, vb = (agg(a), agg(b)) if agg else (med(a), med(b))
            if vb:
                out.append(va / vb)
    return out


def report(res, args, meta):
    R, C = res["rmulti"], res["Celery"]
    lines = [
        "# rmulti vs Celery %s — %s" % (meta["celery_version"], meta["date"]),
        "",
        "Machine: %s, %d cores (%s); Redis %s on 127.0.0.1; -c 2 for both; %d round(s), "
        "order alternating; N=%d pre-loaded, %d streamed, %d round trips." % (
            meta["host"], os.cpu_count(), meta["cpu"], meta["redis_version"], args.rounds,
            args.n, args.n_stream, args.n_lat),
        "",
        "| measurement | rmulti | Celery | rmulti/Celery | better is |",
        "|---|---:|---:|---:|---|",
        row("throughput, pre-loaded queue (first to last result)", "tasks/s", med(R.get("tput", [])), med(C.get("tput", [])), "higher", ratios=paired(R, C, "tput")),
        row("throughput, pre-loaded, incl. start-up (launch to last result)", "tasks/s", med(R.get("tput_wall", [])), med(C.get("tput_wall", [])), "higher", ratios=paired(R, C, "tput_wall")),
        row("throughput, streaming from the client (delay() loop)", "tasks/s", med(R.get("stream", [])), med(C.get("stream", [])), "higher", ratios=paired(R, C, "stream")),
        row("latency p50, delay().get()", "ms", pct(R.get("lat", []), 50), pct(C.get("lat", []), 50), "lower", "%.2f", ratios=paired(R, C, "lat", lambda xs: pct(xs, 50))),
        row("latency p99, delay().get()", "ms", pct(R.get("lat", []), 99), pct(C.get("lat", []), 99), "lower", "%.2f", ratios=paired(R, C, "lat", lambda xs: pct(xs, 99))),
        row("start-up, launch to ready", "ms", 1000 * med(R.get("startup", [])), 1000 * med(C.get("startup", [])), "lower", ratios=paired(R, C, "startup")),
        row("stop, SIGTERM to pidfile gone (idle)", "ms", 1000 * med(R.get("stop_idle", [])), 1000 * med(C.get("stop_idle", [])), "lower", ratios=paired(R, C, "stop_idle")),
        row("stop, SIGTERM to last process gone (idle)", "ms", 1000 * med(R.get("stop_idle_all", [])), 1000 * med(C.get("stop_idle_all", [])), "lower", ratios=paired(R, C, "stop_idle_all")),
        row("stop, SIGTERM to pidfile gone (after load)", "ms", 1000 * med(R.get("stop_loaded", [])), 1000 * med(C.get("stop_loaded", [])), "lower", ratios=paired(R, C, "stop_loaded")),
        row("stop, SIGTERM to pidfile gone (busy: queue half done)", "ms", 1000 * med(R.get("stop_busy", [])), 1000 * med(C.get("stop_busy", [])), "lower", ratios=paired(R, C, "stop_busy")),
        row("memory, idle node (RSS, all processes)", "MiB", med(R.get("rss_idle", [])), med(C.get("rss_idle", [])), "lower", "%.1f", ratios=paired(R, C, "rss_idle")),
        row("memory, after the throughput run", "MiB", med(R.get("rss_loaded", [])), med(C.get("rss_loaded", [])), "lower", "%.1f", ratios=paired(R, C, "rss_loaded")),
        "",
        "Absolute figures are medians over all rounds; the ratio is the median of the per-round ratios. "
        "Processes per node: rmulti %s, Celery %s (main + pool children). "
        "The streaming figure is bounded by the Python client's send rate "
        "(rmulti run: %.0f/s, Celery run: %.0f/s)." % (
            "/".join(str(x) for x in sorted(set(R.get("nproc", []))) or ["?"]),
            "/".join(str(x) for x in sorted(set(C.get("nproc", []))) or ["?"]),
            med(R.get("stream_send", [])), med(C.get("stream_send", []))),
        "",
    ]
    for label in ("rmulti", "Celery"):
        mine = [p for p in PROBLEMS if p.startswith(label) and not p.startswith(label + " python")]
        if mine:
            lines += ["%s: problems seen during the run:" % label, ""] + ["- " + p for p in mine] + [""]
        else:
            lines += ["%s: no task lost, no wrong result, no failed round trip, every stop clean." % label, ""]
    return "\n".join(lines)


def run_builtin(args, env, r0, r1, template):
    """The builtin scenario: rmulti's builtin tasks (proj.toml) against a
    Celery worker running bench/celery_app/proj."""
    nodes = {
        "rmulti": Rmulti(os.path.abspath(args.rmulti), os.path.join(args.tmp, "rmulti"), env, args.port),
        "Celery": Celery(args.celery, os.path.join(args.tmp, "celery"), env),
    }
    res = {"rmulti": {}, "Celery": {}}
    try:
        for rnd in range(args.rounds):
            order = ["rmulti", "Celery"] if rnd % 2 == 0 else ["Celery", "rmulti"]
            log("round %d/%d (%s first)" % (rnd + 1, args.rounds, order[0]))
            this = {"rmulti": {}, "Celery": {}}
            for name in order:
                measure_startup_stop(nodes[name], r0, args.startups, this[name])
            for name in order:
                try:
                    measure_busy_stop(nodes[name], r0, r1, template, args.n_busy, this[name])
                except Exception as e:  # noqa: BLE001 - report, carry on with the other
                    problem("%s busy-stop run aborted: %r" % (name, e))
                    nodes[name].kill()
            for name in order:
                try:
                    measure_load(nodes[name], r0, r1, template, args.n, args.n_stream, args.n_lat, this[name])
                except Exception as e:  # noqa: BLE001 - report, carry on with the other
                    problem("%s load run aborted: %r" % (name, e))
                    nodes[name].kill()
            for name in this:
                rounds = res[name].setdefault("rounds", {})
                for key in set(this[name]) | set(rounds) | set(KEYS):
                    samples = this[name].get(key, [])
                    res[name].setdefault(key, []).extend(samples)
                    rounds.setdefault(key, []).append(samples)
    finally:
        for n in nodes.values():
            n.kill()
    return res


def main():
    # bench/run stops us with SIGTERM on Ctrl-C or failure: unwind so that
    # the finally below kills the nodes we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--rmulti", required=True)
    ap.add_argument("--celery", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-stream", type=int, default=5000)
    ap.add_argument("--n-lat", type=int, default=500)
    ap.add_argument("--n-busy", type=int, default=4000, help="pre-loaded for the busy stop")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--startups", type=int, default=3, help="start/stop cycles per round")
    ap.add_argument("--scenario", choices=("builtin", "python", "all"), default="all",
                    help="builtin: rmulti's builtin tasks vs a Celery worker; python: the same "
                         "Python app under celery multi and rmulti (pytasks.py); all: both")
    ap.add_argument("--python", default=sys.executable, help="the interpreter rmulti's hosts run")
    ap.add_argument("--py-n", type=int, default=5000, help="python scenario: pre-loaded add tasks")
    ap.add_argument("--py-heavy", type=int, default=2000, help="python scenario: pre-loaded sumrange tasks")
    ap.add_argument("--py-work", type=int, default=20000, help="python scenario: sumrange's n")
    args = ap.parse_args()

    broker = "redis://127.0.0.1:%d/0" % args.port
    backend = "redis://127.0.0.1:%d/1" % args.port
    os.environ["BENCH_BROKER_URL"] = broker
    os.environ["BENCH_RESULT_BACKEND"] = backend
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(HERE, "celery_app") + os.pathsep + env.get("PYTHONPATH", "")

    import celery
    import redis as redislib

    r0 = redislib.Redis.from_url(broker)
    r1 = redislib.Redis.from_url(backend)
    template = template_message(r0)

    res = pyres = None
    if args.scenario in ("builtin", "all"):
        res = run_builtin(args, env, r0, r1, template)
    if args.scenario in ("python", "all"):
        import pytasks
        pyres = pytasks.run(sys.modules[__name__], args, env, r0, r1, os.path.abspath(args.python))

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": socket.gethostname(),
        "cpu": cpu,
        "celery_version": celery.__version__,
        "redis_version": r0.info("server").get("redis_version", "?"),
        "python": sys.version.split()[0],
    }
    texts = []
    if res is not None:
        texts.append(report(res, args, meta))
    if pyres is not None:
        import pytasks
        texts.append(pytasks.report(sys.modules[__name__], pyres, args, meta))
    text = "\n".join(texts)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.join(os.path.dirname(os.path.abspath(args.out)), "latest.json"), "w") as f:
        json.dump({"meta": meta, "args": vars(args), "results": res, "python_results": pyres,
                   "problems": PROBLEMS}, f)
    print(text)


if __name__ == "__main__":
    main()
