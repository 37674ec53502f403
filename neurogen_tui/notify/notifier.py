"""The notifier: notices in from any thread (never blocking, never raising), out to every channel
from threads of their own.

One dispatcher thread applies the rate limit (one message per kind per `interval`; what it holds
back is summed up in one message when the interval is over, or at the end) and records every
notice through `publish` (the run's timeline, the app's bell). Each channel has its own worker
thread and bounded queue, so an endpoint that hangs holds up nothing but itself; a failed send is
retried with backoff, and a channel that keeps failing is said once (`say`), never again.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from .notice import NEVER_HELD, Notice

log = logging.getLogger(__name__)
INTERVAL = 300.0  # seconds: one message per kind per interval (--notify-interval)
BACKOFF = (0.0, 2.0, 10.0, 30.0)  # seconds before each try of one notice on one channel
QUEUED = 100  # notices waiting for one channel; past that the oldest are dropped (and counted)
DRAIN = 10.0  # seconds the end of a run waits for the last notices to go out
LEVEL_ORDER = {"info": 0, "warning": 1, "error": 2}


class _Worker:
    """One channel's thread: its queue in order, each notice tried with BACKOFF."""

    def __init__(self, channel, say: Callable[[str, str], None], backoff=BACKOFF) -> None:
        self.channel, self.say, self.backoff = channel, say, backoff
        self.queue: deque[Notice] = deque()
        self.cond = threading.Condition()
        self.ending = threading.Event()  # the run's end: the queue is drained, a wait between tries cut short
        self.busy = False
        self.sent = self.failed = self.dropped = 0
        self.reported = False
        self.thread = threading.Thread(target=self._run, name=f"notify {channel.name}", daemon=True)
        self.thread.start()

    def put(self, notice: Notice) -> None:
        with self.cond:
            if len(self.queue) >= QUEUED:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(notice)
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.ending.is_set():
                    self.cond.wait()
                if not self.queue:
                    return
                notice = self.queue.popleft()
                self.busy = True
            try:
                self._deliver(notice)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def _deliver(self, notice: Notice) -> None:
        error = ""
        for delay in self.backoff:
            if delay and self.ending.wait(delay):  # new notices do not cut the wait short; the run's end does
                break
            try:
                self.channel.send(notice)
            except Exception as exc:  # whatever a channel raises, the run goes on
                error = str(exc) or type(exc).__name__
                log.debug("notification to %s failed: %s", self.channel.name, error)
                continue
            self.sent += 1
            return
        self.failed += 1
        if not self.reported:
            self.reported = True
            self.say(f"notifications to {self.channel.name} fail ({error}); the run goes on, and later ones "
                     "are tried without saying so again", "warning")

    def idle(self) -> bool:
        return not self.queue and not self.busy


class Notifier:
    """Notices to every channel, rate-limited by kind; `publish(notice)` records each one (also the
    ones held back, with held=-1), `say(text, level)` reports a channel that fails."""

    def __init__(self, channels: list, publish: Callable[[Notice], None] | None = None,
                 say: Callable[[str, str], None] | None = None, interval: float = INTERVAL, backoff=BACKOFF) -> None:
        self.publish = publish or (lambda notice: None)
        self.say = say or (lambda text, level: log.warning(text))
        self.interval = interval
        self.workers = [_Worker(c, self._say, backoff) for c in channels]
        self._inbox: deque[Notice] = deque(maxlen=10_000)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._last: dict[str, float] = {}
        self._held: dict[str, list[Notice]] = {}
        self.thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self.thread.start()

    def notify(self, notice: Notice) -> None:
        """Any thread; returns at once and never raises."""
        try:
            self._inbox.append(notice)
            self._wake.set()
        except Exception:  # pragma: no cover - an append does not fail; the caller's loop is never ours to break
            log.exception("a notice was lost")

    def _say(self, text: str, level: str) -> None:
        try:
            self.say(text, level)
        except Exception:
            log.exception("could not report a failing channel")

    def _run(self) -> None:
        while not self._closed.is_set() or self._inbox:
            self._wake.wait(1.0)
            self._wake.clear()
            while self._inbox:
                self._accept(self._inbox.popleft())
            self._due(time.monotonic())
        self._due(float("inf"))  # the end: what was held back is said now

    def _interval(self, notice: Notice) -> float:
        return self.interval if notice.wait is None else notice.wait

    def _accept(self, notice: Notice) -> None:
        now = time.monotonic()
        last = self._last.get(notice.key)
        if notice.kind in NEVER_HELD or last is None or now - last >= self._interval(notice):
            self._last[notice.key] = now
            self._send(notice)
            return
        self._held.setdefault(notice.key, []).append(notice)
        notice.held = -1  # recorded, not sent: the summary will say it
        self._record(notice)

    def _due(self, now: float) -> None:
        """One message for each kind whose held-back notices have waited out the interval."""
        for key, held in list(self._held.items()):
            latest = held[-1]
            if now - self._last.get(key, 0.0) < self._interval(latest):
                continue
            del self._held[key]
            self._last[key] = min(now, time.monotonic())
            level = max((n.level for n in held), key=lambda lv: LEVEL_ORDER.get(lv, 0))
            first = time.strftime("%H:%M:%S", time.localtime(held[0].time))
            self._send(Notice(latest.kind, f"{latest.title} (and {len(held) - 1} more since {first})"
                              if len(held) > 1 else latest.title, latest.text, level, latest.run, latest.run_dir,
                              latest.step, held=len(held)))

    def _send(self, notice: Notice) -> None:
        self._record(notice)
        for worker in self.workers:
            worker.put(notice)

    def _record(self, notice: Notice) -> None:
        try:
            self.publish(notice)
        except Exception:
            log.exception("could not record a notice")

    def close(self, timeout: float = DRAIN) -> list[str]:
        """Say what was held back, give the channels up to `timeout` seconds to deliver, and stop;
        returns one line for each channel that could not deliver everything (counted)."""
        self._closed.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        self.thread.join(max(0.0, deadline - time.monotonic()))
        left = []
        for worker in self.workers:
            with worker.cond:
                worker.ending.set()
                worker.cond.notify_all()
                while not worker.idle() and time.monotonic() < deadline:
                    worker.cond.wait(max(0.01, deadline - time.monotonic()))
                lost = len(worker.queue) + worker.failed + worker.dropped + (1 if worker.busy else 0)
            if lost:
                left.append(f"{lost} notification(s) to {worker.channel.name} not delivered")
        return left
