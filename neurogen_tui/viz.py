"""VisualizationManager: the seed's PNG dashboards and JSON exports, off the training thread.

On the training thread, an event costs an append to the columnar history (and, every viz_interval
steps, setting a draw request): nothing is drawn or serialised there. A dispatcher thread takes the
newest request (a waiting request is replaced, never queued) and hands it to the drawing side, by
default a separate 'spawn' process, because matplotlib holds the GIL while it draws and a drawing
thread would stall the training loop's Python code. The process gets only what is new since its
last request: history rows as numpy arrays and sample dicts, and it keeps its own copy.

Files, all under <run-dir>/training_viz/ and all written atomically (temporary file, then rename):
  training_step_XXXXXX.png  every viz_interval steps; the newest keep_dashboards are kept (0: all)
  training_latest.png       the newest complete dashboard
  metrics_history.json      {"steps": [...], "loss": [...], ...}: rewritten at most once a minute
                            after 5% growth, and complete at the end of the run
  text_samples.json         the last MAX_SAMPLES samples (samples.jsonl holds all of them)

Drawing costs CPU (about a second a dashboard), which on a machine whose cores are all busy
training comes out of training: a dashboard every 50 steps of a fast model on a 2-core box took
~10% of its speed. So when the machine is saturated (the cores it kept busy between two draws,
from /proc/stat, within half a core of its core count), periodic dashboards keep to `cpu_budget`
of the training time: after a draw that took c CPU-seconds, the next periodic one waits until the
steps since have trained for c / cpu_budget seconds (it then shows the newest step). Measured
against training time, as the samples' budget is: a paused run owes nothing, and a trainer whose
parallel ops span every core loses about the whole c (its threads wait at each op's end for the
one the drawing delayed), not c / cores: a budget of the machine's CPU let dashboards cost a
2-core trainer twice the budget. On a GPU box, whose cores are
mostly idle, nothing waits. (The 1-minute load average was used first: it lags a run's start by a
minute, so a short run on a busy box drew every dashboard.) Explicit requests
(`d`, the control channel) and the final dashboard never wait.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

import numpy as np

from . import dashboard
from .dashboard import LATEST_FILE, prune_dashboards, step_file
from .events import TextSample, TrainingMetrics
from .files import atomic_write, write_json
from .history import MetricsHistory
from .render import (METRICS_JSON, SAMPLES_JSON, JsonLayout, file_identity, load_history, load_samples,
                     write_metrics_history)

log = logging.getLogger(__name__)

MAX_SAMPLES = 1000  # text_samples.json stays bounded; samples.jsonl is the full record

Listener = Callable[[str, str], None]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class MachineLoad:
    """How many cores the whole machine kept busy between two calls of `busy_cores`, from
    /proc/stat's first line (the 1-minute load average where /proc/stat cannot be read)."""

    MIN_WINDOW = 0.2  # seconds: a shorter window says little; the previous figure stands

    def __init__(self):
        self._mark = self._read()
        self._last = 0.0

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as fh:
                ticks = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return time.monotonic(), sum(ticks[:8]) - idle, sum(ticks[:8])  # guest time is inside user

    def busy_cores(self) -> float:
        now = self._read()
        if now is None or self._mark is None:
            return os.getloadavg()[0]
        if now[0] - self._mark[0] >= self.MIN_WINDOW and now[2] > self._mark[2]:
            self._last = _cores() * (now[1] - self._mark[1]) / (now[2] - self._mark[2])
            self._mark = now
        return self._last

    def mark(self) -> None:
        """Start the next window here (after a draw, so the draw's own CPU is not counted)."""
        self._mark = self._read()


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
        self.json_seconds = 0.0  # total time spent on metrics_history.json (the benchmark reads it)
        self.json_writes = 0

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
        png = dashboard.render_png(columns, shown, self.run_name, self.display_samples, reuse=self._dashboard)
        if req.periodic and self._write(self.viz_dir / step_file(last), png, "dashboard", notify):
            prune_dashboards(self.viz_dir, self.keep_dashboards)
        self._write(self.viz_dir / LATEST_FILE, png, "dashboard", notify)

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
            started = time.perf_counter()
            self._export_metrics(rows, notify)
            self.json_seconds += time.perf_counter() - started
            self.json_writes += 1
        fresh = self._samples_seen != self._samples_written
        if fresh and (force or self._samples_at is None or self.clock() - self._samples_at >= self.json_interval):
            try:
                write_json(self.viz_dir / SAMPLES_JSON, list(self.samples), indent=1)
            except OSError as exc:
                notify("error", f"cannot write {self.viz_dir / SAMPLES_JSON}: {exc.strerror or exc}")
                return
            self._samples_at, self._samples_written = self.clock(), self._samples_seen
            notify("json", str(self.viz_dir / SAMPLES_JSON))


