"""metrics.jsonl read in bulk, and its columnar sidecar, so a run of millions of steps opens at once.

`metrics.jsonl` stays the crash-proof record (one flushed line a step). Beside it the recorder keeps
`metrics.arrows`, an Arrow IPC stream of the same rows (pandas, polars, DuckDB and pyarrow read it:
`pyarrow.ipc.open_stream`), appended a record batch at a time. Each row there carries `jsonl_end`,
the byte offset just after its line in metrics.jsonl, so a reader takes the sidecar's rows, checks
that its last row is the line ending at that offset, and parses only the lines after it. A sidecar
that is missing (runs of older versions), torn by a crash, from another schema or out of step with
metrics.jsonl is not trusted: the whole JSONL file is parsed instead, by pyarrow's multi-threaded
JSON reader, and by a line-by-line loop only for a block pyarrow refuses (a corrupt line). A torn
last line is never read; a null or missing value reads as NaN.

Beside our trainer's fields (FIELDS), any other numeric key a writer logs (`train/loss`,
`eval/acc`: the logging API, a TensorBoard run's tags) is kept as a column of its own under the
name it was given, in the sidecar too: a key that first appears mid-run widens the sidecar's
schema once (it is rewritten with the new column). Text and nested values are not columns.
Writing the sidecar is sidecar.py's.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import jsonl_objects
from .history import number
from .layout import METRICS_FILE, METRICS_SIDECAR

log = logging.getLogger(__name__)

# the metrics.jsonl fields kept in columns (TrainingMetrics): in numpy "step" is int64 and the rest
# float64 (NaN where missing, "skipped" 0/1); in Arrow "step" and "tokens_seen" int64, "skipped" bool
FIELDS = ("step", "timestamp", "loss", "accuracy", "tokens_per_sec", "gpu_memory_mb", "learning_rate", "grad_norm",
          "val_loss", "tokens_seen", "rss_mb", "step_time", "skipped", "mfu", "cpu_util", "data_time",
          "gpu_util", "gpu_mem_used_mb", "gpu_power_w", "gpu_temp_c", "gpu_mem_total_mb", "gpu_sm_clock_mhz")
SIDECAR_VERSION = b"1"
FLUSH_ROWS = 256  # rows per appended record batch: ~30 KB, a few microseconds a step
BLOCK = 16 << 20  # bytes of JSONL read and parsed at a time; a corrupt line costs the Python loop this much


def _arrow():
    import pyarrow as pa  # comes with `datasets`; imported only where metrics are read in bulk

    return pa


def schema(sidecar: bool = True, extra: tuple[str, ...] = ()):
    """The sidecar's schema (the fields, the `extra` keys as float64, then `jsonl_end`), or
    (sidecar=False) the fields read from JSON."""
    pa = _arrow()
    types = {"step": pa.int64(), "tokens_seen": pa.int64(), "skipped": pa.bool_()}
    fields = [pa.field(name, types.get(name, pa.float64())) for name in FIELDS]
    fields += [pa.field(name, pa.float64()) for name in extra if name not in FIELDS]
    if not sidecar:
        return pa.schema(fields)
    return pa.schema([*fields, pa.field("jsonl_end", pa.int64())], metadata={b"neurogen_tui.sidecar": SIDECAR_VERSION})


def extra_keys(columns: dict) -> tuple[str, ...]:
    """The columns beyond our trainer's fields, in the order they came."""
    return tuple(name for name in columns if name not in FIELDS)


@dataclass
class MetricsTable:
    """Rows of metrics.jsonl as columns (NaN where a value is missing), each row's end offset in
    the file (-1 where not known), and `end`, the bytes read (the offset after the last complete line)."""

    columns: dict[str, np.ndarray] = field(default_factory=lambda: {name: np.empty(0) for name in FIELDS})
    ends: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    end: int = 0
    sidecar_rows: int = 0  # how many of the rows came from a trusted sidecar (read_metrics)

    def __len__(self) -> int:
        return len(self.columns["step"])

    @property
    def extra(self) -> tuple[str, ...]:
        return extra_keys(self.columns)

    def select(self, keep: np.ndarray) -> "MetricsTable":
        return MetricsTable({k: v[keep] for k, v in self.columns.items()}, self.ends[keep], self.end)

    def tail_rows(self, n: int) -> list[dict]:
        """The last `n` rows as metrics dicts, values that are missing left out."""
        start = max(0, len(self) - n)
        rows = []
        for i in range(start, len(self)):
            row = {}
            for name, values in self.columns.items():
                v = values[i]
                if name == "step":
                    row[name] = int(v)
                elif v == v:
                    row[name] = bool(v) if name == "skipped" else float(v)
            rows.append(row)
        return rows


