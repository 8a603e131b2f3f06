"""The "django" scenario of the benchmark (issue 12): the seed's Django
project (examples/django-demo, `-A celeryDemo`) under `celery multi` and
under `rmulti`, side by side in the same run, for what a Django user pays:

- node PSS (the node's whole process tree: main, template, pool children,
  hosts) for -c 1/2/4/8, after 200 `add` tasks;
- start to first result of a node: from `multi start` to the first `add`
  result (the target is at -c 8);
- a replacement ready: at -c 1, SIGKILL the pool child (rmulti: the Rust
  child, its host goes with it; Celery: the ForkPoolWorker) while idle, send
  one `add` at once, and time the kill to its result — the only way that
  task runs is through the replacement; less an idle round trip of the same
  node, that is what the replacement adds.

Called by bench.py (`--scenario django` or `all`), which passes itself as
`B` for its helpers. Nothing here asserts a timing.
"""

import os
import signal
import subprocess
import time

NODES = ("rmulti", "Celery")
HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(os.path.dirname(HERE), "examples", "django-demo")
TASKS = 200
KILLS = 5


class DemoNode:
    """One node of the Django example, started and stopped with `<tool> multi`."""

    def __init__(self, B, label, multi, extra, workdir, env, concurrency):
        self.B = B
        self.label = label
        self.multi = multi
        self.env = env
        self.workdir = workdir
        self.nodename = "d%d" % concurrency
        self.pidfile = os.path.join(workdir, self.nodename + ".pid")
        self.opts = ["-A", "celeryDemo", "-c", str(concurrency), "-l", "warning"] + extra + [
            "--pidfile=" + os.path.join(workdir, "%n.pid"),
            "--logfile=" + os.path.join(workdir, "%n%I.log")]
        self.pid = None
        os.makedirs(workdir, exist_ok=True)

    def run(self, verb, timeout=120):
        # In the project's directory, as its users run it.
        r = subprocess.run(self.multi + [verb, self.nodename] + self.opts, cwd=DEMO, env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")

    def start(self, client):
        """`multi start`, then one `add`: seconds from the command to its result."""
        for f in os.listdir(self.workdir):
            if f.endswith(".log"):
                os.unlink(os.path.join(self.workdir, f))
        t0 = time.perf_counter()
        rc, out = self.run("start")
        if rc != 0:
            raise RuntimeError("%s multi start failed (%d): %s" % (self.label, rc, out.strip()[-500:]))
        v = client.send_task("demo.tasks.add", (1, 1)).get(timeout=120)
        elapsed = time.perf_counter() - t0
        if v != 2:
            self.B.problem("%s django: probe add(1, 1) returned %r" % (self.label, v))
        deadline = time.monotonic() + 30
        while self.pid is None and time.monotonic() < deadline:
            self.pid = self.B.read_pid(self.pidfile)
            if self.pid is None:
                time.sleep(0.01)
        if self.pid is None:
            raise RuntimeError("%s: no pidfile %s" % (self.label, self.pidfile))
        return elapsed

    def pool_children(self):
        """rmulti: the Rust pool children (its template is the Python child
        of the main process); Celery: the ForkPoolWorkers."""
        kids = self.B.children_of(self.pid)
        if self.label == "rmulti":
            return [k for k in kids if _comm(k) == "rmulti"]
        return kids

    def stopwait(self):
        pid = self.pid or self.B.read_pid(self.pidfile)
        procs = self.B.tree(pid) if pid else []
        try:
            rc, out = self.run("stopwait", timeout=120)
        except subprocess.TimeoutExpired:
            rc, out = -1, "timed out"
        if rc != 0:
            self.B.problem("%s django: multi stopwait exited %d: %s" % (self.label, rc, out.strip()[-300:]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(self.B.alive(p) for p in procs):
            time.sleep(0.01)
        left = [p for p in procs if self.B.alive(p)]
        if left:
            self.B.problem("%s django: %d process(es) left after multi stopwait; killed" % (self.label, len(left)))
        self.kill(procs)
        self.pid = None

    def kill(self, procs=None):
        pid = self.pid or self.B.read_pid(self.pidfile)
        for p in procs if procs is not None else (self.B.tree(pid) if pid else []):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if os.path.exists(self.pidfile) and procs is None:
            os.unlink(self.pidfile)


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def round_trips(client, n=KILLS * 2):
    """Idle `add` round trips, ms: what a kill-to-result time includes
    besides the replacement itself (the client, the task, the result)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.send_task("demo.tasks.add", (3, 3)).get(timeout=60)
        out.append(1000.0 * (time.perf_counter() - t0))
    return out


def replacement(B, node, client):
    """Kill the only pool child while idle, send one `add`, time the kill to
    its result; the median of KILLS tries, in ms."""
    samples = []
    for _ in range(KILLS):
        kids = node.pool_children()
        if len(kids) != 1:
            B.problem("%s django: %d pool children at -c 1, expected 1" % (node.label, len(kids)))
            return samples
        # Idle: the previous probe's result is in, the child waits for work.
        t0 = time.perf_counter()
        os.kill(kids[0], signal.SIGKILL)
        v = client.send_task("demo.tasks.add", (2, 2)).get(timeout=60)
        samples.append(1000.0 * (time.perf_counter() - t0))
        if v != 4:
            B.problem("%s django: add(2, 2) after the kill returned %r" % (node.label, v))
        # The next kill must find the new child in place.
        deadline = time.monotonic() + 10
        while kids[0] in node.pool_children() and time.monotonic() < deadline:
            time.sleep(0.01)
    return samples


def measure(B, node, client, concurrency, out):
    t_first = node.start(client)
    out.setdefault("first_c%d" % concurrency, []).append(t_first)
    results = [client.send_task("demo.tasks.add", (i, i)) for i in range(TASKS)]
    wrong = sum(1 for i, r in enumerate(results) if r.get(timeout=120) != 2 * i)
    if wrong:
        B.problem("%s django: %d of %d add results wrong" % (node.label, wrong, TASKS))
    everything = B.tree(node.pid)
    pss = sum(B.pss_kib(p) for p in everything) / 1024.0
    out.setdefault("pss_c%d" % concurrency, []).append(pss)
    line = "    %s django -c %d: PSS %.0f MiB (%d processes), start to first result %.2f s" % (
        node.label, concurrency, pss, len(everything), t_first)
    # Before the kills below, which log errors on purpose.
    B.Node.scan_logs(node, "django -c %d" % concurrency)
    if concurrency == 1:
        trips = round_trips(client)
        out.setdefault("trip_ms", []).extend(trips)
        kills = replacement(B, node, client)
        out.setdefault("replace_ms", []).extend(kills)
        if kills:
            out.setdefault("replace_added_ms", []).append(B.med(kills) - B.med(trips))
            line += ", kill to a replacement's result %.0f ms (median of %d; an idle round trip %.1f ms)" % (
                B.med(kills), len(kills), B.med(trips))
    B.log(line)
    node.stopwait()


def run(B, args, env, r0, python):
    """Runs the scenario; returns the results by system."""
    from celery import Celery

    broker = "redis://127.0.0.1:%d/0" % args.port
    backend = "redis://127.0.0.1:%d/1" % args.port
    denv = dict(env, CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=backend,
                DJANGO_SETTINGS_MODULE="celeryDemo.settings", DEMO_DB=os.path.join(args.tmp, "demo.sqlite3"),
                PYTHONPATH=DEMO + os.pathsep + env.get("PYTHONPATH", ""))
    client = Celery("bench-django", broker=broker, backend=backend)
    levels = [int(c) for c in args.django_concurrency.split(",") if c]
    res = {name: {"rounds": {}} for name in NODES}
    for rnd in range(args.rounds):
        order = list(NODES) if rnd % 2 == 0 else list(reversed(NODES))
        B.log("django example, round %d/%d (%s first)" % (rnd + 1, args.rounds, order[0]))
        this = {name: {} for name in NODES}
        for c in levels:
            for name in order:
                multi, extra = ([os.path.abspath(args.rmulti)], ["--python=" + python]) if name == "rmulti" \
                    else ([args.celery, "multi"], [])
                node = DemoNode(B, name, multi, extra, os.path.join(args.tmp, "django-" + name), denv, c)
                r0.flushall()
                try:
                    measure(B, node, client, c, this[name])
                except Exception as e:  # noqa: BLE001 - report, carry on with the other
                    B.problem("%s django -c %d run aborted: %r" % (name, c, e))
                    node.kill()
        for name in NODES:
            for key, samples in this[name].items():
                res[name].setdefault(key, []).extend(samples)
                res[name]["rounds"].setdefault(key, []).append(samples)
    return res


def report(B, res, args, meta):
    R, C = res["rmulti"], res["Celery"]

    def r(name, unit, key, better, fmt="%.0f", scale=1.0):
        ratios = []
        for a, b in zip(R["rounds"].get(key, []), C["rounds"].get(key, [])):
            if a and b and B.med(b):
                ratios.append(B.med(a) / B.med(b))
        return B.row(name, unit, scale * B.med(R.get(key, [])), scale * B.med(C.get(key, [])),
                     better, fmt, ratios=ratios)

    levels = [int(c) for c in args.django_concurrency.split(",") if c]
    lines = [
        "# The Django example: rmulti vs celery multi (Celery %s) — %s" % (meta["celery_version"], meta["date"]),
        "",
        "examples/django-demo (`-A celeryDemo`, Django's fix-up, autodiscovery), run from its directory by "
        "`celery multi start dN -A celeryDemo -c N` and `rmulti start dN -A celeryDemo -c N --python=<venv python>`. "
        "%d round(s), order alternating. PSS is the node's whole process tree after %d `add` tasks; "
        "start to first result from `multi start` to the first `add` result; the replacement at -c 1: "
        "SIGKILL the idle pool child, send one `add` at once, kill to its result (median of %d a round), "
        "and that less the median idle round trip of the same node." % (
            args.rounds, TASKS, KILLS),
        "",
        "| measurement | rmulti | Celery | rmulti/Celery | better is |",
        "|---|---:|---:|---:|---|",
    ]
    for c in levels:
        lines.append(r("node PSS, -c %d" % c, "MiB", "pss_c%d" % c, "lower", "%.0f"))
    for c in levels:
        lines.append(r("start to first result, -c %d" % c, "ms", "first_c%d" % c, "lower", scale=1000.0))
    lines.append(r("pool child killed to a replacement's result, -c 1", "ms", "replace_ms", "lower"))
    lines.append(r("idle round trip (`add` sent to its result), -c 1", "ms", "trip_ms", "lower", "%.1f"))
    lines.append(r("what the replacement adds (kill to result − idle round trip)", "ms", "replace_added_ms",
                   "lower"))
    lines.append("")

    def ratio(key):
        rs = [B.med(a) / B.med(b) for a, b in zip(R["rounds"].get(key, []), C["rounds"].get(key, []))
              if a and b and B.med(b)]
        return B.med(rs)

    targets = [("node PSS -c 2 ≤ 0.8× Celery's", ratio("pss_c2"), 0.8),
               ("node PSS -c 8 ≤ 0.5× Celery's", ratio("pss_c8"), 0.5),
               ("start to first result -c 8 ≤ 0.5× Celery's", ratio("first_c8"), 0.5)]
    lines += ["| target (issue 12) | measured | |", "|---|---:|---|"]
    for name, value, limit in targets:
        met = "n/a" if value != value else ("met" if value <= limit else "NOT met")
        lines.append("| %s | %s | %s |" % (name, B.fmt_ratio(value), met))
    rep = B.med(R.get("replace_added_ms", []))
    lines.append("| a replacement host ready ≤ 50 ms (kill to result − idle round trip) | %s | %s |" % (
        "%.0f ms" % rep if rep == rep else "n/a", "n/a" if rep != rep else ("met" if rep <= 50 else "NOT met")))
    lines.append("")
    for label in NODES:
        mine = [p for p in B.PROBLEMS if p.startswith(label + " django")]
        if mine:
            lines += ["%s (django): problems seen during the run:" % label, ""] + ["- " + p for p in mine] + [""]
        else:
            lines += ["%s (django): no wrong result, every stopwait clean." % label, ""]
    return "\n".join(lines)
