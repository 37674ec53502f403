"""A run in the formats other tools read: CSV, Parquet, and TensorBoard event files.

`neurogen-tui export RUN_DIR --format csv|parquet|tensorboard` works on any run directory
(finished, crashed or live); `--follow` keeps appending as a live run grows, which is how
`--tensorboard` writes events as the run goes: a separate, niced process follows metrics.jsonl and
samples.jsonl (only the bytes appended since its last look), so the training process does none of
it. TensorBoard, tbtui, Aim, trackio and W&B's `wandb sync` read those events.

TensorBoard's writer comes from `torch.utils.tensorboard` with the `tensorboard` package, an
optional extra (`pip install 'neurogen-tui[tensorboard]'`); CSV and Parquet use pyarrow.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..run.files import TailedFile
from ..run.history import number
from ..run.info import liveness, read_run_info
from ..run.layout import ENDED_STATES, SAMPLES_FILE, TENSORBOARD_DIR, RunLayout
from ..run.metricsfile import extra_keys, parse_jsonl, read_metrics
from ..run.sidecar import arrow_table
from ..run.reader import load_samples

FORMATS = ("tensorboard", "csv", "parquet")
# TensorBoard tag of each metrics.jsonl field (issue #18's names); a NaN (not measured) is left out
TAGS = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "val/loss",
        "tokens_per_sec": "perf/tokens_per_sec", "mfu": "perf/mfu", "learning_rate": "opt/lr",
        "grad_norm": "opt/grad_norm"}
log = logging.getLogger(__name__)
SAMPLE_FIELDS = ("step", "input", "target", "output", "accuracy")
POLL_S = 2.0
def default_output(run_dir: Path, fmt: str) -> Path:
    layout = RunLayout(run_dir)
    return layout.root / "export" / TENSORBOARD_DIR if fmt == "tensorboard" else layout.viz / f"metrics.{fmt}"


def samples_path(out: Path) -> Path:
    """Where the text samples go beside a CSV or Parquet export: metrics.csv -> metrics_samples.csv."""
    return out.with_name(f"{out.stem}_samples{out.suffix}")


# ---- tables ----------------------------------------------------------------------------------------------
def samples_arrow(samples: list[dict]):
    import pyarrow as pa

    return pa.table({"step": pa.array([int(s["step"]) for s in samples], pa.int64()),
                     **{k: pa.array([str(s.get(k, "")) for s in samples], pa.string()) for k in ("input", "target", "output")},
                     "accuracy": pa.array([number(s.get("accuracy")) for s in samples], pa.float64()),
                     "kind": pa.array([str(s.get("kind") or "sample") for s in samples], pa.string())})


def write_table(table, path: Path, fmt: str) -> None:
    """CSV or Parquet, written to a temporary file and renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, tmp)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    os.replace(tmp, path)


# ---- TensorBoard ------------------------------------------------------------------------------------------
class EventsWriter:
    """TensorBoard events for metrics rows and text samples: one event a step holding that step's
    scalars (cheaper than one event per scalar; TensorBoard reads both alike)."""

    def __init__(self, logdir: Path, purge_step: int | None = None):
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        self._summary = Summary
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=10)
        self._file = self.writer._get_file_writer()  # add_summary takes a Summary with many values
        self.rows = 0

    def add_metrics(self, columns: dict[str, np.ndarray]) -> None:
        S = self._summary
        steps, stamps = columns["step"].tolist(), columns["timestamp"].tolist()
        series = [(tag, columns[name].tolist()) for name, tag in TAGS.items()]
        series += [(name, columns[name].tolist()) for name in extra_keys(columns)]  # a loop's own keys, as named
        for i, step in enumerate(steps):
            values = [S.Value(tag=tag, simple_value=v[i]) for tag, v in series if not math.isnan(v[i])]
            if values:
                stamp = stamps[i]
                self._file.add_summary(S(value=values), step, stamp if stamp == stamp else None)
        self.rows += len(steps)

    def add_samples(self, samples: list[dict]) -> None:
        """Each sample as text under `samples`: the input, the real continuation, the model's."""
        for s in samples:
            accuracy = number(s.get("accuracy"))
            text = (f"**input** {s['input']}\n\n**target** {s.get('target', '')}\n\n**model** {s['output']}"
                    + (f"\n\naccuracy {accuracy:.1%}" if accuracy == accuracy else "\n\n(a prompt)"))
            self.writer.add_text("samples", text, int(s["step"]))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def export_once(run_dir: Path, fmt: str, out: Path) -> tuple[int, int]:
    """The whole run as it is now; (metrics rows, samples) written."""
    viz = RunLayout(run_dir).viz
    table = read_metrics(viz)
    samples = load_samples(viz, limit=None)
    if fmt == "tensorboard":
        writer = EventsWriter(out)
        writer.add_metrics(table.columns)
        writer.add_samples(samples)
        writer.close()
    else:
        write_table(arrow_table(table.columns), out, fmt)
        write_table(samples_arrow(samples), samples_path(out), fmt)
    return len(table), len(samples)