def _concat(tables: list[MetricsTable], end: int) -> MetricsTable:
    tables = [t for t in tables if len(t)]
    if not tables:
        return MetricsTable(end=end)
    if len(tables) == 1:
        return MetricsTable(tables[0].columns, tables[0].ends, end)
    names = list(dict.fromkeys(k for t in tables for k in t.columns))  # a key one part lacks is NaN there
    return MetricsTable({k: np.concatenate([t.columns[k] if k in t.columns else np.full(len(t), np.nan)
                                            for t in tables]) for k in names},
                        np.concatenate([t.ends for t in tables]), end)


def _from_arrow(table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """An Arrow table (sidecar or parsed JSON) as numpy columns; rows without a step are dropped."""
    pa = _arrow()
    import pyarrow.compute as pc

    if table.num_rows and table.column("step").null_count:
        table = table.filter(pc.is_valid(table.column("step")))
    cols = {}
    names = list(FIELDS) + [n for n in table.column_names if n not in FIELDS and n != "jsonl_end"]
    for name in names:
        if name not in table.column_names:
            cols[name] = np.full(table.num_rows, np.nan) if name != "step" else np.zeros(table.num_rows, np.int64)
            continue
        col = table.column(name)
        if name == "step":
            cols[name] = col.to_numpy().astype(np.int64, copy=False)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type) \
                or pa.types.is_null(col.type):
            cols[name] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        # other keys (text, nested values) are not columns
    ends = (table.column("jsonl_end").to_numpy().astype(np.int64, copy=False) if "jsonl_end" in table.column_names
            else np.full(table.num_rows, -1, np.int64))
    return cols, ends


def fields_from_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """Metrics rows (dicts) as the table's columns: our fields, then every other key with a number
    in some row; a value missing or not a number is NaN."""
    extra = dict.fromkeys(k for r in rows for k, v in r.items()
                          if k not in FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool))
    return {name: (np.array([r["step"] for r in rows], np.int64) if name == "step"
                   else np.array([number(r.get(name)) for r in rows], np.float64)) for name in (*FIELDS, *extra)}


def _parse_lines(data: bytes, base: int) -> MetricsTable:
    """The line-by-line loop, for a block pyarrow refused: corrupt lines are skipped."""
    found = [(row, end) for row, end in jsonl_objects(data, base)
             if isinstance(row.get("step"), int) and not isinstance(row["step"], bool)]
    return MetricsTable(fields_from_rows([row for row, _ in found]), np.array([end for _, end in found], np.int64),
                        base + len(data))


