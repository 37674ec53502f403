"""What turns a run's events into notices: NoticeWatcher (a bus subscriber: the run finished or
failed, the guard acted, a non-finite step, a checkpoint not written, a new best validation loss)
and Watchdog (a thread of its own: no step for too long, the run directory's disk running out).

The watchdog never asks the training thread anything: it reads the step counter the loop keeps,
so it still speaks when that thread hangs (in a collective, a stuck data loader, a deadlock).
"""
from __future__ import annotations

import math
import shutil
import socket
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from ..core.events import (CheckpointSkipped, EvalResult, GuardFired, RunFailed, RunFinished, RunNote, TrainingMetrics)
from .notice import Notice

STALL_FLOOR = 300.0  # seconds: the default --stall-after is at least this...
STALL_STEPS = 20  # ...and at least this many median steps
DISK_EVERY = 30.0  # seconds between looks at the disk


class NoticeWatcher:
    """Bus subscriber (on the training thread: it only looks and hands on) making notices of the
    events worth telling."""

    name = "notifications"

    def __init__(self, notify: Callable[[Notice], None], run: str, run_dir: str, best_val: bool = False,
                 last_loss: Callable[[], float | None] | None = None) -> None:
        self.notify, self.run, self.run_dir, self.best_val = notify, run, str(run_dir), best_val
        self.loss: float | None = None
        self.best: float = math.inf
        self._last_loss = last_loss
        self._nonfinite_said_by_guard = -1

    def _notice(self, kind: str, title: str, text: str = "", level: str = "info", step: int | None = None) -> None:
        self.notify(Notice(kind, f"{self.run}: {title}", text, level, self.run, self.run_dir, step))

    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            if math.isfinite(event.loss):
                self.loss = event.loss
            elif event.skipped and self._nonfinite_said_by_guard != event.step:
                self._notice("nonfinite", f"non-finite loss at step {event.step:,}",
                             "the step made no update", "warning", event.step)
        elif isinstance(event, GuardFired):
            kind = "nonfinite" if event.kind == "nonfinite" else "guard"
            if kind == "nonfinite":
                self._nonfinite_said_by_guard = event.step
            level = "error" if event.action == "pause" else "warning"
            self._notice(kind, f"guard {event.action} at step {event.step:,}",
                         f"{event.detail}; {event.outcome or event.action}", level, event.step)
        elif isinstance(event, EvalResult):
            if self.best_val and math.isfinite(event.val_loss) and event.val_loss < self.best:
                before, self.best = self.best, event.val_loss
                was = f" (was {before:.4f})" if math.isfinite(before) else ""
                self._notice("best_val", f"new best validation loss {event.val_loss:.4f} at step {event.step:,}",
                             f"validation loss {event.val_loss:.4f}{was}", "info", event.step)
        elif isinstance(event, CheckpointSkipped):
            self._notice("checkpoint", f"checkpoint at step {event.step:,} not written", event.reason, "error",
                         event.step)
        elif isinstance(event, RunNote) and event.kind == "checkpoint failed":
            self._notice("checkpoint", "a checkpoint could not be written", str(event.details.get("text", "")),
                         "error", event.details.get("step"))
        elif isinstance(event, RunFinished):
            loss = self._last_loss() if self._last_loss else self.loss
            said = f"final loss {loss:.4f}; " if loss is not None and math.isfinite(loss) else ""
            self._notice("finished", f"{event.reason} at step {event.step:,}",
                         f"{said}files: {socket.gethostname()}:{self.run_dir}"
                         + (f"; checkpoint {Path(event.checkpoint).name}" if event.checkpoint else ""),
                         "info", event.step)
        elif isinstance(event, RunFailed):
            last = (event.error or "").strip().splitlines()[-1:] or ["(no message)"]
            self._notice("failed", f"failed at step {event.step:,}", f"{last[0]}; log: {socket.gethostname()}:"
                         f"{Path(self.run_dir) / 'neurogen-tui.log'}", "error",
                         event.step)