def follow(run_dir: Path, out: Path, from_offset: int | None = None, until_stdin_closes: bool = False,
           purge_step: int | None = None, poll: float = POLL_S) -> int:
    """TensorBoard events for a run as it grows: what is there now (or from byte `from_offset` of
    metrics.jsonl), then every `poll` seconds the rows appended since. Ends after a last read when
    the run has ended (run.json) or, with `until_stdin_closes`, when the process that started it
    closes our stdin (or dies). Returns the rows written."""
    layout = RunLayout(run_dir)
    writer = EventsWriter(out, purge_step=purge_step)
    metrics, samples = TailedFile(layout.metrics), TailedFile(layout.viz / SAMPLES_FILE)
    if from_offset is not None:  # a run starting or resuming: what it writes from now on
        metrics.mark_start()
        metrics.offset = from_offset
        if samples.mark_start():
            samples.offset = samples.path.stat().st_size
    else:
        if metrics.mark_start():
            table = read_metrics(layout.viz)
            writer.add_metrics(table.columns)
            metrics.offset = table.end
        writer.add_samples(load_samples(layout.viz, limit=None))
        if samples.mark_start():
            samples.offset = samples.path.stat().st_size
    try:
        while True:
            last = _stop_now(layout, until_stdin_closes, poll)
            _read_new(metrics, samples, writer)
            if last:
                return writer.rows
    finally:
        writer.close()


def _read_new(metrics: TailedFile, samples: TailedFile, writer: EventsWriter) -> None:
    """What was appended since the last look. A file rewritten meanwhile (a resumed run cut it) is
    followed from its new end: what it holds was written to the events already."""
    data, start, restarted = metrics.read_bytes()
    table = parse_jsonl(data, start)
    if len(table) and not restarted:
        writer.add_metrics(table.columns)
    rows, restarted = samples.read()
    if not restarted:
        writer.add_samples([r for r in rows if all(k in r for k in SAMPLE_FIELDS)])


def _stop_now(layout: RunLayout, until_stdin_closes: bool, poll: float) -> bool:
    """Wait up to `poll` seconds; True when this is the last read."""
    if until_stdin_closes:
        ready, _, _ = select.select([sys.stdin], [], [], poll)
        return bool(ready) and not sys.stdin.buffer.read1(4096)
    time.sleep(poll)
    info = read_run_info(layout.root)
    return info is not None and liveness(info) in (*ENDED_STATES, "stale")


class EventsFollower:
    """--tensorboard: `neurogen-tui export RUN --format tensorboard --follow` in a child process at
    nice 10, from the end of metrics.jsonl as the run starts. Closing our end of its stdin (at the
    run's end, or when this process dies) makes it read the last lines, flush and exit."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @classmethod
    def start(cls, run_dir: str | Path, offset: int, resume_step: int | None) -> "EventsFollower":
        layout = RunLayout(run_dir)
        cmd = [sys.executable, "-m", "neurogen_tui", "export", str(layout.root), "--format", "tensorboard",
               "-o", str(layout.tensorboard), "--follow", "--until-stdin-closes", "--from-offset", str(offset),
               # TensorBoard hides what older event files hold from this step on (a resumed or restarted run)
               "--purge-step", str((resume_step or 0) + 1)]
        err = open(layout.log, "ab")
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)  # the terminal's Ctrl+C is the trainer's to handle
        finally:
            err.close()
        log.info("tensorboard: writing events to %s (pid %d)", layout.tensorboard, proc.pid)
        return cls(proc)

    def close(self, timeout: float = 60.0) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code:
            log.warning("tensorboard: the event writer ended with status %s; details above in this log", code)
