"""The run's timeline: training_viz/events.jsonl, one JSON object per line, appended as things
happen (run started or resumed, checkpoint, evaluation, dashboard, setting changed, guard fired,
pause and resume, hang-up, viewer attached or detached, run ended), each with its step, time and
kind. Lines are flushed as written, so the file survives SIGKILL like metrics.jsonl; text inside
stays raw here and is made inert where it is shown.

The digest (`digest`) is what `attach` opens with: what happened since the last viewer left.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

from ..core.events import (CheckpointSaved, CheckpointSkipped, EvalResult, GuardFired, Notified, RunFailed, RunFinished, RunNote,
                           RunStarted, SettingChanged, StateChanged, TrainingMetrics, changes_text)
from ..core.text import format_count, format_duration
from .files import JsonlWriter, read_jsonl
from .layout import EVENTS_FILE, RunState

VIEWER_ATTACHED, VIEWER_DETACHED = "viewer attached", "viewer detached"


class Timeline:
    """Bus subscriber (and dashboard listener) appending the run's events to events.jsonl. A fresh
    run starts a fresh file; a resumed one goes on appending (what happened after the checkpoint
    happened, even if the steps are trained again)."""

    def __init__(self, viz_dir: str | Path, resumed: bool = False, say=None) -> None:
        path = Path(viz_dir) / EVENTS_FILE
        if not resumed:
            path.unlink(missing_ok=True)
        self.writer = JsonlWriter(path, hold=10_000, say=say)  # a full disk: held, written when it can be
        self.step = 0
        self._state = ""
        self._lock = threading.Lock()  # the trainer, the dashboards' dispatcher and the control server all write
        self._closed = False

    def write(self, kind: str, step: int | None = None, **details) -> None:
        with self._lock:
            if self._closed:  # a viewer leaving as the run's last files close
                return
            self.writer.write({"step": self.step if step is None else step, "time": time.time(), "kind": kind,
                               **details})

    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics):
            self.step = event.step
        elif isinstance(event, RunStarted):
            self.step = event.start_step
            self.write("resumed" if event.resumed_from else "started", device=event.device,
                       device_name=event.device_name, params=event.n_params, total_steps=event.total_steps,
                       **({"checkpoint": event.resumed_from} if event.resumed_from else {}))
        elif isinstance(event, CheckpointSaved):
            self.write("checkpoint", event.step, path=event.path)
        elif isinstance(event, CheckpointSkipped):
            self.write("checkpoint skipped", event.step, reason=event.reason)
        elif isinstance(event, EvalResult):
            self.write("eval", event.step, val_loss=event.val_loss, val_accuracy=event.val_accuracy)
        elif isinstance(event, SettingChanged) and event.changes:  # not a refusal, not a set to the same value
            self.write("setting", event.step, changes=event.changes, source=event.source)
        elif isinstance(event, GuardFired):
            self.write("guard", event.step, trouble=event.kind, detail=event.detail, action=event.action,
                       outcome=event.outcome)
        elif isinstance(event, StateChanged):
            if event.state == RunState.PAUSED:
                self.write("paused")
            elif event.state == RunState.RUNNING and self._state == RunState.PAUSED:
                self.write("unpaused")
            self._state = event.state
        elif isinstance(event, RunNote):
            self.write(event.kind, **event.details)
        elif isinstance(event, Notified):
            n = event.notice
            self.write("notice", n.get("step"), what=n.get("kind"), title=n.get("title"), text=n.get("text"),
                       level=n.get("level"), held=n.get("held", 0))
        elif isinstance(event, RunFinished):
            self.write("ended", event.step, reason=str(event.reason), checkpoint=event.checkpoint)
        elif isinstance(event, RunFailed):
            self.write("failed", event.step, error=event.error)

    def on_viz(self, kind: str, detail: str) -> None:
        """VisualizationManager listener: a dashboard drawn (the step's own PNG, not the latest copy)."""
        if kind == "dashboard" and "training_step_" in str(detail):
            self.write("dashboard", path=str(detail))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.writer.close()


def read_events(viz_dir: str | Path) -> list[dict]:
    """Every event of the run, oldest first (a torn last line is left out)."""
    path = Path(viz_dir) / EVENTS_FILE
    if not path.exists():
        return []
    rows, _ = read_jsonl(path)
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("kind"), str)]


MARKED = ("setting", "guard")  # what the charts and dashboards mark on the step axis


def marks(events: list[dict]) -> list[tuple[int, str]]:
    """(step, kind) of every setting change and guard action, for the charts to mark."""
    return [(int(e["step"]), e["kind"]) for e in events if e.get("kind") in MARKED and isinstance(e.get("step"), int)]


def describe(event: dict) -> str:
    """One event as one line of plain text (raw: the caller makes it inert for a terminal); a line
    edited by hand into another shape is said as its kind."""
    try:
        return _describe(event)
    except (TypeError, ValueError, AttributeError, IndexError):
        return f"step {event.get('step', '?')}: {event.get('kind', '?')}"


