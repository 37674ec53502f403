"""One allowance for the monitoring work that may cost training: text samples, dashboards and the
screen all keep to a share of the *training* time with it.

Each second the trainer trains (the steps' own time: a paused run earns nothing) earns `share`
seconds. Work may start while the balance is not negative; what it measurably cost is spent
afterwards, so one piece of work may overdraw, and the next waits until that is repaid. So after
a sample that took c seconds the next one waits for c / share seconds of training.

Whether the work competes with training at all is the caller's question: a sample always does
(it runs on the training thread); a dashboard (another process) and the screen (another thread
or process) only when every core is busy, or the screen shares the trainer's GIL. Where it does
not, `refill()` forgets what is owed.
"""
from __future__ import annotations

import math


class Allowance:
    """`bank`: how far the balance may grow above zero while no work is due (the screen keeps one
    redraw's worth, so the first change after a quiet spell shows at once). `max_debt`: the most
    one burst may owe. A share of 0 never limits."""

    def __init__(self, share: float, bank: float = 0.0, max_debt: float = math.inf) -> None:
        self.share, self.bank, self.max_debt = share, bank, max_debt
        self.balance = bank
        self.spent = 0.0  # seconds of work spent in all (what tests and the benchmarks check the share with)

    @property
    def limited(self) -> bool:
        return self.share > 0

    def ready(self) -> bool:
        """Whether the next piece of work may start now."""
        return not self.limited or self.balance >= 0.0

    def earn(self, trained: float) -> None:
        """`trained` seconds of training went by."""
        self.balance = min(self.bank, self.balance + self.share * max(0.0, trained))

    def spend(self, seconds: float) -> None:
        """Work took `seconds` (CPU or wall time, as the caller measures its cost)."""
        seconds = max(0.0, seconds)
        self.spent += seconds
        if self.limited:
            self.balance = max(-self.max_debt, self.balance - seconds)

    def settle(self, trained: float, seconds: float) -> None:
        """An interval in which `trained` seconds of training went by and the work took `seconds`."""
        seconds = max(0.0, seconds)
        self.spent += seconds
        if self.limited:
            self.balance = max(-self.max_debt, min(self.bank, self.balance + self.share * max(0.0, trained) - seconds))

    def refill(self) -> None:
        """The work does not compete with training now: nothing is owed."""
        self.balance = self.bank

    def wait(self) -> float:
        """Seconds of training until the next piece of work may start (0 when it may now)."""
        return 0.0 if self.ready() else -self.balance / self.share
