"""The builtin-task scenario of issue 5: rmulti running its builtin `noop`
and `add` (proj.toml) against a Celery worker running the same tasks in
Python (bench/celery_app/proj), each started with its own `multi start`.

Per round and per system (the order alternates from round to round):

- a `-c 2` node: `multi start` to the first result; idle memory; drains of
  `noop` and `add` (and, in the rounds asked for, the big `noop` drain); the
  `noop` drain again with task events on (`enable_events`, as `-E`) while a
  subscriber reads `/0.celeryev/*` as Flower would: a redis-py subscriber
  in this process (Flower's client library; reading the events costs it
  CPU on the same cores), then a `redis-cli` one (the events still go out
  over a socket, but reading them costs next to nothing: what is left is
  the worker's own cost);
  in the first round the MONITOR drain (round trips per task); the
  producer-driven run and the round trips of the real Celery client; memory
  after load; `multi stopwait`;
- `-c 1` and `-c 4` nodes: the same drains, then `multi stop`;
- 8 nodes started and stopped with `multi stop`, and again with
  `multi stopwait`.

A drain: N messages encoded as the Celery client encodes them are pushed
with pipelined LPUSH onto a staging list while the node idles, then one
RENAME makes them the queue at once; the time runs from that RENAME to the
moment the result database holds N results. Every result is then checked.
"""

import json
import os
import shutil
import subprocess
import time

import multi as multi_mod
import pubsub_backlog
import rediscost

STAGING = "bench:staging"


def rate_or_none(n, t):
    return n / t if t and t > 0 else None


class Ctx:
    """What every measurement needs: the helpers, Redis clients, templates."""

    def __init__(self, B, args, env, redislib):
        self.B = B
        self.args = args
        self.env = env
        self.redislib = redislib
        broker = "redis://127.0.0.1:%d/0" % args.port
        backend = "redis://127.0.0.1:%d/1" % args.port
        self.broker = broker
        self.r0 = redislib.Redis.from_url(broker)
        self.r1 = redislib.Redis.from_url(backend)
        # One connection each, so MONITOR can tell the bench's commands apart.
        self.poll0 = redislib.Redis.from_url(broker, single_connection_client=True)
        self.poll1 = redislib.Redis.from_url(backend, single_connection_client=True)
        self.own_addrs = [self.poll0.client_info()["addr"], self.poll1.client_info()["addr"]]
        from proj.tasks import add, noop

        self.add, self.noop = add, noop
        self.encoders = {"add": B.Encoder(B.template_for(self.r0, add, 0, 0)),
                         "noop": B.Encoder(B.template_for(self.r0, noop))}
        self.r0.flushall()

    def probe(self):
        v = self.add.delay(1, 1).get(timeout=60)
        if v != 2:
            self.B.problem("probe add(1, 1) returned %r" % (v,))


