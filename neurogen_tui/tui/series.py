"""Chart series at a bounded cost per redraw: the PNG dashboards' reduction (moving average over the
full series, then min/max downsampling, both from history.py) applied incrementally.

Each redraw reads only the rows added since the last one (MetricsHistory.slice), extends the
moving average from the last window-1 values (so it equals moving_average over the whole series),
and folds complete blocks of raw points into an already-reduced store. Min/max of min/max keeps
every bucket's extremes, so spikes stay visible, and a redraw at step 10 million costs what it
costs at step 10 thousand.
"""
from __future__ import annotations

import numpy as np

from ..history import MetricsHistory, minmax_downsample, moving_average

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
            tail_x, tail_y = tail_x[complete:], tail_y[complete:]
            if len(self.store_x) > STORE_LIMIT:
                self.store_x, self.store_y = minmax_downsample(self.store_x, self.store_y, STORE_LIMIT // 2)
        self.tail_x, self.tail_y = tail_x, tail_y

    def points(self, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([self.store_x, self.tail_x])
        y = np.concatenate([self.store_y, self.tail_y])
        return minmax_downsample(x, y, max_points)


class ChartSeries:
    """The lines of one chart (value, its moving average, validation points), kept up to date
    with a MetricsHistory by reading only what is new."""

    def __init__(self, column: str, scale: float = 1.0, window: int | None = None, val_column: str | None = None):
        self.column, self.scale, self.window, self.val_column = column, scale, window, val_column
        self.reset()

    def reset(self) -> None:
        self.history: MetricsHistory | None = None
        self.seen = 0
        self.lines = {"value": ReducedLine()}
        if self.window:
            self.lines["average"] = ReducedLine()
        if self.val_column:
            self.lines["val"] = ReducedLine()
        self._ma_prev = np.empty(0)
        self.last = {name: float("nan") for name in self.lines}

    def update(self, history: MetricsHistory) -> int:
        """Take in the rows added since the last call (all of them for a new history); returns how many."""
        if history is not self.history or len(history) < self.seen:
            self.reset()
            self.history = history
        n = len(history)
        if n == self.seen:
            return 0
        names = ["steps", self.column] + ([self.val_column] if self.val_column else [])
        cols = history.slice(self.seen, n, names)
        added, self.seen = n - self.seen, n
        x = cols["steps"]
        y = cols[self.column].astype(np.float64) * self.scale
        self._add("value", x, y)
        if self.window:
            joined = np.concatenate([self._ma_prev, y])
            self._add("average", x, moving_average(joined, self.window)[len(self._ma_prev):])
            self._ma_prev = joined[-(self.window - 1):] if self.window > 1 else joined[:0]
        if self.val_column:
            self._add("val", x, cols[self.val_column].astype(np.float64))
        return added

    def _add(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        self.lines[name].extend(x, y)
        finite = y[np.isfinite(y)]
        if len(finite):
            self.last[name] = float(finite[-1])

    def points(self, max_points: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {name: line.points(max_points) for name, line in self.lines.items()}
