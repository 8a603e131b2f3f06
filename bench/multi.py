"""Nodes started and stopped through each system's own `multi` front end:
`rmulti start|stop|stopwait NAMES ...` and `celery multi start|stop|stopwait
NAMES ...`, with the same worker options, pid and log files in one working
directory. Owns the timings of those commands (to the command returning, to
the first result, to every process gone) and the per-process memory and CPU
of a running node.

Used by builtin.py (the builtin-task scenario); bench.py passes itself as `B`
for the process helpers and the problem list.
"""

import os
import signal
import subprocess
import time


class Multi:
    """One or more nodes, known by their pidfiles in workdir."""

    def __init__(self, B, label, argv0, names, concurrency, extra, workdir, env):
        self.B = B
        self.label = label
        self.argv0 = argv0  # [rmulti] or [celery, "multi"]
        self.names = list(names)
        self.concurrency = concurrency
        self.workdir = workdir
        self.env = env
        # The same options for every verb, as celery multi wants them.
        self.opts = ["-A", "proj", "-c", str(concurrency), "-l", "warning"] + list(extra) + [
            "--pidfile=" + os.path.join(workdir, "%n.pid"),
            "--logfile=" + os.path.join(workdir, "%n%I.log")]
        os.makedirs(workdir, exist_ok=True)

    def pidfile(self, name):
        return os.path.join(self.workdir, name + ".pid")

    def mains(self):
        """Main process pids of the nodes whose pidfile exists."""
        return [p for p in (self.B.read_pid(self.pidfile(n)) for n in self.names) if p]

    def run(self, verb, timeout=180):
        argv = self.argv0 + [verb] + self.names + self.opts
        r = subprocess.run(argv, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")

    def start(self, probe):
        """`multi start`, then one round trip through probe() (a Celery
        client's delay().get()); returns seconds to the command returning,
        to the first result, and to every node's pool children existing."""
        for f in os.listdir(self.workdir):
            if f.endswith(".log"):
                os.unlink(os.path.join(self.workdir, f))
        t0 = time.perf_counter()
        rc, out = self.run("start")
        t_cmd = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError("%s multi start failed (%d): %s" % (self.label, rc, out.strip()[-500:]))
        probe()
        t_first = time.perf_counter() - t0
        deadline = time.monotonic() + 60
        want = 1 + self.concurrency
        while time.monotonic() < deadline:
            mains = self.mains()
            if len(mains) == len(self.names) and all(
                    len(self.B.children_of(m)) >= self.concurrency for m in mains):
                break
            time.sleep(0.01)
        else:
            self.B.problem("%s: %d node(s) of %d with %d processes each 60 s after start" % (
                self.label, len(self.mains()), len(self.names), want))
        t_all = time.perf_counter() - t0
        return {"cmd": t_cmd, "first": t_first, "all": t_all}

    def _procs(self):
        return [p for m in self.mains() for p in self.B.tree(m)]

    def _wait_gone(self, procs, t0, timeout):
        """Seconds from t0 until every pidfile and every process in procs is
        gone (a zombie counts as gone: PID 1 here is slow to reap), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(os.path.exists(self.pidfile(n)) for n in self.names) and \
                    not any(self.B.alive(p) for p in procs):
                return time.perf_counter() - t0
            time.sleep(0.005)
        return None

    def stop(self, timeout=60):
        """`multi stop` (returns without waiting); returns seconds to the
        command returning and to every process gone."""
        procs = self._procs()
        t0 = time.perf_counter()
        rc, out = self.run("stop")
        t_cmd = time.perf_counter() - t0
        if rc != 0:
            self.B.problem("%s: multi stop exited %d: %s" % (self.label, rc, out.strip()[-300:]))
        t_gone = self._wait_gone(procs, t0, timeout)
        if t_gone is None:
            self.B.problem("%s: %d node(s) still running %d s after multi stop; killed" % (
                self.label, len(self.mains()), timeout))
            self.kill()
        return {"cmd": t_cmd, "gone": t_gone}

    def stopwait(self, timeout=120):
        """`multi stopwait`; returns its duration. Afterwards every process
        of the nodes must be gone (5 s of grace) and no pidfile left."""
        procs = self._procs()
        t0 = time.perf_counter()
        try:
            rc, out = self.run("stopwait", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.B.problem("%s: multi stopwait still running after %d s; killing" % (self.label, timeout))
            self.kill()
            return None
        elapsed = time.perf_counter() - t0
        if rc != 0:
            self.B.problem("%s: multi stopwait exited %d: %s" % (self.label, rc, out.strip()[-300:]))
        if self._wait_gone(procs, time.perf_counter(), 5) is None:
            left = [p for p in procs if self.B.alive(p)]
            self.B.problem("%s: after multi stopwait (+5 s) %d process(es) and %d pidfile(s) left; killed" % (
                self.label, len(left), len(self.mains())))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.kill()
        return elapsed

    def kill(self):
        for n in self.names:
            pid = self.B.read_pid(self.pidfile(n))
            if pid:
                for p in reversed(self.B.tree(pid)):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            try:
                os.unlink(self.pidfile(n))
            except FileNotFoundError:
                pass

    def scan_logs(self, what):
        self.B.Node.scan_logs(self, what)

    # --- the running node's processes ---------------------------------------

    def memory(self):
        """RSS and PSS in MiB of the first node's main process and of each
        of its pool children (with whatever runs under each child)."""
        mains = self.mains()
        if not mains:
            return None
        main = mains[0]
        kids = self.B.children_of(main)
        return {
            "main_rss": self.B.rss_kib(main) / 1024.0,
            "main_pss": self.B.pss_kib(main) / 1024.0,
            "child_rss": [sum(self.B.rss_kib(p) for p in self.B.tree(k)) / 1024.0 for k in kids],
            "child_pss": [sum(self.B.pss_kib(p) for p in self.B.tree(k)) / 1024.0 for k in kids],
        }

    def cpu(self):
        """CPU seconds so far of the first node: main process, pool children."""
        mains = self.mains()
        if not mains:
            return {"main": 0.0, "children": 0.0}
        kids = [p for k in self.B.children_of(mains[0]) for p in self.B.tree(k)]
        return {"main": self.B.cpu_s(mains[0]), "children": sum(self.B.cpu_s(k) for k in kids)}
