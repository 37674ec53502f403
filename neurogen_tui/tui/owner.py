"""The app of the terminal that started the run, over a trainer in a child process (launch.py).

The trainer does not share this process: CPU torch ops and the app's Python (Textual composing
the screen, plotext building the charts) would otherwise take turns on one GIL, and the
trainer lost 8-17% of its speed to the app that way (benchmarks/results/ui.md). The screen is
fed as `attach` feeds it, from the run's files and its control channel, and its keys are the
app's own: q, Ctrl+C and Ctrl+Q stop the run (final checkpoint and exports), and the app exits
once the trainer has; x closes the screen and leaves the run going.

Until the child serves its channel (it is importing torch, opening the data) the screen says
"starting"; a stop then ends the child with SIGTERM, and a child that exits first shows its
error lines and the failed state.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

from textual.binding import Binding

from ..control import ControlClient
from ..events import LogMessage, RunFailed, RunFinished, RunStarted, StateChanged
from ..runinfo import read_run_info
from .attach import AttachApp, AttachController, AttachFeed
from .feed import FeedDone
from .watch import WatchFeed

STARTUP_POLL = 0.1  # seconds between looks for the child's run.json while it starts


class ChildController(AttachController):
    """AttachController that knows the channel is not up while the child starts."""

    feed: "ChildFeed"

    def _send(self, cmd: str, done) -> None:
        if not self.feed.ready.is_set():
            if cmd in ("pause", "resume"):
                self._want_paused = None
            self.feed.put(LogMessage("warning", f"{cmd}: the trainer is still starting; try again in a moment"))
            return
        super()._send(cmd, done)

    def stop(self) -> str:
        if self.feed.ready.is_set():
            return super().stop()
        self.feed.end_child_early()
        return "stop requested while the trainer was starting: it is ended (nothing was trained yet)"


class ChildFeed(AttachFeed):
    """AttachFeed on the child started by this process; it waits for the child's channel first."""

    def __init__(self, run_dir: str | Path, proc: subprocess.Popen, poll: float = 0.25):
        WatchFeed.__init__(self, run_dir, poll=poll)  # no run.json of this child's yet: set up below
        self.proc = proc
        self.info: dict = {}
        self.client = ControlClient("")  # its path is set once the child serves the channel
        self.controller = ChildController(self.client, self)
        self.remote_state = ""
        self._shown_state = ""
        self._end_code: int | None = None
        self.ready = threading.Event()
        self.ended_early = False
        self._held: list = []  # the run's end, shown after the poll that reads its last rows
        self._held_lock = threading.Lock()

    def child_line(self, line: str) -> None:
        """An error line the child wrote on stderr (launch.py's drain thread calls this). Once the
        channel is up, its failed event says the same with the traceback's frames; the launcher
        prints every such line after the app closes either way."""
        if self.ready.is_set():
            return
        text = line.rstrip("\n").removeprefix("neurogen-tui: ")
        self.put(LogMessage("error", text))

    def end_child_early(self) -> None:
        self.ended_early = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)

    def produce(self) -> None:
        self._show_state("starting")
        self.put(LogMessage("info", f"starting the trainer (pid {self.proc.pid}) in {self.run_dir.resolve()}"))
        while not self._stop.is_set():
            info = read_run_info(self.run_dir) or {}
            if info.get("pid") == self.proc.pid and info.get("socket"):
                self.info, self.client.path = info, str(info["socket"])
                self.ready.set()
                break
            code = self.proc.poll()
            if code is not None:
                self._poll_log()
                self._child_gone(code)
                self._release(self._take_held())
                self.put(FeedDone(0 if self.ended_early else 1))
                return
            self._stop.wait(STARTUP_POLL)
        else:
            self.put(FeedDone(0))
            return
        threading.Thread(target=self._follow_channel, name="owner-channel", daemon=True).start()
        while True:
            ended = self._end_code
            held = self._take_held()  # before the poll: the end shows after the rows it read
            try:
                self.poll()
            except Exception as exc:  # a file we cannot read must not end the screen
                self.put(LogMessage("warning", f"reading the run's files: {type(exc).__name__}: {exc}"))
            self._release(held)
            if ended is not None:
                self.put(FeedDone(ended))
                return
            if self._stop.wait(self.poll_interval):
                break
        self.put(FeedDone(0))

    def _child_gone(self, code: int) -> None:
        """The child exited before it served its channel: a bad flag it found, a dataset it
        could not open, or our own SIGTERM."""
        if self.ended_early:
            self._show_state("finished")
            self.put(LogMessage("info", "the trainer was ended before it started; q closes"))
            return
        self._show_state("failed")
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        self.put(LogMessage("error", f"the trainer {how} before it started (its error is above); q closes"))

    def _log_line(self, raw: str) -> None:
        if " run finished (" in raw or " training failed at step " in raw:
            return  # the channel's finished / failed events say it, with the final checkpoint or the frames
        super()._log_line(raw)

    def put(self, event) -> None:
        """The trainer writes a step's metrics before it says it has finished or failed, but the
        channel outruns the files: the end waits for the next poll (which reads those last rows)."""
        if isinstance(event, (RunFinished, RunFailed)) or (
                isinstance(event, StateChanged) and event.state in ("finished", "failed", "stopped")):
            with self._held_lock:
                self._held.append(event)
            return
        super().put(event)

    def _take_held(self) -> list:
        with self._held_lock:
            held, self._held = self._held, []
        return held

    def _release(self, held: list) -> None:
        for event in held:
            super().put(event)

    def _on_message(self, msg: dict) -> None:
        event = msg.get("event")
        if event == "started":  # this run just started: the header's clock starts now
            self.put(RunStarted(config={}, device=str(msg.get("device") or ""),
                                device_name=str(msg.get("device_name") or ""), n_params=int(msg.get("n_params") or 0),
                                start_step=int(msg.get("start_step") or 0), total_steps=msg.get("total_steps"),
                                resumed_from=msg.get("resumed_from")))
        elif event == "finished":
            self.put(RunFinished(step=int(msg.get("step") or 0), reason=str(msg.get("reason") or "finished"),
                                 checkpoint=msg.get("checkpoint")))
        else:
            super()._on_message(msg)


class OwnerApp(AttachApp):
    """The app on the run this terminal started: q, Ctrl+C and Ctrl+Q stop the run, SIGTERM and
    SIGHUP too (unless --on-hangup continue: then the screen closes and the run goes on); x
    detaches."""

    BINDINGS = [
        Binding("x", "detach", "detach"),
        Binding("ctrl+c", "stop", "stop", show=False, priority=True),
    ]
    HELP_NOTE = ("x closes this screen and leaves the run going (this terminal waits for it; "
                 "`neurogen-tui attach` opens the screen again).")

    def __init__(self, feed: ChildFeed, controller, on_hangup: str = "continue", ui_budget: float | None = None) -> None:
        super().__init__(feed, controller, ui_budget=ui_budget)
        self.on_hangup = on_hangup
        self.detached = False

    def action_detach(self) -> None:
        if self.run_state.done is None:
            self.detached = True
        super().action_detach()

    def on_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP and not self.is_headless:
            self._detach_terminal()
        if sig == signal.SIGHUP and self.on_hangup == "continue" and self.run_state.done is None:
            self.detached = True  # the run goes on in the child; this process waits for it
            self.exit(0)
            return
        self._say(f"{signal.Signals(sig).name}: stopping")
        self.action_stop()

    def on_unmount(self, event) -> None:
        event.prevent_default()
        self.feed.stop()  # what becomes of the run is the launcher's call (launch.py)
