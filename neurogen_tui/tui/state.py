"""RunView: what the screen shows, built from a source's events. Plain Python, no widgets, so the
rules (ETA, memory line, which log lines appear) are tested directly and shared by every source."""
from __future__ import annotations

import os
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

from ..core.events import (CheckpointSaved, EvalResult, GuardFired, LogMessage, Notified, RunFailed, RunFinished,
                           RunStarted, SettingChanged, StateChanged, TextSample, TrainingMetrics)
from ..notify.notice import NEWS
from ..run.history import MetricsHistory, columns_from_rows
from ..run.layout import EndReason, RunState
from .source import HistoryReset, MetricsRows, RunInfo, SourceDone, trained_seconds

SAMPLES_KEPT = 200
ETA_WINDOW = 100  # steps over which the step rate for the ETA is measured
DATA_WINDOW = 20  # steps over which the header's CPU and data share are measured
BULK_ROWS = 32  # metrics rows in one drain from which a bulk append is cheaper


@dataclass
class LogLine:
    level: str  # info | warning | error
    text: str  # untrusted parts already sanitized by whoever shows it
    time: float = field(default_factory=time.time)


@dataclass
class HeaderInfo:
    """One snapshot of the header line; equal snapshots do not redraw."""

    run_name: str = ""
    device: str = ""
    state: str = RunState.STARTING
    step: int = 0
    total: int | None = None
    elapsed: float = 0.0
    eta: float | None = None
    tokens_seen: int = 0
    tokens_per_sec: float = 0.0
    memory: tuple[str, ...] = ()  # (label, value): CUDA peak where there is one, else process RSS
    mfu: float | None = None  # model FLOPs utilization (0..1) where the GPU's peak is known
    gpu: str = ""  # NVML's last readings, short: "97% 512W 61°C" (the slowest / hottest rank's)
    gpu_more: str = ""  # and on a wide screen: "40.0/80.0G 1980MHz" (memory used / total, SM clock)
    data: str = ""  # the data pipeline's share of the recent steps' time: "3%"
    cpu: str = ""  # the training process's CPU over the last step, % of one core: "180%"
    charts: str = ""  # the chart settings, short: "ema 0.60 · x tokens · last 1k"
    read_only: bool = False


def known(row: dict, name: str) -> bool:
    """Whether a metrics row holds a number (not null, not NaN) for `name`."""
    v = row.get(name)
    return isinstance(v, (int, float)) and v == v


def gpu_text(row: dict) -> str:
    """A metrics row's GPU readings for the header, each only where NVML read it."""
    parts = [fmt.format(row[name]) for name, fmt in (("gpu_util", "{:.0f}%"), ("gpu_power_w", "{:.0f}W"),
                                                     ("gpu_temp_c", "{:.0f}°C")) if known(row, name)]
    return " ".join(parts)


def gpu_more(row: dict) -> str:
    """What a wide header adds: memory used / total and the SM clock ("40.0/80.0G 1980MHz")."""
    parts = []
    if known(row, "gpu_mem_used_mb"):
        total = f"/{row['gpu_mem_total_mb'] / 1024:.1f}" if known(row, "gpu_mem_total_mb") else ""
        parts.append(f"{row['gpu_mem_used_mb'] / 1024:.1f}{total}G")
    if known(row, "gpu_sm_clock_mhz"):
        parts.append(f"{row['gpu_sm_clock_mhz']:.0f}MHz")
    return " ".join(parts)


def last_frames(tb: str, n: int = 3) -> list[str]:
    """The last `n` 'File ..., line ..., in ...' frames of a formatted traceback, innermost last."""
    frames = [line.strip() for line in tb.splitlines() if line.strip().startswith("File ")]
    return frames[-n:]


