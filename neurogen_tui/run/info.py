"""<run-dir>/run.json: which process trains a run, where its control socket is, and how it ended.

The trainer's process writes it (atomically) when the run starts, on every state change, every
HEARTBEAT seconds while it lives, and once more when it exits, marking the final state. A reader
trusts "running" only if the process is still there:

  same machine     the recorded pid must be alive and be the same process (its start time);
  another machine  (a copied directory, a shared filesystem) the heartbeat must be recent.

A run whose record says it is live but fails that test is *stale*: killed (SIGKILL, OOM killer,
reboot) without a clean exit. Its checkpoints are intact; `--resume latest` continues it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from ..core.version import __version__
from ..core.events import (CheckpointSaved, RunFailed, RunFinished, RunStarted, SettingChanged, StateChanged,
                           TrainingMetrics)
from .files import write_json
from .layout import ENDED_STATES, LIVE_STATES, EndReason, RunLayout, RunState

log = logging.getLogger(__name__)

RUN_FORMAT = 1
HEARTBEAT = 30.0  # seconds between rewrites of a live run's record
STALE_AFTER = 600.0  # a run on another machine without a heartbeat for this long is taken as gone


def read_run_info(run_dir: str | os.PathLike) -> dict | None:
    """The run's record, or None when there is none or it is not a JSON object."""
    try:  # NaN and Infinity are not JSON: a hand-edited record's are read as missing
        data = json.loads(RunLayout(run_dir).run_file.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def boot_id() -> str:
    """This boot of this machine (Linux); a pid recorded under another boot id means nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (Linux), or [] elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused pid."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OSError, ValueError, OverflowError):
        return False
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))


def liveness(info: dict, now: float | None = None) -> str:
    """The run's state as far as can be checked from here: a live state (starting, running,
    paused, stopping) only if the trainer is really there, an ended state as recorded, "stale"
    for a live record without a live trainer, "unknown" for a record this version cannot read."""
    state = info.get("state")
    if state in ENDED_STATES:
        return state
    if state not in LIVE_STATES:
        return RunState.UNKNOWN
    now = time.time() if now is None else now
    same_boot = info.get("host") == socket.gethostname() and info.get("boot_id", "") == boot_id()
    if same_boot:
        pid = info.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not pid_alive(pid):
            return RunState.STALE
        started, now_start = info.get("pid_start"), process_start(pid)
        if started and now_start and started != now_start:
            return RunState.STALE  # the pid was reused by another process
        return state
    if info.get("host") == socket.gethostname() and info.get("boot_id") and boot_id():
        return RunState.STALE  # this machine rebooted since
    updated = info.get("updated_at")
    if not isinstance(updated, (int, float)) or now - updated > STALE_AFTER:
        return RunState.STALE
    return state


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's config.json ({} where there is none or it is not a JSON object)."""
    try:
        data = json.loads(RunLayout(run_dir).config.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


class Config:
    """<run-dir>/config.json: the run's config as one flat JSON object, rewritten atomically on
    every change, so `ls`, the workspace's diff and any script read a run's hyperparameters without
    opening a checkpoint."""

    def __init__(self, path: Path, values: dict) -> None:
        self.path, self.values = path, dict(values)
        self.write()

    def update(self, changes: dict) -> None:
        self.values.update(changes)
        self.write()

    def write(self) -> None:
        try:
            write_json(self.path, self.values, indent=1)
        except OSError as exc:  # a full disk must not stop training; the next change writes it again
            log.warning("cannot write %s: %s", self.path, exc)


class RunRecord:
    """Keeps run.json up to date for one trainer. Subscribe it to the trainer's bus; close() once
    the trainer and the final exports are done (it marks the final state)."""

    def __init__(self, run_dir, run_name: str, total_steps: int | None, config: "dict | Config",
                 socket_path: str | None = None, clock=time.time, writer: str = "trainer"):
        layout = RunLayout(run_dir)
        self.path = layout.run_file
        self.config = config if isinstance(config, Config) else Config(layout.config, config)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.result: RunFinished | RunFailed | None = None
        pid = os.getpid()
        now = clock()
        self.info = {
            "format": RUN_FORMAT, "version": __version__, "state": RunState.STARTING,
            "pid": pid, "pid_start": process_start(pid), "host": socket.gethostname(), "boot_id": boot_id(),
            "started_at": now, "updated_at": now, "ended_at": None,
            "run_name": run_name, "run_dir": str(Path(run_dir).resolve()), "writer": writer,
            "log": str(layout.log.resolve()),
            "socket": socket_path, "step": 0, "total_steps": total_steps, "loss": None,
            "last_checkpoint": None, "reason": None, "error": None,
        }
        self.write()
        self._heartbeat = threading.Thread(target=self._beat, name="run.json-heartbeat", daemon=True)
        self._heartbeat.start()

    disowned = False  # the run directory is another process's now: run.json is theirs

    def write(self, **changes) -> None:
        with self._lock:
            if self.disowned:
                return
            self.info.update(changes)
            self.info["updated_at"] = self._clock()
            try:
                write_json(self.path, self.info, indent=1)
            except OSError as exc:  # a full disk must not stop training; the log says why
                log.warning("cannot write %s: %s", self.path, exc)

    def _beat(self) -> None:
        while not self._closed.wait(HEARTBEAT):
            self.write()

    def progress(self, step: int, loss: float | None) -> None:
        """The newest step (in memory: the heartbeat and the next state change write it)."""
        self.info["step"] = step
        if loss is not None:
            self.info["loss"] = loss

    def __call__(self, event) -> None:
        """Bus subscriber (trainer thread): progress in memory, a rewrite only on state changes."""
        if isinstance(event, TrainingMetrics):
            self.progress(event.step, event.loss)
        elif isinstance(event, StateChanged):
            self.write(state=event.state if event.state in LIVE_STATES else RunState.STOPPING)
        elif isinstance(event, RunStarted):
            self.info.update(step=event.start_step, total_steps=event.total_steps)
        elif isinstance(event, CheckpointSaved):
            self.info["last_checkpoint"] = event.path
        elif isinstance(event, SettingChanged) and event.changes and not self.disowned:
            self.config.update({k: new for k, (_old, new) in event.changes.items() if k != "eval"})
        elif isinstance(event, (RunFinished, RunFailed)):
            self.result = event
            self.info["step"] = event.step

    def close(self, error: str | None = None) -> str:
        """Mark the final state (finished, stopped or failed) and stop the heartbeat; returns it.
        Without a result from the trainer: failed if `error` says why, else stopped (closed by
        code that never ran the training loop, such as a benchmark)."""
        if self._closed.is_set():
            return self.info["state"]
        self._closed.set()
        result = self.result
        if isinstance(result, RunFinished):
            state = RunState.STOPPED if result.reason == EndReason.STOPPED else RunState.FINISHED
            changes = {"reason": result.reason, "last_checkpoint": result.checkpoint or self.info["last_checkpoint"]}
        elif isinstance(result, RunFailed):
            state, changes = RunState.FAILED, {"error": result.error}
        elif error:
            state, changes = RunState.FAILED, {"error": error}
        else:
            state, changes = RunState.STOPPED, {"reason": "closed before the training loop reported a result"}
        self.write(state=state, ended_at=self._clock(), **changes)
        return state


class RunDirWatch:
    """Notices, on a thread of its own, the run directory deleted or replaced under a live run
    (`rm -rf` of it, a new directory made in its place): every file the run holds open then writes
    to nothing anyone can see, and its lock no longer keeps a second trainer out. `on_lost` is
    called once, from the watch's thread."""

    def __init__(self, root: str | os.PathLike, on_lost, every: float = 2.0) -> None:
        self.root = Path(root)
        st = self.root.stat()
        self._ident = (st.st_dev, st.st_ino)
        self._on_lost, self._every = on_lost, every
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="run-dir-watch", daemon=True).start()

    def lost(self) -> bool:
        try:
            st = self.root.stat()
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    def _watch(self) -> None:
        while not self._stop.wait(self._every):
            if self.lost():
                self._on_lost()
                return

    def close(self) -> None:
        self._stop.set()
