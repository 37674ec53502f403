"""The runs workspace: many runs side by side, live (`neurogen-tui watch DIR` / `attach DIR` on a
directory of runs).

A runs sidebar (name, state, step, last loss, age; each run its colour) beside a grid of charts,
each chart one metric overlaid for the selected runs: the seed's four first, then every other
logged key, a page at a time. Space selects, P pins (on top), Enter opens one run as today's screen
(Esc comes back: the command line runs it, cli/commands.py), f filters the runs (`lr>=1e-3
-name:debug`: run/query.py), / the metrics, d shows the config diff of the selected runs (only the
keys that differ, beside final and best loss, validation loss, tok/s and steps; sorted by any
column with o), G groups the runs that differ only in one key (a seed) into a mean line with a
min-max band, b hides the sidebar. The chart keys s/S (smoothing), y (log Y), t (X axis) and 0
work on every chart. With `attach`, p, c, g and e act on the run under the cursor.

The data work (finding runs, reading and following the selected runs' histories, building the
plots) happens on worker threads; the sidebar and the keys never wait for it.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Input, Static

from ..core.palette import hex_style
from ..core.text import format_count, sanitize
from ..run.listing import age
from .chartsettings import SMOOTHING_LEVELS
from .overlay import Trace, overlay_text, traces
from .wsactions import DiffTable, Steering
from .runs import REDUCED, Workspace

STATE_MARK = {"running": "▶", "watching": "▶", "paused": "‖", "stopping": "■", "starting": "…", "finished": "✓",
              "stopped": "■", "failed": "✗", "stale": "?", "idle": "·", "unknown": " "}
X_AXES = ("step", "time")


class Built(Message):
    def __init__(self, results: list) -> None:
        super().__init__()
        self.results = results


class Scanned(Message):
    pass


class OverlayPanel(Vertical):
    """A caption (the metric) over one overlay chart."""

    def compose(self) -> ComposeResult:
        yield Static(classes="overlay-caption")
        yield Static(classes="overlay-plot")


class WorkspaceApp(DiffTable, Steering, App[object]):
    CSS = """
    #sidebar { width: 40; border-right: solid $accent; }
    #sidebar.-hidden { display: none; }
    #runs-table { height: 1fr; }
    #grid { grid-size: 2 2; grid-gutter: 0 1; }
    #grid.-wide { grid-size: 3 2; }
    .overlay-caption { height: 1; }
    .overlay-plot { height: 1fr; }
    #legend { height: 1; }
    #status { height: 1; background: $panel; }
    #diff { display: none; }
    #diff.-shown { display: block; }
    #grid.-hidden { display: none; }
    #query { dock: bottom; display: none; }
    #query.-shown { display: block; }
    """
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("space", "select", "select"), Binding("P", "pin", "pin"), Binding("enter", "open", "open"),
        Binding("f", "ask('filter')", "filter"), Binding("slash", "ask('metrics')", "metrics"),
        Binding("d", "diff", "diff"), Binding("G", "ask('group')", "group"), Binding("b", "sidebar", "sidebar"),
        Binding("a", "select_all", "all", show=False), Binding("o", "sort", "sort", show=False),
        Binding("right_square_bracket", "page(1)", "page", show=False),
        Binding("left_square_bracket", "page(-1)", "page", show=False),
        Binding("s", "smoothing(1)", "smoother", show=False), Binding("S", "smoothing(-1)", "rougher", show=False),
        Binding("y", "log_y", "log Y", show=False), Binding("t", "x_axis", "X axis", show=False),
        Binding("0", "reset", "reset", show=False),
        Binding("p", "steer('pause')", "pause", show=False), Binding("c", "steer('checkpoint')", "checkpoint", show=False),
        Binding("g", "ask('prompt')", "prompt", show=False), Binding("e", "ask('set')", "set", show=False),
        Binding("q", "quit_workspace", "quit"), Binding("escape", "escape", show=False),
    ]
    SCAN_EVERY = 2.0  # seconds between looks for new runs and new rows
    REDRAW = 1.0

    def __init__(self, root: str | Path, control: bool = False, weight: float = 0.6, ws: Workspace | None = None) -> None:
        super().__init__()
        self.ws = ws or Workspace(root, weight)  # the same one again after a run opened from it closes
        self.control = control  # attach: p, c, g and e reach the run under the cursor
        self.page = 0
        self.log_y: set[str] = set()
        self.x_axis = "step"
        self.asking = ""
        self.sort_column = 0
        self.opened: Path | None = None  # Enter: the run to open as today's screen (the command line does)
        self.status_text = ""
        self._building = False
        self._dirty = True

    # ---- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal():
            with Vertical(id="sidebar"):
                yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=False)
            with Vertical():
                with Grid(id="grid"):
                    for i in range(6):
                        yield OverlayPanel(id=f"panel-{i}")
                yield DataTable(id="diff", cursor_type="column")
                yield Static(id="legend")
        yield Input(id="query")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_columns(" ", "run", "state", "step", "loss", "age")
        table.focus()
        self.title = f"neurogen-tui workspace: {self.ws.root}"
        self.scan()
        self.set_interval(self.SCAN_EVERY, self.scan)
        self.set_interval(self.REDRAW, self.redraw)

    def on_resize(self) -> None:
        wide = self.size.width >= 150 or (self.size.width >= 110 and self.query_one("#sidebar").has_class("-hidden"))
        self.query_one("#grid").set_class(wide, "-wide")
        self._dirty = True
        if self.query_one("#runs-table", DataTable).columns:
            self.show_runs()  # the state column's words come and go with the width

    @property
    def per_page(self) -> int:
        return 6 if self.query_one("#grid").has_class("-wide") else 4

    # ---- data (threads) ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="scan")
    def scan(self) -> None:
        """Runs found (the sidebar at once), the new selected runs' tails (the first charts), then
        their whole histories, and the rows the others added."""
        with self.ws.lock:  # the build thread reads the lines this extends
            self.ws.scan()
        self.post_message(Scanned())
        with self.ws.lock:
            tails = self.ws.load_tails()
        if tails:
            self.post_message(Scanned())
        with self.ws.lock:
            self.ws.load_selected()
        self.post_message(Scanned())

    @on(Scanned)
    def _scanned(self) -> None:
        if not self.query("#runs-table"):  # a scan that ends as the app closes
            return
        self.show_runs()
        self._dirty = True
        self.redraw()

    def redraw(self, force: bool = False) -> None:
        if self._building or not (self._dirty or force):
            return
        if self.query_one("#grid").has_class("-hidden"):
            self.show_diff()
            return
        self._dirty = False
        self._building = True
        panels = [(p, p.query_one(".overlay-plot").size) for p in self.query(OverlayPanel) if p.display]
        self.build(panels, self.app.theme, self.screen.background_colors[1] if hasattr(self.screen, "background_colors") else None)

    @work(thread=True, exclusive=True, group="build")
    def build(self, panels: list, theme, background) -> None:
        results = []
        try:
            with self.ws.lock:
                results = self._build(panels, background)
        finally:
            self.post_message(Built(results))

    def _build(self, panels: list, background) -> list:
        results = []
        names = self.ws.metrics()
        pages = max(1, -(-len(names) // self.per_page))
        self.page = min(self.page, pages - 1)
        shown = names[self.page * self.per_page:(self.page + 1) * self.per_page]
        for i, (panel, size) in enumerate(panels):
            if i >= len(shown):
                results.append((panel, Text(""), Text("")))
                continue
            metric = shown[i]
            traces = self.traces(metric, max(16, 2 * size.width))  # braille: two points a column
            caption = Text(metric, style="bold")
            if metric in self.log_y:
                caption.append(" log", "dim")
            caption.append(f"  {self.page + 1}/{pages}" if i == 0 and pages > 1 else "", "dim")
            results.append((panel, caption, overlay_text(traces, size.width, size.height, metric in self.log_y,
                                                         self.x_axis, "textual-dark", background)))
        return results

    def traces(self, metric: str, points: int = REDUCED) -> list[Trace]:
        """The lines of `metric` for the selected runs, or their groups' bands (overlay.traces)."""
        return traces(self.ws, metric, points, self.x_axis)

    @on(Built)
    def _built(self, message: Built) -> None:
        self._building = False
        for panel, caption, plot in message.results:
            panel.query_one(".overlay-caption", Static).update(caption)
            panel.query_one(".overlay-plot", Static).update(plot)
        self.show_legend()

    # ---- the sidebar, legend and status ------------------------------------------------------------------
    def show_runs(self) -> None:
        """The sidebar, from the runs the filter keeps (quick: the filter answers at once)."""
        table = self.query_one("#runs-table", DataTable)
        visible = self.ws.visible()
        cursor = table.cursor_row
        table.clear()
        now, narrow = time.time(), self.size.width < 100
        for e in visible:
            rgb, _ = e.colour
            mark = Text("●" if e.selected else "○", style=hex_style(rgb))
            if e.pinned:
                mark.append("P", "bold")
            s = e.summary
            state = str(s.get("state") or "")
            loss = s.get("loss")
            shown = STATE_MARK.get(state, " ") + ("" if narrow else f" {state}")  # 80 columns: the mark says it
            table.add_row(mark, Text(sanitize(e.name, 24)), shown,
                          format_count(s["step"]) if isinstance(s.get("step"), int) else "-",
                          f"{loss:.4f}" if isinstance(loss, float) else "-",
                          age(now - s["updated"]).replace(" ago", "") if s.get("updated") else "-", key=str(e.path))
        if visible:
            table.move_cursor(row=min(cursor, len(visible) - 1))
        self.show_status()

    def show_legend(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        for e in self.ws.selected():
            rgb, _ = e.colour
            text.append("■ ", hex_style(rgb))
            text.append(sanitize(e.name, 24) + "  ")
        self.query_one("#legend", Static).update(text)

    def show_status(self) -> None:
        ws = self.ws
        parts = [f"{len(ws.entries)} runs", f"{len(ws.selected())} selected"]
        if ws.query:
            parts.append(f"filter: {sanitize(ws.query, 40)}")
        if ws.metric_filter:
            parts.append(f"metrics: /{sanitize(ws.metric_filter, 20)}")
        if ws.group_key:
            parts.append(f"grouped by {sanitize(ws.group_key, 20)}")
        parts.append(f"ema {ws.weight:.2f}")
        if self.x_axis != "step":
            parts.append(f"x {self.x_axis}")
        line = Text(" " + " · ".join(parts), no_wrap=True, overflow="ellipsis")
        if self.status_text:
            line.append("  " + self.status_text, "bold")
        for status in self.query("#status"):  # none while the app closes
            status.update(line)

    def say(self, text: str) -> None:
        self.status_text = sanitize(text, 200)
        self.show_status()

    def current(self):
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.ws.entries.get(Path(key))

    # ---- keys --------------------------------------------------------------------------------------------
    def action_select(self) -> None:
        e = self.current()
        if e is not None:
            e.selected = not e.selected
            self.show_runs()
            self.scan()

    def action_select_all(self) -> None:
        visible = self.ws.visible()
        on = not all(e.selected for e in visible)
        for e in visible:
            e.selected = on
        self.show_runs()
        self.scan()

    def action_pin(self) -> None:
        e = self.current()
        if e is not None:
            e.pinned = not e.pinned
            e.selected = e.selected or e.pinned
            self.show_runs()
            self._dirty = True

    def action_open(self) -> None:
        e = self.current()
        if e is not None and not self.asking:
            self.opened = e.path
            self.exit(("open", e.path))

    @on(DataTable.RowSelected, "#runs-table")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:  # Enter on a run: the table takes the key
        self.action_open()

    def action_sidebar(self) -> None:
        self.query_one("#sidebar").toggle_class("-hidden")
        self.on_resize()

    def action_page(self, by: int) -> None:
        self.page = max(0, self.page + by)
        self.redraw(force=True)

    def action_smoothing(self, by: int) -> None:
        steps = list(SMOOTHING_LEVELS)
        i = min(range(len(steps)), key=lambda k: abs(steps[k] - self.ws.weight))
        self.ws.set_weight(steps[max(0, min(len(steps) - 1, i + by))])
        self.say(f"smoothing {self.ws.weight:.2f}")
        self.scan()

    def action_log_y(self) -> None:
        names = self.ws.metrics()[self.page * self.per_page:(self.page + 1) * self.per_page]
        if names:
            first = names[0]
            self.log_y ^= {first}
            self.say(f"{first}: log Y" if first in self.log_y else f"{first}: linear Y")
            self.redraw(force=True)

    def action_x_axis(self) -> None:
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)]
        self.say(f"X axis: {self.x_axis}")
        self.redraw(force=True)

    def action_reset(self) -> None:
        self.log_y, self.x_axis, self.page = set(), "step", 0
        self.ws.metric_filter = self.ws.group_key = ""
        self.ws.set_weight(0.6)
        self.say("charts reset")
        self.scan()

    def action_ask(self, what: str) -> None:
        if what in ("prompt", "set") and not self._live_current():
            return
        self.asking = what
        box = self.query_one("#query", Input)
        box.placeholder = {"filter": "filter runs: lr>=1e-3 model=small -name:debug", "metrics": "metrics: a pattern",
                           "group": "group the runs that differ only in this key (a seed)",
                           "prompt": "prompt the run under the cursor", "set": "set NAME=VALUE ..."}[what]
        box.value = {"filter": self.ws.query, "metrics": self.ws.metric_filter, "group": self.ws.group_key}.get(what, "")
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#query")
    def _typed(self, event: Input.Changed) -> None:
        if self.asking == "filter":  # the sidebar follows each key
            problem = self.ws.set_query(event.value)
            self.status_text = sanitize(problem, 200)
            self.show_runs()

    @on(Input.Submitted, "#query")
    def _asked(self, event: Input.Submitted) -> None:
        what, value = self.asking, event.value.strip()
        self._close_query()
        if what == "metrics":
            self.ws.metric_filter, self.page = value, 0
        elif what == "group":
            self.ws.group_key = value
        elif what in ("prompt", "set"):
            self._request(what, value)
        self.show_status()
        self.redraw(force=True)
        self.scan()

    def _close_query(self) -> None:
        box = self.query_one("#query", Input)
        box.remove_class("-shown")
        self.asking = ""
        self.query_one("#runs-table").focus()

    def action_escape(self) -> None:
        if self.asking:
            self._close_query()

    def action_quit_workspace(self) -> None:
        if not self.asking:
            self.exit(None)
