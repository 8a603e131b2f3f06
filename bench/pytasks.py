"""The "python tasks" scenario of the benchmark: the same Python Celery app
(bench/celery_app/proj) run by `celery multi` and by `rmulti start ... -A proj
--python=...`, both from the same working directory with the same PYTHONPATH.

rmulti runs the app's tasks in one long-lived Python host per pool child
(docs/python-host.md), so this compares what a Celery project gets by
switching its `celery multi` line to `rmulti`: tasks/s with a pre-loaded
queue, for a trivial task (`add`) and a slightly heavier pure-Python one
(`sumrange`, an interpreted loop), and memory per pool child and per node.

Called by bench.py (`--scenario python` or `all`), which passes itself as `B`
for its helpers (process tree, RSS, problem list, medians, table rows).
Nothing here asserts a timing.
"""

import json
import os
import signal
import subprocess
import time

NODES = ("rmulti", "Celery")


# --- memory ----------------------------------------------------------------


def pgid_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def pool(B, main):
    """Each pool child with what serves it: [(child, [child, its processes])].

    Celery: main process -> ForkPoolWorker-N children (and their subtrees).
    rmulti: main process -> Rust pool children, each leading its own process
    group, which the Python host the node's template forked for it joins (the
    host is the template's child, not the pool child's). The template and its
    spare host belong to the node, not to a pool child.
    """
    kids = B.children_of(main)
    leaders = [k for k in kids if pgid_of(k) == k]
    if not leaders:
        return [(k, B.tree(k)) for k in kids]
    everything = B.tree(main)
    return [(k, [k] + [p for p in everything if p != k and pgid_of(p) == k]) for k in leaders]


def memory(B, main):
    """RSS (and PSS) of a node, by role, in MiB (see `pool`)."""
    per_child, per_child_all, pss_child_all, hosts = [], [], [], 0
    members = pool(B, main)
    kids = [k for k, _ in members]
    for k, sub in members:
        hosts += len(sub) - 1
        per_child.append(B.rss_kib(k) / 1024.0)
        per_child_all.append(sum(B.rss_kib(p) for p in sub) / 1024.0)
        pss_child_all.append(sum(B.pss_kib(p) for p in sub) / 1024.0)
    everything = B.tree(main)
    return {
        "main": B.rss_kib(main) / 1024.0,
        "child": B.med(per_child),
        "child_all": B.med(per_child_all),
        "pss_child_all": B.med(pss_child_all),
        "total": sum(B.rss_kib(p) for p in everything) / 1024.0,
        "pss_total": sum(B.pss_kib(p) for p in everything) / 1024.0,
        "children": len(kids),
        "hosts": hosts,
        "procs": len(everything),
    }


def cpu_by_role(B, main):
    """CPU seconds so far: main process, pool children, their hosts (rmulti)."""
    members = pool(B, main)
    kids = [k for k, _ in members]
    hosts = [h for _, sub in members for h in sub[1:]]
    return {"main": B.cpu_s(main), "children": sum(B.cpu_s(k) for k in kids),
            "hosts": sum(B.cpu_s(h) for h in hosts)}


# --- the two nodes, started the way `multi` starts them ----------------------


