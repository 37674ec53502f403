"""A run directory's files read back: the metrics history and the text samples.

What every run leaves behind (training_viz/metrics.jsonl, or metrics_history.json, and the samples),
so these work on a finished run, a crashed one, or one still writing: a torn last line is skipped.
`render`, `compare`, a resumed run's dashboards and history all read through here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import tail_jsonl
from .history import COLUMNS, MetricsHistory, history_columns, number
from .layout import LIVE_STATES, METRICS_FILE, METRICS_JSON, SAMPLES_FILE, SAMPLES_JSON, VIZ_DIR
from .info import liveness, read_run_info
from .metricsfile import MetricsTable, read_metrics
from .sidecar import build_sidecar
from .tensorboard import TensorBoardRun, is_tensorboard_dir, table_of, tensorboard_missing


class RunDirError(ValueError):
    """A run directory that cannot be read; the message is one line for the user."""


def find_viz_dir(run_dir: str | Path) -> Path:
    """A run directory or its training_viz/ directory, whichever holds the files."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{run_dir}: no such directory")
    return path / VIZ_DIR if (path / VIZ_DIR).is_dir() else path


def run_name(run_dir: str | Path) -> str:
    path = Path(run_dir).resolve()
    return path.parent.name if path.name == VIZ_DIR else path.name


def rows_from_jsonl(path: Path):
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


SIDECAR_WORTH = 10_000  # rows past which a run read without a sidecar gets one built


def read_run_metrics(viz_dir: str | Path, max_step: int | None = None) -> MetricsTable:
    """A run's metrics as columns (read_metrics), and, where they came from the JSONL (a run of an
    older version, another writer) and the run has ended, its sidecar built once where the
    directory is writable, so the next open is instant."""
    viz_dir = Path(viz_dir)
    table = read_metrics(viz_dir)
    if len(table) - table.sidecar_rows > SIDECAR_WORTH:
        info = read_run_info(viz_dir.parent if viz_dir.name == VIZ_DIR else viz_dir)
        if not info or liveness(info) not in LIVE_STATES:  # a live writer keeps its own
            build_sidecar(viz_dir, table)
    if max_step is not None and len(table):
        table = table.select(table.columns["step"] <= max_step)
    return table


def history_of(table: MetricsTable) -> MetricsHistory:
    """A table's columns (under any of their names) as the history the charts and dashboards read."""
    history = MetricsHistory()
    history.extend_columns(history_columns(table.columns))
    return history


def load_history(viz_dir: str | Path, max_step: int | None = None, viewer: bool = False) -> MetricsHistory:
    """metrics.jsonl (the append-only record) or, failing that, metrics_history.json, as a
    MetricsHistory; rows after `max_step` are left out."""
    viz_dir = Path(viz_dir)
    history = MetricsHistory()
    table = (read_run_metrics if viewer else read_metrics)(viz_dir, max_step)  # a run reading its own: no sidecar built
    if len(table):
        return history_of(table)
    exported = viz_dir / METRICS_JSON
    if exported.is_file():
        try:
            data = json.loads(exported.read_bytes())
            steps = np.asarray(data["steps"], dtype=np.int64)
        except (ValueError, KeyError, TypeError):
            return history
        keep = steps <= max_step if max_step is not None else np.ones(len(steps), bool)
        history.extend_columns({name: np.asarray([number(v) for v in data[name]], dtype=COLUMNS[name])[keep]
                                for name in COLUMNS if isinstance(data.get(name), list)
                                and len(data[name]) == len(steps)})
    return history


def load_samples(viz_dir: str | Path, max_step: int | None = None, limit: int | None = 1000) -> list[dict]:
    """The newest `limit` text samples (None: all): samples.jsonl, only its end read, or else
    text_samples.json."""
    viz_dir = Path(viz_dir)
    rows: list = []
    if (viz_dir / SAMPLES_FILE).is_file():
        rows = (list(rows_from_jsonl(viz_dir / SAMPLES_FILE)) if limit is None
                else tail_jsonl(viz_dir / SAMPLES_FILE, limit)[0])
    elif (viz_dir / SAMPLES_JSON).is_file():
        try:
            rows = json.loads((viz_dir / SAMPLES_JSON).read_bytes())
        except ValueError:
            rows = []
        rows = rows.get("samples", []) if isinstance(rows, dict) else rows  # a list, or {"samples": [...]}
    fields = ("step", "input", "output", "accuracy")
    good = [{"target": "", **r} for r in rows if isinstance(rows, list) and isinstance(r, dict) and all(k in r for k in fields)
            and isinstance(r["step"], int) and (max_step is None or r["step"] <= max_step)]
    return good if limit is None else good[-limit:]


def is_tensorboard_run(run_dir: str | Path) -> bool:
    """A directory of TensorBoard event files, not one of ours (`render`, `compare` read both)."""
    path = Path(run_dir)
    return not (path / VIZ_DIR).is_dir() and is_tensorboard_dir(path)


def load_table(run_dir: str | Path) -> tuple[str, MetricsTable]:
    """(name, every logged column) of a run of ours, of the logging API or a TensorBoard logdir;
    RunDirError when it cannot be read or holds no metrics."""
    if is_tensorboard_run(run_dir):
        missing = tensorboard_missing()
        if missing:
            raise RunDirError(f"{run_dir}: a TensorBoard logdir: {missing}")
        try:
            table = table_of(TensorBoardRun(run_dir).poll())
        except OSError as exc:
            raise RunDirError(f"{run_dir}: cannot read its event files: {exc.strerror or exc}") from None
    else:
        try:
            table = read_run_metrics(find_viz_dir(run_dir))
        except OSError as exc:
            raise RunDirError(f"{run_dir}: cannot read its metrics: {exc.strerror or exc}") from None
    if not len(table):
        raise RunDirError(f"{run_dir}: no metrics found (expected {VIZ_DIR}/{METRICS_FILE} with at least one step, "
                          "or TensorBoard event files with scalars)")
    return run_name(run_dir), table


def load_run(run_dir: str | Path) -> tuple[str, MetricsHistory, list[dict]]:
    """(name, history, samples) of a run directory (or a TensorBoard logdir); RunDirError when it
    holds no metrics."""
    if is_tensorboard_run(run_dir):
        name, table = load_table(run_dir)
        return name, history_of(table), []
    viz_dir = find_viz_dir(run_dir)
    try:
        history = load_history(viz_dir, viewer=True)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot read its metrics: {exc.strerror or exc}") from None
    if not len(history):
        raise RunDirError(f"{run_dir}: no metrics found (expected {VIZ_DIR}/{METRICS_FILE} or "
                          f"{VIZ_DIR}/{METRICS_JSON} with at least one step)")
    return run_name(run_dir), history, load_samples(viz_dir)
