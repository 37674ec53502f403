"""metrics_history.json, the seed's export of the whole history: {"steps": [...], "loss": [...], ...}.

Written so that a run of millions of steps costs linear time in all: values are encoded in chunks
(never a whole series in memory as text), and a rewrite copies the values the previous file already
holds as bytes and encodes only the rows added since.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..run.history import CHUNK, COLUMNS, MetricsHistory

SEED_KEYS = ("steps", "loss", "accuracy", "throughput", "learning_rate")
JSON_ORDER = SEED_KEYS + tuple(c for c in COLUMNS if c not in SEED_KEYS)  # then the extra series


def _encode_values(values: np.ndarray) -> str:
    if values.dtype.kind in "iu":
        return ",".join(map(str, values.tolist()))
    # float32 holds ~7 significant digits: print those, not float64's 17 of noise
    text = list(map("%.7g".__mod__ if values.dtype == np.float32 else repr, values.tolist()))
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        text[i] = "null"
    return ",".join(text)


@dataclass
class JsonLayout:
    """Where each series' values sit in the metrics_history.json last written, so the next write
    copies them as bytes and encodes only the new rows."""

    rows: int
    spans: dict[str, tuple[int, int]]
    identity: tuple[int, int, int] = (0, 0, 0)  # inode, size, mtime: the file is still ours


def file_identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _copy_range(src: IO[bytes], dst: IO[bytes], start: int, end: int) -> None:
    src.seek(start)
    while start < end:
        block = src.read(min(1 << 20, end - start))
        if not block:
            raise OSError(f"{src.name} is shorter than when it was written")
        dst.write(block)
        start += len(block)


def write_metrics_history(fh: IO[bytes], history: MetricsHistory, rows: int | None = None,
                          previous: tuple[IO[bytes], JsonLayout] | None = None) -> JsonLayout:
    """metrics_history.json: strict JSON (NaN as null), one line per series, streamed CHUNK values
    at a time, so a 10M-step export holds megabytes, not gigabytes. With `previous` (the file last
    written and its layout) the rows it holds are copied, not re-encoded: a run encodes each value
    once, and a rewrite costs a file copy."""
    rows = len(history) if rows is None else rows
    spans = {}
    fh.write(b"{")
    for i, name in enumerate(JSON_ORDER):
        fh.write(f'{"," if i else ""}\n "{name}": ['.encode())
        begin, first = fh.tell(), 0
        if previous is not None:
            _copy_range(previous[0], fh, *previous[1].spans[name])
            first = previous[1].rows
        for start in range(first, rows, CHUNK):
            values = history.slice(start, min(rows, start + CHUNK), (name,))[name]
            fh.write((("," if start else "") + _encode_values(values)).encode("ascii"))
        spans[name] = (begin, fh.tell())
        fh.write(b"]")
    fh.write(b"\n}\n")
    return JsonLayout(rows, spans)


def encode_metrics_history(history: MetricsHistory, rows: int | None = None) -> bytes:
    buf = io.BytesIO()
    write_metrics_history(buf, history, rows)
    return buf.getvalue()
