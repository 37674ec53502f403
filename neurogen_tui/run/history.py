"""The metrics history in compact columnar storage, and the maths the charts share.

A step costs 56 bytes (int64 step, float64 timestamp, ten float32 series) and storage grows in
fixed chunks, never by doubling, so 10 million steps hold in ~0.5 GB. Plain functions do the maths
(moving average, min/max downsampling) so the dashboards, the terminal charts and tests share them.
"""
from __future__ import annotations

import math
import threading
from typing import Iterable

import numpy as np

CHUNK = 1 << 16

# column -> dtype; names follow metrics_history.json (the seed's layout) where it has one
COLUMNS: dict[str, type] = {
    "steps": np.int64,
    "timestamp": np.float64,
    "loss": np.float32,
    "accuracy": np.float32,
    "throughput": np.float32,
    "learning_rate": np.float32,
    "gpu_memory_mb": np.float32,
    "rss_mb": np.float32,
    "grad_norm": np.float32,
    "val_loss": np.float32,  # NaN except on evaluation steps
    "tokens_seen": np.float32,
    "mfu": np.float32,  # NaN where the device's peak is unknown (CPU, an unlisted GPU)
}
# metrics.jsonl / TrainingMetrics field for each column
SOURCE_FIELD = {"steps": "step", "throughput": "tokens_per_sec"}
# The names other loops log the seed's series under, first found first: the logging API keeps a
# run's keys as it named them, and the charts recognise the usual ones (HF Trainer, Lightning,
# torchtitan, nanoGPT forks). Ours come first.
ALIASES: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "train/loss", "train_loss", "training_loss", "train/loss_step", "loss_step",
             "loss_metrics/global_avg_loss"),
    "accuracy": ("accuracy", "acc", "train/accuracy", "train/acc", "train_acc", "train_accuracy"),
    "throughput": ("tokens_per_sec", "tokens_per_second", "throughput", "tok/s", "train/tokens_per_sec",
                   "perf/tokens_per_sec", "train/throughput", "wps"),
    "learning_rate": ("learning_rate", "lr", "train/lr", "train/learning_rate", "opt/lr", "lr-AdamW"),
    "val_loss": ("val_loss", "val/loss", "eval/loss", "eval_loss", "validation/loss", "valid/loss",
                 "validation_loss", "test/loss"),
}


def keys_of(name: str) -> tuple[str, ...]:
    """The metrics keys a history column is read from, in order of preference."""
    return ALIASES.get(name, (SOURCE_FIELD.get(name, name),))


def row_value(row: dict, name: str):
    """A history column's value in one metrics row (under any of its names), or None."""
    for key in keys_of(name):
        value = row.get(key)
        if value is not None:
            return value
    return None


def number(value) -> float:
    """A JSON value as a float; NaN for one that is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def columns_from_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """Metrics rows (metrics.jsonl dicts, TrainingMetrics fields) as columns of the history, a value
    that is missing or not a number NaN: many rows go into the history in one bulk append."""
    out = {}
    for name, dtype in COLUMNS.items():
        if dtype == np.int64:
            out[name] = np.array([v if isinstance(v := r.get("step"), int) else 0 for r in rows], dtype=np.int64)
        else:
            out[name] = np.array([number(row_value(r, name)) for r in rows], dtype=np.float64).astype(dtype)
    return out


def history_columns(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns keyed by metrics.jsonl field (metricsfile.MetricsTable) as the history's columns,
    each from the first of its names that has a value."""
    out = {}
    for name, dtype in COLUMNS.items():
        found = [fields[k] for k in keys_of(name) if k in fields]
        best = next((f for f in found if len(f) and np.isfinite(f).any()), found[0] if found else None)
        if best is not None:
            out[name] = np.asarray(best, dtype=dtype)
    return out