def seconds(value: float) -> str:
    """45 s, 5.0 min, 2.1 h."""
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def default_stall_after(step_times: list[float]) -> float:
    """A generous multiple of the recent median step time, never under STALL_FLOOR."""
    return max(STALL_FLOOR, STALL_STEPS * statistics.median(step_times)) if step_times else STALL_FLOOR


class Watchdog:
    """A thread looking once a second at the run's step (`step()`, kept by the loop) and, every
    DISK_EVERY seconds, at the free space where the run writes. A stall: no new step for
    `stall_after` seconds (None: default_stall_after of the steps seen) while the run is not
    paused (`paused()`); said once, and again when steps come back. Watching starts at the first
    step seen (compiling, a first download are not stalls)."""

    def __init__(self, notify: Callable[[Notice], None], run: str, run_dir: str | Path, step: Callable[[], int],
                 paused: Callable[[], bool] = lambda: False, stall_after: float | None = None,
                 disk_low_mb: float = 1024.0, poll: float = 1.0) -> None:
        self.notify, self.run, self.run_dir = notify, run, str(run_dir)
        self.step, self.paused = step, paused
        self.stall_after, self.disk_low_mb = stall_after, disk_low_mb
        self.poll = min(poll, stall_after / 4) if stall_after else poll  # a short limit is looked at often enough
        self._times: deque[float] = deque(maxlen=50)  # recent seconds per step
        self._stop = threading.Event()
        self.stalled_since: float | None = None
        self._disk_said = False
        self._last_step: int | None = None
        self._last_change = time.monotonic()
        self._last_disk = -math.inf
        self.thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self.thread.start()

    def _notice(self, kind: str, title: str, text: str, level: str, step: int | None) -> None:
        self.notify(Notice(kind, f"{self.run}: {title}", text, level, self.run, self.run_dir, step))

    def limit(self) -> float:
        return self.stall_after if self.stall_after is not None else default_stall_after(list(self._times))

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._look()

    def _look(self) -> None:
        now = time.monotonic()
        try:
            step, paused = int(self.step()), bool(self.paused())
        except Exception:  # the loop's objects half-built or gone: look again
            return
        if step != self._last_step:
            if self._last_step is not None and step > self._last_step:
                self._times.append((now - self._last_change) / (step - self._last_step))
            if self.stalled_since is not None:
                self._notice("stall", f"steps again at step {step:,}",
                             f"after {seconds(now - self.stalled_since)} without one", "info", step)
                self.stalled_since = None
            self._last_step, self._last_change = step, now
        elif paused:
            self._last_change = now  # a pause is not a stall
        elif self._last_step is not None and self.stalled_since is None and now - self._last_change >= self.limit():
            self.stalled_since = self._last_change
            self._notice("stall", f"no step for {seconds(now - self._last_change)} (at step {step:,})",
                         f"stall limit {self.limit():.0f} s (--stall-after); the training thread may hang: "
                         "a collective, the data loader, a deadlock", "error", step)
        if now - self._last_disk >= DISK_EVERY:
            self._last_disk = now
            self._check_disk(step)

    def _check_disk(self, step: int) -> None:
        try:
            free = shutil.disk_usage(self.run_dir).free / 2**20
        except OSError:
            return
        if free < self.disk_low_mb and not self._disk_said:
            self._disk_said = True
            self._notice("disk", f"{free:.0f} MB free where it writes",
                         f"below {self.disk_low_mb:.0f} MB (--disk-low-mb) in {self.run_dir}", "warning", step)
        elif free > 2 * self.disk_low_mb:
            self._disk_said = False

    def close(self) -> None:
        """Stop watching, after a last look (a stall that ended just before the run did is said)."""
        self._stop.set()
        self.thread.join(self.poll + 1.0)
        self._look()
