"""The columnar sidecar written: metrics.arrows beside metrics.jsonl (metricsfile.py reads both).

The recorder keeps it a record batch at a time (SidecarWriter); a run read from its JSONL alone (an
older version's, another writer's) gets one built once (build_sidecar); a resumed run's rows after
its checkpoint are cut from both (trim_metrics); the same columns make the CSV and Parquet exports
(arrow_table).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from .files import atomic_write, trim_jsonl
from .layout import METRICS_FILE, METRICS_SIDECAR
from .metricsfile import (FIELDS, FLUSH_ROWS, MetricsTable, _arrow, extra_keys, fields_from_rows, read_metrics,
                          read_sidecar, schema)

log = logging.getLogger(__name__)


def build_sidecar(viz_dir: Path, table: MetricsTable) -> bool:
    """Write a sidecar for rows read from metrics.jsonl (a run of an older version, another writer),
    once, where the directory is writable; False where it cannot be (read-only: nothing lost)."""
    try:
        SidecarWriter(Path(viz_dir), table).close()
    except OSError as exc:
        log.info("no sidecar written for %s (%s): it is read from metrics.jsonl each time", viz_dir, exc)
        return False
    return True


def arrow_table(columns: dict[str, np.ndarray]):
    """Numpy columns (MetricsTable.columns) as an Arrow table of the sidecar's field types, NaN as
    null, every extra key after our fields (`export --format csv|parquet`)."""
    return _arrow().table(_arrays(columns, schema(sidecar=False, extra=extra_keys(columns))))


def _arrays(columns: dict[str, np.ndarray], sch) -> dict:
    pa = _arrow()
    arrays = {}
    for f in sch:
        if f.name == "jsonl_end":
            continue
        values = columns.get(f.name)
        if values is None:
            values = np.full(len(columns["step"]), np.nan)
        if f.name == "step":
            arrays[f.name] = pa.array(values, pa.int64())
            continue
        mask = np.isnan(values)
        if f.type != pa.float64():  # tokens_seen (int64), skipped (bool)
            values = np.nan_to_num(values).astype(f.type.to_pandas_dtype())
        arrays[f.name] = pa.array(values, f.type, mask=mask if mask.any() else None)
    return arrays


def _batches(table: MetricsTable, sch, size: int = 1 << 16):
    pa = _arrow()
    for start in range(0, len(table), size):
        part = _arrays({k: v[start:start + size] for k, v in table.columns.items()}, sch)
        yield pa.record_batch([*part.values(), pa.array(table.ends[start:start + size], pa.int64())], schema=sch)


class SidecarWriter:
    """Writes metrics.arrows beside metrics.jsonl: started from `table` (the rows metrics.jsonl
    holds now, written atomically), then appended a record batch of FLUSH_ROWS rows at a time."""

    def __init__(self, viz_dir: Path, table: MetricsTable | None = None):
        self.path = Path(viz_dir) / METRICS_SIDECAR
        table = table if table is not None else MetricsTable()
        known = table.ends >= 0
        if not known.all():  # rows whose end is not known cannot be checked against: leave them to the JSONL
            cut = int(np.argmin(known))
            table = table.select(np.arange(len(table)) < cut)
        self._rows: list[dict] = []
        self._ends: list[int] = []
        self._fh = None
        self._start(table)

    def _start(self, table: MetricsTable) -> None:
        """The sidecar written anew (atomically) with `table`'s rows and columns, then appended to."""
        self.extra = table.extra
        self._schema = schema(extra=self.extra)
        parts = [self._schema.serialize().to_pybytes()] + [b.serialize().to_pybytes() for b in _batches(table, self._schema)]
        atomic_write(self.path, b"".join(parts))
        self._fh = open(self.path, "ab")

    def _widen(self, row: dict) -> None:
        """A key no row had before: the sidecar is written again with a column for it (once a key)."""
        new = tuple(k for k, v in row.items() if k not in FIELDS and k not in self.extra
                    and isinstance(v, (int, float)) and not isinstance(v, bool))
        if not new:
            return
        self.flush()
        if self._fh is None:
            return
        with contextlib.suppress(OSError):
            self._fh.close()
        table = read_sidecar(self.path)
        columns = {**table.columns, **{k: np.full(len(table), np.nan) for k in self.extra + new if k not in table.columns}}
        self._start(MetricsTable(columns, table.ends, table.end))

    def add(self, row: dict, end: int) -> None:
        if self._fh is None:  # closed, or abandoned after a disk that stayed full
            return
        if len(row) > len(FIELDS) or any(k not in FIELDS for k in row):
            self._widen(row)
        self._rows.append(row)
        self._ends.append(end)
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._rows or self._fh is None:
            return
        batch = next(_batches(MetricsTable(fields_from_rows(self._rows), np.array(self._ends, np.int64)), self._schema))
        # (a row's keys beyond the schema were widened for in add(): fields_from_rows' extras fit it)
        start = self._fh.tell()
        try:
            self._fh.write(batch.serialize().to_pybytes())  # one write: a crash leaves at most a torn last batch
            self._fh.flush()
        except OSError as exc:  # a full disk: cut back to the last whole batch and try again with the next
            if len(self._rows) >= 8 * FLUSH_ROWS:  # it stays full: readers fall back to metrics.jsonl
                log.warning("metrics.arrows left out of step (%s); readers use metrics.jsonl", exc)
                self.abandon()
            else:
                with contextlib.suppress(OSError):
                    self._fh = _reopen_at(self._fh, self.path, start)
            return
        self._rows, self._ends = [], []

    def abandon(self) -> None:
        """Stop writing the sidecar and remove it: a reader then takes every row from metrics.jsonl."""
        self.close(flush=False)
        self.path.unlink(missing_ok=True)

    def close(self, flush: bool = True) -> None:
        if flush:
            with contextlib.suppress(Exception):
                self.flush()
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def _reopen_at(fh, path: Path, size: int):
    """A fresh append handle on `path` cut back to `size` (a buffered handle that failed to write
    cannot be trusted to hold what it still has)."""
    with contextlib.suppress(OSError):
        fh.close()
    os.truncate(path, size)
    return open(path, "ab")


def trim_metrics(viz_dir: Path, last_step: int) -> tuple[MetricsTable, int]:
    """Drop the rows after `last_step` from metrics.jsonl (a resumed run): cut the file at the end
    of the last row kept where the steps only grow, else rewrite it keeping the rows wanted.
    Returns the rows kept and how many were dropped."""
    path = Path(viz_dir) / METRICS_FILE
    table = read_metrics(viz_dir)
    steps = table.columns["step"]
    keep = steps <= last_step
    removed = int((~keep).sum())
    if not removed:
        return table, 0
    n_keep = int(keep.sum())
    growing = bool(np.all(np.diff(steps) >= 0))
    if growing and (n_keep == 0 or table.ends[n_keep - 1] >= 0):
        cut = int(table.ends[n_keep - 1]) if n_keep else 0
        os.truncate(path, cut)
        kept = table.select(keep)
        kept.end = cut
        return kept, removed
    trim_jsonl(path, lambda row: isinstance(row.get("step"), int) and row["step"] <= last_step)
    return read_metrics(viz_dir), removed
