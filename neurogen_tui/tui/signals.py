"""What signals do to the app: SIGHUP (the terminal went away), SIGTERM and SIGINT.

A mixin of MonitorApp (app.py), as the chart keys are: it reads the app's capabilities and
state and calls its stop and detach actions.
"""
from __future__ import annotations

import asyncio
import os
import signal


class TerminalSignals:
    def _install_signal_handlers(self) -> None:
        """SIGHUP (the SSH connection dropped), SIGTERM and SIGINT. Without handlers on the loop
        the app dies at once with no final checkpoint."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass

    def on_signal(self, sig: int) -> None:
        """A viewer closes and the run goes on; the run this screen owns stops like `q`, except
        that a hang-up with --on-hangup continue leaves it training (in this process, silently
        until it ends; in the child, with this process waiting for it: cli/launch.py)."""
        if sig == signal.SIGHUP and not self.is_headless:
            self._detach_terminal()
        if not self.caps.owns:
            self.action_detach() if self.caps.detach else self.action_stop()
            return
        if sig == signal.SIGHUP and self.on_hangup == "continue" and self.run_state.done is None:
            if self.caps.shares_gil:
                if self.after_hangup is not None:
                    self.after_hangup(self.terminal_lost)
                self.exit_requested = True  # the app leaves once the trainer has finished
            else:
                self.detached = True
                self.exit(0)
            return
        self._say(f"{signal.Signals(sig).name}: stopping")
        self.action_stop()

    def _detach_terminal(self) -> None:
        """The terminal is gone: keep running, silently, until the final files are written.

        Seen in tmux kill-session tests: Textual's writer thread dies on the first write to the
        hung-up tty (EIO) and, once its 30-write queue is full, the next screen update blocks the
        event loop for good; the SIGCONT that follows SIGHUP restarts "application mode" with new
        input threads; and a hung-up tty is always readable, so the input thread spins. Hence:
        no restarts, the input thread told to end, stdin/stdout/stderr on /dev/null, and a fresh
        writer thread."""
        self.terminal_lost = True
        driver = getattr(self, "_driver", None)
        if driver is not None:
            driver._auto_restart = False  # SIGCONT must not start application mode again
            exit_event = getattr(driver, "exit_event", None)
            if exit_event is not None:
                exit_event.set()  # the input thread ends at its next look at the (gone) tty
        for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
            null = os.open(os.devnull, mode)
            os.dup2(null, fd)
            os.close(null)
        if driver is not None and getattr(driver, "_writer_thread", None) is not None:
            from textual.drivers._writer_thread import WriterThread

            fresh = WriterThread(open(os.devnull, "w", encoding="utf-8"))
            fresh.start()
            driver._writer_thread = fresh
