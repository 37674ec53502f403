"""The headless display: a rich progress bar and summary lines, by steps and by time."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ..core.events import (CheckpointSaved, LogMessage, Notified, RunFailed, RunFinished, RunStarted, TextSample,
                           TrainingMetrics)
from ..core.text import format_count, sanitize
from ..notify.notice import NEWS
from ..run.layout import EndReason
from ..train.config import TrainingConfig


class HeadlessDisplay:
    """Event subscriber that draws a progress bar and prints summary lines on a rich Console: every
    --viz-interval steps and at every evaluation, and at least every EVERY seconds (into a pipe the
    bar does not move, so the lines are all a log shows)."""

    EVERY = 15.0

    def __init__(self, cfg: TrainingConfig, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console(stderr=False, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
            refresh_per_second=1)  # each redraw holds the GIL ~2 ms: at rich's 10 Hz, 2% of a small step's time
        self.task = None
        self.last_sample: TextSample | None = None  # the newest sample not yet printed
        self._said_at = time.monotonic()

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def join(self, step: int, total: int | None) -> None:
        """Shown from the middle of a run (the app's screen closed with x): the bar from `step`."""
        self._said_at = time.monotonic()
        self.task = self.progress.add_task(sanitize(self.cfg.display_name, 30), total=total, completed=step,
                                           loss="-", acc="-", tps="-")

    def line(self, text: str, style: str = "") -> None:
        # into a pipe or a log file (nohup, CI) a record stays one line; a terminal wraps it to fit
        try:
            self.progress.console.print(Text(text, style=style), soft_wrap=not self.console.is_terminal)
        except (OSError, ValueError):  # the output closed under us (a notice from another thread at the end)
            pass

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            self._said_at = time.monotonic()
            total = event.total_steps
            self.task = self.progress.add_task(sanitize(self.cfg.display_name, 30), total=total,
                                               completed=event.start_step, loss="-", acc="-", tps="-")
            verb = f"resuming from {event.resumed_from} at step {event.start_step}" if event.resumed_from else "training"
            self.line(f"{verb}: {event.n_params / 1e6:.2f}M parameters on {event.device_name} "
                       f"({event.device}), {self.cfg.tokens_per_chunk} tokens per step")
        elif isinstance(event, TrainingMetrics):
            if self.task is not None:
                self.progress.update(self.task, completed=event.step, loss=f"{event.loss:.4f}",
                                     acc=f"{event.accuracy * 100:.1f}%", tps=format_count(event.tokens_per_sec))
            now = time.monotonic()
            if (event.step % self.cfg.viz_interval == 0 or event.val_loss is not None
                    or now - self._said_at >= self.EVERY):  # a pipe or a log hears from the run at least this often
                self._said_at = now
                self._summary(event)
        elif isinstance(event, TextSample):
            self.last_sample = event
        elif isinstance(event, CheckpointSaved):
            self.line(f"checkpoint: {event.path}", "dim")
        elif isinstance(event, LogMessage):
            self.line(f"{event.level}: {sanitize(event.text)}", "yellow" if event.level == "warning" else "")
        elif isinstance(event, Notified) and event.notice.get("held") != -1 and event.notice.get("kind") in NEWS:
            n = event.notice  # a stall, the disk, a loop's alert: said here too (the rest have their own lines)
            self.line(f"notice: {sanitize(str(n.get('title', '')), 200)}: {sanitize(str(n.get('text', '')), 300)}",
                      "yellow" if n.get("level") != "info" else "dim")
        elif isinstance(event, RunFinished) and event.reason == EndReason.DATA_EXHAUSTED and self.cfg.max_chunks:
            self.line(f"data exhausted at step {event.step} of {self.cfg.max_chunks}, {format_count(event.tokens_seen)} "
                      f"tokens (--epochs {self.cfg.epochs}; --epochs 0 goes round the data)", "yellow")
        elif isinstance(event, RunFinished):
            self.line(f"finished ({event.reason}) at step {event.step}, {format_count(event.tokens_seen)} tokens")
        elif isinstance(event, RunFailed):
            self.line(f"failed at step {event.step}: {sanitize(event.error, 300)}", "bold red")

    def _summary(self, m: TrainingMetrics) -> None:
        val = f" | val {m.val_loss:.4f}" if m.val_loss is not None else ""
        mem = f"{m.gpu_memory_mb:.0f} MB GPU" if m.gpu_memory_mb else f"{m.rss_mb:.0f} MB RSS"
        self.line(f"step {m.step:>6} | loss {m.loss:.4f}{val} | acc {m.accuracy * 100:5.1f}% | "
                   f"{format_count(m.tokens_per_sec)} tok/s | lr {m.learning_rate:.2e} | "
                   f"grad {m.grad_norm:.2f} | {mem}")
        if self.last_sample is not None:  # each sample once: a stale one is not news
            s, self.last_sample = self.last_sample, None
            self.line(f"  sample @{s.step}: {sanitize(s.input[-40:])!s} → {sanitize(s.output, 60)}", "dim")
