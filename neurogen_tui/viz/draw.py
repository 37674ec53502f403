"""The drawing side of the dashboards: a DashboardWriter renders the seven-panel PNGs and writes
every file of training_viz/ but the JSONL record, in a separate 'spawn' process by default.

The training side (writer.py) sends it only what is new since its last request (history rows as numpy
arrays, sample dicts), and it keeps its own copy. Every file is written atomically (temporary file,
then rename); a write that fails is reported and the previous file stays.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

import numpy as np

from ..run.files import atomic_write, read_jsonl, write_json
from ..run.history import MetricsHistory
from ..run.layout import EVENTS_FILE, LATEST_PNG, METRICS_JSON, SAMPLES_JSON, step_png
from ..run.timeline import marks as timeline_marks
from . import figure as dashboard
from .figure import prune_dashboards
from .history_json import JsonLayout, file_identity, write_metrics_history

log = logging.getLogger(__name__)

MAX_SAMPLES = 1000  # text_samples.json stays bounded; samples.jsonl is the full record


@dataclass
class DrawRequest:
    rows: int  # draw the history's first `rows` rows: the run up to the step that asked
    draw: bool = True  # False: only the JSON exports are checked
    periodic: bool = False  # also write training_step_XXXXXX.png
    final: bool = False  # the run is over: JSON is written whatever its schedule says
    now: bool = False  # asked for by the user (`d`, the control channel): never waits for the CPU budget


class DashboardWriter:
    """The drawing side: renders dashboards and writes every file, reporting each through `notify`.

    metrics_history.json is rewritten when at least json_interval seconds passed AND the history
    grew by json_growth (5%) since the last write, and always at the end. Each rewrite copies the
    values already on disk and encodes only the new rows, so a run encodes every value once and
    copies ~21x the final file in all: linear in the number of steps, never quadratic.
    """

    def __init__(self, viz_dir: str | Path, run_name: str = "run", keep_dashboards: int = 20,
                 display_samples: int = 5, json_interval: float = 60.0, json_growth: float = 0.05,
                 history: MetricsHistory | None = None, clock: Callable[[], float] = time.monotonic):
        self.viz_dir = Path(viz_dir)
        self.run_name = run_name
        self.keep_dashboards = keep_dashboards
        self.display_samples = display_samples
        self.json_interval = json_interval
        self.json_growth = json_growth
        self.history = history if history is not None else MetricsHistory()
        self.samples: deque[dict] = deque(maxlen=MAX_SAMPLES)
        self.clock = clock
        self._json_at: float | None = None
        self._json_rows = 0
        self._json_layout: JsonLayout | None = None
        self._dashboard: dashboard.Dashboard | None = None  # one figure, updated for each dashboard
        self._samples_at: float | None = None
        self._samples_seen = self._samples_written = 0
        self.json_writes = 0
        self._events_offset = 0  # events.jsonl read so far, for the marks
        self._marks: list[tuple[int, str]] = []

    def add(self, columns: dict[str, np.ndarray] | None, samples: Iterable[dict]) -> None:
        if columns is not None:
            self.history.extend_columns(columns)
        for s in samples:
            self.samples.append(s)
            self._samples_seen += 1

    def handle(self, req: DrawRequest, notify: Callable[..., None]) -> None:
        """Draw and/or export for one request. Never raises: failures are reported, the previous
        files stay in place, and the next request tries again."""
        steps = ([self.draw] if req.draw and req.rows else []) + [self.export_json]
        for step in steps:
            try:
                step(req, notify)
            except Exception as exc:  # a bug here must not end training: report it with its traceback
                notify("error", f"{step.__name__} failed: {type(exc).__name__}: {exc}", traceback.format_exc())

    def prepare(self) -> None:
        """Import matplotlib and lay out the figure now (~0.7 s of CPU), before the first draw: the
        dashboard process does it while the trainer is still loading data, so the first dashboard
        costs what the later ones cost. A failure here is left for the first draw to report."""
        with contextlib.suppress(Exception):
            self._dashboard = self._dashboard or dashboard.Dashboard()

    def draw(self, req: DrawRequest, notify) -> None:
        columns = self.history.slice(0, req.rows, dashboard.DASHBOARD_COLUMNS)
        last = int(columns["steps"][-1])
        shown = [s for s in self.samples if s["step"] <= last]
        if self._dashboard is None:
            self._dashboard = dashboard.Dashboard()
        png = dashboard.render_png(columns, shown, self.run_name, self.display_samples, reuse=self._dashboard,
                                   marks=self._read_marks())
        if req.periodic and self._write(self.viz_dir / step_png(last), png, "dashboard", notify):
            prune_dashboards(self.viz_dir, self.keep_dashboards)
        self._write(self.viz_dir / LATEST_PNG, png, "dashboard", notify)

    def _read_marks(self) -> list[tuple[int, str]]:
        """Setting changes and guard actions so far, reading only what events.jsonl gained."""
        path = self.viz_dir / EVENTS_FILE
        if path.exists() and path.stat().st_size > self._events_offset:
            rows, self._events_offset = read_jsonl(path, self._events_offset)
            self._marks += timeline_marks([r for r in rows if isinstance(r, dict)])
        return self._marks

    def _write(self, path: Path, data: bytes | Callable[[IO[bytes]], None], kind: str, notify) -> bool:
        try:
            atomic_write(path, data)
        except OSError as exc:  # disk full, permissions: the previous file stays, training goes on
            notify("error", f"cannot write {path}: {exc.strerror or exc}")
            return False
        notify(kind, str(path))
        return True

    def json_due(self, rows: int) -> bool:
        if rows <= self._json_rows:
            return False
        if self._json_at is None:
            return True
        return (self.clock() - self._json_at >= self.json_interval
                and rows >= self._json_rows * (1.0 + self.json_growth))

    def _export_metrics(self, rows: int, notify) -> None:
        path = self.viz_dir / METRICS_JSON
        layout, kept = self._json_layout, None
        with contextlib.ExitStack() as stack:
            with contextlib.suppress(OSError):
                if layout is not None and layout.rows <= rows and file_identity(path) == layout.identity:
                    kept = (stack.enter_context(open(path, "rb")), layout)
            written: list[JsonLayout] = []
            if not self._write(path, lambda fh: written.append(write_metrics_history(fh, self.history, rows, kept)),
                               "json", notify):
                self._json_layout = None  # write the whole file next time
                return
        self._json_layout = written[0]
        with contextlib.suppress(OSError):
            self._json_layout.identity = file_identity(path)
        self._json_at, self._json_rows = self.clock(), rows

    def export_json(self, req: DrawRequest, notify) -> None:
        rows, force = req.rows, req.final
        if (force and rows != self._json_rows) or self.json_due(rows):
            self._export_metrics(rows, notify)
            self.json_writes += 1
        fresh = self._samples_seen != self._samples_written
        if fresh and (force or self._samples_at is None or self.clock() - self._samples_at >= self.json_interval):
            try:
                # the seed's fields; "kind" only where it says something (a prompt's answer)
                write_json(self.viz_dir / SAMPLES_JSON, [{k: v for k, v in s.items() if k != "kind" or v != "sample"}
                                                         for s in self.samples], indent=1)
            except OSError as exc:
                notify("error", f"cannot write {self.viz_dir / SAMPLES_JSON}: {exc.strerror or exc}")
                return
            self._samples_at, self._samples_written = self.clock(), self._samples_seen
            notify("json", str(self.viz_dir / SAMPLES_JSON))


# ---- the dashboard process -----------------------------------------------------------------------
def _quiet_child(log_file: str | None) -> None:
    """The process shares the terminal: send its logs, warnings and any C-level output to the run's
    log file (or nowhere), so nothing can tear the app's screen."""
    # The trainer comes first when the cores are busy. Not SCHED_IDLE: on a machine another job
    # keeps saturated it starved the final dashboard, and with it the end of the run (measured).
    with contextlib.suppress(OSError):
        os.nice(10)
    target = os.open(log_file or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for fd in (1, 2):
        os.dup2(target, fd)
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s[viz]: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)


