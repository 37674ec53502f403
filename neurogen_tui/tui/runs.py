"""The workspace's view model: the runs under a directory (ours, logging-API runs, TensorBoard
logdirs), which are selected and pinned, each one's colour, the filter, and the lines each
selected run draws. Plain Python, tested without widgets (the screen is workspace.py).

A run's lines are kept reduced: for every numeric key, its raw values and their debiased EMA
(TensorBoard's smoothing, over the full series, before reduction) as ~REDUCED points, so a
hundred runs of a hundred thousand steps hold a few MB each, not every row. A selected run's
history is read once (the sidecar where there is one: ms), then followed: the rows appended since
extend its lines, the EMA carried over (history.debiased_ema). Which key draws which of the seed's
four charts is found under the usual names (history.ALIASES).
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.palette import run_colour
from ..run.files import TailedFile, tail_jsonl
from ..run.history import ALIASES, debiased_ema
from ..run.layout import RunLayout
from ..run.listing import find_runs, summarize
from ..run.metricsfile import FIELDS, MetricsTable, fields_from_rows, parse_jsonl
from ..run.reader import read_run_metrics
from ..run.query import QueryError, differing_keys, parse
from ..run.tensorboard import TensorBoardRun, is_tensorboard_dir, table_of
from .series import ReducedLine

REDUCED = 1024  # points a line keeps after reduction (a chart draws at most ~2 a column)
TAIL_ROWS = 500  # rows read from a file's end for the first screen
SEED_CHARTS = ("loss", "accuracy", "throughput", "learning_rate", "val_loss")
NOT_METRICS = {"step", "timestamp", "skipped", "jsonl_end"}  # columns that are no chart


@dataclass
class Lines:
    """One key of one run: its raw line and its EMA line, reduced, and the EMA's state."""

    raw: ReducedLine = field(default_factory=ReducedLine)
    smooth: ReducedLine = field(default_factory=ReducedLine)
    last: float = 0.0
    count: int = 0
    latest: float = math.nan

    def extend(self, x: np.ndarray, y: np.ndarray, weight: float) -> None:
        keep = np.isfinite(y)
        if not keep.any():
            return
        x, y = x[keep], y[keep]
        self.raw.extend(x, y)
        if weight > 0:
            ema, self.last, self.count = debiased_ema(y, weight, self.last, self.count)
            self.smooth.extend(x, ema)
        self.latest = float(y[-1])


class RunData:
    """A selected run's lines, read and then followed."""

    def __init__(self, path: Path, weight: float) -> None:
        self.path, self.weight = path, weight
        self.lines: dict[str, Lines] = {}
        self.rows = 0
        self.last_step = 0
        self.partial = False  # only the file's last rows so far (load_tail)
        self._tail: TailedFile | None = None
        self._tb = TensorBoardRun(path) if is_tensorboard_dir(path) else None

    def load_tail(self, rows: int = TAIL_ROWS) -> None:
        """The last rows only, read from the file's end at once: the first screen comes from them and
        load() replaces them with the whole history."""
        if self._tb is not None:
            return
        tail, _ = tail_jsonl(RunLayout(self.path).metrics, rows)
        tail = [r for r in tail if isinstance(r.get("step"), int)]
        if tail:
            self._add(MetricsTable(fields_from_rows(tail), np.full(len(tail), -1, np.int64)))
            self.partial = True

    def load(self) -> None:
        """The whole history, then the rows after it at each poll()."""
        self.lines.clear()
        self.partial = False
        if self._tb is not None:
            self._add(table_of(self._tb.poll()))
            return
        layout = RunLayout(self.path)
        table = read_run_metrics(layout.viz)
        self._tail = TailedFile(layout.metrics)
        self._tail.mark_start()
        self._tail.offset = table.end
        self._add(table)

    def poll(self) -> bool:
        """Rows written since the last look; True when there were some."""
        if self._tb is not None:
            rows = self._tb.poll()
            if rows:
                self._add(table_of(rows))
            return bool(rows)
        if self._tail is None:
            return False
        data, start, restarted = self._tail.read_bytes()
        if restarted:  # a resumed run cut its record back: read it again
            self.lines.clear()
            self.load()
            return True
        if not data:
            return False
        self._add(parse_jsonl(data, start))
        return True

    def _add(self, table: MetricsTable) -> None:
        if not len(table):
            return
        cols = table.columns
        x = cols["step"].astype(np.float64)
        for name, values in cols.items():
            if name in NOT_METRICS or (name in FIELDS and not np.isfinite(values).any() and name not in self.lines):
                continue
            self.lines.setdefault(name, Lines()).extend(x, np.asarray(values, np.float64), self.weight)
        self.rows += len(table)
        self.last_step = int(cols["step"][-1])

    def key_for(self, chart: str) -> str | None:
        """The key that draws one of the seed's charts in this run (its own name for any other)."""
        if chart not in ALIASES:
            return chart if chart in self.lines else None
        names = ALIASES[chart]
        return next((k for k in names if k in self.lines and self.lines[k].raw.points(2)[0].size), None)

    def line(self, chart: str, smoothed: bool, points: int) -> tuple[np.ndarray, np.ndarray] | None:
        key = self.key_for(chart)
        if key is None:
            return None
        lines = self.lines[key]
        which = lines.smooth if smoothed and self.weight > 0 and lines.count else lines.raw
        return which.points(points)

    @property
    def metrics(self) -> list[str]:
        """Every key this run logged, the ones the seed's charts draw left out."""
        used = {self.key_for(c) for c in SEED_CHARTS}
        return [k for k in self.lines if k not in used]


