"""The Markdown summary of one bench run: the table of medians with the
rmulti/Celery ratios and issue 5's targets (met or missed), the Redis cost
per command, the redis-benchmark ceiling, and the problems seen.

Absolute figures are medians over every sample of the run; a ratio is the
median of the per-round ratios (each round measures both systems, so drift
between rounds cancels), or the ratio of the medians when the two systems
have no round in common (the big drain Celery runs fewer times).
"""

import math
import statistics

import rediscost


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def nan(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_ratio(x):
    if nan(x):
        return "n/a"
    return ("%.2g×" if x < 0.1 else "%.2f×" if x < 10 else "%.0f×") % x


def runs(X, key):
    return sum(1 for r in X.get("rounds", {}).get(key, []) if r)


class Table:
    def __init__(self, R, C):
        self.R, self.C = R, C
        self.lines = [
            "| measurement | runs rmulti/Celery | rmulti | Celery | rmulti/Celery | target | |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        self.verdicts = []

    def ratio(self, key, agg):
        rr = self.R.get("rounds", {}).get(key, [])
        cc = self.C.get("rounds", {}).get(key, [])
        per = []
        for a, b in zip(rr, cc):
            if a and b:
                va, vb = agg(a), agg(b)
                if vb and not nan(va) and not nan(vb):
                    per.append(va / vb)
        if per:
            return med(per)
        a, b = agg(self.R.get(key, [])), agg(self.C.get(key, []))
        return a / b if b and not nan(a) and not nan(b) else float("nan")

    def row(self, name, key, unit, fmt="%.0f", scale=1.0, agg=med, target=None):
        """target: (text, predicate on the ratio)."""
        a = agg(self.R.get(key, []))
        b = agg(self.C.get(key, []))
        ratio = self.ratio(key, agg)
        self.add(name, "%d/%d" % (runs(self.R, key), runs(self.C, key)),
                 val(a, scale, fmt, unit), val(b, scale, fmt, unit), fmt_ratio(ratio), target, ratio)

    def add(self, name, nruns, a, b, ratio_text, target=None, ratio=None, shown=None):
        verdict = ""
        text = ""
        if target:
            text = target[0]
            if nan(ratio):
                verdict = "not measured"
            else:
                verdict = "met" if target[1](ratio) else "**missed**"
            self.verdicts.append((name, text, shown or ratio_text, verdict))
        self.lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (name, nruns, a, b, ratio_text, text, verdict))

    def section(self, title):
        self.lines.append("| **%s** | | | | | | |" % title)


def val(x, scale, fmt, unit):
    if nan(x):
        return "n/a"
    return (fmt % (x * scale)) + (" " + unit if unit else "")


AT_LEAST_30 = ("≥ 30×", lambda r: r >= 30)
AT_LEAST_40 = ("≥ 40×", lambda r: r >= 40)
P50_TARGET = ("≤ 0.3×", lambda r: r <= 0.3)
P99_TARGET = ("≤ 1.0×", lambda r: r <= 1.0)
TENTH = ("≤ 0.1×", lambda r: r <= 0.1)
AT_LEAST_3 = ("≥ 3×", lambda r: r >= 3)


def calls_total(X, task):
    return [sum(d.values()) for d in X.get("calls_%s" % task, [])]


def rt_per_task(X):
    m = X.get("monitor")
    return sum(m["round_trips"].values()) / float(m["n"]) if m else float("nan")


def builtin_table(res, pyres, ceiling_ops, args):
    R, C = res["rmulti"], res["Celery"]
    # Derived per-system values the table reads like samples.
    for X in (R, C):
        for task in ("noop", "add"):
            X["cmds_%s" % task] = calls_total(X, task)
            X.setdefault("rounds", {})["cmds_%s" % task] = [
                [sum(d.values()) for d in r] for r in X["rounds"].get("calls_%s" % task, [])]
        rt = rt_per_task(X)
        X["rt"] = [] if nan(rt) else [rt]
        X["ceiling_rt"] = [] if nan(rt) else [rediscost.ceiling_rate(ceiling_ops, rt)]
        # A worker that batches makes fewer round trips than tasks: then what
        # bounds Redis is the CPU it spends per task, not its round trips.
        cpu = med(X.get("cpu_redis_ms_add", []))
        X["ceiling_cpu"] = [1000.0 / cpu] if cpu and not nan(cpu) else []
        bounds = X["ceiling_rt"] + X["ceiling_cpu"]
        X["ceiling"] = [min(bounds)] if bounds else []
        X["rounds"]["rt"] = [X["rt"]]
        for k in ("ceiling", "ceiling_rt", "ceiling_cpu"):
            X["rounds"][k] = [X[k]]
    t = Table(R, C)
    t.section("drain: N pre-loaded, released at once, until every result is stored (tasks/s)")
    for c in sorted(args.concurrency):
        for task in ("noop", "add"):
            t.row("`%s`, -c %d, N=%d" % (task, c, args.n), "drain_%s_c%d_%d" % (task, c, args.n),
                  "/s", target={2: AT_LEAST_30, 4: AT_LEAST_40}.get(c))
    if 2 in args.concurrency:
        plain = "drain_noop_c2_%d" % args.n
        for ev, who in (("drain_noop_c2_%d_events" % args.n, "a redis-py subscriber in the bench"),
                        ("drain_noop_c2_%d_events_cli" % args.n, "a redis-cli subscriber")):
            if not (R.get(ev) or C.get(ev)):
                continue
            t.row("`noop`, -c 2, N=%d, task events on (`enable_events`), read by %s" % (args.n, who),
                  ev, "/s")
            for label, X in (("rmulti", R), ("Celery", C)):
                a, b = med(X.get(ev, [])), med(X.get(plain, []))
                share = a / b if b and not nan(a) and not nan(b) else float("nan")
                t.add("%s: with task events / without, %s" % (label, who), "", "", "",
                      fmt_ratio(share), ("≥ 0.8×", lambda r: r >= 0.8) if label == "rmulti" else None,
                      share)
    big = "drain_noop_c2_%d" % args.n_big
    if args.n_big and 2 in args.concurrency:
        if C.get(big):
            t.row("`noop`, -c 2, N=%d" % args.n_big, big, "/s", target=AT_LEAST_30)
        else:
            # Celery did not run the big drain: against its N=args.n rate.
            small = "drain_noop_c2_%d" % args.n
            a, b = med(R.get(big, [])), med(C.get(small, []))
            ratio = a / b if b and not nan(a) and not nan(b) else float("nan")
            t.add("`noop`, -c 2, N=%d (Celery: its N=%d rate)" % (args.n_big, args.n),
                  "%d/%d" % (runs(R, big), runs(C, small)), val(a, 1, "%.0f", "/s"),
                  val(b, 1, "%.0f", "/s") + "¹", fmt_ratio(ratio), AT_LEAST_30, ratio)
    # Against the ceiling: the share of what Redis could carry for each
    # system's own round trips per task.
    for task, key in (("noop", "drain_noop_c2_%d" % args.n), ("add", "drain_add_c2_%d" % args.n),
                      ("noop", big)):
        if key not in R or not args.n_big and key == big:
            continue
        shares = []
        for X in (R, C):
            ceil = med(X["ceiling"])
            shares.append(med(X.get(key, [])) / ceil if ceil and not nan(ceil) else float("nan"))
        n = key.rsplit("_", 1)[1]
        t.add("`%s` -c 2 N=%s as a share of its Redis ceiling" % (task, n), "", val(shares[0], 100, "%.0f", "%"),
              val(shares[1], 100, "%.1f", "%"), "", ("rmulti ≥ 50%", lambda r: r >= 0.5), shares[0],
              shown=val(shares[0], 100, "%.0f", "%"))
        rt_shares = []
        for X in (R, C):
            ceil = med(X["ceiling_rt"])
            rt_shares.append(med(X.get(key, [])) / ceil if ceil and not nan(ceil) else float("nan"))
        t.add("`%s` -c 2 N=%s as a share of its round-trip ceiling alone" % (task, n), "",
              val(rt_shares[0], 100, "%.0f", "%"), val(rt_shares[1], 100, "%.1f", "%"), "", None, rt_shares[0])
    t.section("the real Celery client (Python, `delay()` + `AsyncResult.get()`), -c 2")
    t.row("producer-driven: %d sent, then every get()" % args.n_prod, "prod", "/s")
    t.row("round trip `delay().get()` p50", "lat", "ms", "%.2f", agg=lambda xs: pct(xs, 50), target=P50_TARGET)
    t.row("round trip p95", "lat", "ms", "%.2f", agg=lambda xs: pct(xs, 95))
    t.row("round trip p99", "lat", "ms", "%.2f", agg=lambda xs: pct(xs, 99), target=P99_TARGET)
    t.row("round trip, client reading its pub/sub backlog (bench/pubsub_backlog.py) p50", "lat_drained", "ms", "%.2f",
          agg=lambda xs: pct(xs, 50))
    t.row("round trip, client reading its pub/sub backlog p99", "lat_drained", "ms", "%.2f", agg=lambda xs: pct(xs, 99))
    t.row("round trip, bare redis-py client (LPUSH, wait for the PUBLISH) p50", "lat_raw", "ms", "%.2f",
          agg=lambda xs: pct(xs, 50))
    t.row("round trip, bare redis-py client p99", "lat_raw", "ms", "%.2f", agg=lambda xs: pct(xs, 99))
    t.section("memory, -c 2 node, per process (MiB; per child: median of the children)")
    for when, what in (("idle", "idle"), ("load", "after load")):
        t.row("main process RSS, %s" % what, "mem_%s_main_rss" % when, "MiB", "%.1f", target=TENTH)
        t.row("pool child RSS, %s" % what, "mem_%s_child_rss" % when, "MiB", "%.1f", target=TENTH)
        t.row("main process PSS, %s" % what, "mem_%s_main_pss" % when, "MiB", "%.1f")
        t.row("pool child PSS, %s" % what, "mem_%s_child_pss" % when, "MiB", "%.1f")
    t.section("start and stop, each system's own `multi` (ms; -c 2 per node unless said)")
    t.row("1 node: `multi start` returns", "start1_cmd", "ms", scale=1000)
    t.row("1 node: `multi start` to first result", "start1_first", "ms", scale=1000, target=TENTH)
    t.row("1 node: `multi stop` returns (the -c 1 and -c 4 nodes)", "stop1_cmd", "ms", scale=1000)
    t.row("1 node: `multi stop` to every process gone (the same)", "stop1_gone", "ms", scale=1000)
    t.row("1 node: `multi stopwait`, idle (after the -c 2 runs)", "stopwait1", "ms", scale=1000, target=TENTH)
    t.row("8 nodes: `multi start` returns", "start8_cmd", "ms", scale=1000)
    t.row("8 nodes: `multi start` to first result", "start8_first", "ms", scale=1000)
    t.row("8 nodes: `multi start` to every pool child up", "start8_all", "ms", scale=1000)
    t.row("8 nodes: `multi stop` returns", "stop8_cmd", "ms", scale=1000)
    t.row("8 nodes: `multi stop` to every process gone", "stop8_gone", "ms", scale=1000)
    t.row("8 nodes: `multi stopwait`, idle", "stopwait8", "ms", scale=1000)
    t.section("Redis cost, worker side")
    t.row("Redis commands per `noop` task (commandstats, -c 2)", "cmds_noop", "", "%.1f")
    t.row("Redis commands per `add` task (commandstats, -c 2)", "cmds_add", "", "%.1f")
    t.row("round trips per `add` task (MONITOR)", "rt", "", "%.1f")
    t.row("Redis ceiling by round trips: median redis-benchmark ops/s ÷ round trips per task", "ceiling_rt", "/s")
    t.row("Redis ceiling by CPU: 1 s ÷ Redis CPU per `add` task", "ceiling_cpu", "/s")
    t.row("Redis ceiling: the lower of the two", "ceiling", "/s")
    t.row("Redis CPU per `add` task", "cpu_redis_ms_add", "ms", "%.3f")
    t.row("node CPU per `add` task, main process", "cpu_main_ms_add", "ms", "%.3f")
    t.row("node CPU per `add` task, pool children", "cpu_children_ms_add", "ms", "%.3f")
    if pyres:
        PR, PC = pyres["rmulti"], pyres["Celery"]
        p = Table(PR, PC)
        p.row("`add`, N=%d pre-loaded (tasks/s)" % args.py_n, "tput_add", "/s", target=AT_LEAST_3)
        p.row("`sumrange(%d)`, N=%d pre-loaded (tasks/s)" % (args.py_work, args.py_heavy), "tput_sum", "/s")
        t.section("Python tasks: the same Python app, rmulti's Python host vs celery (-c 2)")
        t.lines += p.lines[2:]
        t.verdicts += p.verdicts
    return t


def commands_table(res):
    """Per command: calls per task (commandstats, `add` -c 2) and round
    trips per task (MONITOR), both systems."""
    R, C = res["rmulti"], res["Celery"]

    def per_cmd(X):
        ds = X.get("calls_add", [])
        names = set(k for d in ds for k in d)
        return {k: med([d.get(k, 0.0) for d in ds]) for k in names}

    cr, cc = per_cmd(R), per_cmd(C)
    mr, mc = R.get("monitor"), C.get("monitor")

    def rt(m, k):
        if not m:
            return "n/a"
        return "%.2f" % (m["round_trips"].get(k, 0) / float(m["n"]))

    lines = ["| command | rmulti calls/task | rmulti round trips/task | Celery calls/task | Celery round trips/task |",
             "|---|---:|---:|---:|---:|"]
    for k in sorted(set(cr) | set(cc), key=lambda k: -(cr.get(k, 0) + cc.get(k, 0))):
        lines.append("| `%s` | %.2f | %s | %.2f | %s |" % (k.upper(), cr.get(k, 0.0), rt(mr, k),
                                                          cc.get(k, 0.0), rt(mc, k)))
    lines.append("| **total** | %.2f | %s | %.2f | %s |" % (
        sum(cr.values()), "%.2f" % rt_per_task(R) if mr else "n/a",
        sum(cc.values()), "%.2f" % rt_per_task(C) if mc else "n/a"))

    def seen(m):
        return "%.2f" % (sum(m["commands"].values()) / float(m["n"])) if m else "n/a"

    lines.append("| commands seen by MONITOR (cross-check) | %s | | %s | |" % (seen(mr), seen(mc)))
    return lines


def render(B, res, pyres, ceiling_ops, args, meta, djres=None):
    out = ["# rmulti vs Celery %s — %s" % (meta["celery_version"], meta["date"]), ""]
    out.append("Machine: `%s`, %s, %d cores, Linux %s; Redis %s (private, 127.0.0.1); Python %s; "
               "rmulti at %s. %s run, %d round(s) (order alternating), took %s; load average %s at the "
               "start, %s at the end." % (
                   meta["host"], meta["cpu"], meta["cores"], meta["kernel"], meta["redis_version"],
                   meta["python"], meta["rmulti_commit"], "Quick" if args.quick else "Default", args.rounds,
                   meta.get("elapsed", "?"), meta["load_start"], meta.get("load_end", "?")))
    out.append("")
    if res:
        t = builtin_table(res, pyres, ceiling_ops, args)
        out += t.lines
        out.append("")
        note = ("Runs: samples per system (one drain or cycle a round; latency pools %d round trips "
                "a round; memory pools the children; the MONITOR drain of %d tasks runs in the first "
                "round). Targets are issues 5 and 15's, on the ratio; for the ceiling, on rmulti's share: its "
                "drain rate ÷ its ceiling (the lower of the median redis-benchmark ops/s ÷ its round trips per task and "
                "1 s ÷ the Redis CPU it spends per task: a worker that batches makes fewer round trips than tasks)." % (
                    args.n_lat, args.n_monitor))
        if args.n_big:
            big_c = min(args.big_rounds_celery, args.rounds)
            note += (" The N=%d drain runs for `noop` at -c 2 only, every round for rmulti and %s for "
                     "Celery%s." % (args.n_big, "in %d round(s)" % big_c if big_c else "not at all",
                                    "" if big_c else " (¹ at 300–900 tasks/s it would add 2–5 minutes a "
                                    "round; its N=%d rate stands in, `bin/bench -- --big-rounds-celery 1` "
                                    "runs it)" % args.n))
        out.append(note)
        out.append("")
        out.append("## Targets")
        out.append("")
        out.append("| target | measured | |")
        out.append("|---|---:|---|")
        for name, text, ratio_text, verdict in t.verdicts:
            shown = ratio_text if ratio_text else "see table"
            out.append("| %s: %s | %s | %s |" % (name, text, shown, verdict))
        out.append("")
        out.append("## Redis commands per task, worker side (`add`, -c 2)")
        out.append("")
        out += commands_table(res)
        out.append("")
        if ceiling_ops:
            out.append("## Redis ceiling: `redis-benchmark -P 1 -q -n %d` on the same server" % args.n_ceiling)
            out.append("")
            out.append("At the start of every round, no node running; the median over the rounds.")
            out.append("")
            out.append("| command | ops/s |")
            out.append("|---|---:|")
            for k, v in ceiling_ops.items():
                out.append("| `%s` | %.0f |" % (k, v))
            out.append("| median | %.0f |" % med(list(ceiling_ops.values())))
            out.append("")
        else:
            out.append("No redis-benchmark found: no ceiling.")
            out.append("")
    if pyres:
        import pytasks

        out.append("## " + pytasks.report(B, pyres, args, meta).lstrip("# "))
    if djres:
        import djangodemo

        out.append("## " + djangodemo.report(B, djres, args, meta).lstrip("# "))
    probs = B.PROBLEMS
    if probs:
        out += ["## Problems seen during the run", ""] + ["- " + p for p in probs] + [""]
    else:
        out += ["No task lost, no wrong result, no failed round trip, every stop clean, no error in any log.", ""]
    return "\n".join(out)