def serve_dashboards(conn, writer_args: dict, log_file: str | None = None) -> None:
    """Entry point of the dashboard process: apply each update, answer with the files written."""
    _quiet_child(log_file)
    writer = DashboardWriter(**writer_args)
    writer.prepare()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the trainer is gone
            return
        if message is None:
            return
        columns, samples, req = message
        writer.add(columns, samples)
        cpu = time.process_time()
        writer.handle(req, lambda *report: conn.send(report))
        conn.send(("done", time.process_time() - cpu))


class ProcessDied(RuntimeError):
    pass


class _ProcessBackend:
    """Sends each request with the rows and samples the process has not seen yet."""

    def __init__(self, writer_args: dict):
        ctx = mp.get_context("spawn")  # never fork: the trainer process runs torch's threads
        self._conn, child = ctx.Pipe()
        log_file = next((h.baseFilename for h in logging.getLogger().handlers
                         if isinstance(h, logging.FileHandler)), None)
        self._proc = ctx.Process(target=serve_dashboards, args=(child, writer_args, log_file),
                                 name="neurogen-viz", daemon=True)
        self._proc.start()
        child.close()
        self._sent_rows = 0

    def run(self, history: MetricsHistory, samples: list[dict], req: DrawRequest, notify) -> float | None:
        """Returns the CPU seconds the process spent on the request."""
        columns = history.slice(self._sent_rows, req.rows) if req.rows > self._sent_rows else None
        try:
            self._conn.send((columns, samples, req))
            self._sent_rows = max(self._sent_rows, req.rows)
            while True:
                while not self._conn.poll(0.5):
                    if not self._proc.is_alive():
                        raise ProcessDied(f"the dashboard process exited (code {self._proc.exitcode})")
                report = self._conn.recv()
                if report[0] == "done":
                    return report[1] if len(report) > 1 else None
                notify(*report)
        except (EOFError, OSError) as exc:
            raise ProcessDied(f"the dashboard process stopped answering ({exc})") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        self._conn.close()


class _ThreadBackend:
    """Draws on the dispatcher thread, reading the manager's own history (no copy)."""

    def __init__(self, writer_args: dict, history: MetricsHistory, samples: Iterable[dict] = ()):
        self.writer = DashboardWriter(history=history, **writer_args)
        self.writer.add(None, samples)

    def run(self, history: MetricsHistory, samples: list[dict], req: DrawRequest, notify) -> float:
        cpu = time.thread_time()
        self.writer.add(None, samples)
        self.writer.handle(req, notify)
        return time.thread_time() - cpu

    def close(self) -> None:
        pass
