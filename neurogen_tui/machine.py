"""The machine under the run, as plain numbers: cores, this process's memory, and whether every
core is busy (the one machine-load probe the monitoring allowances share)."""
from __future__ import annotations

import os
import time
from typing import Callable


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rss_mb() -> float:
    """Current resident memory of this process, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class ProcessCpu:
    """This process's CPU use between two calls, in percent of one core (200 on two busy cores),
    all its threads counted (time.process_time); None for the first call."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def __call__(self) -> float | None:
        now = (time.perf_counter(), time.process_time())
        last, self._last = self._last, now
        if last is None or now[0] <= last[0]:
            return None
        return 100.0 * (now[1] - last[1]) / (now[0] - last[0])


class MachineLoad:
    """How many cores the whole machine kept busy, from /proc/stat's first line between two looks
    (the 1-minute load average where /proc/stat cannot be read; it lags a run's start by a minute).

    `saturated()` is what the allowances ask: true from the first look (at most one a LOOK_EVERY)
    that finds no spare core, within half a core, until CALM_LOOKS looks in a row find one (the
    load flickers between a trainer's steps)."""

    MIN_WINDOW = 0.2  # seconds: a shorter window says little; the previous figure stands
    LOOK_EVERY = 1.0
    CALM_LOOKS = 3

    def __init__(self, clock: Callable[[], float] = time.monotonic, cores: Callable[[], int] | None = None) -> None:
        self._clock, self._cores_fn = clock, cores
        self._mark = self._read()
        self._last = 0.0
        self._look_at = float("-inf")
        self._calm = 0
        self.busy = False

    def _cores(self) -> int:
        return self._cores_fn() if self._cores_fn is not None else cores()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as fh:
                ticks = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return time.monotonic(), sum(ticks[:8]) - idle, sum(ticks[:8])  # guest time is inside user

    def busy_cores(self) -> float:
        now = self._read()
        if now is None or self._mark is None:
            return os.getloadavg()[0]
        if now[0] - self._mark[0] >= self.MIN_WINDOW and now[2] > self._mark[2]:
            self._last = self._cores() * (now[1] - self._mark[1]) / (now[2] - self._mark[2])
            self._mark = now
        return self._last

    def mark(self) -> None:
        """Start the next window here (after a dashboard, so its own CPU is not counted)."""
        self._mark = self._read()

    def saturated(self) -> bool:
        now = self._clock()
        if now - self._look_at >= self.LOOK_EVERY:
            self._look_at = now
            if self.busy_cores() >= self._cores() - 0.5:
                self.busy, self._calm = True, 0
            else:
                self._calm += 1
                self.busy = self.busy and self._calm < self.CALM_LOOKS
        return self.busy
