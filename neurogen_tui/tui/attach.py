"""`neurogen-tui attach [RUN_DIR]`: the training screen over a live run in another process, with
the same keys as the app that started it.

History and new metrics, samples, checkpoints and log lines come from the run's files, exactly as
`watch` reads them (AttachFeed is a WatchFeed), so the screen shows the whole run at once. The
control channel (control.py) adds what the files cannot say: the trainer's state as it changes,
and the keys: p, c, d and q become requests whose answers ("paused at step 812", "checkpoint
written: ...") appear in the log pane when they have been carried out. x or Ctrl+C detaches: the
viewer closes and the run goes on; so does a SIGHUP of the viewer's own terminal.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from textual.binding import Binding

from ..control import ControlClient, ControlError
from ..events import LogMessage, RunFailed, StateChanged
from ..runinfo import LIVE_STATES, liveness, read_run_info
from ..runlist import find_runs, is_run_dir
from ..text import sanitize
from .app import TrainingApp, WatchApp
from .budget import add_budget_flag
from .feed import FeedDone, RunInfo
from .watch import WatchFeed

log = logging.getLogger(__name__)
RECONNECT_DELAY = 1.0  # seconds before trying the channel again while the run is still live


class AttachController:
    """The keys, as requests over the control channel. Each call returns at once with a line for
    the log pane; the reply arrives on a thread and is queued on the feed as another line."""

    read_only = False

    def __init__(self, client: ControlClient, feed: "AttachFeed"):
        self.client, self.feed = client, feed
        self._want_paused: bool | None = None  # a pause/resume sent and not answered yet

    @property
    def paused(self) -> bool:
        return self.feed.remote_state == "paused" if self._want_paused is None else self._want_paused

    def _send(self, cmd: str, done) -> None:
        def call() -> None:
            try:
                reply = self.client.request(cmd)
            except ControlError as exc:
                self.feed.put(LogMessage("error", f"{cmd}: {exc}"))
                return
            finally:
                if cmd in ("pause", "resume"):
                    self._want_paused = None
            if not reply.get("ok"):
                self.feed.put(LogMessage("warning", f"{cmd} refused: {reply.get('error', 'no reason given')}"))
            elif reply.get("pending"):
                self.feed.put(LogMessage("info", f"{cmd}: {reply.get('message', 'requested')}"))
            else:
                self.feed.put(LogMessage("info", done(reply)))

        threading.Thread(target=call, name=f"attach-{cmd}", daemon=True).start()

    def toggle_pause(self) -> str:
        if self.feed.remote_state == "stopping":
            return "stopping: pause has no effect"
        pause = not self.paused
        self._want_paused = pause
        if pause:
            self._send("pause", lambda r: f"paused at step {r.get('step')} (the trainer waits; p resumes)")
            return "pause requested: the trainer stops at the end of this step"
        self._send("resume", lambda r: f"resumed at step {r.get('step')}")
        return "resume requested"

    def checkpoint(self) -> str:
        self._send("checkpoint", lambda r: f"checkpoint written at step {r.get('step')}: {r.get('path')}")
        return "checkpoint requested: written at the end of this step"

    def draw(self) -> str:
        self._send("draw", lambda r: f"dashboard drawn on request: {r.get('path')}")
        return "dashboard requested"

    def stop(self) -> str:
        self._send("stop", lambda r: f"the run is stopping at step {r.get('step')}: final checkpoint and exports")
        return "stop requested: the trainer finishes this step, writes the final checkpoint and exports, and exits"


class AttachFeed(WatchFeed):
    """A WatchFeed whose state comes from the control channel; ends with FeedDone when the run's
    process has exited (0 finished or stopped, 1 failed or gone without a clean exit)."""

    read_only = False

    def __init__(self, run_dir: str | Path, info: dict, poll: float = 0.5):
        super().__init__(run_dir, poll=poll)
        self.info = info
        self.title = str(info.get("run_name") or self.title)
        self.client = ControlClient(info["socket"])
        self.controller = AttachController(self.client, self)
        self.remote_state = ""
        self._shown_state = ""
        self._end_code: int | None = None

    def produce(self) -> None:
        self.put(LogMessage("info", f"attached to pid {self.info.get('pid')} training {self.run_dir.resolve()}: "
                                    f"q stops the run, x detaches (the run goes on)"))
        threading.Thread(target=self._follow_channel, name="attach-channel", daemon=True).start()
        while True:
            ended = self._end_code  # read before the poll, so the poll sees the final files
            try:
                self.poll()
            except Exception as exc:  # a file we cannot read must not end the viewer
                log.exception("attach: polling %s failed", self.run_dir)
                self.put(LogMessage("warning", f"attach: {type(exc).__name__}: {exc}"))
            if ended is not None:
                self.put(FeedDone(ended))
                return
            if self._stop.wait(self.poll_interval):
                break
        self.put(FeedDone(0))

    def _update_state(self) -> None:
        """The state shown is the trainer's own (from the channel), not the files' growth."""

    def _show_state(self, state: str) -> None:
        state = "starting" if state == "created" else state
        self.remote_state = state
        if state != self._shown_state:
            self._shown_state = state
            self.put(StateChanged(state))

    def _on_message(self, msg: dict) -> None:
        event = msg.get("event")
        if event is None or event in ("state", "status"):
            if isinstance(msg.get("state"), str):
                self._show_state(msg["state"])
        elif event == "started":
            self.put(RunInfo(device=str(msg.get("device_name") or msg.get("device") or ""),
                             total=msg.get("total_steps")))
        elif event == "failed":
            self.put(RunFailed(step=int(msg.get("step") or 0), error=str(msg.get("error") or "unknown error"),
                               traceback=str(msg.get("traceback") or "")))

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
            state = liveness(info) if info else "unknown"
            if state in LIVE_STATES:
                if problem and not warned:
                    self.put(LogMessage("warning", f"control channel: {problem}; trying again"))
                    warned = True
                self._stop.wait(RECONNECT_DELAY)
                continue
            self._run_over(state, info)
            return

    def _run_over(self, state: str, info: dict) -> None:
        if state == "stale":
            self._show_state("stale")
            self.put(LogMessage("error", f"the trainer (pid {info.get('pid')}) is gone without a clean exit; "
                                         f"continue the run with --resume latest"))
        else:
            self._show_state("finished" if state in ("finished", "stopped") else state)
            self.put(LogMessage("info", f"the trainer has exited ({state}); q closes the viewer"))
        self._end_code = 0 if state in ("finished", "stopped") else 1


class AttachApp(TrainingApp):
    """TrainingApp over AttachFeed: the same keys drive the remote run; x and Ctrl+C detach, and a
    signal (the viewer's own terminal hanging up) only closes the viewer, never stops the run."""

    BINDINGS = [
        Binding("x", "detach", "detach"),
        Binding("ctrl+c", "detach", "detach", show=False, priority=True),
    ]
    HELP_NOTE = ("attached: q stops the run itself (final checkpoint and exports, then the trainer exits); "
                 "x or Ctrl+C detaches: this viewer closes and the run goes on.")

    def action_detach(self) -> None:
        self.exit_requested = True
        if self.run_state.done is not None:
            self.exit(self.run_state.done.exit_code)
            return
        self._say("detaching: the run goes on")
        self.feed.stop()

    def on_signal(self, sig: int) -> None:
        import signal

        if sig == signal.SIGHUP and not self.is_headless:
            self._detach_terminal()
        self.action_detach()

    def on_unmount(self, event) -> None:
        # whatever ends this viewer, the run goes on: never the base class's controller.stop()
        event.prevent_default()
        self.feed.stop()


# ---- the command ------------------------------------------------------------------------------------
def newest_run(root: Path) -> Path | None:
    """`root` itself if it is a run, else the run under it that is live and newest, else the
    newest of any state."""
    if is_run_dir(root):
        return root
    best = None
    for path in find_runs(root):
        info = read_run_info(path) or {}
        live = liveness(info) in LIVE_STATES if info else False
        updated = info.get("updated_at") if isinstance(info.get("updated_at"), (int, float)) else 0.0
        key = (live, updated)
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurogen-tui attach",
                                description="Open the training screen on a live run, with its keys "
                                            "(pause, checkpoint, dashboard, stop).")
    p.add_argument("run_dir", nargs="?", default=".", metavar="RUN_DIR",
                   help="the run's directory, or a directory above it (default: ., or the newest run under it)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the run's files")
    add_budget_flag(p)
    return p


