"""Where the screen's events come from, and who the keys talk to.

A Feed is a thread-safe queue of events plus a blocking `produce()` that the app runs in a thread
worker: LiveFeed trains (the events arrive from the trainer's bus), WatchFeed (watch.py) follows a
run directory's files. The app drains the queue on a timer, so producers never touch widgets and a
trainer doing thousands of steps a second costs the UI one batch per tick.

Keys go through a Controller (pause/resume, checkpoint, draw, stop), never to the trainer directly,
so a control socket can later drive a remote run with the same keys.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..events import LogMessage, RunFailed
from ..history import COLUMNS, SOURCE_FIELD

log = logging.getLogger(__name__)


@dataclass
class FeedDone:
    """The producer has returned: nothing more will arrive. `exit_code` is what the app returns."""

    exit_code: int


@dataclass
class MetricsRows:
    """Many metrics rows at once, for feeds that read them in bulk: MetricsHistory columns (built
    off the UI thread, appended in one go) and the last rows as dicts for the header and ETA."""

    columns: dict
    tail: list[dict]


@dataclass
class HistoryReset:
    """The source was rewritten (a resumed or new run): forget what was shown."""

    samples_only: bool = False


@dataclass
class RunInfo:
    """What a feed learnt about the run other than from RunStarted (watch reads run.json)."""

    run_name: str = ""
    device: str = ""
    total: int | None = None


def rows_to_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Metrics rows (metrics.jsonl dicts, TrainingMetrics fields) as MetricsHistory columns, missing
    values NaN: many rows are appended in one go instead of one at a time."""
    out = {}
    for name, dtype in COLUMNS.items():
        field = SOURCE_FIELD.get(name, name)
        if dtype == np.int64:
            out[name] = np.array([int(r.get(field) or 0) for r in rows], dtype=np.int64)
        else:
            out[name] = np.array([r.get(field) for r in rows], dtype=np.float64).astype(dtype)
    return out


class Feed:
    """A queue of events. `put` is safe from any thread and quick (it runs on the trainer thread)."""

    read_only = True
    trains_here = False  # the trainer runs in this process (it shares the GIL with the screen)
    title = "neurogen-tui"
    run_dir: str | None = None  # paths under it are shown relative to it

    def __init__(self) -> None:
        self._queue: deque = deque()

    def put(self, event) -> None:
        self._queue.append(event)

    def drain(self) -> list:
        """Everything queued so far, oldest first."""
        out = []
        pop = self._queue.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            return out

    def produce(self) -> None:
        """Blocking body run in a thread worker; puts events, ends with FeedDone."""
        raise NotImplementedError


class Controller(Protocol):
    """What the keys can ask of a run. Every method returns at once (the work happens elsewhere)
    and returns a line for the log pane."""

    read_only: bool

    def toggle_pause(self) -> str: ...

    def checkpoint(self) -> str: ...

    def draw(self) -> str: ...

    def stop(self) -> str: ...

    @property
    def paused(self) -> bool: ...


class ReadOnlyController:
    """For `watch`: the run belongs to another process, so keys only explain that."""

    read_only = True
    paused = False

    def __init__(self, stop=lambda: None):
        self._stop = stop

    def _refuse(self, what: str) -> str:
        return f"read-only: {what} is for the terminal that runs the training"

    def toggle_pause(self) -> str:
        return self._refuse("pause")

    def checkpoint(self) -> str:
        return self._refuse("checkpoint")

    def draw(self) -> str:
        return self._refuse("draw")

    def stop(self) -> str:
        self._stop()
        return "closing the viewer (the run itself goes on)"


class LiveController:
    """Keys to a Trainer in this process (thread-safe flags) and its VisualizationManager."""

    read_only = False

    def __init__(self, trainer, viz=None):
        self.trainer = trainer
        self.viz = viz

    @property
    def paused(self) -> bool:
        return self.trainer.paused

    def toggle_pause(self) -> str:
        if self.trainer.stop_requested:
            return "stopping: pause has no effect"
        self.trainer.toggle_pause()
        return ("pause requested: the trainer stops at the end of this step" if self.trainer.paused
                else "resumed")

    def checkpoint(self) -> str:
        self.trainer.request_checkpoint()
        return "checkpoint requested: written at the end of this step"

    def draw(self) -> str:
        if self.viz is None:
            return "dashboards are unavailable in this build (no VisualizationManager)"
        self.viz.request_draw()
        return "dashboard requested"

    def stop(self) -> str:
        if self.trainer.stop_requested:
            return "already stopping: waiting for the step, final checkpoint and exports"
        self.trainer.request_stop()
        return "stopping after this step: final checkpoint, dashboard and JSON"


class LiveFeed(Feed):
    """Trains in the calling thread (the app's worker) and queues the trainer's events.

    After the trainer returns, the final dashboard and JSON are written (parts.close()) here, off
    the UI thread, then FeedDone carries the exit status: 0 finished or stopped, 1 failed."""

    read_only = False
    trains_here = True

    def __init__(self, parts):
        super().__init__()
        self.parts = parts
        self.title = parts.trainer.cfg.display_name
        self.run_dir = parts.trainer.cfg.run_dir
        self.controller = LiveController(parts.trainer, parts.viz)
        self._last_step_png = float("-inf")
        self._produced = False
        self._seed_from(parts.viz)
        parts.bus.subscribe(self.put)
        if parts.viz is not None and hasattr(parts.viz, "add_listener"):
            parts.viz.add_listener(self._on_viz)

    def _seed_from(self, viz) -> None:
        """A resumed run shows its whole history: the VisualizationManager has loaded it (up to the
        checkpoint's step) before the trainer starts, so a copy now is consistent."""
        history = getattr(viz, "history", None)
        if history is None or not len(history):
            return
        from ..history import SOURCE_FIELD

        columns = history.slice()
        last = {SOURCE_FIELD.get(name, name): values[-1].item() for name, values in columns.items()}
        last = {k: v for k, v in last.items() if v == v}  # NaN: not recorded
        self.put(MetricsRows(columns, [last]))
        for sample in list(getattr(viz, "samples", ())):
            self.put(sample)

    def _on_viz(self, kind: str, detail: str) -> None:
        """Called on the dashboard thread. Periodic JSON rewrites are not news, nor the copy to
        training_latest.png right after a training_step_*.png."""
        now = time.monotonic()
        if kind in ("error", "info"):
            self.put(LogMessage(kind, f"dashboard: {detail}"))
            return
        if kind == "json" and self.parts.trainer.state not in ("stopping", "finished", "failed"):
            return
        if kind == "dashboard":
            if detail.endswith("training_latest.png") and now - self._last_step_png < 2.0:
                return
            if not detail.endswith("training_latest.png"):
                self._last_step_png = now
        self.put(LogMessage("info", f"{kind} written: {detail}"))

    def produce(self) -> None:
        if self._produced:
            raise RuntimeError("LiveFeed.produce() runs once: a trainer is not re-entrant")
        self._produced = True
        code = 0
        try:
            result = self.parts.trainer.run()
            code = 1 if isinstance(result, RunFailed) else 0
        except BaseException as exc:  # run() never raises; this guards a bug in it
            log.exception("trainer crashed outside its loop")
            self.put(RunFailed(getattr(self.parts.trainer, "step", 0), f"{type(exc).__name__}: {exc}",
                               traceback.format_exc()))
            code = 1
        try:
            self.parts.close()
        except Exception as exc:
            log.exception("writing the final exports failed")
            self.put(LogMessage("error", f"final exports failed: {type(exc).__name__}: {exc}"))
        self.put(FeedDone(code))
