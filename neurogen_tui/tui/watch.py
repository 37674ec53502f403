"""`neurogen-tui watch RUN_DIR`: the training screen, read-only, fed from a run directory's files.

It follows training_viz/metrics.jsonl and samples.jsonl (text_samples.json when there is no
samples.jsonl), the checkpoint list, the latest dashboard, run.json and the run's log as they grow, so a
second SSH session can attach to a run started in tmux or with --headless under nohup, or review a
finished one. A torn last line waits for the next poll; a directory with nothing in it yet waits.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import threading
import time
from pathlib import Path

from ..events import CheckpointSaved, LogMessage, StateChanged, TextSample
from ..files import read_jsonl
from ..runinfo import liveness, read_run_info
from .budget import add_budget_flag
from .feed import Feed, FeedDone, HistoryReset, MetricsRows, ReadOnlyController, RunInfo, rows_to_columns

log = logging.getLogger(__name__)

VIZ_DIR, CHECKPOINT_DIR, LOG_FILE = "training_viz", "checkpoints", "neurogen-tui.log"
METRICS_FILE, SAMPLES_FILE, TEXT_SAMPLES, LATEST_PNG = ("metrics.jsonl", "samples.jsonl", "text_samples.json",
                                                        "training_latest.png")
CHECKPOINT_NAME = re.compile(r"^checkpoint_step_(\d+)\.(pt|dcp)$")
SAMPLE_FIELDS = ("step", "input", "target", "output", "accuracy")
IDLE_AFTER = 30.0  # seconds without a new metrics line before a live run is shown as idle
LOG_TAIL = 256 * 1024  # bytes of an existing log read at start
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.*)$")


class TailedFile:
    """A JSONL file read incrementally; a file that shrank or was replaced starts over."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.ident: tuple[int, int] | None = None

    def read(self) -> tuple[list[dict], bool]:
        """New complete rows, and whether the file was replaced (so earlier rows no longer hold)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return [], False
        ident, restarted = (st.st_dev, st.st_ino), False
        if (self.ident is not None and ident != self.ident) or st.st_size < self.offset:
            self.offset, restarted = 0, True
        self.ident = ident
        if st.st_size == self.offset:
            return [], restarted
        rows, self.offset = read_jsonl(self.path, self.offset)
        return rows, restarted


class WatchFeed(Feed):
    """Polls a run directory and queues what changed. produce() runs until stop()."""

    read_only = True

    def __init__(self, run_dir: str | os.PathLike, poll: float = 0.5):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.viz_dir = self.run_dir / VIZ_DIR
        self.title = self.run_dir.resolve().name or str(self.run_dir)
        self.poll_interval = poll
        self.controller = ReadOnlyController(self.stop)
        self._stop = threading.Event()
        self.metrics = TailedFile(self.viz_dir / METRICS_FILE)
        self.samples = TailedFile(self.viz_dir / SAMPLES_FILE)
        self._text_samples_mtime = 0.0
        self._checkpoints: set[str] = set()
        self._run_info: RunInfo | None = None
        self._recorded_state = ""  # from run.json, when the run has one
        self._png_mtime = 0.0
        self._log_offset: int | None = None
        self._last_growth = 0.0
        self._state = ""
        self._ended = ""  # "finished" / "failed" from the log, until a new start line

    def stop(self) -> None:
        self._stop.set()

    def produce(self) -> None:
        self.put(LogMessage("info", f"watching {self.run_dir.resolve()} (read-only)"))
        while True:
            try:
                self.poll()
            except Exception as exc:  # a file we cannot read must not end the viewer
                log.exception("watch: polling %s failed", self.run_dir)
                self.put(LogMessage("warning", f"watch: {type(exc).__name__}: {exc}"))
            if self._stop.wait(self.poll_interval):
                break
        self.put(FeedDone(0))

    # ---- one poll --------------------------------------------------------------------------
    def poll(self) -> None:
        self._poll_run_info()
        self._poll_log()
        self._poll_metrics()
        self._poll_samples()
        self._poll_checkpoints()
        self._poll_dashboard()
        self._update_state()

    def _poll_metrics(self) -> None:
        rows, restarted = self.metrics.read()
        if restarted:
            self.put(HistoryReset())
            self.put(LogMessage("info", f"{METRICS_FILE} was rewritten (a resumed or new run): reloading"))
        rows = [r for r in rows if isinstance(r.get("step"), int)]
        if rows:
            self._last_growth = time.time()
            self.put(MetricsRows(rows_to_columns(rows), rows[-100:]))

    def _poll_samples(self) -> None:
        if self.samples.path.exists() or self.samples.ident is not None:
            rows, _ = self.samples.read()
        else:
            rows = self._read_text_samples()
        for row in rows[-200:]:
            if all(k in row for k in SAMPLE_FIELDS):
                try:
                    self.put(TextSample(int(row["step"]), str(row["input"]), str(row["target"]),
                                        str(row["output"]), float(row["accuracy"])))
                except (TypeError, ValueError):
                    continue

    def _read_text_samples(self) -> list[dict]:
        """The exported text_samples.json (a list, or {"samples": [...]}) when it changed."""
        path = self.viz_dir / TEXT_SAMPLES
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return []
        if mtime == self._text_samples_mtime:
            return []
        self._text_samples_mtime = mtime
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._text_samples_mtime = 0.0  # being replaced: try again next poll
            return []
        rows = data.get("samples", []) if isinstance(data, dict) else data
        self.put(HistoryReset(samples_only=True))
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def _poll_checkpoints(self) -> None:
        directory = self.run_dir / CHECKPOINT_DIR
        try:
            names = {p.name: p for p in directory.iterdir() if CHECKPOINT_NAME.match(p.name)}
        except FileNotFoundError:
            return
        new = sorted(set(names) - self._checkpoints)
        self._checkpoints = set(names)
        for name in new[-5:]:
            self.put(CheckpointSaved(int(CHECKPOINT_NAME.match(name).group(1)), str(names[name])))

    def _poll_run_info(self) -> None:
        """run.json, kept by the training process: its name, total steps and, checked against the
        process itself, its state (a run killed without a clean exit shows as stale)."""
        info = read_run_info(self.run_dir)
        if info is None:
            self._recorded_state = ""
            return
        run_info = RunInfo(run_name=str(info.get("run_name") or ""), total=info.get("total_steps"))
        if run_info != self._run_info:
            self._run_info = run_info
            self.put(run_info)
        self._recorded_state = liveness(info)

    def _poll_dashboard(self) -> None:
        path = self.viz_dir / LATEST_PNG
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._png_mtime:
            self._png_mtime = mtime
            self.put(LogMessage("info", f"dashboard written: {path}"))

    def _poll_log(self) -> None:
        path = self.run_dir / LOG_FILE
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
            self._log_line(raw)

    def _log_line(self, raw: str) -> None:
        m = _LOG_LINE.match(raw)
        if not m:
            return  # traceback lines: the file holds them; the error line says where
        level, _, message = m.groups()
        if message.startswith("starting run in"):
            self._ended = ""
        elif message.startswith("run finished"):
            self._ended = "finished"
        elif message.startswith("training failed"):
            self._ended = "failed"
        if level != "INFO" or message.startswith(("run finished", "starting run")):
            self.put(LogMessage({"INFO": "info", "WARNING": "warning"}.get(level, "error"), message))

    def _update_state(self) -> None:
        if self._recorded_state in ("running", "starting"):
            state = "watching"
        elif self._recorded_state:
            state = self._recorded_state  # paused, stopping, finished, stopped, failed, stale
        elif self._ended:
            state = self._ended
        elif self.metrics.ident is None:
            state = "waiting"
        else:
            state = "watching" if time.time() - self._last_growth < IDLE_AFTER else "idle"
        if state != self._state:
            self._state = state
            self.put(StateChanged(state))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurogen-tui watch",
                                description="Follow a run directory's files on the training screen (read-only).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory (holds training_viz/ and checkpoints/)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the files")
    add_budget_flag(p)
    return p


def main_watch(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        print(f"neurogen-tui watch: error: {run_dir} is not a directory")
        return 2
    if not run_dir.exists():
        print(f"neurogen-tui watch: {run_dir} does not exist yet; waiting for the run to start writing")
    from .app import WatchApp

    feed = WatchFeed(run_dir, poll=max(0.05, args.poll))
    app = WatchApp(feed, feed.controller, ui_budget=args.ui_budget)
    code = app.run()
    return 1 if code is None else int(code)