def drain(ctx, node, task, n, monitor=False):
    """Pre-loads n messages, releases them with one RENAME, waits for n
    results; returns a dict (rate, CPU, Redis command deltas) or None."""
    B, r0, r1 = ctx.B, ctx.r0, ctx.r1
    r1.flushdb()
    r0.delete(STAGING)
    enc = ctx.encoders[task]
    ids = []
    pipe = r0.pipeline(transaction=False)
    for start in range(0, n, 500):
        raws = []
        for i in range(start, min(n, start + 500)):
            tid, raw = enc.encode([i, i] if task == "add" else [])
            ids.append(tid)
            raws.append(raw)
        pipe.lpush(STAGING, *raws)
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()
    mon = rediscost.Monitor(ctx.redislib, ctx.broker, ctx.own_addrs) if monitor else None
    cpu0, rcpu0 = node.cpu(), B.redis_cpu_s(ctx.poll0)
    stats0 = rediscost.commandstats(ctx.poll0)
    t0 = time.perf_counter()
    ctx.poll0.rename(STAGING, "celery")
    polls = 0
    t_first = None
    deadline = time.monotonic() + max(60.0, n / 30.0)
    count = 0
    while time.monotonic() < deadline:
        count = ctx.poll1.dbsize()
        polls += 1
        if count and t_first is None:
            t_first = time.perf_counter() - t0
        if count >= n:
            break
        time.sleep(0.005)
    t = time.perf_counter() - t0
    stats1 = rediscost.commandstats(ctx.poll0)
    rcpu1, cpu1 = B.redis_cpu_s(ctx.poll0), node.cpu()
    if mon:
        mon.stop(ctx.poll0)
    what = "%s drain %s -c %d N=%d" % (node.label, task, node.concurrency, n)
    if count < n:
        B.problem("%s: only %d of %d results after %.0f s (queue left %d, unacked %d)" % (
            what, count, n, t, r0.llen("celery"), r0.hlen("unacked")))
        return None
    check(ctx, ids, task, what)
    calls = rediscost.delta(stats0, stats1, {"info": 1, "rename": 1, "dbsize": polls})
    out = {
        "rate": n / t,
        "first_s": t_first,
        "cpu_main_ms": 1000.0 * (cpu1["main"] - cpu0["main"]) / n,
        "cpu_children_ms": 1000.0 * (cpu1["children"] - cpu0["children"]) / n,
        "cpu_redis_ms": 1000.0 * (rcpu1 - rcpu0) / n,
        "calls_per_task": {k: v / float(n) for k, v in sorted(calls.items())},
    }
    if mon:
        out["monitor"] = {"n": n, "commands": mon.commands, "round_trips": mon.round_trips}
    B.log("    %s: %.0f tasks/s (%.2f s; first result after %.0f ms); %.1f Redis commands/task%s" % (
        what, n / t, t, 1000 * (t_first or 0), sum(calls.values()) / float(n),
        "; MONITOR: %.1f commands, %.1f round trips/task" % (
            sum(mon.commands.values()) / float(n), sum(mon.round_trips.values()) / float(n)) if mon else ""))
    return out


def check(ctx, ids, task, what):
    """Every result stored SUCCESS with the right value."""
    missing = wrong = 0
    example = None
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        for k, v in enumerate(ctx.r1.mget(["celery-task-meta-" + t for t in chunk])):
            if v is None:
                missing += 1
                continue
            meta = json.loads(v)
            want = 2 * (start + k) if task == "add" else None
            if meta.get("status") != "SUCCESS" or meta.get("result") != want:
                wrong += 1
                example = example or meta
    if missing or wrong:
        ctx.B.problem("%s: %d of %d results missing, %d wrong%s" % (
            what, missing, len(ids), wrong, (" (e.g. %s)" % json.dumps(example)[:300]) if example else ""))


def producer(ctx, node, n, out):
    """The real client: n add.delay() in a loop, then AsyncResult.get() of
    each; tasks/s from the first send to the last result."""
    ctx.r1.flushdb()
    t0 = time.perf_counter()
    ars = [ctx.add.delay(i, i) for i in range(n)]
    t_sent = time.perf_counter() - t0
    bad = 0
    for i, ar in enumerate(ars):
        try:
            if ar.get(timeout=60) != 2 * i:
                bad += 1
        except Exception as e:  # noqa: BLE001 - report, carry on
            bad += 1
            if bad <= 3:
                ctx.B.problem("%s producer: get() of task %d failed: %r" % (node.label, i, e))
    t = time.perf_counter() - t0
    if bad:
        ctx.B.problem("%s producer: %d of %d results wrong or missing" % (node.label, bad, n))
    out.setdefault("prod", []).append(n / t)
    out.setdefault("prod_send", []).append(n / t_sent)
    ctx.B.log("    %s producer-driven: %d tasks, %.0f tasks/s end to end (sent at %.0f/s)" % (
        node.label, n, n / t, n / t_sent))


def latency(ctx, node, n, out, key="lat", drained=False):
    """n sequential add.delay(i, i).get() round trips, in ms. With
    `drained`, through a client that reads its result consumer's pub/sub
    backlog when a result was already stored (pubsub_backlog.py). Either
    way one uncounted round trip first reads what the runs before left."""
    ctx.r1.flushdb()
    if drained:
        pubsub_backlog.install()
    try:
        ctx.add.delay(0, 0).get(timeout=30)
        _latency(ctx, node, n, out, key)
    finally:
        pubsub_backlog.uninstall()