class MetricsHistory:
    """Append-only columns of per-step metrics; safe to read from another thread while appending."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
        self._n = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for chunks in self._chunks.values() for a in chunks)

    def append(self, row: dict) -> None:
        """Append one step from a metrics dict (TrainingMetrics.to_dict() or a metrics.jsonl row)."""
        with self._lock:
            i = self._n % CHUNK
            if i == 0:
                for name, dtype in COLUMNS.items():
                    self._chunks[name].append(np.full(CHUNK, np.nan if dtype != np.int64 else 0, dtype=dtype))
            for name in COLUMNS:
                value = row_value(row, name)
                if isinstance(value, (int, float)):
                    self._chunks[name][-1][i] = value
            self._n += 1

    def extend_columns(self, columns: dict[str, np.ndarray]) -> None:
        """Append many rows at once from equal-length arrays keyed by column name (missing: NaN)."""
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        total = lengths.pop() if lengths else 0
        done = 0
        with self._lock:
            while done < total:
                i = self._n % CHUNK
                if i == 0:
                    for name, dtype in COLUMNS.items():
                        self._chunks[name].append(np.full(CHUNK, np.nan if dtype != np.int64 else 0, dtype=dtype))
                take = min(CHUNK - i, total - done)
                for name, values in columns.items():
                    if name in COLUMNS:
                        self._chunks[name][-1][i:i + take] = values[done:done + take]
                self._n += take
                done += take

    def slice(self, start: int = 0, stop: int | None = None, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Rows [start, stop) of the named columns (default: all) as fresh arrays."""
        with self._lock:
            stop = self._n if stop is None else max(0, min(stop, self._n))
            start = max(0, min(start, stop))
            out = {}
            for name in names or COLUMNS:
                chunks = self._chunks[name]
                parts = [chunks[c][max(start - c * CHUNK, 0):min(stop - c * CHUNK, CHUNK)]
                         for c in range(start // CHUNK, -(-stop // CHUNK))]
                out[name] = np.concatenate(parts) if parts else np.empty(0, dtype=COLUMNS[name])
            return out

    def column(self, name: str) -> np.ndarray:
        """The whole series as one array (a fresh copy)."""
        return self.slice(names=(name,))[name]

    def last(self, name: str, default: float = math.nan) -> float:
        with self._lock:
            if not self._n:
                return default
            i = (self._n - 1) % CHUNK
            return float(self._chunks[name][-1][i])


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points, full length; early points average what is there.
    Non-finite values are left out of the windows instead of poisoning them."""
    y = np.asarray(y, dtype=np.float64)
    if not len(y):
        return y
    finite = np.isfinite(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    counts = ccount[idx] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (csum[idx] - csum[lo]) / np.maximum(counts, 1), np.nan)


def minmax_downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points keeping each bucket's min and max (spikes stay visible), plus the
    first and last point. Non-finite points are dropped (they cannot be drawn)."""
    x, y = np.asarray(x), np.asarray(y)
    finite = np.isfinite(y)
    if not finite.all():
        x, y = x[finite], y[finite]
    n = len(y)
    if n <= max_points or max_points < 4:
        return x, y
    buckets = max_points // 2 - 1
    size = math.ceil(n / buckets)
    buckets = math.ceil(n / size)
    padded = np.pad(y, (0, buckets * size - n), mode="edge").reshape(buckets, size)
    base = np.arange(buckets) * size
    idx = np.concatenate([[0], padded.argmin(axis=1) + base, padded.argmax(axis=1) + base, [n - 1]])
    idx = np.unique(np.clip(idx, 0, n - 1))
    return x[idx], y[idx]


EMA_SPAN = 500.0  # a block of values smoothed in closed form keeps weight**-k under e**500 (float64 ends near e**709)
EMA_BLOCK = 1 << 16  # the longest block (a weight near 1)


def debiased_ema(y: np.ndarray, weight: float, last: float = 0.0, count: int = 0) -> tuple[np.ndarray, float, int]:
    """TensorBoard's scalar smoothing: the exponential moving average started at 0 and divided by
    1 - weight**n (n: finite values so far), so the first points are not dragged towards zero.
    A non-finite value is passed through and leaves the average alone, as in TensorBoard.

    `last` and `count` carry the average over from a previous call (both returned), so a series
    smoothed in pieces equals the whole series smoothed at once. Vectorised in blocks: within one,
    s_k = w**k * (s_0 + (1 - w) * sum_j w**-j * y_j), a million points in tens of milliseconds."""
    y = np.asarray(y, dtype=np.float64)
    out = y.copy()
    finite = np.flatnonzero(np.isfinite(y))
    if weight <= 0.0:
        return out, float(y[finite[-1]]) if len(finite) else last, count + len(finite)
    values = y[finite]
    smoothed = np.empty(len(values))
    size = max(1, int(min(EMA_BLOCK, EMA_SPAN / -math.log(weight), len(values))))
    all_powers = weight ** np.arange(1, size + 1)  # w**1 .. w**size, shared by every block
    for start in range(0, len(values), size):
        block = values[start:start + size]
        powers = all_powers[:len(block)]
        acc = powers * (last + (1.0 - weight) * np.cumsum(block / powers))
        smoothed[start:start + len(block)] = acc / (1.0 - weight ** count * powers)  # 1 - w**n, n values so far
        last, count = float(acc[-1]), count + len(block)
    out[finite] = smoothed
    return out, last, count


def band(lines: list[tuple[np.ndarray, np.ndarray]], points: int) -> tuple[np.ndarray, ...] | None:
    """The runs of a group on a common X grid: (x, mean, low, high), each run interpolated where it
    has values (a grid of `points` over the steps all of them reached)."""
    lines = [(x, y) for x, y in lines if len(x) > 1]
    if not lines:
        return None
    lo, hi = max(float(x[0]) for x, _ in lines), min(float(x[-1]) for x, _ in lines)
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, points)
    stack = np.vstack([np.interp(grid, x, y) for x, y in lines])
    return grid, stack.mean(axis=0), stack.min(axis=0), stack.max(axis=0)
