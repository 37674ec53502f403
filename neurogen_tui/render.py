"""A run directory's files, read back and drawn: `neurogen-tui render` and `neurogen-tui compare`.

They read what every run leaves behind (training_viz/metrics.jsonl, or metrics_history.json, and the
samples), so they work on a finished run, a crashed one, or one still writing: a torn last line is
skipped. The same loaders give a resumed run its history back, and metrics_history.json's writer
lives here beside its reader.
"""
from __future__ import annotations

import argparse
import io
import json
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .history import CHUNK, COLUMNS, SOURCE_FIELD, MetricsHistory, minmax_downsample, moving_average

VIZ_DIR = "training_viz"
METRICS_JSON = "metrics_history.json"
SAMPLES_JSON = "text_samples.json"
BATCH = 1 << 16  # metrics.jsonl rows parsed per bulk append
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


class RunDirError(ValueError):
    """A run directory that cannot be drawn; the message is one line for the user."""


def find_viz_dir(run_dir: str | Path) -> Path:
    """A run directory or its training_viz/ directory, whichever holds the files."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{run_dir}: no such directory")
    return path / VIZ_DIR if (path / VIZ_DIR).is_dir() else path


def run_name(run_dir: str | Path) -> str:
    path = Path(run_dir).resolve()
    return path.parent.name if path.name == VIZ_DIR else path.name


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flush(history: MetricsHistory, batch: dict[str, list]) -> None:
    if batch["steps"]:
        history.extend_columns({name: np.asarray(values, dtype=COLUMNS[name]) for name, values in batch.items()})
        for values in batch.values():
            values.clear()


def _rows_from_jsonl(path: Path):
    """Complete, parseable rows of a JSONL file, streamed (a million-step file is not held twice)."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                return  # a torn last line: a writer killed mid-append, or still writing
            with_value = line.strip()
            if not with_value:
                continue
            try:
                row = json.loads(with_value)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def load_history(viz_dir: str | Path, max_step: int | None = None) -> MetricsHistory:
    """metrics.jsonl (the append-only record) or, failing that, metrics_history.json, as a
    MetricsHistory; rows after `max_step` are left out."""
    viz_dir = Path(viz_dir)
    history = MetricsHistory()
    jsonl = viz_dir / "metrics.jsonl"
    if jsonl.is_file() and jsonl.stat().st_size:
        batch: dict[str, list] = {name: [] for name in COLUMNS}
        for row in _rows_from_jsonl(jsonl):
            step = row.get("step")
            if not isinstance(step, int) or (max_step is not None and step > max_step):
                continue
            for name, values in batch.items():
                values.append(step if name == "steps" else _number(row.get(SOURCE_FIELD.get(name, name))))
            if len(batch["steps"]) >= BATCH:
                _flush(history, batch)
        _flush(history, batch)
        if len(history):
            return history
    exported = viz_dir / METRICS_JSON
    if exported.is_file():
        try:
            data = json.loads(exported.read_bytes())
            steps = np.asarray(data["steps"], dtype=np.int64)
        except (ValueError, KeyError, TypeError):
            return history
        keep = steps <= max_step if max_step is not None else np.ones(len(steps), bool)
        history.extend_columns({name: np.asarray([_number(v) for v in data[name]], dtype=COLUMNS[name])[keep]
                                for name in COLUMNS if isinstance(data.get(name), list)
                                and len(data[name]) == len(steps)})
    return history


def load_samples(viz_dir: str | Path, max_step: int | None = None, limit: int = 1000) -> list[dict]:
    """The newest `limit` text samples: samples.jsonl, or else text_samples.json."""
    viz_dir = Path(viz_dir)
    rows: list = []
    if (viz_dir / "samples.jsonl").is_file():
        rows = list(deque(_rows_from_jsonl(viz_dir / "samples.jsonl"), maxlen=limit))
    elif (viz_dir / SAMPLES_JSON).is_file():
        try:
            rows = json.loads((viz_dir / SAMPLES_JSON).read_bytes())
        except ValueError:
            rows = []
    fields = ("step", "input", "output", "accuracy")
    good = [{"target": "", **r} for r in rows if isinstance(r, dict) and all(k in r for k in fields)
            and isinstance(r["step"], int) and (max_step is None or r["step"] <= max_step)]
    return good[-limit:]