def sample_dict(s: TextSample) -> dict:
    """text_samples.json's record: text exactly as produced."""
    return {"step": s.step, "input": s.input, "output": s.output, "accuracy": s.accuracy, "target": s.target}


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


# ---- the training side -----------------------------------------------------------------------------
class VisualizationManager:
    """Event subscriber for the dashboards and JSON exports; see the module docstring.

    `mode` is "process" (default_mode: drawing never competes with training for the GIL) or
    "thread". Listeners get (kind, path) after each file written, kind "dashboard" or "json", or
    ("error", message) when a write fails; they are called on the dispatcher thread.
    """

    default_mode = "process"

    def __init__(self, viz_dir: str | Path, run_name: str = "run", viz_interval: int = 50,
                 keep_dashboards: int = 20, display_samples: int = 5, history: MetricsHistory | None = None,
                 samples: Iterable[TextSample] = (), mode: str | None = None, json_interval: float = 60.0,
                 cpu_budget: float = 0.0):
        mode = mode or self.default_mode
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread' (got {mode!r})")
        self.viz_dir = Path(viz_dir)
        self.viz_dir.mkdir(parents=True, exist_ok=True)
        self.viz_interval = viz_interval
        self.json_interval = json_interval
        self.cpu_budget = cpu_budget  # share of training time periodic dashboards may draw while every core is busy
        self._trained = 0.0  # seconds of training (the steps' step_time) seen so far
        self._owed = 0.0  # training seconds before which a periodic draw waits (the budget)
        self._counted: DrawRequest | None = None  # the last request counted in `throttled`
        self._json_turn_at = time.monotonic() + json_interval  # a draw owed to the budget waits; JSON does not
        self._load = MachineLoad()  # measured from here to each draw's start
        self.throttled = 0  # periodic draws that waited for the budget
        self._said_throttled = False
        self.history = history if history is not None else MetricsHistory()
        self.samples: deque[TextSample] = deque(samples, maxlen=MAX_SAMPLES)
        self._samples_added = self._samples_sent = 0
        self._cond = threading.Condition()
        self._request: DrawRequest | None = None
        self._closing = False
        self._listeners: list[Listener] = []
        self._writer_args = dict(viz_dir=str(self.viz_dir), run_name=run_name, keep_dashboards=keep_dashboards,
                                 display_samples=display_samples, json_interval=json_interval)
        self._backend: _ProcessBackend | _ThreadBackend | None = None
        if mode == "process":
            try:
                self._backend = _ProcessBackend(self._writer_args)
                self._samples_added = len(self.samples)  # sent with the first request
            except (OSError, RuntimeError) as exc:
                log.warning("cannot start the dashboard process (%s); drawing in a thread", exc)
        if self._backend is None:
            self._backend = _ThreadBackend(self._writer_args, self.history, map(sample_dict, self.samples))
        self._thread = threading.Thread(target=self._dispatch_loop, name="viz-dispatch", daemon=True)
        self._thread.start()

    @classmethod
    def for_run(cls, cfg, resume_step: int | None = None, **kwargs) -> "VisualizationManager":
        """The manager for a run; a resumed run starts with its history and samples up to
        `resume_step`, so the dashboards show the whole run, and newer step dashboards go."""
        history, samples = MetricsHistory(), []
        if resume_step is not None:
            history = load_history(cfg.viz_dir, max_step=resume_step)
            samples = [TextSample(**{k: s[k] for k in ("step", "input", "target", "output", "accuracy")})
                       for s in load_samples(cfg.viz_dir, max_step=resume_step, limit=MAX_SAMPLES)]
        prune_dashboards(cfg.viz_dir, cfg.keep_dashboards, after_step=resume_step or 0)
        kwargs.setdefault("cpu_budget", cfg.viz_budget)
        return cls(cfg.viz_dir, cfg.display_name, cfg.viz_interval, cfg.keep_dashboards, cfg.display_samples,
                   history=history, samples=samples, **kwargs)

    # ---- called on the training thread: cheap ---------------------------------------------------
    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            self.history.append(vars(event))
            self._trained += event.step_time or 0.0
            if event.step % self.viz_interval == 0:
                self._submit(periodic=True)
        elif isinstance(event, TextSample):
            with self._cond:
                self.samples.append(event)
                self._samples_added += 1

    def request_draw(self) -> None:
        """Draw the dashboard now (training_latest.png only); safe from any thread; never waits
        for the CPU budget."""
        self._submit(periodic=False, now=True)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _submit(self, periodic: bool, now: bool = False) -> None:
        with self._cond:
            if self._closing:
                return
            waiting = self._request  # not drawn yet: replaced by this newer one, never queued
            self._request = DrawRequest(len(self.history), periodic=periodic or bool(waiting and waiting.periodic),
                                        now=now or bool(waiting and waiting.now))
            self._cond.notify()

    def close(self) -> None:
        """Final dashboard and JSON exports; returns once they are written. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._backend.close()

    # ---- the dispatcher thread --------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                if self._request is None and not self._closing:
                    self._cond.wait(timeout=self.json_interval)
                if self._must_wait(self._request):
                    left = self._json_turn_at - time.monotonic()
                    if left > 0:
                        self._cond.wait(timeout=left)
                        continue  # a newer request (a later step), a `d`, closing, or the JSON's turn
                    req = DrawRequest(len(self.history), draw=False)  # the draw waits on; the JSON does not
                else:
                    req, self._request = self._request, None
                closing = self._closing
                samples = self._take_new_samples()
            if closing:
                req = DrawRequest(len(self.history), periodic=True, final=True)
            elif req is None:  # nothing to draw for a while: give the JSON schedule its turn
                req = DrawRequest(len(self.history), draw=False)
            self._run(req, samples)
            self._json_turn_at = time.monotonic() + self.json_interval
            if closing:
                return

    def _take_new_samples(self) -> list[dict]:
        fresh = min(self._samples_added - self._samples_sent, len(self.samples))
        self._samples_sent = self._samples_added
        return [sample_dict(s) for s in list(self.samples)[len(self.samples) - fresh:]] if fresh else []

    def _must_wait(self, req: DrawRequest | None) -> bool:
        if req is None or self._closing or req.now or not req.draw or self._trained >= self._owed:
            return False
        if req is not self._counted:
            self._counted = req
            self.throttled += 1
        return True

    def _run(self, req: DrawRequest, samples: list[dict]) -> None:
        busy = self._load.busy_cores() if req.draw else 0.0  # training (and anything else) since the last draw
        try:
            cpu = self._backend.run(self.history, samples, req, self._notify)
        except ProcessDied as exc:  # carry on in this process rather than lose the dashboards
            self._notify("error", f"{exc}; drawing in the training process from now on")
            self._backend.close()  # reap it
            self._backend = _ThreadBackend(self._writer_args, self.history, map(sample_dict, list(self.samples)))
            cpu = self._backend.run(self.history, [], req, self._notify)
        if req.draw:
            self._load.mark()
        if req.draw and req.rows and cpu and self.cpu_budget > 0:
            self._budget(cpu, busy)

    def _budget(self, cpu: float, busy: float) -> None:
        """After a draw that took `cpu` seconds, while `busy` cores were kept busy before it: when
        every core is busy, the next periodic one waits until the steps since have trained for
        cpu / cpu_budget seconds."""
        cores = _cores()
        if busy < cores - 0.5:  # a spare core draws for free
            self._owed = 0.0
            return
        pause = cpu / self.cpu_budget
        self._owed = self._trained + pause
        if not self._said_throttled and pause > 1.0:
            self._said_throttled = True
            self._notify("info", f"the machine's {cores} cores are busy training: a dashboard takes {cpu:.1f} s of "
                                 f"CPU, so periodic dashboards come at most every {pause:.0f} s of training "
                                 f"({self.cpu_budget:.1%} of training time, --viz-budget); the final one and `d` never wait")

    def _notify(self, kind: str, payload: str, detail: str = "") -> None:
        if kind == "error":
            log.error("%s%s", payload, f"\n{detail}" if detail else "")
        elif kind == "info":
            log.info("dashboards: %s", payload)
        else:
            log.debug("wrote %s", payload)
        for fn in list(self._listeners):
            try:
                fn(kind, payload)
            except Exception:
                log.exception("viz listener %r failed", fn)
