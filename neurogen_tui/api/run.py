"""A run of any training loop, written to the same run directory our trainer writes, and steerable
from `attach` and `ctl` (steer.py). Shaped like wandb's, so a script changes its import and little
else:

    import neurogen_tui as ngt
    run = ngt.init(project="sweep", config={"lr": 3e-4})
    for step in range(steps):
        ...
        run.log({"train/loss": loss, "lr": lr})
        if run.should_stop:
            break
    run.finish()

`log()` only hands the row to a queue on the caller's thread (a writer thread does the rest every
quarter second: writer.py); an exception in it is never the loop's (a warning instead). A crash of
the script marks the run failed with its traceback; SIGKILL leaves it `stale` with every file whole.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Callable

from ..core.events import EventBus, RunFailed, RunFinished, RunStarted, TextSample
from ..core.parse import ConfigError
from ..notify.setup import Notifications
from ..run.info import Config as ConfigFile
from ..run.layout import RUNS_HOME, EndReason, RunLayout, RunState
from ..run.lock import RunLock
from ..run.recorder import MetricsRecorder
from ..run.timeline import Timeline
from .steer import LoopControl
from .writer import RunWriter, flatten, warn

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """A call the logging API cannot do what it was asked with (a bad argument to init)."""


class RunConfig(dict):
    """`run.config`: the run's settings as given, by key or attribute (`config.lr`), saved flat in
    config.json (nested dicts as `a.b`) and rewritten when it changes, so `ls` and the workspace's
    diff see it."""

    def __init__(self, values: dict | None = None) -> None:
        super().__init__(values or {})
        self._file: ConfigFile | None = None

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.flush()

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        self.flush()

    def flat(self) -> dict:
        return {k.replace("/", "."): v for k, v in flatten(dict(self)).items()}

    def flush(self) -> None:
        if self._file is not None:
            self._file.values = {**self._file.values, **self.flat()}
            self._file.write()


class Run:
    """One run of a training loop. Made by `neurogen_tui.init()`; see the module docstring."""

    def __init__(self, run_dir: str | os.PathLike | None = None, project: str | None = None, name: str | None = None,
                 config: dict | None = None, resume: bool | str | None = None, total_steps: int | None = None,
                 serve: Callable | None = None, notify: dict | None = None) -> None:
        self.dir = Path(run_dir) if run_dir else _new_dir(project, name)
        layout = RunLayout(self.dir)
        resuming = bool(resume) and layout.metrics.exists()
        if not resuming and (layout.metrics.exists() or layout.run_file.exists()):
            raise UsageError(f"{self.dir} already holds a run: init(resume=True) continues it, or give another run_dir")
        if resume == "must" and not resuming:
            raise UsageError(f"init(resume='must'): there is no run in {self.dir} to continue")
        try:
            self._lock = RunLock(self.dir)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        self.name = name or self.dir.name
        self._log_file = _log_to(layout.log)  # our own records (not the loop's logging): neurogen-tui.log
        self.config = RunConfig(config)
        self.summary: dict = {}
        self.bus = EventBus()
        self.control = LoopControl(self.bus)
        self._queue: deque = deque()
        self._warned: set[str] = set()
        self._next = 0
        self.finished = False
        self._finish_lock = threading.Lock()
        last = self._last_step(layout) if resuming else None
        recorder = MetricsRecorder(layout.viz, resume_step=last, say=lambda text, level: warn(text))
        self.timeline = Timeline(layout.viz, resumed=resuming)
        self.bus.subscribe(self.timeline)
        self.bus.subscribe(recorder)  # the answers to prompts are samples
        file = ConfigFile(layout.config, self.config.flat())
        self.config._file = file
        self.service = serve(self.dir, self.name, total_steps, file, self.control, self.bus) if serve else None
        record = self.service.record if self.service is not None else None
        self._writer = RunWriter(self._queue, recorder, record)
        self.notifications = Notifications(self.bus, self.name, self.dir, step=lambda: self._next,
                                           paused=lambda: self.control.state == RunState.PAUSED,
                                           last_loss=lambda: self._writer.last_loss, **(notify or {}))
        if last is not None:
            self._next = last + 1
        self.bus.publish(RunStarted("", "your loop", 0, self._next, total_steps,
                                    resumed_from=str(self.dir) if resuming else None))
        self.control._set_state(RunState.RUNNING)
        self._previous_hook = sys.excepthook
        sys.excepthook = self._crashed
        atexit.register(self._at_exit)

    # ---- what a loop calls -------------------------------------------------------------------
    def log(self, data: dict, step: int | None = None, commit: bool | None = None) -> None:
        """Metrics of one step (`step`: the next one when not given). Cheap: a copy of the dict
        onto a queue; a pause, a checkpoint or a setting asked for happens here, at the loop's step
        boundary. Never raises into the loop."""
        try:
            if step is None:
                step = self._next
            self._next = step + 1
            self._queue.append((step, dict(data), time.time()))
            if self.control.waiting:
                self.control.boundary(step)
        except Exception as exc:  # the loop's training is never ours to stop
            self._warn_once(f"log() could not take this call ({type(exc).__name__}: {exc})")

    def log_text(self, input: str, output: str, target: str | None = None, step: int | None = None) -> None:
        """A text sample for the samples table: what the model was given, what it wrote, and what it
        should have (optional)."""
        try:
            self._queue.append(TextSample(self._next - 1 if step is None else step, str(input), str(target or ""),
                                          str(output), None))
        except Exception as exc:
            self._warn_once(f"log_text() could not take this call ({type(exc).__name__}: {exc})")

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            warn(text)

    @property
    def should_stop(self) -> bool:
        """True once someone asked the run to stop (`q` in attach, `ctl RUN stop`): break out of the loop."""
        self.control.stop_looked_at = True
        return self.control.stop_requested

    @property
    def step(self) -> int:
        return self._next

    # ---- what it declares it takes ----------------------------------------------------------------
    def on_checkpoint(self, fn: Callable[[], object]) -> Callable:
        """`fn()` saves a checkpoint (returning its path, or anything): called at the next log() when
        someone asks (`c` in attach, `ctl RUN checkpoint`)."""
        self.control.checkpoint_fn = fn
        return fn

    def on_set(self, name: str, fn: Callable[[float], object], value: float | None = None) -> Callable:
        """A setting the run takes live (`ctl RUN set NAME=VALUE`): `fn(value)` at the next log()."""
        self.control.setters[name] = fn
        if value is not None:
            self.control.values[name] = value
        return fn

    def on_prompt(self, fn: Callable[[str], str]) -> Callable:
        """`fn(text)` returns the model's continuation: `g` in attach and `ctl RUN prompt` ask it."""
        self.control.prompt_fn = fn
        return fn

    def steer_optimizer(self, optimizer, scheduler=None) -> None:
        """lr and weight_decay set live on every param group of `optimizer` (and on a torch LR
        scheduler's base rates, so its next step keeps the change)."""
        def set_lr(value: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = value
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [value] * len(scheduler.base_lrs)

        def set_wd(value: float) -> None:
            for group in optimizer.param_groups:
                if group.get("weight_decay", 0.0) or value:
                    group["weight_decay"] = value

        groups = optimizer.param_groups
        self.on_set("lr", set_lr, groups[0].get("lr") if groups else None)
        self.on_set("weight_decay", set_wd, groups[0].get("weight_decay") if groups else None)

    def alert(self, title: str, text: str = "", level="INFO", wait_duration=None) -> None:
        """Tell the researcher (wandb's and trackio's alert): sent to the run's --notify channels
        (init's `notify`), written in its timeline, rung in a watching app. Never raises."""
        try:
            wait = getattr(wait_duration, "total_seconds", lambda: wait_duration)()  # seconds or a timedelta
            self.notifications.alert(str(title), str(text), level, self._writer.last_step,
                                     None if wait is None else float(wait))
        except Exception as exc:
            self._warn_once(f"alert() could not take this call ({type(exc).__name__}: {exc})")

    # ---- the end ------------------------------------------------------------------------------------
    def finish(self, exit_code: int = 0, error: str | None = None) -> None:
        """Write what is queued, mark the run finished (or failed, with a non-zero exit code or an
        error), close its files and its control socket. Called again, it does nothing."""
        with self._finish_lock:
            if self.finished:
                return
            self.finished = True
        error, _, self._traceback = (error or "").partition("\0")
        try:
            self._writer.close()
            step = self._writer.last_step or 0
            if exit_code or error:
                result = RunFailed(step, error or f"exit code {exit_code}", self._traceback)
                self.control.ended(RunState.FAILED)
            else:
                reason = EndReason.STOPPED if self.control.stop_requested else EndReason.COMPLETED
                result = RunFinished(step, reason)
                self.control.ended(RunState.FINISHED)
            if self.service is not None:
                self.service.record.info["summary"] = dict(self.summary)
            self.bus.publish(result)
            self.notifications.close()  # the last notices in the timeline, then it closes
            self._writer.recorder.close()
            self.timeline.close()
            if self.service is not None:
                self.service.close()
        except Exception as exc:
            warn(f"finish() could not close every file ({type(exc).__name__}: {exc})")
        finally:
            self._log_file.close()
            logging.getLogger("neurogen_tui").removeHandler(self._log_file)
            self._lock.release()
            atexit.unregister(self._at_exit)
            if sys.excepthook == self._crashed:
                sys.excepthook = self._previous_hook

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is None:
            self.finish()
        else:
            self.finish(1, error=_error_text(kind, exc, tb))

    def _crashed(self, kind, exc, tb) -> None:
        self.finish(1, error=_error_text(kind, exc, tb))
        self._previous_hook(kind, exc, tb)

    def _at_exit(self) -> None:
        self.finish()

    @staticmethod
    def _last_step(layout: RunLayout) -> int | None:
        from ..run.files import tail_jsonl

        rows, _ = tail_jsonl(layout.metrics, 1)
        return int(rows[-1]["step"]) if rows and isinstance(rows[-1].get("step"), int) else None


def _error_text(kind, exc, tb) -> str:
    lines = traceback.format_exception(kind, exc, tb)
    log.error("the loop failed:\n%s", "".join(lines))
    return f"{kind.__name__}: {exc}".splitlines()[0][:500] + "\0" + "".join(lines)


def _log_to(path: Path) -> logging.Handler:
    """neurogen-tui's records of this run (a crash's traceback among them) in the run's log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.handleError = lambda record: None  # type: ignore[method-assign]  # a full disk is said elsewhere
    ours = logging.getLogger("neurogen_tui")
    ours.addHandler(handler)
    if ours.level == logging.NOTSET or ours.level > logging.INFO:
        ours.setLevel(logging.INFO)
    return handler


def _new_dir(project: str | None, name: str | None) -> Path:
    """runs/[project/]<name>, the name a date and time where none is given; never one in use."""
    base = Path(RUNS_HOME) / project if project else Path(RUNS_HOME)
    stem = base / (name or time.strftime("%Y%m%d-%H%M%S"))
    path, n = stem, 1
    while (path / "run.json").exists() or (path / "training_viz").exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


class NoRun:
    """What init() gives a rank other than 0 (torchrun): every call does nothing. Only rank 0's run
    hears a stop request: a loop on several ranks shares `run.should_stop` with its own collective."""

    finished = False
    should_stop = False
    step = 0

    def __init__(self, config: dict | None = None) -> None:
        self.config, self.summary = RunConfig(config), {}

    def log(self, *args, **kwargs) -> None:
        pass

    log_text = finish = alert = log

    def on_checkpoint(self, fn):
        return fn

    def on_prompt(self, fn):
        return fn

    def on_set(self, name, fn, value=None):
        return fn

    def steer_optimizer(self, optimizer, scheduler=None) -> None:
        pass

    def __enter__(self) -> "NoRun":
        return self

    def __exit__(self, *exc) -> None:
        pass
