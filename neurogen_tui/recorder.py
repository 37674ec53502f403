"""The append-only record of a run: `metrics.jsonl` and `samples.jsonl`, one JSON object per line.

These survive a crash (each line is flushed as it is written), and they are what `watch`, `render`
and a resumed run read back. On resume, rows after the checkpoint's step are dropped first so the
history never holds the same step twice.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .events import TextSample, TrainingMetrics
from .files import JsonlWriter, trim_jsonl
from .layout import METRICS_FILE, SAMPLES_FILE

log = logging.getLogger(__name__)


class MetricsRecorder:
    """Event subscriber appending metrics and samples under `viz_dir`."""

    def __init__(self, viz_dir: Path, resume_step: int | None = None):
        self.viz_dir = Path(viz_dir)
        self.viz_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            for name in (METRICS_FILE, SAMPLES_FILE):
                removed = trim_jsonl(self.viz_dir / name, lambda row: int(row.get("step", 0)) <= resume_step)
                if removed:
                    log.info("%s: dropped %d row(s) after step %d (resumed from checkpoint)", name, removed, resume_step)
        else:
            for name in (METRICS_FILE, SAMPLES_FILE):  # a fresh run starts a fresh record
                (self.viz_dir / name).unlink(missing_ok=True)
        self.metrics = JsonlWriter(self.viz_dir / METRICS_FILE)
        self.samples = JsonlWriter(self.viz_dir / SAMPLES_FILE)

    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            self.metrics.write(event.to_dict())
        elif isinstance(event, TextSample):
            self.samples.write(event.to_dict())

    def close(self) -> None:
        self.metrics.close()
        self.samples.close()
