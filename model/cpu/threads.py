"""How many threads a CPU step computes with: never more than the cores that are free for it.

A realtime step of small products splits each across torch's threads, which then wait for the
slowest: a thread that shares its core with another program makes every step wait for it (on a
2-core machine beside one busy program, 2.7x the time alone; with one thread, about 1.1x). So
`ThreadPolicy` counts the cores this process may use (its affinity, and a cgroup's CPU quota) and
how many of them other programs keep busy (/proc/stat against our own CPU time, over the last
second), and sets torch's threads to the cores left, at least one; it looks again every second
while steps run, so it steps down when other work takes the CPU and up again when it leaves. A
fixed count (`--threads N`, the Threads setting, or OMP_NUM_THREADS in the environment) turns
this off: a run's numbers then never depend on what else the machine does (a seeded run repeats
exactly; with the policy on, a change of thread count rounds a product differently).

The OpenMP threads behind torch's pool should sleep, not spin, while they wait: the app sets
OMP_WAIT_POLICY=PASSIVE in the environment as it is imported (`app/__init__.py`), before torch
starts OpenMP, which reads it once. Where /proc/stat is not there (macOS, Windows), the policy
keeps the cores the process may use.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

RECHECK_SECONDS = 1.0


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    """cgroup v2's cpu.max (or v1's cfs quota) as a number of cores; None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _busy_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat; None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


class ThreadPolicy:
    """torch's intra-op threads for this process, kept to the free cores (see the module)."""

    def __init__(self, fixed: int | None = None):
        self.cores = usable_cores()
        self.machine_cores = os.cpu_count() or self.cores
        self.others = 0.0  # cores other programs kept busy lately
        self._last: tuple[float, float, float, float] | None = None  # wall, own, busy, total
        self.source = "--threads"
        if fixed is None and os.environ.get("OMP_NUM_THREADS"):
            fixed, self.source = torch.get_num_threads(), "OMP_NUM_THREADS"  # the user's choice
        elif fixed is not None:
            torch.set_num_threads(fixed)
        self.fixed = fixed
        self.threads = fixed or self.cores
        if fixed is None:
            torch.set_num_threads(self.threads)
        self._mark()

    def _mark(self) -> None:
        busy = _busy_seconds()
        if busy is None:
            self._last = None
            return
        self._last = (time.monotonic(), time.process_time(), *busy)

    def step_done(self, now: bool = False) -> None:
        """After each step: about once a second (`now`: at once), count the free cores again and
        follow them."""
        if self.fixed is not None or self._last is None:
            return
        wall0, own0, busy0, total0 = self._last
        if time.monotonic() - wall0 < (0.0 if now else RECHECK_SECONDS):
            return
        wall, own = time.monotonic(), time.process_time()
        busy = _busy_seconds()
        if busy is None:
            return
        elapsed = wall - wall0
        machine_busy = (busy[0] - busy0) / max(busy[1] - total0, 1e-9) * self.machine_cores
        self.others = max(0.0, machine_busy - (own - own0) / elapsed)
        self._last = (wall, own, *busy)
        free = self.cores - self.others
        threads = max(1, min(self.cores, math.floor(free + 0.35)))
        if threads != self.threads:
            self.threads = threads
            torch.set_num_threads(threads)

    def describe(self) -> str:
        if self.fixed is not None:
            return f"{self.threads} threads (fixed by {self.source})"
        return (
            f"{self.threads} of {self.cores} cores (others busy with {self.others:.1f}); "
            "follows the free cores"
        )