def _latency(ctx, node, n, out, key):
    lat = []
    bad = 0
    for i in range(n):
        t = time.perf_counter()
        try:
            v = ctx.add.delay(i, i).get(timeout=10)
        except Exception as e:  # noqa: BLE001 - report, carry on
            bad += 1
            if bad <= 3:
                ctx.B.problem("%s latency: round trip %d failed: %r" % (node.label, i, e))
            continue
        lat.append((time.perf_counter() - t) * 1000.0)
        if v != 2 * i:
            bad += 1
    if bad:
        ctx.B.problem("%s latency: %d of %d round trips failed or wrong" % (node.label, bad, n))
    out.setdefault(key, []).extend(lat)
    if lat:
        P = ctx.B.pct
        ctx.B.log("    %s %s: p50 %.2f ms, p95 %.2f ms, p99 %.2f ms" % (
            node.label, key, P(lat, 50), P(lat, 95), P(lat, 99)))


def latency_raw(ctx, node, n, out):
    """n sequential round trips with a bare redis-py client: SUBSCRIBE to the
    result's channel, LPUSH the same Celery message `delay()` sends, wait for
    the PUBLISH. The worker's share of a round trip, without the Celery
    client's own work (and its result consumer's waits) on top."""
    ps = ctx.r1.pubsub(ignore_subscribe_messages=True)
    enc = ctx.encoders["add"]
    lat = []
    try:
        for i in range(n):
            tid, raw = enc.encode([i, i])
            ps.subscribe("celery-task-meta-" + tid)
            ps.get_message(timeout=1.0)  # the subscribe confirmation
            t = time.perf_counter()
            ctx.r0.lpush("celery", raw)
            deadline = t + 10.0
            got = None
            while got is None and time.perf_counter() < deadline:
                got = ps.get_message(timeout=1.0)
            if got is None:
                ctx.B.problem("%s raw latency: no result for round trip %d" % (node.label, i))
                break
            lat.append((time.perf_counter() - t) * 1000.0)
            ps.unsubscribe()
    finally:
        ps.close()
    out.setdefault("lat_raw", []).extend(lat)
    if lat:
        P = ctx.B.pct
        ctx.B.log("    %s raw-client latency: p50 %.2f ms, p95 %.2f ms, p99 %.2f ms" % (
            node.label, P(lat, 50), P(lat, 95), P(lat, 99)))


def memory(node, when, out):
    m = node.memory()
    if not m:
        return
    for k, v in m.items():
        out.setdefault("mem_%s_%s" % (when, k), []).extend(v if isinstance(v, list) else [v])
    node.B.log("    %s memory %s: main RSS %.1f / PSS %.1f MiB, per child RSS %s / PSS %s MiB" % (
        node.label, when, m["main_rss"], m["main_pss"],
        "/".join("%.1f" % x for x in m["child_rss"]), "/".join("%.1f" % x for x in m["child_pss"])))


def drain_key(task, c, n):
    return "drain_%s_c%d_%d" % (task, c, n)


