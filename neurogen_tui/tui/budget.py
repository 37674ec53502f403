"""The screen's share of the CPU, kept with the one monitoring allowance (core/allowance.py).

Where the screen's CPU comes out of training, its periodic work (charts, the samples table, the
header) keeps to `share` of the training time: with the trainer on a thread of this process (the
CPU default), since every CPU torch op holds the GIL whenever the screen does, spare cores or not
(measured on a 2-core VM: 97 ms of UI CPU a second cost a tiny model 9% of its speed); or when
every core of the machine is busy (machine.MachineLoad). What the screen spent is measured, not
estimated: the event loop thread's CPU time (composing and writing the screen included) plus the
chart builds' CPU time on their thread. Keys never wait for the allowance; what they cost is
charged like the rest, so the periodic work after them waits a little longer.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..core.allowance import Allowance
from ..core.machine import MachineLoad


class ScreenBudget:
    """`tick(trained)` runs on the event loop's thread at each drain, with the seconds the run has
    trained so far: it charges that thread's CPU since the last tick, earns the share of the
    training since, and looks whether the machine still has a spare core. `charge()` adds CPU spent
    for the screen on other threads (the chart builds)."""

    BANK = 0.25  # seconds of CPU the allowance may bank: one chart redraw and change
    MAX_DEBT = 1.0  # seconds of CPU it may owe at most (a resize, a burst of keys): at 1%, 100 s of training

    def __init__(self, share: float, shares_gil: bool = False, load: MachineLoad | None = None,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.allowance = Allowance(share, bank=self.BANK, max_debt=self.MAX_DEBT)
        self.shares_gil = shares_gil  # the trainer is a thread of this process: limited, spare cores or not
        self.training = True  # the app clears it while the run is paused or has ended: nothing to take from
        self._load = load if load is not None else MachineLoad()
        self._cpu = cpu
        self._lock = threading.Lock()
        self._other = 0.0  # CPU charged from other threads since the last tick
        self._last_cpu: float | None = None  # the first tick only starts counting (the app's start is free)
        self._trained = 0.0

    @property
    def limited(self) -> bool:
        """True while the allowance applies: a share is set, the run is training, and the trainer
        shares the GIL or every core is busy."""
        return self.allowance.limited and self.training and (self.shares_gil or self._load.busy)

    @property
    def spent(self) -> float:
        """CPU seconds of the screen since the first tick."""
        return self.allowance.spent

    @property
    def balance(self) -> float:
        return self.allowance.balance

    @balance.setter
    def balance(self, value: float) -> None:
        self.allowance.balance = value

    def charge(self, seconds: float) -> None:
        """CPU time spent for the screen on another thread; safe from any thread."""
        with self._lock:
            self._other += max(0.0, seconds)

    def tick(self, trained: float) -> None:
        cpu = self._cpu()
        with self._lock:
            other, self._other = self._other, 0.0
        if self._last_cpu is None:
            self._last_cpu, self._trained = cpu, trained
            return
        spent, earned = cpu - self._last_cpu + other, trained - self._trained
        self._last_cpu, self._trained = cpu, trained
        if not self.shares_gil:
            self._load.saturated()
        self.allowance.settle(earned, spent)
        if not self.limited:
            self.allowance.refill()

    def forget(self) -> None:
        """Charge nothing for this thread's CPU since the last tick: one-off work that is not the
        screen's (the collector's pass before gc.freeze)."""
        self._last_cpu = None

    def ready(self) -> bool:
        """Whether the screen's periodic work may run now."""
        return not self.limited or self.allowance.ready()
