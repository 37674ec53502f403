"""Steering a training loop that is not our trainer: what `attach`, the workspace and `ctl` ask of a
run written through the logging API (run.py), taken at the loop's next `log()`.

Requests arrive on the control server's threads; they wait here until the loop calls `log()`, its
step boundary, where touching its model, optimizer or data is safe: a pause blocks that call until
resumed or stopped, a checkpoint calls the function the loop registered, settings call theirs, a
prompt is answered by its function. The loop's thread checks one attribute per `log()` (`waiting`)
and does nothing else unless something was asked. What the run takes is declared (`supports`), so
a request it cannot serve is refused in one line and the keys that cannot work are not offered.
"""
from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from typing import Callable

from ..core.events import CheckpointSaved, CheckpointSkipped, SettingChanged, StateChanged, TextSample
from ..run.layout import RunState
from ..core.parse import ConfigError, strict_float

PROMPT_TOKENS = 64  # what a prompt asks for when it does not say (tokens=N)


class LoopControl:
    """The control channel's view of a logging-API run; the same methods our trainer offers the
    server (control/commands.py), plus what the run supports and why not the rest."""

    prompt_tokens = PROMPT_TOKENS

    def __init__(self, bus) -> None:
        self.bus = bus
        self.state = RunState.STARTING
        self.step = 0
        self.last_checkpoint: str | None = None
        self.waiting = False  # something is asked: the one attribute log() reads on the loop's thread
        self.setters: dict[str, Callable[[float], object]] = {}
        self.values: dict[str, float] = {}  # each setting's value now, as far as this run knows it
        self.checkpoint_fn: Callable[[], object] | None = None
        self.prompt_fn: Callable[[str], str] | None = None
        self.answers: OrderedDict[int, TextSample | str] = OrderedDict()
        self.stop_looked_at = False  # the loop has read run.should_stop at least once
        self._lock = threading.Lock()
        self._pause, self._stop = threading.Event(), threading.Event()
        self._resume = threading.Event()
        self._checkpoint = False
        self._changes: list[tuple[int, dict, str]] = []
        self._prompts: list[tuple[int, str, dict]] = []
        self._tickets = itertools.count(1)
        self.steer = self  # what the server reads settings and answers from, as on our trainer

    # ---- what the run takes ------------------------------------------------------------------
    @property
    def supports(self) -> frozenset:
        out = {"pause", "stop"}
        if self.checkpoint_fn is not None:
            out.add("checkpoint")
        if self.setters:
            out.add("set")
        if self.prompt_fn is not None:
            out.add("prompt")
        return frozenset(out)

    def why_not(self, what: str) -> str:
        return {"checkpoint": "its loop registered no run.on_checkpoint(fn)",
                "set": "its loop declared no settings (run.on_set(name, fn), or run.steer_optimizer(optimizer))",
                "prompt": "its loop registered no run.on_prompt(fn)",
                "draw": "a logging-API run draws no dashboards as it goes; `neurogen-tui render RUN` draws one"
                }.get(what, "")

    def settings(self) -> dict:
        return dict(self.values)

    def check_settings(self, texts: dict) -> dict:
        """`name=value` texts to the values the run takes; ConfigError names what it does take."""
        if not texts:
            raise ConfigError("nothing to set: give NAME=VALUE, NAME one of " + ", ".join(self.setters))
        out = {}
        for name, text in texts.items():
            if name not in self.setters:
                raise ConfigError(f"{name!r} is not a setting this run takes (it takes: {', '.join(self.setters)})")
            try:
                value = strict_float(str(text))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number (got {text})")
            out[name] = value
        return out

    # ---- requests, from any thread (the control server's) --------------------------------------
    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        self._resume.clear()
        self._pause.set()
        self.waiting = True

    def resume(self) -> None:
        self._pause.clear()
        self._resume.set()

    def toggle_pause(self) -> None:
        self.resume() if self.paused else self.pause()

    def request_stop(self) -> None:
        self._stop.set()
        self._pause.clear()
        self._resume.set()

    def stop_note(self) -> str:
        if self.stop_looked_at:
            return "stopping: run.should_stop is true, the loop ends at its next look"
        return ("run.should_stop is true now, but this loop has never looked at it: it will not stop by itself "
                "(check run.should_stop in the loop, or stop the process)")

    def request_checkpoint(self) -> None:
        with self._lock:
            self._checkpoint = True
        self.waiting = True

    def request_changes(self, changes: dict, source: str = "ctl") -> int:
        ticket = next(self._tickets)
        with self._lock:
            self._changes.append((ticket, dict(changes), source))
        self.waiting = True
        return ticket

    def request_prompt(self, text: str, options: dict) -> int:
        ticket = next(self._tickets)
        with self._lock:
            self._prompts.append((ticket, text, dict(options)))
        self.waiting = True
        return ticket

    # ---- the loop's step boundary (its thread, inside log()) ---------------------------------------
    def boundary(self, step: int) -> None:
        """Carry out what was asked since the last log(), in the order a person expects: settings,
        prompts, a checkpoint, then a pause (which blocks here until resumed or stopped)."""
        self.step = step
        with self._lock:
            changes, prompts, checkpoint = self._changes, self._prompts, self._checkpoint
            self._changes, self._prompts, self._checkpoint = [], [], False
            self.waiting = self._pause.is_set()
        for ticket, change, source in changes:
            self._apply(ticket, change, source)
        for ticket, text, options in prompts:
            self._answer(ticket, text)
        if checkpoint:
            self._save()
        if self._pause.is_set() and not self._stop.is_set():
            self._paused()

    def _apply(self, ticket: int, changes: dict, source: str) -> None:
        done = {}
        for name, value in changes.items():
            try:
                self.setters[name](value)
            except Exception as exc:  # the loop's own function: its error is the request's answer
                self.bus.publish(SettingChanged(self.step, {}, source, ticket, refused=f"{name}: {type(exc).__name__}: {exc}"))
                return
            done[name] = [self.values.get(name), value]
            self.values[name] = value
        self.bus.publish(SettingChanged(self.step, done, source, ticket))

    def _answer(self, ticket: int, text: str) -> None:
        try:
            output = str(self.prompt_fn(text))
        except Exception as exc:
            self.answers[ticket] = f"not answered: {type(exc).__name__}: {str(exc)[:120]}"
            return
        sample = TextSample(self.step, text, "", output, None, kind="prompt")
        self.answers[ticket] = sample
        while len(self.answers) > 100:
            self.answers.popitem(last=False)
        self.bus.publish(sample)

    def _save(self) -> None:
        try:
            path = self.checkpoint_fn()
        except Exception as exc:
            self.bus.publish(CheckpointSkipped(self.step, f"the loop's checkpoint failed: {type(exc).__name__}: {exc}"))
            return
        self.last_checkpoint = str(path) if path else f"(the loop's own, at step {self.step})"
        self.bus.publish(CheckpointSaved(self.step, self.last_checkpoint))

    def _paused(self) -> None:
        self._set_state(RunState.PAUSED)
        while not self._resume.wait(0.5):
            with self._lock:
                pending = bool(self._changes or self._prompts or self._checkpoint)
            if pending:  # a paused run still takes settings, prompts and checkpoints
                self.boundary_while_paused()
        self.waiting = False
        self._set_state(RunState.RUNNING)

    def boundary_while_paused(self) -> None:
        with self._lock:
            changes, prompts, checkpoint = self._changes, self._prompts, self._checkpoint
            self._changes, self._prompts, self._checkpoint = [], [], False
        for ticket, change, source in changes:
            self._apply(ticket, change, source)
        for ticket, text, _ in prompts:
            self._answer(ticket, text)
        if checkpoint:
            self._save()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.bus.publish(StateChanged(state))

    def ended(self, state: str) -> None:
        """The run is over: nothing waits for a boundary any more."""
        self.state = state
        self._resume.set()
