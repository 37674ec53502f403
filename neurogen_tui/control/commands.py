"""What a control request does to the run: the commands of the protocol (protocol.py), carried out
on the trainer and its dashboards and answered once done ("paused at step 812", the checkpoint's
path). The transport (the socket, its connections and subscribers) is server.py's.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from ..core.events import (CheckpointSaved, CheckpointSkipped, RunFailed, RunFinished, RunNote, RunStarted, SettingChanged,
                           TrainingMetrics)
from ..run.layout import LATEST_PNG, RunState
from ..run.timeline import VIEWER_ATTACHED, VIEWER_DETACHED
from ..train.config import ConfigError, live_changes
from ..train.prompts import prompt_line
from .protocol import WAIT_LIMIT, event_message

# what a run can be asked, where it does not say (our trainer takes every request)
EVERY_REQUEST = frozenset({"pause", "stop", "checkpoint", "draw", "set", "prompt"})


class RunCommands:
    """Notes what the trainer and the dashboards did (their events), and carries out requests.
    `fan_out` is where the events go as protocol lines (the server's subscribers)."""

    def __init__(self, trainer, viz=None, run_dir: str | os.PathLike | None = None) -> None:
        self.trainer, self.viz = trainer, viz
        self.run_dir = Path(run_dir if run_dir is not None else trainer.cfg.run_dir).resolve()
        self.fan_out: Callable[[dict | None], None] = lambda msg: None
        self._cond = threading.Condition()
        self._step, self._loss = getattr(trainer, "step", 0), None
        self._checkpoints, self._last_checkpoint = 0, None  # checkpoints written or skipped; (step, path)
        self._skipped = ""  # why the last checkpoint asked for was not written
        self._dashboards, self._last_dashboard, self._dashboard_error = 0, None, None
        self._ended: dict | None = None
        self._started: dict | None = None  # the run's "started" event, replayed to later subscribers
        self._applied: dict[int, SettingChanged] = {}  # live settings that took effect, by ticket
        self._waiting: set[int] = set()  # the tickets a request here waits on (not the app's own)
        self.viewers = 0

    # ---- what the trainer did ------------------------------------------------------------------
    def on_event(self, event) -> None:
        """Bus subscriber, on the trainer thread: note the event and hand it to the subscribers."""
        if isinstance(event, TrainingMetrics):
            self._step, self._loss = event.step, event.loss
            return
        with self._cond:
            if isinstance(event, CheckpointSaved):
                self._checkpoints += 1
                self._last_checkpoint = (event.step, event.path)
            elif isinstance(event, CheckpointSkipped):
                self._checkpoints += 1
                self._skipped = event.reason
            elif isinstance(event, (RunFinished, RunFailed)):
                self._ended = event_message(event)
            elif isinstance(event, RunStarted):
                self._started = event_message(event)
            elif isinstance(event, SettingChanged) and event.ticket in self._waiting:
                self._applied[event.ticket] = event
            self._cond.notify_all()
        self.fan_out(event_message(event))

    def on_viz(self, kind: str, detail: str) -> None:
        """VisualizationManager listener, on its dispatcher thread."""
        with self._cond:
            if kind == "dashboard" and str(detail).endswith(LATEST_PNG):
                self._dashboards += 1
                self._last_dashboard = str(detail)
            elif kind == "error":
                self._dashboard_error = str(detail)
            self._cond.notify_all()
        if kind == "dashboard":
            self.fan_out({"event": "dashboard", "path": str(detail)})

    def replay(self) -> list[dict]:
        """What a subscriber that comes late (or after the end) is told first."""
        return [msg for msg in (self._started, self._ended) if msg is not None]

    def handle(self, cmd: str, req: dict | None = None) -> dict:
        """One request, answered once carried out (or pending after WAIT_LIMIT)."""
        if cmd == "set":
            return self.do_set((req or {}).get("settings"))
        if cmd == "prompt":
            return self.do_prompt((req or {}).get("text"))
        return getattr(self, f"do_{cmd}")()

    def viewer(self, attached: bool) -> None:
        """A viewer (attach) began or stopped following the run: a line of its timeline."""
        with self._cond:
            self.viewers += 1 if attached else -1
            count = self.viewers
        self.trainer.bus.publish(RunNote(VIEWER_ATTACHED if attached else VIEWER_DETACHED, {"viewers": count}))

    def _wait(self, predicate, timeout: float = WAIT_LIMIT) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _finished(self) -> bool:
        return self._ended is not None or self.trainer.state in (RunState.FINISHED, RunState.FAILED)

    # ---- the commands -----------------------------------------------------------------------------
    def status(self) -> dict:
        t = self.trainer
        ckpt = self._last_checkpoint
        return {"state": t.state, "paused": t.paused, "stop_requested": t.stop_requested,
                "step": max(self._step, getattr(t, "step", 0)), "loss": self._loss, "pid": os.getpid(),
                "run_dir": str(self.run_dir),
                "last_checkpoint": ckpt[1] if ckpt else getattr(t, "last_checkpoint", None),
                "settings": t.steer.settings() if hasattr(t, "steer") else {},
                "supports": sorted(self.supports)}

    @property
    def supports(self) -> frozenset:
        """The requests this run takes: a run declares them (the logging API); our trainer takes all
        (the dashboard only where there is a dashboard writer)."""
        declared = getattr(self.trainer, "supports", None)
        return frozenset(declared) if declared is not None else EVERY_REQUEST - ({"draw"} if self.viz is None else set())

    def _unsupported(self, what: str) -> dict | None:
        if what in self.supports:
            return None
        why = getattr(self.trainer, "why_not", lambda w: "")(what)
        return {"error": f"this run does not take {what} requests" + (f": {why}" if why else "")}

    def do_status(self) -> dict:
        return self.status()

    def _refuse_if_over(self, what: str) -> dict | None:
        if self._finished():
            return {"error": f"the run has ended; nothing to {what}"}
        if self.trainer.stop_requested:
            return {"error": f"the run is stopping; cannot {what}"}
        return None

    def do_pause(self) -> dict:
        t = self.trainer
        refused = self._refuse_if_over("pause")
        if refused:
            return refused
        t.pause()
        done = self._wait(lambda: t.state == RunState.PAUSED or not t.paused or self._finished())
        if t.state == RunState.PAUSED:
            return {"state": RunState.PAUSED, "step": t.step}
        if done and not t.paused:
            return {"state": t.state, "step": t.step, "message": "resumed before the pause took effect"}
        if done:
            return {"error": "the run ended before it paused"}
        return {"pending": True, "state": t.state,
                "message": "pause requested; the trainer waits at the end of this step"}

    def do_resume(self) -> dict:
        t = self.trainer
        if self._finished():
            return {"error": "the run has ended; nothing to resume"}
        t.resume()
        self._wait(lambda: t.state != RunState.PAUSED or t.paused or self._finished(), timeout=5.0)
        return {"state": t.state, "step": t.step}

    def do_checkpoint(self) -> dict:
        refused = self._unsupported("checkpoint") or self._refuse_if_over("checkpoint")
        if refused:
            return refused
        with self._cond:
            seen, self._skipped = self._checkpoints, ""
        self.trainer.request_checkpoint()
        if not self._wait(lambda: self._checkpoints > seen or self._finished()):
            return {"pending": True, "message": "checkpoint requested; written at the end of this step"}
        if self._skipped:
            return {"error": self._skipped}
        if self._checkpoints > seen:
            step, path = self._last_checkpoint
            return {"path": path, "step": step}
        return {"error": "the run ended before the checkpoint was written"}

    def do_draw(self) -> dict:
        viz = self.viz
        if viz is None:
            return {"error": "dashboards are unavailable in this run (no VisualizationManager)"}
        if not len(getattr(viz, "history", ())):
            return {"error": "no steps yet: nothing to draw"}
        with self._cond:
            seen, self._dashboard_error = self._dashboards, None
        viz.request_draw()
        if not self._wait(lambda: self._dashboards > seen or self._dashboard_error is not None):
            return {"pending": True, "message": "dashboard requested"}
        if self._dashboards > seen:
            return {"path": self._last_dashboard}
        return {"error": f"dashboard failed: {self._dashboard_error}"}

    def do_stop(self) -> dict:
        t = self.trainer
        if self._finished():
            return {"error": "the run has already ended"}
        already = t.stop_requested
        t.request_stop()
        note = getattr(t, "stop_note", lambda: "")()
        return {"state": RunState.STOPPING, "step": t.step,
                "message": "already stopping" if already else note or "stopping after this step: final checkpoint and exports"}

    def do_set(self, settings) -> dict:
        """Live settings, checked as the flags are (a refusal leaves the run untouched), applied at
        the next step boundary on every rank; answered once they took effect."""
        if not isinstance(settings, dict):
            return {"error": "set: expected \"settings\": {\"NAME\": \"VALUE\", ...}", "usage": True}
        refused = self._unsupported("set") or self._refuse_if_over("change settings")
        if refused:
            return refused
        check = getattr(self.trainer, "check_settings", None)  # a run that declares its own settings
        try:
            changes = check(settings) if check else live_changes(self.trainer.cfg, settings)
        except ConfigError as exc:
            return {"error": str(exc), "usage": True}
        with self._cond:
            ticket = self.trainer.request_changes(changes, "ctl")
            self._waiting.add(ticket)
        try:
            if not self._wait(lambda: ticket in self._applied or self._finished()):
                return {"pending": True, "message": "settings requested; they take effect at the end of this step"}
        finally:
            with self._cond:
                self._waiting.discard(ticket)
        event = self._applied.pop(ticket, None)
        if event is None:
            return {"error": "the run ended before the settings took effect"}
        if event.refused:
            return {"error": event.refused, "usage": True, "step": event.step}
        return {"step": event.step, "changes": event.changes}

    def do_prompt(self, text) -> dict:
        """The model as it is now continues `text` at the next step boundary (options first:
        `temperature=0.8 top_k=40 ...`); answered with the answer, also in samples.jsonl."""
        if not isinstance(text, str):
            return {"error": "prompt: expected \"text\": \"...\"", "usage": True}
        refused = self._unsupported("prompt") or self._refuse_if_over("answer a prompt")
        if refused:
            return refused
        tokens = getattr(self.trainer, "prompt_tokens", None) or self.trainer.cfg.prompt_tokens
        try:
            prompt, options = prompt_line(text, tokens)
        except ConfigError as exc:
            return {"error": str(exc), "usage": True}
        answers = self.trainer.steer.answers
        ticket = self.trainer.request_prompt(prompt, options)
        if not self._wait(lambda: ticket in answers or self._finished()):
            return {"pending": True, "message": "prompt queued; answered at the end of this step"}
        sample = answers.pop(ticket, None)
        if sample is None:
            return {"error": "the run ended before the prompt was answered"}
        if isinstance(sample, str):
            return {"error": sample}
        return {"step": sample.step, "prompt": sample.input, "output": sample.output}