def parse_jsonl(data: bytes, base: int = 0) -> MetricsTable:
    """The complete lines of metrics.jsonl bytes (what follows the last newline is left out);
    `base` is the offset of `data` in the file. pyarrow parses them, the line loop only a block
    it refuses (a corrupt line)."""
    data = data[:data.rfind(b"\n") + 1]
    if not data.strip():
        return MetricsTable(end=base + len(data))
    pa = _arrow()
    import pyarrow.json as pj

    try:
        parsed = pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(use_threads=True, block_size=1 << 22),
                              parse_options=pj.ParseOptions(explicit_schema=schema(sidecar=False),
                                                            unexpected_field_behavior="infer"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return _parse_lines(data, base)
    cols, _ = _from_arrow(parsed)
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    if len(newlines) == parsed.num_rows == len(cols["step"]):  # one row a line: each end is known
        ends = newlines.astype(np.int64) + 1 + base
    else:  # blank lines or rows without a step: only the last row's end is certain
        ends = np.full(len(cols["step"]), -1, np.int64)
        ends[-1:] = base + len(data)
    return MetricsTable(cols, ends, base + len(data))


def _parse_file(path: Path, start: int, size: int) -> MetricsTable:
    """metrics.jsonl from byte `start` to `size`, BLOCK bytes at a time cut at line ends (a
    10M-step file is ~3 GB: never held whole)."""
    parts, offset, carry = [], start, b""
    with open(path, "rb") as fh:
        fh.seek(start)
        while offset + len(carry) < size:
            chunk = fh.read(min(BLOCK, size - offset - len(carry)))
            if not chunk:  # the file shrank under us (a resume cut it): what was read stands
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if not cut and offset + len(data) < size:  # a line longer than a block: read on
                carry = data
                continue
            parts.append(parse_jsonl(data[:cut], offset))
            offset, carry = offset + cut, data[cut:]
            if not cut:
                break
    return _concat(parts, offset)


# ---- the sidecar --------------------------------------------------------------------------------------
def read_sidecar(path: Path) -> MetricsTable:
    """The sidecar's complete record batches (a torn last one, from a crash, is left out)."""
    pa = _arrow()
    try:
        data = path.read_bytes()
    except OSError:
        return MetricsTable()
    if not data:
        return MetricsTable()
    try:
        table = pa.ipc.open_stream(data).read_all()
    except (pa.ArrowInvalid, OSError):
        table = _good_prefix(data)
    if table is None or table.schema.metadata is None or \
            table.schema.metadata.get(b"neurogen_tui.sidecar") != SIDECAR_VERSION or "jsonl_end" not in table.column_names:
        return MetricsTable()
    cols, ends = _from_arrow(table)
    return MetricsTable(cols, ends, int(ends[-1]) if len(ends) else 0)


def _good_prefix(data: bytes):
    pa = _arrow()
    reader = pa.BufferReader(data)
    try:
        sch = pa.ipc.read_schema(pa.ipc.read_message(reader))
    except (pa.ArrowInvalid, OSError, EOFError):
        return None
    batches = []
    while True:
        try:
            message = pa.ipc.read_message(reader)
            if message is None:
                break
            batches.append(pa.ipc.read_record_batch(message, sch))
        except (pa.ArrowInvalid, OSError, EOFError):
            break
    return pa.Table.from_batches(batches, sch)


def _line_ending_at(path: Path, end: int) -> dict | None:
    """The JSON row of the line that ends at byte `end` of `path`, or None."""
    if end <= 0:
        return None
    with contextlib.suppress(OSError, ValueError):
        with open(path, "rb") as fh:
            start = max(0, end - 65536)
            fh.seek(start)
            data = fh.read(end - start)
        if len(data) == end - start and data.endswith(b"\n"):
            row = json.loads(data[:-1].rsplit(b"\n", 1)[-1])
            return row if isinstance(row, dict) else None
    return None


def read_metrics(viz_dir: str | Path, max_step: int | None = None) -> MetricsTable:
    """metrics.jsonl of a run's training_viz/ as columns: the sidecar's rows where it can be
    trusted, then the lines after them; rows after `max_step` left out."""
    viz_dir = Path(viz_dir)
    jsonl = viz_dir / METRICS_FILE
    try:
        size = jsonl.stat().st_size
    except OSError:
        return MetricsTable()
    side = read_sidecar(viz_dir / METRICS_SIDECAR)
    if len(side):
        row = _line_ending_at(jsonl, side.end) if side.end <= size else None
        if not (row and row.get("step") == int(side.columns["step"][-1])
                and number(row.get("timestamp")) == side.columns["timestamp"][-1]):
            side = MetricsTable()  # out of step with metrics.jsonl: not trusted
    rest = _parse_file(jsonl, side.end, size)
    table = _concat([side, rest], rest.end)
    table.sidecar_rows = len(side)
    if max_step is not None and len(table):
        table = table.select(table.columns["step"] <= max_step)
    return table


def sidecar_covers(viz_dir: Path, jsonl_size: int) -> bool:
    """Whether a sidecar is there and reaches near the end of metrics.jsonl (a quick look at its
    size against the record's: a full check is read_metrics')."""
    try:
        return (Path(viz_dir) / METRICS_SIDECAR).stat().st_size > 0.05 * jsonl_size
    except OSError:
        return False
