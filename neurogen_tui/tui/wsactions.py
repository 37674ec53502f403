"""The workspace's tables and steering, mixed into WorkspaceApp (workspace.py): the config diff
of the selected runs (d, sorted by any column with o) and p, c, g and e on the run under the
cursor (attach), with the same acknowledgements as `attach`."""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.widgets import DataTable

from ..core.text import format_count, sanitize


class DiffTable:
    """The config diff: only the keys in which the selected runs differ, beside their results."""

    _diff_shown: tuple | None = None  # (columns, rows, sort) on screen now

    def action_diff(self) -> None:
        self._diff_shown = None
        grid, diff = self.query_one("#grid"), self.query_one("#diff")
        grid.toggle_class("-hidden")
        diff.set_class(grid.has_class("-hidden"), "-shown")
        if diff.has_class("-shown"):
            self.show_diff()
        self._dirty = True

    def show_diff(self) -> None:
        with self.ws.lock:
            columns, rows = self.ws.diff()
        shown = (tuple(columns), repr(rows), self.sort_column)
        if shown == self._diff_shown:  # unchanged: not rebuilt (a rebuild flickers)
            return
        self._diff_shown = shown
        table = self.query_one("#diff", DataTable)
        table.clear(columns=True)
        for c in columns:
            table.add_column(sanitize(c, 30), key=c)
        key = columns[min(self.sort_column, len(columns) - 1)]
        index = columns.index(key)
        rows = sorted(rows, key=lambda r: _sort_key(r[index]))
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        self.say(f"diff: {len(columns) - 7} differing keys; sorted by {sanitize(key, 30)} (o: next column)")

    def action_sort(self) -> None:
        self.sort_column += 1
        columns, _ = self.ws.diff()
        self.sort_column %= max(1, len(columns))
        self.show_diff()



class Steering:
    """p (pause/resume), c (checkpoint), g (prompt) and e (set) reach the run under the cursor."""

    def _live_current(self):
        e = self.current()
        if not self.control:
            self.say("read-only (watch): attach DIR steers the run under the cursor")
            return None
        if e is None or not (Path(e.path) / "run.json").exists():
            self.say("no run with a control channel under the cursor")
            return None
        return e

    def action_steer(self, what: str) -> None:
        if self._live_current():
            self._request(what, "")

    @work(thread=True, group="steer")
    def _request(self, what: str, value: str) -> None:
        from ..control.protocol import ControlClient, ControlError

        e = self.current()
        try:
            client = ControlClient.for_run(e.path)
            if what == "pause":
                what = "resume" if e.summary.get("state") == "paused" else "pause"
                reply = client.request(what)
            elif what == "set":
                settings = dict(part.split("=", 1) for part in value.split() if "=" in part)
                reply = client.request("set", settings=settings)
            elif what == "prompt":
                reply = client.request("prompt", text=value)
            else:
                reply = client.request(what)
        except (ControlError, OSError, ValueError) as exc:
            self.call_from_thread(self.say, f"{e.name}: {exc}")
            return
        said = reply.get("error") or reply.get("message") or reply.get("path") or reply.get("state") or "done"
        if reply.get("changes"):
            said = "set " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in reply["changes"].items())
        if reply.get("output"):
            said = f"{reply.get('prompt')} → {reply['output']}"
        step = f" at step {reply['step']}" if reply.get("step") is not None else ""
        self.call_from_thread(self.say, f"{e.name}: {what}{step}: {said}")



def _cell(value) -> str:
    if isinstance(value, float) and abs(value) >= 1e4:
        return format_count(value)  # 25.9k, not 2.59e+04
    if isinstance(value, float):
        return f"{value:.4g}"
    return sanitize("-" if value is None else str(value), 40)


def _sort_key(value) -> tuple:
    """Numbers in order, then text, then the runs without a value: a column mixing them sorts."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (value is None, not number, value if number else 0, "" if number else str(value))
