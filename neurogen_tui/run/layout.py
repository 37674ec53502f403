"""A run directory's layout, the states a run goes through, and the exit codes: each defined once.

    <run-dir>/
      training_viz/   metrics.jsonl, samples.jsonl (the append-only record), metrics.arrows (the
                      same metrics as columns), metrics_history.json, text_samples.json,
                      training_latest.png, training_step_XXXXXX.png
      tensorboard/    TensorBoard event files (--tensorboard)
      checkpoints/    checkpoint_step_XXXXXX.pt, or checkpoint_step_XXXXXX.dcp/ (sharded, with meta.pt)
      previous_runs/  what --overwrite moved aside
      neurogen-tui.log, run.json, config.json, control.sock, .neurogen-tui.lock
"""
from __future__ import annotations

import enum
import re
from pathlib import Path

RUNS_HOME = "runs"  # where runs go without --run-dir: runs/<date>-<time>-<model>
VIZ_DIR = "training_viz"
CHECKPOINT_DIR = "checkpoints"
PREVIOUS_RUNS = "previous_runs"
LOG_FILE = "neurogen-tui.log"
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"  # the run's resolved config, flat {name: value}, kept current with live changes
LOCK_FILE = ".neurogen-tui.lock"
SOCKET_FILE = "control.sock"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
EVENTS_FILE = "events.jsonl"  # the run's timeline: started, checkpoints, settings changed, guard actions (timeline.py)
METRICS_JSON = "metrics_history.json"
METRICS_SIDECAR = "metrics.arrows"  # Arrow IPC stream beside metrics.jsonl (metricsfile.py)
TENSORBOARD_DIR = "tensorboard"
SAMPLES_JSON = "text_samples.json"
LATEST_PNG = "training_latest.png"
RENDER_PNG = "training_render.png"
SHARDED_META = "meta.pt"  # in a sharded checkpoint directory: everything but the model and optimizer
STEP_PNG = re.compile(r"^training_step_(\d+)\.png$")
CHECKPOINT_NAME = re.compile(r"^checkpoint_step_(\d+)\.(pt|dcp)$")
# The logger of the trainer's record of how the run ended (with the traceback of a failure).
# Viewers leave its lines out of the log pane: run.json and the control channel say how it ended.
END_LOGGER = "neurogen_tui.end"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 130


def step_png(step: int) -> str:
    return f"training_step_{step:06d}.png"


def checkpoint_name(step: int, sharded: bool = False) -> str:
    return f"checkpoint_step_{step:06d}.{'dcp' if sharded else 'pt'}"


class RunLayout:
    """Every path of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.viz, self.checkpoints, self.previous_runs = self.root / VIZ_DIR, self.root / CHECKPOINT_DIR, self.root / PREVIOUS_RUNS
        self.tensorboard = self.root / TENSORBOARD_DIR
        self.log, self.run_file, self.lock, self.socket = (self.root / name for name in (LOG_FILE, RUN_FILE, LOCK_FILE, SOCKET_FILE))
        self.config = self.root / CONFIG_FILE
        self.metrics, self.samples, self.latest_png = (self.viz / name for name in (METRICS_FILE, SAMPLES_FILE, LATEST_PNG))
        self.events = self.viz / EVENTS_FILE


class _Name(str, enum.Enum):
    """A str-valued enum that formats as its value on every Python version (for logs and JSON)."""

    __str__ = str.__str__
    __format__ = str.__format__


class RunState(_Name):
    """What a run is doing. The trainer goes created -> running <-> paused -> stopping -> finished
    or failed; run.json records "starting" before the first step and "stopped" for a run that was
    asked to stop; a reader says "stale" for a live record whose process is gone. A viewer of files
    alone says "watching" (growing), "idle" (not growing) or "waiting" (nothing written yet)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    STALE = "stale"
    UNKNOWN = "unknown"
    WATCHING = "watching"
    IDLE = "idle"
    WAITING = "waiting"


LIVE_STATES = (RunState.STARTING, RunState.RUNNING, RunState.PAUSED, RunState.STOPPING)
ENDED_STATES = (RunState.FINISHED, RunState.STOPPED, RunState.FAILED)


class EndReason(_Name):
    """Why a run that did not fail ended (RunFinished.reason, run.json's "reason")."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    DATA_EXHAUSTED = "data exhausted"
    BAD_STEPS = "too many bad steps"