class RunView:
    """Applies a source's events; the app reads the fields and takes the new log lines and samples."""

    def __init__(self, run_name: str = "", read_only: bool = False, run_dir: str | os.PathLike | None = None) -> None:
        self.run_dir = os.path.abspath(run_dir) if run_dir else None
        self.history = MetricsHistory()
        self.samples: deque[TextSample] = deque(maxlen=SAMPLES_KEPT)
        self.answers: deque[TextSample] = deque(maxlen=SAMPLES_KEPT)  # answers to prompts, kept apart: samples outnumber them
        self.run_name = run_name
        self.read_only = read_only
        self.device = ""
        self.total: int | None = None
        self.state: str = RunState.STARTING
        self.step = 0
        self.first_step: int | None = None  # where this run started (RunStarted); None until then
        self.tokens_seen = 0
        self.tokens_per_sec = 0.0
        self.memory: tuple[str, ...] = ()  # (label, value)
        self.mfu: float | None = None
        self.gpu = self.gpu_more = ""
        self.cpu = self.data = ""
        self.charts = ""  # set by the app from its chart settings
        self._data_share: deque[tuple[float, float]] = deque(maxlen=DATA_WINDOW)  # (data_time, step_time)
        self._cpu_share: deque[tuple[float, float]] = deque(maxlen=DATA_WINDOW)  # (cpu_util * wall seconds, wall seconds)
        self._prev_timestamp = 0.0
        self.started_at: float | None = None
        self.run_started: float | None = None  # run.json's start, where a viewer has one
        self.alerts: list[dict] = []  # notices for the terminal (the app rings it: app.py)
        self.ended_at: float | None = None
        self.last_timestamp = 0.0  # of the newest metrics row
        self.result: RunFinished | RunFailed | None = None
        self.done: SourceDone | None = None
        self.trained = 0.0  # seconds of training in the rows seen (the steps' step_time): what the budget earns on
        self._new_logs: list[LogLine] = []
        self.samples_version = 0  # bumped whenever `samples` changes
        self.marks: list[tuple[int, str]] = []  # (step, "setting" | "guard"): what the charts mark
        self._recent: deque[tuple[int, float]] = deque(maxlen=ETA_WINDOW)  # (step, timestamp)

    # ---- applying events -------------------------------------------------------------------
    def apply_all(self, events: list) -> None:
        """Apply a drained batch in order; a long run of metrics (a fast trainer) goes into the
        history in one bulk append rather than row by row."""
        pending: list[dict] = []
        for event in events:
            if isinstance(event, TrainingMetrics):
                pending.append(vars(event))
                continue
            self._flush_metrics(pending)
            self.apply(event)
        self._flush_metrics(pending)

    def _flush_metrics(self, rows: list[dict]) -> None:
        if len(rows) >= BULK_ROWS:
            self.apply(MetricsRows(columns_from_rows(rows), rows[-ETA_WINDOW:], trained_seconds(rows)))
        else:
            for row in rows:
                self._metrics(row)
        rows.clear()

    def apply(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            self._metrics(vars(event))
        elif isinstance(event, MetricsRows):
            if event.replace:  # the whole history behind the tail shown first: the charts start over
                self.history, self.trained = MetricsHistory(), 0.0
            if event.started and (self.started_at is None or event.replace):
                self.started_at = self.run_started or event.started
            self.history.extend_columns(event.columns)
            self.trained += event.trained
            for row in event.tail:
                self._note(row)
        elif isinstance(event, TextSample):
            self._sample(event)
        elif isinstance(event, SettingChanged) and event.changes:
            self.marks.append((event.step, "setting"))
        elif isinstance(event, GuardFired):
            self.marks.append((event.step, "guard"))
        elif isinstance(event, StateChanged):
            self.set_state(event.state)
        elif isinstance(event, RunStarted):
            self._started(event)
        elif isinstance(event, EvalResult):
            self.log("info", f"eval @ step {event.step}: val loss {event.val_loss:.4f}, "
                             f"val accuracy {event.val_accuracy * 100:.1f}%")
        elif isinstance(event, CheckpointSaved):
            self.log("info", f"checkpoint @ step {event.step}: {event.path}")
        elif isinstance(event, LogMessage):
            self.log(event.level, event.text, event.time)
        elif isinstance(event, Notified):
            self._notified(event)
        elif isinstance(event, RunFinished):
            self._finished(event)
        elif isinstance(event, RunFailed):
            self._failed(event)
        elif isinstance(event, SourceDone):
            self.done = event
        elif isinstance(event, RunInfo):
            self.run_name = event.run_name or self.run_name
            self.device = event.device or self.device
            self.total = event.total if event.total else self.total
            self.started_at = event.started_at or self.started_at
            self.run_started = event.started_at or self.run_started
            self.ended_at = event.ended_at or self.ended_at
        elif isinstance(event, HistoryReset):
            self._reset(event.samples_only)

    def _sample(self, event: TextSample) -> None:
        (self.answers if event.kind == "prompt" else self.samples).append(event)
        self.samples_version += 1
        if event.kind == "prompt":
            self.log("info", f"answer @ step {event.step}: {event.input[-40:]} → {event.output[:80]}")

    def _finished(self, event: RunFinished) -> None:
        self.result, self.ended_at = event, self.ended_at or time.time()  # a viewer knows when it really ended
        self.set_state(RunState.FINISHED)
        where = f"; final checkpoint {event.checkpoint}" if event.checkpoint else ""
        if event.reason == EndReason.DATA_EXHAUSTED and self.total:
            self.log("warning", f"data exhausted at step {event.step} of {self.total}{where}")
        else:
            self.log("info", f"run finished ({event.reason}) at step {event.step}{where}")

    def _reset(self, samples_only: bool) -> None:
        """The run's files were rewritten (a resume cut them back): start again from what they hold."""
        self.samples.clear()
        self.answers.clear()
        self.samples_version += 1
        if not samples_only:
            self.marks = []
            self.history = MetricsHistory()
            self._recent.clear()
            self._data_share.clear()
            self._cpu_share.clear()

    def _metrics(self, row: dict) -> None:
        self.history.append(row)
        self.trained += float(row.get("step_time") or 0.0)
        self._note(row)

    def _note(self, row: dict) -> None:
        """The header's view of the newest metrics row."""
        self.step = int(row.get("step", self.step))
        self.last_timestamp = float(row.get("timestamp") or 0.0)
        self._recent.append((self.step, self.last_timestamp))
        self.tokens_seen = int(row.get("tokens_seen") or self.tokens_seen)
        self.tokens_per_sec = float(row.get("tokens_per_sec") or 0.0)
        gpu, rss = row.get("gpu_memory_mb") or 0.0, row.get("rss_mb") or 0.0
        self.memory = ("GPU peak", f"{gpu:,.0f} MB") if gpu else (("RSS", f"{rss:,.0f} MB") if rss else ())
        mfu = row.get("mfu")
        self.mfu = float(mfu) if mfu is not None and mfu == mfu else None
        self.gpu, self.gpu_more = gpu_text(row), gpu_more(row)
        self._machine(row)
        if self.started_at is None:
            self.started_at = float(row.get("timestamp") or time.time()) - float(row.get("step_time") or 0.0)

    def _machine(self, row: dict) -> None:
        """CPU and the data pipeline's share over the last DATA_WINDOW steps (one step alone jumps
        about: a checkpoint or an evaluation between two steps leaves the CPU idle)."""
        wall = self.last_timestamp - self._prev_timestamp if self._prev_timestamp else 0.0
        self._prev_timestamp = self.last_timestamp
        if known(row, "cpu_util") and wall > 0:
            self._cpu_share.append((float(row["cpu_util"]) * wall, wall))
        if known(row, "data_time") and known(row, "step_time") and row["step_time"] > 0:
            self._data_share.append((float(row["data_time"]), float(row["step_time"])))
        for window, name in ((self._cpu_share, "cpu"), (self._data_share, "data")):
            if window:
                share = sum(a for a, _ in window) / sum(b for _, b in window)
                setattr(self, name, f"{share:.0f}%" if name == "cpu" else f"{100 * share:.0f}%")

    def _started(self, event: RunStarted) -> None:
        self.started_at = time.time()
        self.total = event.total_steps
        self.step = self.first_step = event.start_step
        self.device = event.device if event.device_name in (event.device, "cpu") else (
            f"{event.device} ({event.device_name})")
        verb = f"resumed from {event.resumed_from} at step {event.start_step}" if event.resumed_from else "started"
        self.log("info", f"{verb}: {event.n_params / 1e6:.2f}M parameters on {self.device}")
        if self.run_dir:
            self._new_logs.append(LogLine("info", f"run dir {self.run_dir} (paths below are inside it)"))

    def _failed(self, event: RunFailed) -> None:
        self.result, self.ended_at = event, self.ended_at or time.time()
        self.set_state(RunState.FAILED)
        self.log("error", f"failed at step {event.step}: {event.error}")
        for frame in last_frames(event.traceback):
            self.log("error", "  " + frame)
        self.log("error", "full traceback in neurogen-tui.log; the last good checkpoint and JSON are on disk")

    def _notified(self, event: Notified) -> None:
        """A notice: a line in the log (as it happened, for one read back), and, made while this
        screen is open and not held back by the rate limit, one for the terminal (bell, OSC 9)."""
        n = event.notice
        held = n.get("held") or 0
        if n.get("kind") in NEWS:  # the others (the end, the guard, a checkpoint) have their own lines already
            when = n.get("time") if event.replayed and isinstance(n.get("time"), (int, float)) else None
            level = n.get("level") if n.get("level") in ("info", "warning", "error") else "info"
            self.log(level, f"{'held back' if held == -1 else 'notice'}: {n.get('title', '')}"
                            + (f": {n['text']}" if n.get("text") else ""), when)
        if not event.replayed and held != -1:
            self.alerts.append(n)

    def take_alerts(self) -> list[dict]:
        out, self.alerts = self.alerts, []
        return out

    def set_state(self, state: str) -> None:
        # a requested stop shows at once; the trainer's own "running" must not undo it
        if self.state == RunState.STOPPING and state in (RunState.RUNNING, RunState.PAUSED):
            return
        if self.state in (RunState.FINISHED, RunState.FAILED) and not self.read_only:
            return  # a live run's end is final (watch follows a directory that may be reused)
        self.state = state

    def log(self, level: str, text: str, when: float | None = None) -> None:
        if self.run_dir and self.run_dir + os.sep in text:  # paths inside the run dir, shortened
            text = text.replace(self.run_dir + os.sep, "")
        self._new_logs.append(LogLine(level, text, when) if when else LogLine(level, text))

    def log_exception(self, where: str, exc: BaseException) -> None:
        self.log("error", f"{where}: {type(exc).__name__}: {exc}")
        for frame in last_frames("".join(traceback.format_exception(exc))):
            self.log("error", "  " + frame)

    # ---- reading ---------------------------------------------------------------------------
    def table_samples(self) -> list[TextSample]:
        """What the samples table shows from: the answers to prompts, then the samples."""
        return [*self.answers, *self.samples]

    def take_logs(self) -> list[LogLine]:
        out, self._new_logs = self._new_logs, []
        return out

    def eta(self) -> float | None:
        """Seconds left at the recent step rate, or None (no total, paused, or too few steps)."""
        if not self.total or self.state not in (RunState.RUNNING, RunState.WATCHING) or self.step >= self.total:
            return None
        if len(self._recent) < 2:
            return None
        (s0, t0), (s1, t1) = self._recent[0], self._recent[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return round((self.total - self.step) * (t1 - t0) / (s1 - s0))

    def header(self, now: float | None = None) -> HeaderInfo:
        now = time.time() if now is None else now
        end = self.ended_at or now
        if self.read_only and not self.ended_at and self.state != RunState.WATCHING and self.last_timestamp:
            end = self.last_timestamp  # a run that is not growing, with no recorded end: its last step
        elapsed = max(0.0, end - self.started_at) if self.started_at else 0.0
        return HeaderInfo(run_name=self.run_name, device=self.device, state=self.state, step=self.step,
                          total=self.total, elapsed=int(elapsed), eta=self.eta(), tokens_seen=self.tokens_seen,
                          tokens_per_sec=self.tokens_per_sec, memory=self.memory, mfu=self.mfu, gpu=self.gpu,
                          gpu_more=self.gpu_more, data=self.data, cpu=self.cpu, charts=self.charts, read_only=self.read_only)
