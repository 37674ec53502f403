"""One run's notifications made and closed together: the notifier and its channels, the bus
watcher, the watchdog (our trainer's session and the logging API's Run both use this)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..core.events import LogMessage, Notified, RunFailed, RunFinished, RunNote
from .channels import Command, Webhook
from .notice import Notice, level_of
from .notifier import INTERVAL, Notifier
from .watch import NoticeWatcher, Watchdog

log = logging.getLogger(__name__)


class Notifications:
    """Notices of the run on `bus` to the webhooks `urls` and the `commands`; each one also goes on
    the bus (Notified: the timeline, a watching app), and a channel that fails is said there once."""

    def __init__(self, bus, run: str, run_dir, *, step: Callable[[], int], paused: Callable[[], bool],
                 urls=(), fmt: str = "auto", commands=(), interval: float = INTERVAL, best_val: bool = False,
                 stall_after: float | None = None, disk_low_mb: float = 1024.0,
                 last_loss: Callable[[], float | None] | None = None) -> None:
        self.bus = bus
        run_dir = Path(run_dir).resolve()  # read far from the machine: a whole path
        channels = [Webhook(u, fmt) for u in urls] + [Command(c) for c in commands]
        self.channels = [c.name for c in channels]
        self.notifier = Notifier(channels, publish=lambda n: bus.publish(Notified(n.to_dict())), say=self._say,
                                 interval=interval)
        self._ender = bus.subscribe(self._end)  # before the watcher: a stall's end is said before the run's
        self.watcher = bus.subscribe(NoticeWatcher(self.notifier.notify, run, str(run_dir), best_val, last_loss))
        self.watchdog = Watchdog(self.notifier.notify, run, run_dir, step, paused, stall_after, disk_low_mb)
        self.run, self.run_dir = run, str(run_dir)

    def _end(self, event) -> None:
        if isinstance(event, (RunFinished, RunFailed)):
            self.watchdog.close()

    def _say(self, text: str, level: str) -> None:
        log.warning(text)
        self.bus.publish(LogMessage(level, text))
        self.bus.publish(RunNote("notify failing", {"text": text}))

    def alert(self, title: str, text: str = "", level="info", step: int | None = None,
              wait: float | None = None) -> None:
        """A loop's own notice (run.alert, as wandb and trackio spell it); `wait`: seconds before
        another alert of this title goes out (wandb's wait_duration; default --notify-interval)."""
        self.notifier.notify(Notice("alert", f"{self.run}: {title}", str(text), level_of(level), self.run,
                                    self.run_dir, step, wait=wait))

    def close(self) -> list[str]:
        """Stop watching, say what was held back, give the channels a few seconds; what was not
        delivered, one line a channel (also logged)."""
        self.watchdog.close()
        self.bus.unsubscribe(self.watcher)
        self.bus.unsubscribe(self._ender)
        left = self.notifier.close()
        for line in left:
            log.warning(line)
        return left