class CliEventReader:
    """`redis-cli psubscribe` to the events exchange: a receiver written in
    C, so the machine's cores go to the worker and Redis."""

    def __init__(self, ctx):
        port = ctx.broker.rsplit(":", 1)[1].split("/")[0]
        cli = shutil.which("redis-cli") or "redis-cli"
        self.proc = subprocess.Popen([cli, "-p", port, "psubscribe", "/0.celeryev/*"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.count = -1  # not counted

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


class EventReader:
    """PSUBSCRIBEd to the events exchange and reading, as Flower is, so
    PUBLISH has a receiver to deliver to; counts the messages."""

    def __init__(self, ctx):
        import threading
        self.count = 0
        self.ps = ctx.redislib.Redis.from_url(ctx.broker).pubsub(ignore_subscribe_messages=True)
        self.ps.psubscribe("/0.celeryev/*")
        self.stop_flag = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag:
            if self.ps.get_message(timeout=0.2):
                self.count += 1

    def stop(self):
        self.stop_flag = True
        self.thread.join(5)
        self.ps.close()


def events_drain(ctx, node, n, out, reader_class=None, suffix="_events"):
    """The `noop` drain with task events on (`enable_events`, what `-E`
    does) and a subscriber reading them."""
    control = ctx.noop.app.control
    on = control.broadcast("enable_events", reply=True, timeout=2)
    if not on:
        ctx.B.problem("%s: no reply to enable_events" % node.label)
        return
    reader = (reader_class or EventReader)(ctx)
    try:
        d = drain(ctx, node, "noop", n)
    finally:
        control.broadcast("disable_events", reply=True, timeout=2)
        time.sleep(0.3)
        reader.stop()
    if d:
        out.setdefault(drain_key("noop", 2, n) + suffix, []).append(d["rate"])
        if reader.count >= 0:
            ctx.B.log("    %s: %d event messages read during the events drain" % (node.label, reader.count))


def node_cycle(ctx, system, c, rnd, out):
    """One -c c node: start, drains (and at -c 2 the rest), stopwait."""
    args = ctx.args
    node = make(ctx, system, ["w1"], c, "c%d" % c)
    try:
        st = node.start(ctx.probe)
        ctx.B.log("    %s -c %d: multi start returned after %.0f ms, first result after %.0f ms" % (
            node.label, c, 1000 * st["cmd"], 1000 * st["first"]))
        if c == 2:
            out.setdefault("start1_cmd", []).append(st["cmd"])
            out.setdefault("start1_first", []).append(st["first"])
            time.sleep(1.0)  # settle to idle
            memory(node, "idle", out)
        for task in ("noop", "add"):
            d = drain(ctx, node, task, args.n)
            if d:
                out.setdefault(drain_key(task, c, args.n), []).append(d["rate"])
                if c == 2:
                    for k in ("cpu_main_ms", "cpu_children_ms", "cpu_redis_ms"):
                        out.setdefault("%s_%s" % (k, task), []).append(d[k])
                    out.setdefault("calls_%s" % task, []).append(d["calls_per_task"])
        if c == 2:
            events_drain(ctx, node, args.n, out)
            events_drain(ctx, node, args.n, out, CliEventReader, "_events_cli")
            if args.n_big and big_this_round(args, system, rnd):
                d = drain(ctx, node, "noop", args.n_big)
                if d:
                    out.setdefault(drain_key("noop", 2, args.n_big), []).append(d["rate"])
            if rnd == 0 and args.n_monitor:
                d = drain(ctx, node, "add", args.n_monitor, monitor=True)
                if d:
                    out["monitor"] = d["monitor"]
            producer(ctx, node, args.n_prod, out)
            latency(ctx, node, args.n_lat, out)
            latency(ctx, node, args.n_lat, out, key="lat_drained", drained=True)
            latency_raw(ctx, node, args.n_lat, out)
            memory(node, "load", out)
        if c == 2:
            t = node.stopwait()
            if t is not None:
                out.setdefault("stopwait1", []).append(t)
            ctx.B.log("    %s -c %d: multi stopwait %s" % (
                node.label, c, "%.0f ms" % (1000 * t) if t is not None else "FAILED"))
        else:
            # The other nodes measure `multi stop` (saves a start a round).
            sp = node.stop()
            out.setdefault("stop1_cmd", []).append(sp["cmd"])
            if sp["gone"] is not None:
                out.setdefault("stop1_gone", []).append(sp["gone"])
            ctx.B.log("    %s -c %d: multi stop returned after %.0f ms, all gone after %s" % (
                node.label, c, 1000 * sp["cmd"],
                "%.0f ms" % (1000 * sp["gone"]) if sp["gone"] is not None else "FAILED"))
        node.scan_logs("-c %d run" % c)
    finally:
        node.kill()


def big_this_round(args, system, rnd):
    return rnd < (args.big_rounds_celery if system == "Celery" else args.rounds)


def stop_cycles(ctx, system, out):
    """8 nodes: start, multi stop; start, multi stopwait."""
    B = ctx.B
    names = ["n%d" % i for i in range(1, 9)]
    eight = make(ctx, system, names, 2, "stop8")
    try:
        for verb in ("stop", "stopwait"):
            ctx.r0.flushall()
            st = eight.start(ctx.probe)
            out.setdefault("start8_cmd", []).append(st["cmd"])
            out.setdefault("start8_first", []).append(st["first"])
            out.setdefault("start8_all", []).append(st["all"])
            time.sleep(0.5)
            if verb == "stop":
                sp = eight.stop()
                out.setdefault("stop8_cmd", []).append(sp["cmd"])
                if sp["gone"] is not None:
                    out.setdefault("stop8_gone", []).append(sp["gone"])
                done = "multi stop returned after %.0f ms, all gone after %s" % (
                    1000 * sp["cmd"], "%.0f ms" % (1000 * sp["gone"]) if sp["gone"] is not None else "FAILED")
            else:
                t = eight.stopwait()
                if t is not None:
                    out.setdefault("stopwait8", []).append(t)
                done = "multi stopwait %s" % ("%.0f ms" % (1000 * t) if t is not None else "FAILED")
            B.log("    %s 8 nodes: start returned after %.0f ms, first result %.0f ms, every pool up %.0f ms; %s" % (
                system, 1000 * st["cmd"], 1000 * st["first"], 1000 * st["all"], done))
            eight.scan_logs("8-node %s" % verb)
    finally:
        eight.kill()


def make(ctx, system, names, c, tag):
    args = ctx.args
    workdir = os.path.join(args.tmp, "%s-%s" % (system.lower(), tag))
    if system == "rmulti":
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "proj.toml"), "w") as f:
            f.write(ctx.B.PROJ_TOML.format(port=args.port))
        argv0 = [os.path.abspath(args.rmulti)]
    else:
        argv0 = [args.celery, "multi"]
    ctx.r0.flushall()
    return multi_mod.Multi(ctx.B, system, argv0, names, c, [], workdir, ctx.env)


