"""Round-trip tail probe (issue 15; bench/README.md, "The round-trip tail"):
per round trip the client's send time, the worker's date_done, the receive
time, the result consumer's _drain_one calls and GC events.

  tail_probe.py fresh|after rmulti|celery PORT [N]   (a node -A proj -c 2 running;
  DRAINFIX=1 installs the client-side change, GCOFF=1 disables the GC)
"""
import gc, json, os, socket, subprocess, sys, time, datetime, shutil, tempfile

mode = sys.argv[1]          # fresh | after
system = sys.argv[2]        # rmulti | celery
port = int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 300
gcoff = os.environ.get("GCOFF") == "1"
os.environ["BENCH_BROKER_URL"] = "redis://127.0.0.1:%d/0" % port
os.environ["BENCH_RESULT_BACKEND"] = "redis://127.0.0.1:%d/1" % port
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "celery_app"))
from proj.tasks import add
import redis
r1 = redis.Redis(port=port, db=1)

from celery.backends import redis as cbr
drains = [0]
_orig = cbr.ResultConsumer._drain_one
def _counted(self, pubsub, timeout):
    drains[0] += 1
    return _orig(self, pubsub, timeout)
cbr.ResultConsumer._drain_one = _counted
if os.environ.get("DRAINFIX") == "1":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pubsub_backlog
    pubsub_backlog.install()
gcev = []
def cb(phase, info):
    if phase == "start":
        cb.t = time.perf_counter()
    else:
        gcev.append((cb.t, time.perf_counter(), info["generation"]))
gc.callbacks.append(cb)
if gcoff:
    gc.disable()

if mode == "after":
    ars = [add.delay(i, i) for i in range(1000)]
    for ar in ars:
        ar.get(timeout=60)
    del ars
rows = []
for i in range(n):
    t0w = time.time(); t0 = time.perf_counter()
    ar = add.delay(i, i)
    t1 = time.perf_counter()
    d0 = drains[0]
    v = ar.get(timeout=10)
    t2 = time.perf_counter()
    meta = json.loads(r1.get("celery-task-meta-" + ar.id))
    dd = datetime.datetime.fromisoformat(meta["date_done"]).replace(tzinfo=datetime.timezone.utc).timestamp()
    rows.append(dict(drained=drains[0] - d0, i=i, lat=(t2 - t0) * 1e3, send=(t1 - t0) * 1e3, worker=(dd - t0w) * 1e3, t0=t0, t2=t2))
lat = sorted(r["lat"] for r in rows)
P = lambda p: lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))]
print("%s %s gcoff=%s: p50 %.2f p95 %.2f p99 %.2f max %.2f" % (system, mode, gcoff, P(50), P(95), P(99), lat[-1]))
late = sorted(r["lat"] - r["worker"] for r in rows)
Q = lambda p: late[min(len(late) - 1, int(round(p / 100.0 * (len(late) - 1))))]
wk = sorted(r["worker"] for r in rows)
W = lambda p: wk[min(len(wk) - 1, int(round(p / 100.0 * (len(wk) - 1))))]
print("  send->date_done p50 %.2f p99 %.2f | date_done->get() returns p50 %.2f p99 %.2f max %.2f; >100ms: %d" % (W(50), W(99), Q(50), Q(99), late[-1], sum(1 for x in late if x > 100)))
import collections
print("  _drain_one calls per get(): ", sorted(collections.Counter(min(r["drained"], 10) for r in rows).items()), " (10 = 10+)")
big = [r for r in rows if r["drained"] >= 10]
print("  trips with >=10 drains: %d, their latency median %.2f ms; others' p99 %.2f" % (len(big), sorted(r["lat"] for r in big)[len(big)//2] if big else 0, sorted(r["lat"] for r in rows if r["drained"] < 10)[int(0.99*(len(rows)-len(big)-1))]))
slow = sorted(rows, key=lambda r: -r["lat"])[:6]
for r in slow:
    g = [("gen%d %.1fms" % (e[2], (e[1] - e[0]) * 1e3)) for e in gcev if e[1] >= r["t0"] and e[0] <= r["t2"]]
    print("  drained %d;" % r["drained"], end=""); print("  #%d lat %.2f ms: delay() %.2f, worker date_done at +%.2f, gc during: %s" % (r["i"], r["lat"], r["send"], r["worker"], g))