def error(message: str) -> int:
    print(f"neurogen-tui: error: {sanitize(message)}", file=sys.stderr)
    return 2


def choose_feed(run: Path, poll: float):
    """(feed, app class): attached to the live trainer if its channel answers, else read-only."""
    info = read_run_info(run)
    state = liveness(info) if info else "unknown"
    why = f"its state is {state}"
    if state in LIVE_STATES and info.get("socket"):
        feed = AttachFeed(run, info, poll=poll)
        try:
            feed.client.request("status", timeout=10.0)
            return feed, AttachApp
        except ControlError as exc:
            why = str(exc)
    elif state in LIVE_STATES:
        why = "it was started without a control channel"
    feed = WatchFeed(run, poll=poll)
    note = f"{run} cannot be controlled from here ({why}); showing it read-only, as `watch` does"
    feed.put(LogMessage("warning", note))
    print(f"neurogen-tui: {sanitize(note)}", file=sys.stderr)
    return feed, WatchApp


def main_attach(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.run_dir)
    if not root.is_dir():
        return error(f"{root} is not a directory")
    run = newest_run(root)
    if run is None:
        return error(f"no run in {root} or below it (no run.json or training_viz/metrics.jsonl)")
    feed, app_class = choose_feed(run, max(0.05, args.poll))
    app = app_class(feed, feed.controller, ui_budget=args.ui_budget)
    code = app.run()
    return 1 if code is None else int(code)