def load_run(run_dir: str | Path) -> tuple[str, MetricsHistory, list[dict]]:
    """(name, history, samples) of a run directory; RunDirError when it holds no metrics."""
    viz_dir = find_viz_dir(run_dir)
    history = load_history(viz_dir)
    if not len(history):
        raise RunDirError(f"{run_dir}: no metrics found (expected {VIZ_DIR}/metrics.jsonl or "
                          f"{VIZ_DIR}/metrics_history.json with at least one step)")
    return run_name(run_dir), history, load_samples(viz_dir)


COMPARE_PANELS = (("loss", "Training Loss", "loss", False), ("accuracy", "Training Accuracy", "accuracy (%)", False),
                  ("throughput", "Token Throughput", "tokens/s", False),
                  ("learning_rate", "Learning Rate Schedule", "learning rate", True))


def compare_figure(runs: list[tuple[str, dict[str, np.ndarray]]], max_points: int = 2000):
    """Loss, accuracy, throughput and LR of several runs overlaid, one colour and label per run:
    the raw series faint, its 50-step moving average (over the full data) solid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .dashboard import MA_WINDOW, step_axis
    from .text import sanitize

    fig = Figure(figsize=(20, 12), dpi=150)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Comparing {len(runs)} training runs", fontsize=16, fontweight="bold")
    axes = fig.subplots(2, 2, gridspec_kw=dict(hspace=0.25, wspace=0.15, left=0.05, right=0.98, top=0.92, bottom=0.06))
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (column, title, ylabel, log_scale) in zip(axes.flat, COMPARE_PANELS):
        ax.set_title(title, fontweight="bold", y=1.0)
        step_axis(ax)
        ax.set_ylabel(ylabel)
        for (name, cols), colour in zip(runs, colours):
            x, y = cols["steps"], cols[column] * (100.0 if column == "accuracy" else 1.0)
            label = sanitize(name, limit=40)
            smooth = column in ("loss", "accuracy", "throughput") and len(y) >= MA_WINDOW
            ax.plot(*minmax_downsample(x, y, max_points), color=colour, lw=1, alpha=0.3 if smooth else 1.0,
                    label=None if smooth else label)
            if smooth:
                ax.plot(*minmax_downsample(x, moving_average(y, MA_WINDOW), max_points), color=colour, lw=2,
                        label=label)
        if log_scale and any((cols[column][np.isfinite(cols[column])] > 0).any() for _, cols in runs):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        for text in ax.legend(fontsize=10).get_texts():
            text.set_parse_math(False)
    return fig


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already explained
        return int(exc.code or 0)


def _write_png(data: bytes, out: Path, what: str) -> int:
    from .cli import fail
    from .files import atomic_write

    try:
        atomic_write(out, data)
    except OSError as exc:
        return fail(f"cannot write {out}: {exc.strerror or exc}", 1)
    print(f"neurogen-tui: wrote {out} ({what})")
    return 0


def main_render(argv: list[str]) -> int:
    from .cli import fail
    from .dashboard import DASHBOARD_COLUMNS, render_png

    parser = argparse.ArgumentParser(prog="neurogen-tui render",
                                     description="Draw the training dashboard from a run directory's files "
                                                 "(finished, crashed or still running).")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help=f"PNG to write (default: RUN_DIR/{VIZ_DIR}/training_render.png)")
    parser.add_argument("--samples", type=int, default=5, help="text samples in the table (default: 5)")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        name, history, samples = load_run(args.run_dir)
    except RunDirError as exc:
        return fail(str(exc))
    out = Path(args.output) if args.output else find_viz_dir(args.run_dir) / "training_render.png"
    png = render_png(history.slice(names=DASHBOARD_COLUMNS), samples, name, args.samples)
    return _write_png(png, out, f"{len(history)} steps")


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def main_compare(argv: list[str]) -> int:
    from .cli import fail
    from .dashboard import figure_png

    parser = argparse.ArgumentParser(prog="neurogen-tui compare",
                                     description="Overlay loss, accuracy, throughput and learning rate of "
                                                 "several runs in one PNG, labelled by run name.")
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    parser.add_argument("-o", "--output", metavar="FILE", default="compare.png",
                        help="PNG to write (default: compare.png)")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    runs = []
    try:
        for run_dir in args.run_dirs:
            name, history, _ = load_run(run_dir)
            runs.append((name, history.slice(names=("steps",) + tuple(c for c, *_ in COMPARE_PANELS))))
    except RunDirError as exc:
        return fail(str(exc))
    runs = list(zip(unique_names([n for n, _ in runs]), [cols for _, cols in runs]))
    return _write_png(figure_png(compare_figure(runs)), Path(args.output), f"{len(runs)} runs")
