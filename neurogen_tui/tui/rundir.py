"""RunDirSource: the screen over a run that another process trains, followed through its directory.

What it can do depends on what it is given, and is declared in its Capabilities:

  watch    the directory alone: read-only; follow.py reads the state and the end from run.json
  attach   + run.json's control socket: the keys become requests (control/protocol.py) whose answers
           ("paused at step 812", "checkpoint written: ...") appear in the log pane once carried
           out; the trainer's state and its end come from the channel
  owner    + the child process this one started (cli/launch.py): it waits for the child to serve its
           channel (until then "starting"; a stop ends the child), and a child that exits first
           shows its error lines and the failed state

History, metrics, samples, checkpoints and log lines always come from the files, so the screen
shows the whole run at once, however late it opened.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

from ..control.protocol import ControlClient, ControlError, message_event
from ..core.events import LogMessage, RunStarted, StateChanged, changes_text
from ..run.info import liveness, read_run_info
from ..run.layout import ENDED_STATES, EXIT_FAILED, EXIT_OK, LIVE_STATES, RunState
from .follow import FilesFollower
from .source import Capabilities, RunInfo, RunSource, SourceDone

log = logging.getLogger(__name__)
STARTUP_POLL = 0.1  # seconds between looks for the child's run.json while it starts
RECONNECT_DELAY = 1.0  # seconds before trying the channel again while the run is still live


class RunDirSource(RunSource):
    def __init__(self, run_dir: str | os.PathLike, poll: float = 0.5, info: dict | None = None,
                 child: subprocess.Popen | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.info = info or {}
        self.child = child
        self.title = str(self.info.get("run_name") or self.run_dir.resolve().name or run_dir)
        self.poll_interval = poll
        # the child's socket is known once it serves it
        self.client = ControlClient(self.info["socket"]) if info else (ControlClient("") if child else None)
        self.caps = Capabilities(control=self.client is not None, owns=child is not None,
                                 detach=self.client is not None)
        self.files = FilesFollower(self.run_dir, self.put, report_state=self.client is None)
        self.ready = threading.Event()  # the channel is there to talk to
        if info:
            self.ready.set()
        self.ended_early = False
        self.remote_state = ""
        self.remote_settings: dict = {}  # the live settings, from the channel's status
        self._shown_state = ""
        self._end_code: int | None = None
        self._want_paused: bool | None = None  # a pause/resume sent and not answered yet
        self._held: list = []  # the run's end, shown after the poll that reads its last rows
        self._held_lock = threading.Lock()
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()

    # ---- producing ------------------------------------------------------------------------------
    def produce(self) -> None:
        self.put(LogMessage("info", self._hello()))
        if self.child is not None and not self._child_started():
            return
        if self.client is not None:
            threading.Thread(target=self._follow_channel, name="run-channel", daemon=True).start()
        while True:
            ended = self._end_code  # read before the poll, so the poll sees the final files
            held = self._take_held()  # the channel outruns the files: the end shows after the rows read now
            try:
                self.files.poll()
            except Exception as exc:  # a file we cannot read must not end the screen
                log.exception("polling %s failed", self.run_dir)
                self.put(LogMessage("warning", f"reading the run's files: {type(exc).__name__}: {exc}"))
            for event in held:
                self.put(event)
            if ended is not None:
                self.put(SourceDone(ended))
                return
            if self._stop.wait(self.poll_interval):
                break
        self.put(SourceDone(EXIT_OK))

    def _hello(self) -> str:
        where = self.run_dir.resolve()
        if self.child is not None:
            return f"starting the trainer (pid {self.child.pid}) in {where}"
        if self.client is not None:
            return f"attached to pid {self.info.get('pid')} training {where}: q stops the run, x detaches (the run goes on)"
        return f"watching {where} (read-only)"

    def _child_started(self) -> bool:
        """Wait for the child's run.json to name it and its socket; False when it exited first (a
        bad flag it found, a dataset it could not open, our own SIGTERM) or the screen closed."""
        self._show_state(RunState.STARTING)
        while not self._stop.is_set():
            info = read_run_info(self.run_dir) or {}
            if info.get("pid") == self.child.pid and info.get("socket"):
                self.info, self.client.path = info, str(info["socket"])
                self.ready.set()
                return True
            code = self.child.poll()
            if code is not None:
                self.files.poll_log()
                self._child_gone(code)
                self.put(SourceDone(EXIT_OK if self.ended_early else EXIT_FAILED))
                return False
            self._stop.wait(STARTUP_POLL)
        self.put(SourceDone(EXIT_OK))
        return False

    def _child_gone(self, code: int) -> None:
        if self.ended_early:
            self._show_state(RunState.FINISHED, hold=False)
            self.put(LogMessage("info", "the trainer was ended before it started; q closes"))
            return
        self._show_state(RunState.FAILED, hold=False)
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        self.put(LogMessage("error", f"the trainer {how} before it started (its error is above); q closes"))

    def child_line(self, line: str) -> None:
        """An error line the child wrote on stderr (cli/launch.py's drain thread calls this). Once the
        channel is up, its failed event says the same with the traceback's frames; the launcher
        prints every such line after the app closes either way."""
        if not self.ready.is_set():
            self.put(LogMessage("error", line.rstrip("\n").removeprefix("neurogen-tui: ")))

    def end_child_early(self) -> None:
        self.ended_early = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child.pid, signal.SIGTERM)

    # ---- the control channel --------------------------------------------------------------------
    def _hold(self, event) -> None:
        with self._held_lock:
            self._held.append(event)

    def _take_held(self) -> list:
        with self._held_lock:
            held, self._held = self._held, []
        return held

    def _show_state(self, state: str, hold: bool = True) -> None:
        """The state shown is the trainer's own, from the channel, not the files' growth."""
        state = RunState.STARTING if state == RunState.CREATED else state
        self.remote_state = state
        if state != self._shown_state:
            self._shown_state = state
            (self._hold if hold and state in ENDED_STATES else self.put)(StateChanged(state))

    def _on_message(self, msg: dict) -> None:
        if msg.get("event") in (None, "state", "status"):  # a reply, a state change, the periodic status
            if isinstance(msg.get("state"), str):
                self._show_state(msg["state"])
            if isinstance(msg.get("settings"), dict):
                self.remote_settings = msg["settings"]
            if isinstance(msg.get("supports"), list):  # what the run takes: the keys and help follow
                self.caps = dataclasses.replace(self.caps, can=frozenset(map(str, msg["supports"])))
            return
        event = message_event(msg)
        if isinstance(event, RunStarted) and self.caps.owns:  # this run just started: the header's clock starts now
            self.put(event)
        elif isinstance(event, RunStarted):  # attached later: the run's clock is the files'
            self.put(RunInfo(device=event.device_name or event.device, total=event.total_steps))
        elif event is not None:  # finished or failed
            self._hold(event)

    def _follow_channel(self) -> None:
        """Subscribe; on a lost connection, re-subscribe while run.json says the run is live."""
        warned = False
        while not self._stop.is_set():
            problem = ""
            try:
                for msg in self.client.subscribe():
                    if self._stop.is_set():
                        return
                    if isinstance(msg, dict):
                        self._on_message(msg)
            except ControlError as exc:
                problem = str(exc)
            info = read_run_info(self.run_dir) or {}
            state = liveness(info) if info else RunState.UNKNOWN
            if state in LIVE_STATES:
                if problem and not warned:
                    self.put(LogMessage("warning", f"control channel: {problem}; trying again"))
                    warned = True
                self._stop.wait(RECONNECT_DELAY)
                continue
            self._run_over(state, info)
            return

    def _run_over(self, state: str, info: dict) -> None:
        if state == RunState.STALE:
            self._show_state(RunState.STALE)
            self.put(LogMessage("error", f"the trainer (pid {info.get('pid')}) is gone without a clean exit; "
                                         f"continue the run with --resume latest"))
        else:
            self._show_state(RunState.FINISHED if state in (RunState.FINISHED, RunState.STOPPED) else state)
            self.put(LogMessage("info", f"the trainer has exited ({state}); q closes the viewer"))
        self._end_code = EXIT_OK if state in (RunState.FINISHED, RunState.STOPPED) else EXIT_FAILED

    # ---- the keys: requests over the channel ----------------------------------------------------
    @property
    def paused(self) -> bool:
        return self.remote_state == RunState.PAUSED if self._want_paused is None else self._want_paused

    def _send(self, cmd: str, done, **fields) -> None:
        """The request on a thread; its answer is queued as a line for the log pane."""
        if not self.ready.is_set():
            if cmd in ("pause", "resume"):
                self._want_paused = None
            self.put(LogMessage("warning", f"{cmd}: the trainer is still starting; try again in a moment"))
            return

        def call() -> None:
            try:
                reply = self.client.request(cmd, **fields)
            except ControlError as exc:
                self.put(LogMessage("error", f"{cmd}: {exc}"))
                return
            finally:
                if cmd in ("pause", "resume"):
                    self._want_paused = None
            if not reply.get("ok"):
                self.put(LogMessage("warning", f"{cmd} refused: {reply.get('error', 'no reason given')}"))
            elif reply.get("pending"):
                self.put(LogMessage("info", f"{cmd}: {reply.get('message', 'requested')}"))
            else:
                self.put(LogMessage("info", done(reply)))

        threading.Thread(target=call, name=f"request-{cmd}", daemon=True).start()

    def toggle_pause(self) -> str:
        if self.client is None:
            return super().toggle_pause()
        if self.remote_state == RunState.STOPPING:
            return "stopping: pause has no effect"
        pause = not self.paused
        self._want_paused = pause
        if pause:
            self._send("pause", lambda r: f"paused at step {r.get('step')} (the trainer waits; p resumes)")
            return "pause requested: the trainer stops at the end of this step"
        self._send("resume", lambda r: f"resumed at step {r.get('step')}")
        return "resume requested"

    def prompt(self, line: str) -> str:
        if self.client is None:
            return super().prompt(line)
        self._send("prompt", lambda r: f"answered at step {r.get('step')}: {r.get('output', '')}", text=line)
        return "prompt sent: answered at the end of this step"

    def set_settings(self, texts: dict) -> str:
        if self.client is None:
            return super().set_settings(texts)

        self._send("set", lambda r: f"set at step {r.get('step')}: {changes_text(r.get('changes') or {})}",
                   settings=texts)
        return "settings sent: they take effect at the end of this step"

    def settings(self) -> dict:
        return dict(self.remote_settings)

    def checkpoint(self) -> str:
        if self.client is None:
            return super().checkpoint()
        self._send("checkpoint", lambda r: f"checkpoint written at step {r.get('step')}: {r.get('path')}")
        return "checkpoint requested: written at the end of this step"

    def draw(self) -> str:
        if self.client is None:
            return super().draw()
        self._send("draw", lambda r: f"dashboard drawn on request: {r.get('path')}")
        return "dashboard requested"

    def stop(self) -> str:
        if self.client is None:
            return super().stop()
        if self.child is not None and not self.ready.is_set():
            self.end_child_early()
            return "stop requested while the trainer was starting: it is ended (nothing was trained yet)"
        self._send("stop", lambda r: f"the run is stopping at step {r.get('step')}: final checkpoint and exports")
        return "stop requested: the trainer finishes this step, writes the final checkpoint and exports, and exits"
