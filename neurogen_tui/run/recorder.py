"""The append-only record of a run: `metrics.jsonl` and `samples.jsonl`, one JSON object per line.

These survive a crash (each line is flushed as it is written), and they are what `watch`, `render`
and a resumed run read back. Beside metrics.jsonl, `metrics.arrows` holds the same rows as columns
(metricsfile.py), so a long run's history opens at once. On resume, rows after the checkpoint's
step are dropped first so the history never holds the same step twice.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..core.events import TextSample, TrainingMetrics
from .files import JsonlWriter, cut_jsonl_after
from .layout import METRICS_FILE, METRICS_SIDECAR, SAMPLES_FILE
from .metricsfile import MetricsTable
from .sidecar import SidecarWriter, trim_metrics

log = logging.getLogger(__name__)


class MetricsRecorder:
    """Event subscriber appending metrics and samples under `viz_dir`."""

    HOLD = 50_000  # lines of each file kept in memory while the disk refuses them (about 20 MB of metrics)

    def __init__(self, viz_dir: Path, resume_step: int | None = None, say: Callable[[str, str], None] | None = None):
        self.viz_dir = Path(viz_dir)
        self.viz_dir.mkdir(parents=True, exist_ok=True)
        kept = MetricsTable()
        if resume_step is not None:
            kept, dropped = trim_metrics(self.viz_dir, resume_step)
            counts = {METRICS_FILE: dropped, SAMPLES_FILE: cut_jsonl_after(self.viz_dir / SAMPLES_FILE, resume_step)}
            for name, count in counts.items():
                if count:
                    log.info("%s: dropped %d row(s) after step %d (resumed from checkpoint)", name, count, resume_step)
        else:
            for name in (METRICS_FILE, METRICS_SIDECAR, SAMPLES_FILE):  # a fresh run starts a fresh record
                (self.viz_dir / name).unlink(missing_ok=True)
        self.metrics = JsonlWriter(self.viz_dir / METRICS_FILE, self.HOLD, say)
        self.samples = JsonlWriter(self.viz_dir / SAMPLES_FILE, self.HOLD, say)
        self.columns = SidecarWriter(self.viz_dir, kept)  # the rows metrics.jsonl holds now, then each new one

    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            self.write_row(event.to_dict())
        elif isinstance(event, TextSample):
            self.samples.append(event.to_dict())

    def write_row(self, row: dict) -> None:
        """One metrics row (`step` and any keys: our trainer's fields, or a loop's own names)."""
        for written, end in self.metrics.append(row):
            self.columns.add(written, end)

    def write_rows(self, rows: list[dict]) -> None:
        """Many rows in one write (the logging API's writer thread)."""
        for written, end in self.metrics.extend(rows):
            self.columns.add(written, end)

    def close(self) -> None:
        self.metrics.close()
        self.columns.close()
        self.samples.close()
