"""Following a run directory's files as another process writes them: the run-directory transport.

Each poll reads what grew since the last one: training_viz/metrics.jsonl and samples.jsonl
(text_samples.json where there is no samples.jsonl), the checkpoint list, the latest dashboard,
run.json and the run's log, and puts events for what changed. A torn last line waits for the next
poll; a directory with nothing in it yet waits too. A file rewritten by a resumed or new run is
read again from its start.

Without a control channel (watch), the state shown comes from run.json, checked against the
process (run/info.py: liveness), and how the run ended from run.json's record of it; for a directory
without run.json (runs of older versions), from whether the metrics still grow.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.events import (CheckpointSaved, GuardFired, LogMessage, Notified, RunFailed, RunFinished, SettingChanged,
                           StateChanged, TextSample)
from ..run.files import TailedFile, tail_jsonl
from ..run.history import columns_from_rows, history_columns
from ..run.info import liveness, read_run_info
from ..run.layout import CHECKPOINT_NAME, END_LOGGER, ENDED_STATES, METRICS_FILE, SAMPLES_JSON, RunLayout, RunState
from ..run.metricsfile import sidecar_covers
from ..run.reader import load_samples, read_run_metrics
from ..run.timeline import describe
from .source import HistoryReset, MetricsRows, RunInfo, trained_seconds

SAMPLE_FIELDS = ("step", "input", "target", "output", "accuracy")
# the timeline's kinds a viewer shows in its log pane (a guard action is in the log's own error
# line; dashboards and the run's end are said otherwise)
REPLAYED = {"started", "resumed", "checkpoint", "checkpoint skipped", "eval", "setting", "paused", "unpaused",
            "hangup", "viewer attached", "viewer detached", "storage", "run dir", "checkpoint failed",
            "notify failing"}
WARNINGS = {"checkpoint skipped", "storage", "run dir", "checkpoint failed", "notify failing"}
IDLE_AFTER = 30.0  # seconds without a new metrics line before a run without run.json is shown as idle
LOG_TAIL = 256 * 1024  # bytes of an existing log read at start
FIRST_FROM_TAIL = 8 << 20  # bytes of metrics.jsonl (~20k steps) past which a viewer shows the last rows first
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ (INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.*)$")
LOG_LEVELS = {"WARNING": "warning", "ERROR": "error", "CRITICAL": "error"}


class FilesFollower:
    """Polls one run directory and `put`s what changed. With `report_state`, it also says the
    run's state and its end (a viewer without the control channel)."""

    def __init__(self, run_dir: str | Path, put: Callable[[object], None], report_state: bool = True):
        self.layout = RunLayout(run_dir)
        self.put = put
        self.report_state = report_state
        self.metrics = TailedFile(self.layout.metrics)
        self.samples = TailedFile(self.layout.samples)
        self.events = TailedFile(self.layout.events)
        self._events_read = False  # the timeline's first read: the past, replayed
        self._text_samples_mtime = 0.0
        self._checkpoints: set[str] = set()
        self._run_info: RunInfo | None = None
        self.record: dict = {}  # run.json as last read
        self._recorded_state = ""  # its state, checked against the process
        self._png_mtime = 0.0
        self._log_offset: int | None = None
        self._last_growth = 0.0
        self._state = ""

    def poll(self) -> None:
        self._poll_run_info()
        self.poll_log()
        self._poll_metrics()
        self._poll_samples()
        self._poll_events()
        self._poll_checkpoints()
        self._poll_dashboard()
        if self.report_state:
            self._update_state()

    def _poll_metrics(self) -> None:
        if self.metrics.offset == 0 and self._bulk_metrics():
            return
        rows, restarted = self.metrics.read()
        if restarted:
            self.put(HistoryReset())
            self.events = TailedFile(self.layout.events)  # the marks are read again for the new history
            self.put(LogMessage("info", f"{METRICS_FILE} was rewritten (a resumed or new run): reloading"))
            if self._bulk_metrics():
                return
        rows = [r for r in rows if isinstance(r.get("step"), int)]
        if rows:
            self._last_growth = time.time()
            self.put(MetricsRows(columns_from_rows(rows), rows[-100:], trained_seconds(rows)))

    def _bulk_metrics(self) -> bool:
        """The whole history at once (the sidecar, then the lines after it: run/metricsfile.py), where
        the file is read from its start; later polls read what was appended since. A long file
        without a trusted sidecar shows its last rows first (read from its end: the screen is up at
        once) and the whole history behind them; then, where the run has ended and its directory is
        writable, it gets its sidecar, so the next open is instant."""
        if not self.metrics.mark_start():
            return False
        size = self.layout.metrics.stat().st_size
        if size > FIRST_FROM_TAIL and not sidecar_covers(self.layout.viz, size):
            rows, _ = tail_jsonl(self.layout.metrics, 500)
            rows = [r for r in rows if isinstance(r.get("step"), int)]
            if rows:
                self.put(MetricsRows(columns_from_rows(rows), rows[-100:], trained_seconds(rows)))
        table = read_run_metrics(self.layout.viz)
        self.metrics.offset = table.end
        if len(table):
            self._last_growth = time.time()
            cols = table.columns
            started = float(cols["timestamp"][0] - np.nan_to_num(cols["step_time"][0]))
            self.put(MetricsRows(history_columns(cols), table.tail_rows(100), float(np.nansum(cols["step_time"])),
                                 started if np.isfinite(started) and started > 0 else None, replace=True))
        return True

    def _poll_events(self) -> None:
        """The timeline: setting changes and guard actions for the charts to mark, and what
        happened (checkpoints, evaluations, changes, pauses, ...) for the log pane, each at the
        time it happened, so a viewer opened late shows the run as it went."""
        if not self.events.path.exists() and self.events.ident is None:
            return
        rows, _ = self.events.read()
        replayed, self._events_read = not self._events_read, True  # what was there when the viewer opened
        for row in rows:
            step, kind = row.get("step"), row.get("kind")
            if not isinstance(step, int):
                continue
            if kind == "notice":
                self.put(Notified({"kind": str(row.get("what") or ""), "title": str(row.get("title") or ""),
                                   "text": str(row.get("text") or ""), "level": str(row.get("level") or "info"),
                                   "step": step, "time": row.get("time"), "held": row.get("held") or 0}, replayed))
                continue
            if kind == "setting" and isinstance(row.get("changes"), dict):
                self.put(SettingChanged(step, row["changes"], str(row.get("source") or "")))
            elif kind == "guard":
                self.put(GuardFired(step, str(row.get("trouble") or ""), str(row.get("detail") or ""),
                                    str(row.get("action") or ""), str(row.get("outcome") or "")))
            if kind in REPLAYED:
                when = row.get("time")
                self.put(LogMessage("warning" if kind in WARNINGS else "info",
                                    describe(row), when if isinstance(when, (int, float)) and when > 0 else None))

    def _poll_samples(self) -> None:
        if self.samples.offset == 0 and self.samples.mark_start():  # a long run's: only the newest, from its end
            rows, self.samples.offset = tail_jsonl(self.samples.path, 200)  # a torn last line: read next time
        elif self.samples.path.exists() or self.samples.ident is not None:
            rows, _ = self.samples.read()
        else:
            rows = self._read_text_samples()
        for row in rows[-200:]:
            if all(k in row for k in SAMPLE_FIELDS):
                try:
                    kind = "prompt" if row.get("kind") == "prompt" else "sample"
                    accuracy = None if kind == "prompt" else float(row["accuracy"])
                    self.put(TextSample(int(row["step"]), str(row["input"]), str(row["target"]),
                                        str(row["output"]), accuracy, kind))
                except (TypeError, ValueError):
                    continue

    def _read_text_samples(self) -> list[dict]:
        """The exported text_samples.json (a run dir without samples.jsonl), when it changed."""
        try:
            mtime = (self.layout.viz / SAMPLES_JSON).stat().st_mtime
        except FileNotFoundError:
            return []
        if mtime == self._text_samples_mtime:
            return []
        self._text_samples_mtime = mtime
        self.put(HistoryReset(samples_only=True))
        return load_samples(self.layout.viz, limit=200)

    def _poll_checkpoints(self) -> None:
        if self.layout.events.exists():  # the timeline says when each was written
            return
        try:
            names = {p.name: p for p in self.layout.checkpoints.iterdir() if CHECKPOINT_NAME.match(p.name)}
        except FileNotFoundError:
            return
        new = sorted(set(names) - self._checkpoints)
        self._checkpoints = set(names)
        for name in new[-5:]:
            self.put(CheckpointSaved(int(CHECKPOINT_NAME.match(name).group(1)), str(names[name])))

    def _poll_run_info(self) -> None:
        """run.json, kept by the training process: its name, total steps and, checked against the
        process itself, its state (a run killed without a clean exit shows as stale)."""
        info = read_run_info(self.layout.root)
        if info is None:
            self.record, self._recorded_state = {}, ""
            return
        run_info = RunInfo(run_name=str(info.get("run_name") or ""), total=info.get("total_steps"),
                           started_at=_when(info.get("started_at")), ended_at=_when(info.get("ended_at")))
        if run_info != self._run_info:
            self._run_info = run_info
            self.put(run_info)
        self.record, self._recorded_state = info, liveness(info)

    def _poll_dashboard(self) -> None:
        path = self.layout.latest_png
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._png_mtime:
            self._png_mtime = mtime
            self.put(LogMessage("info", f"dashboard written: {path}"))

    def poll_log(self) -> None:
        """New warnings and errors of the run's log (a full traceback stays in the file; the error
        line says where). The trainer's record of how the run ended is left out: run.json and the
        channel say it."""
        path = self.layout.log
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if self._log_offset is None or size < self._log_offset:
            self._log_offset = max(0, size - LOG_TAIL) if self._log_offset is None else 0
        if size == self._log_offset:
            return
        with open(path, "rb") as fh:
            fh.seek(self._log_offset)
            data = fh.read(size - self._log_offset)
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for raw in data[:end].decode("utf-8", "replace").splitlines():
            m = _LOG_LINE.match(raw)
            if m and m.group(2) in LOG_LEVELS and m.group(3) != END_LOGGER:
                self.put(LogMessage(LOG_LEVELS[m.group(2)], m.group(4), _log_time(m.group(1))))

    def _update_state(self) -> None:
        recorded = self._recorded_state
        if recorded in (RunState.RUNNING, RunState.STARTING):
            state = RunState.WATCHING
        elif recorded:
            state = recorded  # paused, stopping, finished, stopped, failed, stale
        elif self.metrics.ident is None:
            state = RunState.WAITING
        else:
            state = RunState.WATCHING if time.time() - self._last_growth < IDLE_AFTER else RunState.IDLE
        if state == self._state:
            return
        self._state = state
        if state in ENDED_STATES:
            self.put(ended_event(self.record))
        self.put(StateChanged(state))


def _when(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _log_time(stamp: str) -> float | None:
    """A log line's local time (logging's asctime) as a Unix time."""
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def ended_event(info: dict) -> RunFinished | RunFailed:
    """How an ended run ended, from its run.json."""
    step = info.get("step") if isinstance(info.get("step"), int) else 0
    if info.get("state") == RunState.FAILED:
        return RunFailed(step, str(info.get("error") or "unknown error"))
    return RunFinished(step, str(info.get("reason") or info.get("state")), checkpoint=info.get("last_checkpoint"))
