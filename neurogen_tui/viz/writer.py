"""VisualizationManager: the seed's PNG dashboards and JSON exports, off the training thread.

On the training thread, an event costs an append to the columnar history (and, every viz_interval
steps, setting a draw request): nothing is drawn or serialised there. A dispatcher thread takes the
newest request (a waiting request is replaced, never queued, and the log says once that step
dashboards are being thinned; with `draw_each`, as --test asks, the training thread waits for the
one drawing instead, so every interval gets its dashboard) and hands it to the drawing side
(draw.py), by default a separate 'spawn' process, because matplotlib holds the GIL while it
draws and a drawing thread would stall the training loop's Python code.

Files, all under <run-dir>/training_viz/ and all written atomically (temporary file, then rename):
  training_step_XXXXXX.png  every viz_interval steps; the newest keep_dashboards are kept (0: all)
  training_latest.png       the newest complete dashboard
  metrics_history.json      {"steps": [...], "loss": [...], ...}: rewritten at most once a minute
                            after 5% growth, and complete at the end of the run
  text_samples.json         the last MAX_SAMPLES samples (samples.jsonl holds all of them)

Drawing costs CPU (about a second a dashboard), which on a machine whose cores are all busy
training comes out of training: a dashboard every 50 steps of a fast model on a 2-core box took
~10% of its speed. So while the machine has no spare core (machine.MachineLoad), periodic
dashboards keep to `cpu_budget` of the training time (core/allowance.py): after a draw that took c
CPU-seconds, the next periodic one waits until the steps since have trained for c / cpu_budget
seconds, and then shows the newest step. A trainer whose parallel ops span every core loses about
the whole c (its threads wait at each op's end for the one the drawing delayed), so the budget is
of training time, not of the machine's CPU. On a GPU box, whose cores are mostly idle, nothing
waits. Explicit requests (`d`, the control channel) and the final dashboard never wait.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable

from ..core.allowance import Allowance
from ..core.events import SettingChanged, TextSample, TrainingMetrics
from ..core.machine import MachineLoad
from ..run.history import MetricsHistory
from ..run.reader import load_history, load_samples
from .draw import MAX_SAMPLES, DrawRequest, ProcessDied, _ProcessBackend, _ThreadBackend
from .figure import prune_dashboards

log = logging.getLogger(__name__)

Listener = Callable[[str, str], None]


class VisualizationManager:
    """Event subscriber for the dashboards and JSON exports; see the module docstring.

    `mode` is "process" (default_mode: drawing never competes with training for the GIL) or
    "thread". Listeners get (kind, path) after each file written, kind "dashboard" or "json", or
    ("error", message) when a write fails; they are called on the dispatcher thread.
    """

    default_mode = "process"
    discard = False  # draw and write nothing more: the run directory is another run's now

    def __init__(self, viz_dir: str | Path, run_name: str = "run", viz_interval: int = 50,
                 keep_dashboards: int = 20, display_samples: int = 5, history: MetricsHistory | None = None,
                 samples: Iterable[TextSample] = (), mode: str | None = None, json_interval: float = 60.0,
                 cpu_budget: float = 0.0, draw_each: bool = False):
        mode = mode or self.default_mode
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread' (got {mode!r})")
        self.viz_dir = Path(viz_dir)
        self.viz_dir.mkdir(parents=True, exist_ok=True)
        self.viz_interval = viz_interval
        self.json_interval = json_interval
        # periodic draws keep to this share of the training time while every core is busy
        self.allowance = Allowance(cpu_budget)
        self._counted: DrawRequest | None = None  # the last request counted in `throttled`
        self._json_turn_at = time.monotonic() + json_interval  # a draw owed to the budget waits; JSON does not
        self._load = MachineLoad()  # measured from here to each draw's start
        self.throttled = 0  # periodic draws that waited for the allowance
        self._said_throttled = self._said_thinned = False
        self._busy = False  # every core was busy at the last draw's start: the budget's business, not thinning
        self.draw_each = draw_each  # every periodic request is drawn: the training thread waits for it
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
            self._backend = _ThreadBackend(self._writer_args, self.history, map(TextSample.to_dict, self.samples))
        self._thread = threading.Thread(target=self._dispatch_loop, name="viz-dispatch", daemon=True)
        self._thread.start()

    @classmethod
    def for_run(cls, cfg, resume_step: int | None = None, **kwargs) -> "VisualizationManager":
        """The manager for a run; a resumed run starts with its history and samples up to
        `resume_step`, so the dashboards show the whole run, and newer step dashboards go."""
        history, samples = MetricsHistory(), []
        if resume_step is not None:
            history = load_history(cfg.viz_dir, max_step=resume_step)
            samples = [TextSample(**{k: s[k] for k in ("step", "input", "target", "output", "accuracy")},
                                  kind="prompt" if s.get("kind") == "prompt" else "sample")
                       for s in load_samples(cfg.viz_dir, max_step=resume_step, limit=MAX_SAMPLES)]
        prune_dashboards(cfg.viz_dir, cfg.keep_dashboards, after_step=resume_step or 0)
        kwargs.setdefault("cpu_budget", cfg.viz_budget)
        kwargs.setdefault("draw_each", cfg.test)  # the seed's --test: a dashboard every 2 steps, each one
        return cls(cfg.viz_dir, cfg.display_name, cfg.viz_interval, cfg.keep_dashboards, cfg.display_samples,
                   history=history, samples=samples, **kwargs)

    # ---- called on the training thread: cheap ---------------------------------------------------
    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            self.history.append(vars(event))
            self.allowance.earn(event.step_time or 0.0)
            if event.step % self.viz_interval == 0:
                self._submit(periodic=True)
        elif isinstance(event, TextSample):
            with self._cond:
                self.samples.append(event)
                self._samples_added += 1
        elif isinstance(event, SettingChanged) and "viz_interval" in event.changes:  # set live
            self.viz_interval = int(event.changes["viz_interval"][1])

    def request_draw(self) -> None:
        """Draw the dashboard now (training_latest.png only); safe from any thread; never waits
        for the CPU budget."""
        self._submit(periodic=False, now=True)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _submit(self, periodic: bool, now: bool = False) -> None:
        with self._cond:
            while periodic and self.draw_each and self._request is not None and not self._closing:
                self._cond.wait(0.5)  # the dispatcher takes the waiting one first
            if self._closing:
                return
            waiting = self._request  # not drawn yet: replaced by this newer one, never queued
            if periodic and waiting is not None and waiting.periodic and waiting is not self._counted \
                    and not self._busy and not self._said_thinned:  # the CPU budget has its own message
                self._said_thinned = True
                # one short line (the app's log pane is ~70 columns at 80x24); the docstring says more
                self._notify("info", "step dashboards thinned: a draw outlasts --viz-interval")
            self._request = DrawRequest(len(self.history), periodic=periodic or bool(waiting and waiting.periodic),
                                        now=now or bool(waiting and waiting.now))
            self._cond.notify_all()

    def close(self) -> None:
        """Final dashboard and JSON exports; returns once they are written. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
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
                    self._cond.notify_all()  # a training thread waiting to submit (draw_each)
                closing = self._closing
                samples = self._take_new_samples()
            if closing and req is not None and req.periodic and req.rows < len(self.history):
                self._run(req, samples)  # a step dashboard still owed is drawn before the final one
                samples = []
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
        return [s.to_dict() for s in list(self.samples)[len(self.samples) - fresh:]] if fresh else []

    def _must_wait(self, req: DrawRequest | None) -> bool:
        if req is None or self._closing or req.now or not req.draw or self.allowance.ready():
            return False
        if req is not self._counted:
            self._counted = req
            self.throttled += 1
        return True

    def _run(self, req: DrawRequest, samples: list[dict]) -> None:
        if self.discard:  # the run directory is another run's now (session.RunParts.disown)
            return
        saturated = self._load.saturated() if req.draw else False  # training (and anything else) since the last draw
        if req.draw:
            self._busy = saturated
        try:
            cpu = self._backend.run(self.history, samples, req, self._notify)
        except ProcessDied as exc:  # carry on in this process rather than lose the dashboards
            self._notify("error", f"{exc}; drawing in the training process from now on")
            self._backend.close()  # reap it
            self._backend = _ThreadBackend(self._writer_args, self.history, map(TextSample.to_dict, list(self.samples)))
            cpu = self._backend.run(self.history, [], req, self._notify)
        if req.draw:
            self._load.mark()
        if req.draw and req.rows and cpu and self.allowance.limited:
            self._charge(cpu, saturated)

    def _charge(self, cpu: float, saturated: bool) -> None:
        """A draw took `cpu` seconds: while every core is busy the allowance pays for it (the next
        periodic draw waits cpu / share seconds of training); a spare core draws for free."""
        if not saturated:
            self.allowance.refill()
            return
        self.allowance.spend(cpu)
        pause = self.allowance.wait()
        if not self._said_throttled and pause > 1.0:
            self._said_throttled = True
            # every core busy training: one short line (the log pane has ~69 columns at 80x24)
            self._notify("info", f"step dashboards at most every {pause:.0f} s (--viz-budget "
                                 f"{self.allowance.share:.1%})")

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
