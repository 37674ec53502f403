"""The logging API's writer: a thread of its own that turns what `run.log()` handed over into the
run directory's files, so the loop's thread only appends to a queue.

Every FLUSH seconds (and at finish) it takes what is queued, reads each value as a number (nested
dicts flattened with "/", NaN and infinities as null, a tensor or numpy scalar by its value;
anything else refused with one warning per key), merges the entries of one step into one row, and
writes them through the run directory's own writers: metrics.jsonl and its sidecar
(run/recorder.py), samples.jsonl, run.json's progress, config.json. A full disk holds rows in
memory as our trainer's recorder does.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
from collections import deque

from ..core.events import TextSample
from ..run.history import row_value

log = logging.getLogger(__name__)

FLUSH = 0.25  # seconds between writes: SIGKILL loses at most this much and the screen lags it as little
RESERVED = ("step", "timestamp")  # our row's own keys: a logged key of that name is kept as `<name>_`


def warn(text: str) -> None:
    """A warning for the person whose loop this is, on its stderr (never an exception in the loop)."""
    log.warning(text)
    try:
        print(f"neurogen-tui: warning: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def as_number(value):
    """A logged value as a JSON number (None for NaN and infinities), or raise TypeError."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars and arrays of one value, torch tensors of one value
    if callable(item):
        try:
            return as_number(item())
        except (ValueError, RuntimeError):  # an array or a tensor of more than one value
            pass
    raise TypeError(type(value).__name__)


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


class RunWriter:
    """Drains the run's queue into its files every FLUSH seconds, on a daemon thread."""

    def __init__(self, queue: deque, recorder, record=None, config=None) -> None:
        self.queue, self.recorder, self.record, self.config = queue, recorder, record, config
        self.refused: set[str] = set()  # keys warned of (once each)
        self.rows = 0
        self.last_step: int | None = None
        self.last_loss: float | None = None  # the newest row's loss, under any of its names
        self._wake, self._stop = threading.Event(), threading.Event()
        self._lock = threading.Lock()  # one drain at a time (the thread, and finish)
        self._thread = threading.Thread(target=self._run, name="neurogen-tui-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH)
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        with self._lock:
            try:
                self._drain()
            except Exception:  # a bug here must never reach the loop: it is logged, and the next drain tries again
                log.exception("the logging API's writer failed")

    def _drain(self) -> None:
        pending, rows = self.queue, []
        while pending:
            item = pending.popleft()
            if isinstance(item, TextSample):
                self.recorder(item)
                continue
            step, data, when = item
            values = self._numbers(data)
            if rows and rows[-1]["step"] == step:
                rows[-1].update(values)  # log() calls of one step: one row
                continue
            rows.append({"step": step, "timestamp": when, **values})
            if len(rows) >= 4096:  # a bounded batch: a loop logging very fast still sees its rows go out
                self._write(rows[:-1])
                rows = rows[-1:]
        if rows:
            self._write(rows)
        if self.config is not None:
            self.config.flush()

    def _numbers(self, data: dict) -> dict:
        if any(isinstance(v, dict) for v in data.values()):
            data = flatten(data)
        out = {}
        for key, value in data.items():
            key = str(key)
            try:
                out[f"{key}_" if key in RESERVED else key] = as_number(value)
            except TypeError as exc:
                if key not in self.refused:
                    self.refused.add(key)
                    warn(f"log(): {key!r} is a {exc}, not a number; it is left out (text goes to run.log_text)")
        return out

    def _write(self, rows: list[dict]) -> None:
        self.recorder.write_rows(rows)
        self.rows += len(rows)
        last = rows[-1]
        self.last_step = last["step"]
        loss = row_value(last, "loss")
        self.last_loss = float(loss) if isinstance(loss, (int, float)) else self.last_loss
        if self.record is not None:
            self.record.progress(last["step"], loss if isinstance(loss, (int, float)) else None)

    def flush(self) -> None:
        """Everything handed over so far, written now (finish, and tests)."""
        self.drain()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.drain()
