"""What a training process does on signals: the first SIGINT or SIGTERM stops at the step boundary
(a second one exits at once), and the run outlives its terminal on SIGHUP (the SSH connection
dropped, the window closed) with --on-hangup continue, the default.

Training goes on in the same process. Nothing more is written to the dead terminal: the standard
streams that were the terminal are pointed at <run-dir>/neurogen-tui.log (stdin at /dev/null),
and a line in the log records the hang-up and how to re-attach. Streams that were files or pipes
(`> out.txt`, nohup) are left alone, and a SIGHUP that was ignored when the process started
(nohup) stays ignored. `--on-hangup stop` keeps the older behaviour: stop at the step boundary
with a final checkpoint and exports.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from ..core.events import RunNote
from ..run.layout import RunLayout

log = logging.getLogger(__name__)


# A repeat within this many seconds is the same request arriving twice, not a second request:
# under plain `torchrun`, Ctrl+C reaches each rank from the terminal and again from torchrun, which
# forwards the signal to its workers; exiting on that echo would lose the final checkpoint.
REPEAT_WINDOW_S = 1.5


def install_stop_signals(request_stop, announce, hangup: bool = True, repeat_window: float = REPEAT_WINDOW_S,
                         what: str = "stopping after this step (final checkpoint and exports)",
                         at_once=lambda signum: os._exit(128 + signum)) -> None:
    """First SIGINT/SIGTERM (and SIGHUP if `hangup`): `request_stop()` (a stop at the next step
    boundary) and `announce` it. Another one, more than `repeat_window` later: `at_once`."""
    state: dict = {"first": None}

    def handler(signum, _frame):
        now = time.monotonic()
        if state["first"] is not None:
            if now - state["first"] > repeat_window:
                at_once(signum)
            return  # the same Ctrl+C, delivered twice
        state["first"] = now
        announce(f"{signal.Signals(signum).name}: {what}; signal again to exit at once")
        request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hangup else ()):
        signal.signal(sig, handler)


def hangup_was_ignored() -> bool:
    """True under nohup (SIGHUP inherited as ignored): then it stays ignored."""
    return signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def terminal_fds() -> list[int]:
    """Which of stdin, stdout and stderr are the terminal. Asked before any hang-up: on a tty that
    has hung up, isatty() fails like any other ioctl and says False."""
    out = []
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                out.append(fd)
        except OSError:
            pass
    return out


def redirect_streams(fds: list[int], log_path: str | os.PathLike | None) -> None:
    """Point `fds` elsewhere: stdin to /dev/null, stdout and stderr appended to `log_path` (or
    /dev/null when None). Safe in a signal handler: only open, dup2 and close."""
    if not fds:
        return
    null_in = os.open(os.devnull, os.O_RDONLY)
    target = str(log_path) if log_path is not None else os.devnull
    out = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for fd in fds:
            os.dup2(null_in if fd == 0 else out, fd)
    finally:
        os.close(null_in)
        os.close(out)


def hangup_message(run_dir: str | os.PathLike, pid: int | None = None) -> str:
    where = f"this process (pid {os.getpid()})" if pid is None else f"the trainer's process (pid {pid})"
    return (f"SIGHUP: the terminal went away; training continues in {where}; "
            f"re-attach with: neurogen-tui attach {Path(run_dir).resolve()}")


def continue_app_after_hangup(run_dir: str | os.PathLike, redirect: bool = True) -> None:
    """For the Textual app on SIGHUP, once it has detached from the dead terminal (fds 0-2 on
    /dev/null, its screen writer on a /dev/null of its own): with `redirect`, stdout and stderr
    now append to the run's log; the log records the hang-up either way."""
    if redirect:
        try:
            redirect_streams([1, 2], RunLayout(run_dir).log)
        except OSError as exc:
            log.warning("cannot send stdout/stderr to the log: %s", exc)
    log.warning(hangup_message(run_dir))


class HeadlessHangup:
    """SIGHUP in a headless run: construct it (it subscribes to the bus), then install().

    The signal handler only sends the terminal's streams to /dev/null (writing to a hung-up
    terminal fails with EIO, which would end the run without its final checkpoint), asks for a
    stop with --on-hangup stop, and sets a flag. At the next event, on the trainer's thread, the
    console display is unsubscribed and stopped, and the streams that were the terminal start
    appending to the log."""

    def __init__(self, run_dir: str | os.PathLike, display, bus, request_stop=None):
        self.run_dir = Path(run_dir)
        self.log_path = RunLayout(run_dir).log
        self.display, self.bus = display, bus
        self.request_stop = request_stop  # None: --on-hangup continue
        self.hung_up = False
        self._switched = False
        self.fds: list[int] = []
        bus.subscribe(self)

    def install(self) -> bool:
        """Handle SIGHUP unless it was ignored at start (nohup); True if installed."""
        if hangup_was_ignored():
            return False
        self.fds = terminal_fds()
        signal.signal(signal.SIGHUP, self.on_signal)
        return True

    def on_signal(self, signum, frame) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        redirect_streams(self.fds, None)
        if self.request_stop is not None:
            self.request_stop()

    def __call__(self, event) -> None:
        if not self.hung_up or self._switched:
            return
        self._switched = True
        self.bus.unsubscribe(self.display)
        self.bus.publish(RunNote("hangup", {"then": "stop" if self.request_stop else "continue"}))
        try:
            self.display.progress.stop()  # its last frame goes to /dev/null
        except Exception:
            log.debug("stopping the progress display failed", exc_info=True)
        try:
            redirect_streams([fd for fd in self.fds if fd in (1, 2)], self.log_path)
        except OSError as exc:
            log.warning("cannot send stdout/stderr to the log: %s", exc)
        if self.request_stop is None:
            log.warning(hangup_message(self.run_dir))
        else:
            log.warning("SIGHUP: the terminal went away; stopping after this step (--on-hangup stop)")