def _give_back_memory() -> None:
    """A run's whole table is read, reduced and dropped: what Arrow's pool keeps of it goes back to
    the system (a workspace of a hundred long runs must stay a few hundred MB)."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass


@dataclass
class Entry:
    """A run in the sidebar: its summary (ls's), colour, and whether it is selected or pinned."""

    path: Path
    summary: dict
    index: int  # the order it was first seen in: its colour
    selected: bool = False
    pinned: bool = False
    data: RunData | None = None

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.path.name)

    @property
    def colour(self) -> tuple[tuple[int, int, int], int]:
        return run_colour(self.index)


class Workspace:
    """The runs under `root` and what the person chose of them."""

    DEFAULT_SELECTED = 7  # the newest runs drawn when the workspace opens (one round of the palette)

    def __init__(self, root: str | Path, weight: float = 0.6) -> None:
        self.root = Path(root)
        self.weight = weight
        self.entries: dict[Path, Entry] = {}
        self.query = ""
        self._terms: list = []
        self.metric_filter = ""
        self.group_key = ""
        self._opened = False
        self.lock = threading.RLock()  # the scan thread extends lines the build thread reads

    # ---- the runs -------------------------------------------------------------------------------
    def scan(self) -> list[Entry]:
        """Look for runs (new ones appear; their summaries are read again); the new entries."""
        now = time.time()
        new, entries = [], dict(self.entries)  # swapped in whole: the UI thread iterates the old one meanwhile
        for path in find_runs(self.root):
            summary = summarize(path, self.root, now, events=False)  # the sidebar shows no last event
            entry = entries.get(path)
            if entry is None:
                entry = entries[path] = Entry(path, summary, len(entries))
                new.append(entry)
            else:
                entry.summary = summary
        self.entries = entries
        if not self._opened:  # the newest runs start selected
            self._opened = True
            for entry in self.ordered()[:self.DEFAULT_SELECTED]:
                entry.selected = True
        return new

    def ordered(self) -> list[Entry]:
        """Pinned first, then the newest updated first."""
        return sorted(self.entries.values(), key=lambda e: (not e.pinned, -(e.summary.get("updated") or 0.0), e.name))

    def set_query(self, text: str) -> str:
        """A new filter; '' or why it cannot be read (then the last one that could stands)."""
        try:
            self._terms = parse(text)
        except QueryError as exc:
            return str(exc)
        self.query = text
        return ""

    def visible(self) -> list[Entry]:
        """The runs the filter keeps."""
        return [e for e in self.ordered() if all(t.matches({**e.summary, "name": e.name}) for t in self._terms)]

    def selected(self) -> list[Entry]:
        return [e for e in self.visible() if e.selected]

    # ---- the charts --------------------------------------------------------------------------------
    def load_tails(self) -> bool:
        """The selected runs not read yet, from the last rows of their files (quick); True if any."""
        fresh = [e for e in self.selected() if e.data is None]
        for entry in fresh:
            entry.data = RunData(entry.path, self.weight)
            entry.data.load_tail()
        return bool(fresh)

    def load_selected(self) -> None:
        """Read the selected runs' whole histories where only their tails are read, and follow the
        others (a thread's job)."""
        loaded = False
        for entry in self.selected():
            if entry.data is None:
                entry.data = RunData(entry.path, self.weight)
                entry.data.load()
                loaded = True
            elif entry.data.partial or not entry.data.lines:
                entry.data.load()
                loaded = True
            else:
                entry.data.poll()
        if loaded:
            _give_back_memory()

    def metrics(self) -> list[str]:
        """The charts to draw: the seed's where any selected run has them, then every other key of
        the selected runs, in the metric filter's choice."""
        runs = [e.data for e in self.selected() if e.data is not None]
        seed = [c for c in SEED_CHARTS if any(r.key_for(c) for r in runs)] or ["loss"]
        others = sorted(dict.fromkeys(k for r in runs for k in r.metrics))
        names = seed + [k for k in others if k not in seed]
        if self.metric_filter:
            try:
                pattern = re.compile(self.metric_filter, re.IGNORECASE)
            except re.error:
                pattern = re.compile(re.escape(self.metric_filter), re.IGNORECASE)  # taken as plain text
            names = [n for n in names if pattern.search(n)]
        return names

    def set_weight(self, weight: float) -> None:
        """A new smoothing: every loaded run is read again (its EMA needs the full series)."""
        self.weight = weight
        for entry in self.entries.values():
            entry.data = None

    def diff(self) -> tuple[list[str], list[list]]:
        """The config diff of the selected runs: the keys in which they differ (first: they are what a
        narrow terminal must show), then each run's steps, final and best loss, validation loss,
        tokens/s and state. (columns, rows)"""
        runs = self.selected()
        keys = differing_keys([e.summary.get("config") or {} for e in runs])
        columns = ["run", *keys, "steps", "final loss", "best loss", "val loss", "tok/s", "state"]  # what differs first
        rows = []
        for e in runs:
            d, config = e.data, e.summary.get("config") or {}
            row = [e.name, *(config.get(k) for k in keys), e.summary.get("step")]
            for chart, how in (("loss", "latest"), ("loss", "best"), ("val_loss", "latest"), ("throughput", "latest")):
                key = d.key_for(chart) if d else None
                lines = d.lines[key] if key else None
                value = None
                if lines is not None:
                    value = lines.latest if how == "latest" else float(np.min(lines.raw.points(REDUCED)[1]))
                row.append(value)
            rows.append(row + [e.summary.get("state")])
        return columns, rows
