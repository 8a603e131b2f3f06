"""What a task costs Redis, and what this Redis can do.

- commands per task: `INFO commandstats` before and after a drain; the delta
  of `calls` per command, minus the bench's own commands (it knows how many
  INFO, RENAME and DBSIZE it sent), divided by the tasks drained.
- round trips per task: a second, smaller drain watched through MONITOR.
  Per client connection, a command is one round trip unless it was sent
  inside MULTI..EXEC (the whole transaction is one: its MULTI) or called by
  a script (MONITOR tags those `lua`; the EVALSHA that ran them is one).
  Pipelining without MULTI does not merge round trips in this count.
- the ceiling: `redis-benchmark -P 1 -q` (one command per round trip, its
  default 50 clients) for the commands a worker sends; ceiling = the median
  ops/s of those commands ÷ the worker's round trips per task.

Nothing here asserts anything.
"""

import re
import statistics
import subprocess
import threading

# The bench's own commands during a drain, subtracted from the deltas.
OWN = ("info", "rename", "dbsize")


def commandstats(r):
    """{command: calls} from INFO commandstats (subcommands as `a|b`)."""
    out = {}
    for k, v in r.info("commandstats").items():
        name = k[len("cmdstat_"):] if k.startswith("cmdstat_") else k
        out[name] = int(v["calls"]) if isinstance(v, dict) else 0
    return out


def delta(before, after, own):
    """Worker-side calls per command between two snapshots; own is the
    bench's count per command name, taken off."""
    d = {}
    for k, v in after.items():
        n = v - before.get(k, 0) - own.get(k, 0)
        if n > 0:
            d[k] = n
    return d


class Monitor:
    """A MONITOR connection in a thread, counting commands and round trips
    per command of every client but the ones in `exclude` (addr strings)."""

    STOP = "bench-monitor-stop"

    def __init__(self, redislib, url, exclude):
        self.r = redislib.Redis.from_url(url)
        self.exclude = set(exclude)
        self.commands = {}
        self.round_trips = {}
        self.lines = 0
        self._in_multi = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self):
        with self.r.monitor() as m:
            self._ready.set()
            while True:
                c = m.next_command()
                cmd = c.get("command", "")
                if self.STOP in cmd:
                    return
                self._count(c)

    def _count(self, c):
        words = c.get("command", "").split(" ", 1)
        name = words[0].lower()
        if not name:
            return
        addr = "%s:%s" % (c.get("client_address"), c.get("client_port"))
        if addr in self.exclude:
            return
        self.lines += 1
        self.commands[name] = self.commands.get(name, 0) + 1
        if c.get("client_type") == "lua" or c.get("client_address") == "lua":
            return  # run by a script: its EVALSHA was the round trip
        if addr in self._in_multi:
            if name in ("exec", "discard"):
                self._in_multi.discard(addr)
            return  # queued in a transaction: its MULTI was the round trip
        if name == "multi":
            self._in_multi.add(addr)
        self.round_trips[name] = self.round_trips.get(name, 0) + 1

    def stop(self, poller):
        """Ends the count: poller sends the marker, the thread stops at it."""
        poller.echo(self.STOP)
        self._thread.join(30)


# --- the ceiling ---------------------------------------------------------------

LINE = re.compile(r"^\s*(.+?):\s*([0-9.]+) requests per second")


def ceiling(binary, port, n, log):
    """ops/s of `redis-benchmark -P 1 -q` per command, on the private Redis
    (db 0; the caller flushes afterwards); {} without redis-benchmark."""
    if not binary:
        return {}
    import redis as redislib

    r = redislib.Redis(port=port)
    sha = r.script_load("return 1")
    r.rpush("benchring", "x")
    runs = [
        ("LPUSH", ["-t", "lpush"]), ("RPOP", ["-t", "rpop"]),
        ("SET", ["-t", "set"]), ("GET", ["-t", "get"]),
        # a one-element list rotated onto itself: BLMOVE never blocks here
        ("BLMOVE", ["BLMOVE", "benchring", "benchring", "RIGHT", "LEFT", "1"]),
        ("EVALSHA", ["EVALSHA", sha, "0"]),
    ]
    out = {}
    for name, extra in runs:
        argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-P", "1", "-q", "-n", str(n)]
        try:
            res = subprocess.run(argv + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=120)
        except subprocess.TimeoutExpired:
            log("    redis-benchmark %s: timed out" % name)
            continue
        text = res.stdout.decode(errors="replace").replace("\r", "\n")
        rate = None
        for line in text.splitlines():
            m = LINE.match(line)
            if m:
                rate = float(m.group(2))
        if rate:
            out[name] = rate
            log("    redis-benchmark -P 1 %s: %.0f ops/s" % (name, rate))
        else:
            log("    redis-benchmark %s: no rate in its output: %s" % (name, text.strip()[-200:]))
    r.flushall()
    return out


def ceiling_rate(ops, rt_per_task):
    """Tasks/s this Redis could carry for a worker spending rt_per_task
    round trips per task: the median ops/s of the benchmarked commands."""
    if not ops or not rt_per_task:
        return float("nan")
    return statistics.median(ops.values()) / rt_per_task