def _when(event: dict) -> float:
    try:
        return float(event.get("time") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _describe(event: dict) -> str:
    kind, step = event.get("kind", "?"), event.get("step", "?")
    if kind == "setting":
        return f"step {step}: {changes_text(event.get('changes') or {})} ({event.get('source', '?')})"
    if kind == "guard":
        return f"step {step}: guard: {event.get('detail', '')}; {event.get('outcome') or event.get('action', '')}"
    if kind == "eval":
        return f"step {step}: eval: val loss {_short(event.get('val_loss'))}"
    if kind == "checkpoint":
        return f"step {step}: checkpoint {Path(str(event.get('path', ''))).name}"
    if kind in ("ended", "failed"):
        return f"step {step}: {kind}: {event.get('reason') or event.get('error') or ''}"
    if kind == "notice":
        held = event.get("held") or 0
        return f"{'held back: ' if held == -1 else 'notified: '}{event.get('title', '')}" + (
            f" ({held} of its kind at once)" if isinstance(held, int) and held > 1 else "")
    if kind == "checkpoint failed":
        return f"step {step}: checkpoint write failed: {event.get('text', '')}"
    if kind in ("storage", "checkpoint skipped", "run dir", "notify failing"):
        return f"step {step}: {event.get('text') or event.get('reason') or kind}"
    return f"step {step}: {kind}"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def last_viewer_left(events: list[dict]) -> float | None:
    """When the last viewer detached (None: none ever did)."""
    for event in reversed(events):
        if event.get("kind") == VIEWER_DETACHED:
            return _when(event)
    return None


def digest(events: list[dict], metrics: list[dict] | None = None, since: float | None = None) -> list[str]:
    """What happened since `since` (default: the last time a viewer left; everything if none did),
    as a few short lines: checkpoints, evaluations and their trend, guard actions, setting changes,
    pauses, and (from metrics rows) how throughput moved."""
    since = last_viewer_left(events) if since is None else since
    new = [e for e in events if since is None or _when(e) > since]
    if not new:
        return []
    first, last = new[0], new[-1]
    lines = [f"since {'the last viewer left' if since is not None else 'the start'}: "
             f"steps {first.get('step', '?')} to {last.get('step', '?')}, {len(new)} events"]
    checkpoints = [e for e in new if e.get("kind") == "checkpoint"]
    if checkpoints:
        lines.append(f"{len(checkpoints)} checkpoint(s), the last at step {checkpoints[-1].get('step')}")
    evals = [e for e in new if e.get("kind") == "eval" and isinstance(e.get("val_loss"), (int, float))
             and not isinstance(e.get("val_loss"), bool)]
    if evals:
        a, b = evals[0]["val_loss"], evals[-1]["val_loss"]
        trend = "down" if b < a else "up" if b > a else "flat"
        lines.append(f"{len(evals)} evaluation(s): val loss {a:.4f} -> {b:.4f} ({trend})")
    for e in new:
        if e.get("kind") in ("guard", "setting", "paused", "unpaused", "hangup", "failed", "ended"):
            lines.append(describe(e))
    if metrics:
        rows = [m for m in metrics if since is None or (isinstance(m.get("timestamp"), (int, float))
                                                        and m["timestamp"] > since)]
        speeds = [float(m["tokens_per_sec"]) for m in rows if isinstance(m.get("tokens_per_sec"), (int, float))
                  and math.isfinite(m["tokens_per_sec"])]
        if len(speeds) >= 20:
            k = max(1, len(speeds) // 10)
            early, late = sorted(speeds[:k])[k // 2], sorted(speeds[-k:])[k // 2]
            if late < 0.8 * early:
                lines.append(f"throughput dropped: {format_count(early)} -> {format_count(late)} tokens/s")
            else:
                lines.append(f"throughput {format_count(early)} -> {format_count(late)} tokens/s")
        total = next((e.get("total_steps") for e in reversed(events) if e.get("kind") in ("started", "resumed")), None)
        eta = _eta_moved(rows, total) if isinstance(total, int) and total > 0 else None
        if eta:
            lines.append(eta)
    return lines[:20]


def _eta_moved(rows: list[dict], total: int) -> str | None:
    """How the time left moved: at the pace of the first and of the last tenth of `rows`."""
    rows = [r for r in rows if isinstance(r.get("step"), int) and isinstance(r.get("timestamp"), (int, float))]
    if len(rows) < 20:
        return None
    k = max(2, len(rows) // 10)

    def eta(part: list[dict]) -> float | None:
        steps, seconds = part[-1]["step"] - part[0]["step"], part[-1]["timestamp"] - part[0]["timestamp"]
        return (total - part[-1]["step"]) * seconds / steps if steps > 0 and seconds > 0 else None

    before, after = eta(rows[:k]), eta(rows[-k:])
    if before is None or after is None:
        return None
    return f"ETA {format_duration(before)} -> {format_duration(after)}"
