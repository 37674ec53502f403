"""A directory of TensorBoard event files is a run too (one run a directory: tbtui's convention),
read with TensorBoard's own reader (the optional `tensorboard` package) and followed as it grows:
each event file's loader keeps its place, so a poll reads only the bytes added since the last.

Its scalar tags are metrics like any run's: one row a step, `timestamp` the events' wall time, a
column a tag (as named: `train/loss`); the charts find the seed's series among them by the usual
names (history.ALIASES). TensorBoard's own v1 and v2 scalars (simple_value, or a scalar tensor)
are read; images, histograms and text are not metrics.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .metricsfile import MetricsTable

EVENTS = "events.out.tfevents."


def is_tensorboard_dir(path: Path) -> bool:
    """`path` holds TensorBoard event files of its own (not only in subdirectories)."""
    try:
        return any(entry.name.startswith(EVENTS) and entry.is_file() for entry in os.scandir(path))
    except OSError:
        return False


def tensorboard_missing() -> str:
    """Why TensorBoard's reader cannot be had here ('' where it can)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return "reading TensorBoard logdirs needs the tensorboard package: pip install 'neurogen-tui[tensorboard]'"
    return ""


def _scalar(value) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor" and value.metadata.plugin_data.plugin_name in ("scalars", ""):
        t = value.tensor
        if t.float_val:
            return float(t.float_val[0])
        if t.double_val:
            return float(t.double_val[0])
        if t.tensor_content and t.dtype in (1, 2):  # DT_FLOAT, DT_DOUBLE
            return float(np.frombuffer(t.tensor_content, np.float32 if t.dtype == 1 else np.float64)[0])
    return None


class TensorBoardRun:
    """The scalars of one logdir, read a poll at a time (`poll()` returns the new rows)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._loaders: dict[str, object] = {}
        self.rows = 0
        self.last_wall = 0.0

    def _files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.name.startswith(EVENTS) and p.is_file())

    def poll(self) -> list[dict]:
        """The scalar events added since the last poll, as metrics rows (one a step, in step order)."""
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        by_step: dict[int, dict] = {}
        for path in self._files():
            loader = self._loaders.get(path.name)
            if loader is None:
                loader = self._loaders[path.name] = EventFileLoader(str(path))
            for event in loader.Load():
                if not event.HasField("summary"):
                    continue
                row = None
                for value in event.summary.value:
                    number = _scalar(value)
                    if number is None:
                        continue
                    if row is None:
                        row = by_step.setdefault(int(event.step), {"step": int(event.step)})
                    row[value.tag if value.tag not in ("step", "timestamp") else f"{value.tag}_"] = number
                if row is not None:
                    row["timestamp"] = max(row.get("timestamp", 0.0), float(event.wall_time))
                    self.last_wall = max(self.last_wall, float(event.wall_time))
        rows = [by_step[s] for s in sorted(by_step)]
        self.rows += len(rows)
        return rows


def table_of(rows: list[dict]) -> MetricsTable:
    """Rows as a MetricsTable (NaN where a tag was not logged at a step)."""
    from .metricsfile import fields_from_rows

    return MetricsTable(fields_from_rows(rows), np.full(len(rows), -1, np.int64))
