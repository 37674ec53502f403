"""Chart series at a bounded cost per redraw: smoothing over the full series, then min/max
downsampling (both from run/history.py), applied incrementally.

Each redraw reads only the rows added since the last one (MetricsHistory.slice), carries the
smoothing average over from the last row (so it equals the whole series smoothed at once), and
folds complete blocks of raw points into an already-reduced store. Min/max of min/max keeps every
bucket's extremes, so spikes stay visible, and a redraw at step 10 million costs what it
costs at step 10 thousand.
"""
from __future__ import annotations

import math

import numpy as np

from ..run.history import MetricsHistory, debiased_ema, minmax_downsample

BLOCK = 4096  # raw points reduced together once a block is complete
PER_BLOCK = 128  # points a complete block is reduced to
STORE_LIMIT = 16384  # reduced points kept before the store is reduced again (to half)


class ReducedLine:
    """An append-only line kept as reduced points plus a raw tail shorter than BLOCK."""

    def __init__(self) -> None:
        self.store_x = np.empty(0)
        self.store_y = np.empty(0)
        self.tail_x = np.empty(0)
        self.tail_y = np.empty(0)

    def extend(self, x: np.ndarray, y: np.ndarray) -> None:
        tail_x = np.concatenate([self.tail_x, x])
        tail_y = np.concatenate([self.tail_y, y])
        complete = len(tail_x) // BLOCK * BLOCK
        if complete:
            bx, by = minmax_downsample(tail_x[:complete], tail_y[:complete], complete // BLOCK * PER_BLOCK)
            self.store_x = np.concatenate([self.store_x, bx])
            self.store_y = np.concatenate([self.store_y, by])
            # copies: a view would keep the whole concatenated block (every row read) alive
            tail_x, tail_y = tail_x[complete:].copy(), tail_y[complete:].copy()
            if len(self.store_x) > STORE_LIMIT:
                self.store_x, self.store_y = minmax_downsample(self.store_x, self.store_y, STORE_LIMIT // 2)
        self.tail_x, self.tail_y = tail_x, tail_y

    def points(self, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([self.store_x, self.tail_x])
        y = np.concatenate([self.store_y, self.tail_y])
        return minmax_downsample(x, y, max_points)


X_AXES = ("step", "tokens", "time")  # what a chart's X axis counts: steps, tokens seen, seconds since the first step
RECENT = 10_000  # full-resolution rows kept for the windowed views (the largest window)


class ChartSeries:
    """The lines of one chart (the value, its smoothed line, validation points), kept up to date
    with a MetricsHistory by reading only what is new.

    The smoothed line is TensorBoard's debiased EMA of the full-resolution series (run/history.py),
    computed before any reduction. The last RECENT rows are also kept whole, so a window of the
    last 10k / 1k / 100 steps is drawn from every point, not from the reduced store. A change of
    smoothing weight or X axis reads the history again from the start."""

    def __init__(self, column: str, scale: float = 1.0, smoothing: float = 0.0, val_column: str | None = None,
                 x: str = "step"):
        self.column, self.scale, self.val_column = column, scale, val_column
        self.smoothing, self.x = smoothing, x
        self.history: MetricsHistory | None = None
        self.wanted: list[int] = []  # marked steps (setting changes, guard actions) to find as rows arrive
        self.reset()

    def configure(self, smoothing: float, x: str) -> None:
        """A new weight or X axis: everything is read again at the next update."""
        if (smoothing, x) != (self.smoothing, self.x):
            self.smoothing, self.x = smoothing, x
            self.reset()

    def reset(self) -> None:
        self.seen = 0
        self.lines = {"value": ReducedLine()}
        if self.smoothing > 0:
            self.lines["smooth"] = ReducedLine()
        if self.val_column:
            self.lines["val"] = ReducedLine()
        self._ema = (0.0, 0)
        self._t0 = math.nan
        self.recent = {name: np.empty(0) for name in ("steps", "x", *self.lines)}
        self.last = {name: float("nan") for name in self.lines}
        self._mark_x: dict[int, float] = {}  # a marked step's place on this X axis, once found

    def update(self, history: MetricsHistory) -> int:
        """Take in the rows added since the last call (all of them for a new history); returns how many."""
        if history is not self.history or len(history) < self.seen:
            self.reset()
            self.history = history
        n = len(history)
        if n == self.seen:
            return 0
        x_column = {"step": "steps", "tokens": "tokens_seen", "time": "timestamp"}[self.x]
        names = list(dict.fromkeys(["steps", x_column, self.column] + ([self.val_column] if self.val_column else [])))
        cols = history.slice(self.seen, n, names)
        added, self.seen = n - self.seen, n
        x = cols[x_column].astype(np.float64)
        if self.x == "time":
            if math.isnan(self._t0) and np.isfinite(x).any():
                self._t0 = float(x[np.isfinite(x)][0])
            x = x - self._t0
        y = cols[self.column].astype(np.float64) * self.scale
        new = {"value": y}
        if self.smoothing > 0:
            new["smooth"], *state = debiased_ema(y, self.smoothing, *self._ema)
            self._ema = tuple(state)
        if self.val_column:
            new["val"] = cols[self.val_column].astype(np.float64)
        drawable = np.isfinite(x)  # an X the run did not record (tokens in an old run) cannot be drawn
        for name, values in new.items():
            self.lines[name].extend(x[drawable], values[drawable])
            finite = values[np.isfinite(values)]
            if len(finite):
                self.last[name] = float(finite[-1])
        self._find_marks(cols["steps"], x)
        new.update(steps=cols["steps"].astype(np.float64), x=x)
        for name, values in new.items():
            self.recent[name] = np.concatenate([self.recent[name], values[drawable]])[-RECENT:]
        return added

    def _find_marks(self, steps: np.ndarray, x: np.ndarray) -> None:
        missing = [s for s in self.wanted if s not in self._mark_x]
        if not missing or not len(steps):
            return
        at = np.searchsorted(steps, missing)
        for step, i in zip(missing, at):
            if i < len(steps) and steps[i] == step and np.isfinite(x[i]):
                self._mark_x[step] = float(x[i])

    def mark_positions(self, marks: list[tuple[int, str]]) -> list[tuple[float, str]]:
        """Each mark's place on this chart's X axis; a mark whose step this series has not seen
        (yet) is left out."""
        self._find_marks(self.recent["steps"], self.recent["x"])  # marks that came after their rows
        return [(self._mark_x[step], kind) for step, kind in marks if step in self._mark_x]

    def points(self, max_points: int, window: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each line reduced to about max_points: the whole run, or the last `window` steps."""
        if window is None:
            return {name: line.points(max_points) for name, line in self.lines.items()}
        steps = self.recent["steps"]
        keep = steps > steps[-1] - window if len(steps) else np.zeros(0, dtype=bool)
        x = self.recent["x"][keep]
        return {name: minmax_downsample(x, self.recent[name][keep], max_points) for name in self.lines}