class MultiNode:
    """One node started and stopped with `<tool> multi start|stopwait NAME`."""

    def __init__(self, B, label, nodename, multi, extra, workdir, env):
        self.B = B
        self.label = label
        self.nodename = nodename
        self.multi = multi  # argv prefix: [celery, "multi"] or [rmulti]
        self.workdir = workdir
        self.env = env
        self.pidfile = os.path.join(workdir, nodename + ".pid")
        # The same worker options for start and stopwait, as with celery multi.
        self.opts = ["-A", "proj", "-c", "2", "-l", "warning"] + extra + [
            "--pidfile=" + os.path.join(workdir, "%n.pid"),
            "--logfile=" + os.path.join(workdir, "%n%I.log")]
        self.pid = None
        os.makedirs(workdir, exist_ok=True)

    def run(self, verb, timeout=120):
        argv = self.multi + [verb, self.nodename] + self.opts
        r = subprocess.run(argv, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")

    def start(self, want_procs):
        """`multi start`, then a round trip; returns (seconds to the command
        returning, seconds to the first round trip)."""
        from proj.tasks import add

        for f in os.listdir(self.workdir):
            if f.endswith(".log"):
                os.unlink(os.path.join(self.workdir, f))
        t0 = time.perf_counter()
        rc, out = self.run("start")
        t_cmd = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError("%s multi start failed (%d): %s" % (self.label, rc, out.strip()[-500:]))
        deadline = time.monotonic() + 30
        while self.pid is None and time.monotonic() < deadline:
            self.pid = self.B.read_pid(self.pidfile)
            if self.pid is None:
                time.sleep(0.005)
        if self.pid is None:
            raise RuntimeError("%s: no pidfile %s after multi start: %s" % (self.label, self.pidfile, out.strip()[-300:]))
        v = add.delay(1, 1).get(timeout=60)
        t_ready = time.perf_counter() - t0
        if v != 2:
            self.B.problem("%s python: probe add(1, 1) returned %r" % (self.label, v))
        # Every pool child (and, for rmulti, its Python host) up before
        # anything is measured.
        deadline = time.monotonic() + 30
        while len(self.B.tree(self.pid)) < want_procs and time.monotonic() < deadline:
            time.sleep(0.05)
        n = len(self.B.tree(self.pid))
        if n < want_procs:
            self.B.problem("%s python: %d processes 30 s after start, expected %d" % (self.label, n, want_procs))
        return t_cmd, t_ready

    def stopwait(self):
        """`multi stopwait`; returns its duration, and checks that the node's
        every process and its pidfile are gone."""
        pid = self.pid or self.B.read_pid(self.pidfile)
        procs = self.B.tree(pid) if pid else []
        t0 = time.perf_counter()
        try:
            rc, out = self.run("stopwait", timeout=120)
        except subprocess.TimeoutExpired:
            self.B.problem("%s python: multi stopwait still running after 120 s; killing the node" % self.label)
            self.kill()
            return None
        elapsed = time.perf_counter() - t0
        if rc != 0:
            self.B.problem("%s python: multi stopwait exited %d: %s" % (self.label, rc, out.strip()[-300:]))
        # A zombie counts as gone (PID 1 here can be slow to reap orphans);
        # give stragglers a few seconds before calling them left behind.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(self.B.alive(p) for p in procs):
            time.sleep(0.01)
        left = [p for p in procs if self.B.alive(p)]
        if left:
            self.B.problem("%s python: %d of the node's %d processes still running after multi stopwait "
                           "(+5 s): %s; killed" % (self.label, len(left), len(procs), left))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if os.path.exists(self.pidfile):
            self.B.problem("%s python: pidfile left after multi stopwait" % self.label)
            os.unlink(self.pidfile)
        self.pid = None
        return elapsed

    def scan_logs(self, what):
        self.B.Node.scan_logs(self, what)

    def kill(self):
        self.B.Node.kill(self)


# --- messages ----------------------------------------------------------------


def loaded_run(B, node, r0, r1, template, argss, expect, what):
    """Push all the messages with one LPUSH onto a staging list and release
    them with one RENAME (the running node sees a full queue at once), wait
    for every result, check them; returns tasks/s from the RENAME to the last
    result, or None."""
    r1.flushdb()
    ids, raws = [], []
    for args in argss:
        tid, raw = B.encode(template, args)
        ids.append(tid)
        raws.append(raw)
    n = len(ids)
    # Staged, then released at once with RENAME (as builtin.py's drains).
    r0.delete("bench:staging")
    r0.lpush("bench:staging", *raws)
    cpu0, rcpu0 = cpu_by_role(B, node.pid), B.redis_cpu_s(r0)
    t0 = time.perf_counter()
    r0.rename("bench:staging", "celery")
    _, t_last, count = B.wait_results(r1, n, deadline_s=max(120.0, n / 50.0))
    cpu1, rcpu1 = cpu_by_role(B, node.pid), B.redis_cpu_s(r0)
    # CPU per task, ms: the node's processes by role, and Redis.
    cpu = {k: 1000.0 * (cpu1[k] - cpu0[k]) / n for k in cpu0}
    cpu["node"] = sum(cpu.values())
    cpu["redis"] = 1000.0 * (rcpu1 - rcpu0) / n
    rate = None
    if t_last is None:
        B.problem("%s python %s: only %d of %d results after the deadline (queue left: %d, unacked: %d)" % (
            node.label, what, count, n, r0.llen("celery"), r0.hlen("unacked")))
    else:
        rate = n / (t_last - t0)
    # Every task stored SUCCESS with the right value.
    missing = wrong = 0
    example = None
    for start in range(0, n, 2000):
        chunk = ids[start:start + 2000]
        for k, v in enumerate(r1.mget(["celery-task-meta-" + t for t in chunk])):
            i = start + k
            if v is None:
                missing += 1
                continue
            meta = json.loads(v)
            if meta.get("status") != "SUCCESS" or meta.get("result") != expect(argss[i]):
                wrong += 1
                example = example or meta
    if missing or wrong:
        B.problem("%s python %s: %d of %d results missing, %d wrong%s" % (
            node.label, what, missing, n, wrong, (" (e.g. %s)" % json.dumps(example)[:300]) if example else ""))
    return rate, cpu


def sumrange_expect(args):
    return args[0] * (args[0] - 1) // 2


# --- the scenario ------------------------------------------------------------


def measure(B, node, r0, r1, tpl_add, tpl_sum, n, n_heavy, work, want_procs, out):
    r0.flushall()
    t_cmd, t_ready = node.start(want_procs)
    out.setdefault("start_cmd", []).append(t_cmd)
    out.setdefault("start_ready", []).append(t_ready)
    time.sleep(1.0)  # settle to idle
    idle = memory(B, node.pid)
    for k, v in idle.items():
        out.setdefault("idle_" + k, []).append(v)

    rate, cpu = loaded_run(B, node, r0, r1, tpl_add, [(i, i) for i in range(n)],
                           lambda a: a[0] + a[1], "add")
    if rate:
        out.setdefault("tput_add", []).append(rate)
    for k, v in cpu.items():
        out.setdefault("cpu_add_" + k, []).append(v)
    rate2, cpu2 = loaded_run(B, node, r0, r1, tpl_sum, [(work + i % 100,) for i in range(n_heavy)],
                             sumrange_expect, "sumrange")
    if rate2:
        out.setdefault("tput_sum", []).append(rate2)
    for k, v in cpu2.items():
        out.setdefault("cpu_sum_" + k, []).append(v)
    loaded = memory(B, node.pid)
    for k, v in loaded.items():
        out.setdefault("load_" + k, []).append(v)

    t_stop = node.stopwait()
    if t_stop is not None:
        out.setdefault("stopwait", []).append(t_stop)
    node.scan_logs("python scenario")
    queued, unacked = r0.llen("celery"), r0.hlen("unacked")
    if queued or unacked:
        B.problem("%s python: after stopwait %d message(s) on the queue, %d unacked" % (node.label, queued, unacked))
    B.log("    %s python: add %s/s, sumrange(%d) %s/s; per child RSS %.1f MiB (with host %.1f), "
          "node %.1f MiB (%d processes) after load; start %.2f s (ready %.2f s), stopwait %s" % (
              node.label, "%.0f" % rate if rate else "FAILED", work, "%.0f" % rate2 if rate2 else "FAILED",
              loaded["child"], loaded["child_all"], loaded["total"], loaded["procs"], t_cmd, t_ready,
              "%.2f s" % t_stop if t_stop is not None else "FAILED"))
    for what, c in (("add", cpu), ("sumrange", cpu2)):
        B.log("      CPU per %s task: node %.2f ms (main %.2f, children %.2f, hosts %.2f), Redis %.2f ms" % (
            what, c["node"], c["main"], c["children"], c["hosts"], c["redis"]))


def run(B, args, env, r0, r1, python):
    """Runs the scenario; returns (results, markdown lines)."""
    from proj.tasks import add, sumrange

    tpl_add = B.template_for(r0, add, 0, 0)
    tpl_sum = B.template_for(r0, sumrange, args.py_work)
    r0.flushall()
    nodes = {
        "rmulti": MultiNode(B, "rmulti", "r1", [os.path.abspath(args.rmulti)], ["--python=" + python],
                            os.path.join(args.tmp, "py"), env),
        "Celery": MultiNode(B, "Celery", "c1", [args.celery, "multi"], [],
                            os.path.join(args.tmp, "py"), env),
    }
    # main + 2 children (+ 2 Python hosts for rmulti)
    want = {"rmulti": 5, "Celery": 3}
    res = {name: {"rounds": {}} for name in NODES}
    try:
        for rnd in range(args.rounds):
            order = list(NODES) if rnd % 2 == 0 else list(reversed(NODES))
            B.log("python tasks, round %d/%d (%s first)" % (rnd + 1, args.rounds, order[0]))
            this = {name: {} for name in NODES}
            for name in order:
                try:
                    measure(B, nodes[name], r0, r1, tpl_add, tpl_sum, args.py_n, args.py_heavy,
                            args.py_work, want[name], this[name])
                except Exception as e:  # noqa: BLE001 - report, carry on with the other
                    B.problem("%s python run aborted: %r" % (name, e))
                    nodes[name].kill()
            for name in NODES:
                for key in set(this[name]) | set(res[name]["rounds"]):
                    samples = this[name].get(key, [])
                    res[name].setdefault(key, []).extend(samples)
                    res[name]["rounds"].setdefault(key, []).append(samples)
    finally:
        for node in nodes.values():
            node.kill()
    return res


def report(B, res, args, meta):
    R, C = res["rmulti"], res["Celery"]

    def r(name, unit, key, better, fmt="%.0f", scale=1.0, ckey=None):
        ckey = ckey or key
        ratios = []
        for a, b in zip(R["rounds"].get(key, []), C["rounds"].get(ckey, [])):
            if a and b and B.med(b):
                ratios.append(B.med(a) / B.med(b))
        return B.row(name, unit, scale * B.med(R.get(key, [])), scale * B.med(C.get(ckey, [])),
                     better, fmt, ratios=ratios)

    procs = lambda X: "/".join(str(x) for x in sorted(set(X.get("load_procs", [])))) or "?"
    lines = [
        "# Python tasks: rmulti vs celery multi (Celery %s) — %s" % (meta["celery_version"], meta["date"]),
        "",
        "Machine: %s, %d cores (%s); Redis %s on 127.0.0.1; Python %s. The same app "
        "(bench/celery_app/proj), the same working directory and PYTHONPATH: "
        "`celery multi start c1 -A proj -c 2` and `rmulti start r1 -A proj -c 2 --python=<venv python>`. "
        "%d round(s), order alternating; N=%d `add(i, i)` and %d `sumrange(%d+i%%100)`, "
        "each pushed with one LPUSH onto a staging list and released to the running node "
        "with one RENAME; rate from the RENAME to the last result." % (
            meta["host"], os.cpu_count(), meta["cpu"], meta["redis_version"], meta.get("python", "?"),
            args.rounds, args.py_n, args.py_heavy, args.py_work),
        "",
        "| measurement | rmulti | Celery | rmulti/Celery | better is |",
        "|---|---:|---:|---:|---|",
        r("throughput, `add`, pre-loaded queue (released to last result)", "tasks/s", "tput_add", "higher"),
        r("throughput, `sumrange(%d)`, pre-loaded queue" % args.py_work, "tasks/s", "tput_sum", "higher"),
        r("CPU per `add` task, all node processes", "ms", "cpu_add_node", "lower", "%.2f"),
        r("CPU per `sumrange` task, all node processes", "ms", "cpu_sum_node", "lower", "%.2f"),
        r("CPU per `add` task, Redis server", "ms", "cpu_add_redis", "lower", "%.2f"),
        r("RSS per pool child, idle: rmulti's Rust child alone vs ForkPoolWorker", "MiB", "idle_child", "lower", "%.1f"),
        r("RSS per pool child, idle: rmulti child + its Python host vs ForkPoolWorker", "MiB", "idle_child_all", "lower", "%.1f"),
        r("RSS per pool child, after load: Rust child alone vs ForkPoolWorker", "MiB", "load_child", "lower", "%.1f"),
        r("RSS per pool child, after load: child + Python host vs ForkPoolWorker", "MiB", "load_child_all", "lower", "%.1f"),
        r("RSS main process, after load", "MiB", "load_main", "lower", "%.1f"),
        r("RSS node total, idle (all processes)", "MiB", "idle_total", "lower", "%.1f"),
        r("RSS node total, after load (all processes)", "MiB", "load_total", "lower", "%.1f"),
        r("PSS per pool child (+ host), after load", "MiB", "load_pss_child_all", "lower", "%.1f"),
        r("PSS node total, after load", "MiB", "load_pss_total", "lower", "%.1f"),
        r("`multi start` to first round trip", "ms", "start_ready", "lower", scale=1000.0),
        r("`multi stopwait`, idle after load", "ms", "stopwait", "lower", scale=1000.0),
        "",
        "Absolute figures are medians over all rounds; the ratio is the median of the per-round ratios. "
        "Processes per node: rmulti %s (main, 2 Rust pool children, the Python template that "
        "loaded the app, one Python host per child forked from it, and one spare host), "
        "Celery %s (main, 2 ForkPoolWorkers). RSS counts pages shared between processes once per "
        "process (Celery's children and rmulti's hosts share the pages forked from their parent); "
        "PSS divides shared pages among their users. A pool child's host is the process in its "
        "process group (the template, not the child, forks it). "
        "CPU per task (user + system, from /proc, over the throughput run), split by role: "
        "`add` rmulti main %.2f / Rust children %.2f / Python hosts %.2f ms, Celery main %.2f / "
        "ForkPoolWorkers %.2f ms; `sumrange` rmulti %.2f / %.2f / %.2f ms, Celery %.2f / %.2f ms." % (
            procs(R), procs(C),
            B.med(R.get("cpu_add_main", [])), B.med(R.get("cpu_add_children", [])), B.med(R.get("cpu_add_hosts", [])),
            B.med(C.get("cpu_add_main", [])), B.med(C.get("cpu_add_children", [])),
            B.med(R.get("cpu_sum_main", [])), B.med(R.get("cpu_sum_children", [])), B.med(R.get("cpu_sum_hosts", [])),
            B.med(C.get("cpu_sum_main", [])), B.med(C.get("cpu_sum_children", []))),
        "",
    ]
    for label in NODES:
        mine = [p for p in B.PROBLEMS if p.startswith(label + " python")]
        if mine:
            lines += ["%s (python tasks): problems seen during the run:" % label, ""] + ["- " + p for p in mine] + [""]
        else:
            lines += ["%s (python tasks): no task lost, no wrong result, every stopwait clean." % label, ""]
    return "\n".join(lines)
