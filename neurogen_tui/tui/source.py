"""Where the screen's events come from: one RunSource interface, two transports.

A source is a thread-safe queue of events, a blocking `produce()` that the app runs in a thread
worker, and the commands the keys send (each returns at once with a line for the log pane). The
app drains the queue on a timer, so producers never touch widgets and a trainer doing thousands of
steps a second costs the screen one batch per tick.

  InProcessSource  the trainer runs in produce(), on the app's worker thread; its events come
                   from the EventBus (the CPU default: the trainer shares the app's GIL)
  RunDirSource     (rundir.py) a run directory followed through its files: read-only (watch),
                   with the run's control socket (attach), or owning the trainer this process
                   started as a child (the app on a GPU box)

What a source can do is declared in its Capabilities; they decide the keys, the help text, what a
signal does and whether the screen keeps to its CPU budget. The app never asks for a class.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from ..core.events import LogMessage, RunFailed
from ..run.history import SOURCE_FIELD
from ..run.layout import EXIT_FAILED, EXIT_OK, LATEST_PNG, RunState
from ..train.config import ConfigError, live_changes
from ..train.prompts import prompt_line

log = logging.getLogger(__name__)


EVERY_REQUEST = frozenset({"pause", "stop", "checkpoint", "draw", "set", "prompt"})


@dataclass(frozen=True)
class Capabilities:
    control: bool = False  # p, c, d and q reach the run (without: q closes the viewer)
    can: frozenset = EVERY_REQUEST  # what the run takes (a logging-API run declares less): the keys follow
    owns: bool = False  # this process started the run: q, Ctrl+C, SIGTERM stop it; SIGHUP follows --on-hangup
    detach: bool = False  # x closes the screen and leaves the run going
    shares_gil: bool = False  # the trainer is a thread of this process: the screen's CPU is always training's


READ_ONLY = Capabilities()


@dataclass
class SourceDone:
    """The producer has returned: nothing more will arrive. `exit_code` is what the app returns."""

    exit_code: int


@dataclass
class MetricsRows:
    """Many metrics rows at once, for sources that read them in bulk: MetricsHistory columns (built
    off the UI thread, appended in one go) and the last rows as dicts for the header and ETA."""

    columns: dict
    tail: list[dict]
    trained: float = 0.0  # seconds the rows trained for (their step_time): what the screen's budget earns
    started: float | None = None  # when the first of them began (the run's start, where they are all of it)
    replace: bool = False  # the whole history, read behind a first screen that showed only its last rows


@dataclass
class HistoryReset:
    """The source was rewritten (a resumed or new run): forget what was shown."""

    samples_only: bool = False


@dataclass
class RunInfo:
    """What a source learnt about the run other than from RunStarted (run.json, the channel)."""

    run_name: str = ""
    device: str = ""
    total: int | None = None
    started_at: float | None = None  # run.json's: the viewer's clock is the run's, not its own
    ended_at: float | None = None


def trained_seconds(rows: list[dict]) -> float:
    return sum(float(r.get("step_time") or 0.0) for r in rows)


class RunSource:
    """The interface the app talks to. `put` is safe from any thread and quick (it may run on the
    trainer's thread). The defaults are a read-only source's."""

    caps = READ_ONLY
    title = "neurogen-tui"
    run_dir = None  # paths under it are shown relative to it

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
        """Blocking body run in a thread worker; puts events, ends with SourceDone."""
        raise NotImplementedError

    def close(self) -> None:
        """The screen is going away: stop producing (a trainer of this process stops with it)."""

    def detach(self) -> None:
        """The screen closes and the run goes on (x): stop producing, leave the run alone."""
        self.close()

    # ---- the keys -------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return False

    def _refuse(self, what: str) -> str:
        return f"read-only: {what} is for the terminal that runs the training"

    def toggle_pause(self) -> str:
        return self._refuse("pause")

    def checkpoint(self) -> str:
        return self._refuse("checkpoint")

    def draw(self) -> str:
        return self._refuse("draw")

    def stop(self) -> str:
        self.close()
        return "closing the viewer (the run itself goes on)"

    def prompt(self, line: str) -> str:
        """A prompt for the model to continue at the next step boundary (config.prompt_line)."""
        return self._refuse("prompting the model")

    def set_settings(self, texts: dict) -> str:
        """Live settings, as text (config.live_changes checks them), for the next step boundary."""
        return self._refuse("changing settings")

    def settings(self) -> dict:
        """The live settings as they are now, for the settings dialog ({} where unknown)."""
        return {}


class InProcessSource(RunSource):
    """Trains in the calling thread (the app's worker) and queues the trainer's events. `run` is
    the composed run (session.RunParts: its trainer, bus and dashboards).

    After the trainer returns, run.close() writes the final dashboard and JSON (off the UI thread),
    then SourceDone carries the exit status: 0 finished or stopped, 1 failed."""

    caps = Capabilities(control=True, owns=True, detach=True, shares_gil=True)

    def __init__(self, run) -> None:
        super().__init__()
        self.trainer, self.viz, self._finish, self._bus = run.trainer, run.viz, run.close, run.bus
        self.training: threading.Thread | None = None  # the trainer's own thread (it outlives a detached screen)
        self._released = threading.Event()  # produce() returns: the run ended, or the screen let it go
        self.title, self.run_dir = run.trainer.cfg.display_name, run.trainer.cfg.run_dir
        self._last_step_png = float("-inf")
        self._produced = False
        self._seed_from(run.viz)
        run.bus.subscribe(self.put)
        if run.viz is not None:
            run.viz.add_listener(self._on_viz)

    def _seed_from(self, viz) -> None:
        """A resumed run shows its whole history: the VisualizationManager has loaded it (up to the
        checkpoint's step) before the trainer starts, so a copy now is consistent."""
        history = getattr(viz, "history", None)
        if history is None or not len(history):
            return
        columns = history.slice()
        last = {SOURCE_FIELD.get(name, name): values[-1].item() for name, values in columns.items()}
        self.put(MetricsRows(columns, [{k: v for k, v in last.items() if v == v}]))  # NaN: not recorded
        for sample in list(viz.samples):
            self.put(sample)

    def _on_viz(self, kind: str, detail: str) -> None:
        """Called on the dashboard thread. Periodic JSON rewrites are not news, nor the copy to
        training_latest.png right after a training_step_*.png."""
        now = time.monotonic()
        if kind in ("error", "info"):
            self.put(LogMessage(kind, f"dashboard: {detail}"))
            return
        if kind == "json" and self.trainer.state not in (RunState.STOPPING, RunState.FINISHED, RunState.FAILED):
            return
        if kind == "dashboard":
            if detail.endswith(LATEST_PNG) and now - self._last_step_png < 2.0:
                return
            if not detail.endswith(LATEST_PNG):
                self._last_step_png = now
        self.put(LogMessage("info", f"{kind} written: {detail}"))

    def produce(self) -> None:
        """Trains on a thread of its own and waits for it, or for the screen to let it go (x): the
        app's worker must end for the app to close, the run must not."""
        if self._produced:
            raise RuntimeError("InProcessSource.produce() runs once: a trainer is not re-entrant")
        self._produced = True
        self.training = threading.Thread(target=self._train, name="trainer")
        self.training.start()
        self._released.wait()

    def detach(self) -> None:
        self._bus.unsubscribe(self.put)  # nobody drains the queue any more: the run's display takes over
        self.put(SourceDone(EXIT_OK))
        self._released.set()

    def _train(self) -> None:
        code = EXIT_OK
        try:
            code = EXIT_FAILED if isinstance(self.trainer.run(), RunFailed) else EXIT_OK
        except BaseException as exc:  # run() never raises; this guards a bug in it
            log.exception("trainer crashed outside its loop")
            self.put(RunFailed(getattr(self.trainer, "step", 0), f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            code = EXIT_FAILED
        try:
            self._finish()
        except Exception as exc:
            log.exception("writing the final exports failed")
            self.put(LogMessage("error", f"final exports failed: {type(exc).__name__}: {exc}"))
        self.put(SourceDone(code))
        self._released.set()

    def close(self) -> None:
        self.trainer.request_stop()  # the worker thread must end, or the process cannot exit

    @property
    def paused(self) -> bool:
        return self.trainer.paused

    def toggle_pause(self) -> str:
        if self.trainer.stop_requested:
            return "stopping: pause has no effect"
        self.trainer.toggle_pause()
        return "pause requested: the trainer stops at the end of this step" if self.trainer.paused else "resumed"

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

    def prompt(self, line: str) -> str:
        try:
            text, options = prompt_line(line, self.trainer.cfg.prompt_tokens)
        except ConfigError as exc:
            return str(exc)
        self.trainer.request_prompt(text, options)
        return "prompt queued: answered at the end of this step"

    def set_settings(self, texts: dict) -> str:
        try:
            changes = live_changes(self.trainer.cfg, texts)
        except ConfigError as exc:
            return f"not changed: {exc}"
        self.trainer.request_changes(changes, "app")
        return "settings requested: they take effect at the end of this step"

    def settings(self) -> dict:
        return self.trainer.steer.settings()
