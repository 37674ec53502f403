"""How much CPU the screen may take from training, and so how often its periodic work runs.

When the trainer is another process and the machine has a spare core (a GPU box, where the trainer
mostly waits on the GPU: the default there), the screen runs at its full rates. When training keeps
every core busy (a CPU-only machine), every CPU-second the screen spends comes out of training -
about one for one, not divided by the cores: torch's parallel ops wait at their end for the thread
the screen delayed. And a trainer on the app's own thread (the default on a CPU) waits for the GIL
whenever the screen holds it, spare cores or not. Measured on a 2-core VM: 97 ms of UI CPU a second
cost a tiny model 9% of its speed. So in those cases the screen's periodic work (charts, the samples table, the header)
spends from an allowance that grows at `share` CPU-seconds per second, and what it spent is
measured, not estimated: the event loop thread's CPU time (composing and writing the screen
included) plus the chart builds' CPU time on their thread. Keys never wait for the allowance;
what they cost is charged like the rest, so the periodic work after them waits a little longer.
"""
from __future__ import annotations

import argparse
import threading
import time
from typing import Callable

from ..viz import MachineLoad, _cores


def add_budget_flag(parser: argparse.ArgumentParser) -> None:
    """--ui-budget for the commands that open the screen over a run in another process."""

    def share(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"must be in [0, 1) (got {text})")
        return value

    parser.add_argument("--ui-budget", type=share, metavar="F",
                        help="when every core is busy training, the screen uses at most this share of the time "
                             "(default: 0.01; 0: full rate whatever it costs)")


class ScreenBudget:
    """A CPU allowance (a token bucket) for the screen's periodic work while every core is busy.

    `tick()` runs on the event loop's thread at each drain: it charges that thread's CPU time since
    the last tick, adds `share` of the wall time since, and checks whether the machine still has a
    spare core. `charge()` adds CPU time spent on other threads (the chart builds). `allows(cost)`
    says whether work expected to cost `cost` seconds may run now."""

    CAP = 0.25  # seconds of CPU the allowance may bank: one chart redraw and change
    DEBT = 1.0  # seconds of CPU it may owe at most (a resize, a burst of keys): at 1%, 100 s of waiting
    LOAD_EVERY = 1.0  # seconds between looks at /proc/stat
    CALM_LOOKS = 3  # looks in a row with a spare core before the limit is lifted (the load flickers)

    def __init__(self, share: float, shares_gil: bool = False, load: MachineLoad | None = None,
                 cores: Callable[[], int] = _cores, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.share = share
        self.shares_gil = shares_gil  # the trainer is a thread of this process: limited, spare cores or not
        self.training = True  # the app clears it while the run is paused or has ended: nothing to take from
        self._load = load if load is not None else MachineLoad()
        self._cores, self._clock, self._cpu = cores, clock, cpu
        self._lock = threading.Lock()
        self._other = 0.0  # CPU charged from other threads since the last tick
        self.balance = self.CAP
        self.busy = False  # every core busy at the last look
        self.spent = 0.0  # CPU seconds of the screen since the first tick (for the benchmark)
        self._last_t = self._last_cpu = None  # the first tick only starts counting (the app's start is free)
        self._load_at = float("-inf")
        self._calm = 0

    @property
    def limited(self) -> bool:
        """True while the allowance applies: a share is set, the run is training, and the trainer
        shares the GIL or every core is busy."""
        return self.share > 0 and self.training and (self.shares_gil or self.busy)

    def charge(self, seconds: float) -> None:
        """CPU time spent for the screen on another thread; safe from any thread."""
        with self._lock:
            self._other += max(0.0, seconds)

    def tick(self) -> None:
        now, cpu = self._clock(), self._cpu()
        with self._lock:
            other, self._other = self._other, 0.0
        if self._last_t is None:
            self._last_t, self._last_cpu = now, cpu
            return
        spent, elapsed = cpu - self._last_cpu + other, now - self._last_t
        self._last_t, self._last_cpu = now, cpu
        self.spent += spent
        if not self.shares_gil and now - self._load_at >= self.LOAD_EVERY:
            self._load_at = now
            if self._load.busy_cores() >= self._cores() - 0.5:
                self.busy, self._calm = True, 0
            else:
                self._calm += 1
                self.busy = self.busy and self._calm < self.CALM_LOOKS
        if not self.limited:
            self.balance = self.CAP
            return
        self.balance = max(-self.DEBT, min(self.CAP, self.balance + self.share * elapsed - spent))

    def forget(self) -> None:
        """Charge nothing for this thread's CPU since the last tick: one-off work that is not the
        screen's (the collector's pass before gc.freeze)."""
        self._last_t = self._last_cpu = None

    def allows(self, cost: float = 0.0) -> bool:
        """Whether periodic work expected to cost `cost` CPU-seconds may run now."""
        return not self.limited or self.balance >= min(cost, self.CAP)

    def wait_for(self, cost: float) -> float:
        """Seconds until the allowance covers `cost` (0 when it does now)."""
        if self.allows(cost):
            return 0.0
        return (min(cost, self.CAP) - self.balance) / self.share