def run(B, args, env, redislib):
    """Runs the scenario; returns {system: {key: samples, "rounds": {...}},
    "ceiling_ops": [{command: ops/s} per round]}."""
    ctx = Ctx(B, args, env, redislib)
    systems = ("rmulti", "Celery")
    res = {s: {"rounds": {}} for s in systems}
    res["ceiling_ops"] = []
    for rnd in range(args.rounds):
        order = list(systems) if rnd % 2 == 0 else list(reversed(systems))
        B.log("builtin tasks, round %d/%d (%s first)" % (rnd + 1, args.rounds, order[0]))
        if args.redis_benchmark:
            # Every round, no node running: the machine is shared, and the
            # ceiling moves with its load as much as the drains do.
            B.log("  Redis ceiling (redis-benchmark -P 1 -n %d)" % args.n_ceiling)
            res["ceiling_ops"].append(rediscost.ceiling(args.redis_benchmark, args.port, args.n_ceiling, B.log))
        this = {s: {} for s in systems}
        for system in order:
            for c in args.concurrency:
                try:
                    node_cycle(ctx, system, c, rnd, this[system])
                except Exception as e:  # noqa: BLE001 - report, carry on with the rest
                    B.problem("%s -c %d run aborted: %r" % (system, c, e))
            if args.stop_cycles:
                try:
                    stop_cycles(ctx, system, this[system])
                except Exception as e:  # noqa: BLE001 - report, carry on with the rest
                    B.problem("%s start/stop run aborted: %r" % (system, e))
        for s in systems:
            mon = this[s].pop("monitor", None)
            if mon:
                res[s]["monitor"] = mon
            for key in set(this[s]) | set(res[s]["rounds"]):
                samples = this[s].get(key, [])
                res[s].setdefault(key, []).extend(samples)
                # one list per round, so that round k of both systems pair up
                res[s]["rounds"].setdefault(key, [[] for _ in range(rnd)]).append(samples)
    return res
