"""The screen's widgets: header line, metric charts, samples table, log pane and the help screen.

Widgets only display what they are given (a HeaderInfo, a MetricsHistory, samples, log lines);
they never reach for the trainer. Every piece of dataset or model text goes through sanitize()
and into a rich Text, so markup and escape sequences in it are shown, never interpreted.
Colours live in app.tcss (component classes); plot line colours are plotext names below.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.geometry import Size
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import Reactive, reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, RichLog, Static
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ..events import TextSample
from ..headless import format_count
from ..history import MetricsHistory
from ..text import sanitize
from .series import ChartSeries
from .state import HeaderInfo, LogLine

MA_WINDOW = 50  # the seed's 50-step moving average, as on the PNG dashboards


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# ---- header -------------------------------------------------------------------------------------
class RunHeader(Widget):
    """Two lines: state, run, device, step/total and a progress bar; then time, tokens, speed, memory."""

    COMPONENT_CLASSES = {"run-header--label", "run-header--bar", "run-header--bar-empty",
                         "run-header--starting", "run-header--running", "run-header--paused",
                         "run-header--stopping", "run-header--finished", "run-header--failed",
                         "run-header--watching", "run-header--idle", "run-header--stopped",
                         "run-header--stale", "run-header--waiting"}
    info: reactive[HeaderInfo] = reactive(HeaderInfo, layout=False)

    def render(self) -> Text:
        i, width = self.info, max(20, self.size.width)
        style = self.get_component_rich_style
        label = style("run-header--label")
        state_class = f"run-header--{i.state}" if f"run-header--{i.state}" in self.COMPONENT_CLASSES else "run-header--idle"
        top = Text(no_wrap=True, overflow="ellipsis")
        top.append(f" {i.state.upper()} ", style(state_class))
        if i.read_only:
            top.append(" watch", label)
        top.append("  ")
        top.append(sanitize(i.run_name, 24) or "run", "bold")
        if i.device:
            top.append(f"  {sanitize(i.device, 40)}", label)
        total = f"/{i.total:,}" if i.total else ""
        top.append(f"  step {i.step:,}{total}")
        if i.total:
            frac = min(1.0, i.step / i.total)
            room = width - top.cell_len - 7
            if room >= 8:
                filled = round(frac * room)
                top.append("  ")
                top.append("━" * filled, style("run-header--bar"))
                top.append("─" * (room - filled), style("run-header--bar-empty"))  # apart without colour too
            top.append(f" {frac * 100:3.0f}%")
        bottom = Text(no_wrap=True, overflow="ellipsis")
        eta = "paused" if i.state == "paused" else format_duration(i.eta)
        parts = [("elapsed", format_duration(i.elapsed)), ("ETA", eta if i.total else "-"),
                 ("tokens", format_count(i.tokens_seen)), ("tok/s", format_count(i.tokens_per_sec))]
        if i.mfu is not None:
            parts.append(("MFU", f"{i.mfu * 100:.1f}%"))
        if i.memory:
            parts.append(i.memory)
        for n, (name, value) in enumerate(parts):
            bottom.append(" " if n == 0 else "  ")
            bottom.append(f"{name} ", label)
            bottom.append(value)
        return Text("\n").join([top, bottom])


# ---- charts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChartSpec:
    title: str
    column: str
    color: str  # plotext colour name for the series
    caption_style: str  # rich style of the same colour, for the caption
    scale: float = 1.0
    average: bool = False
    log_y: bool = False
    val_column: str | None = None
    fmt: str = "{:.4f}"


CHARTS = (
    ChartSpec("loss", "loss", "cyan", "cyan", average=True, val_column="val_loss"),
    ChartSpec("accuracy %", "accuracy", "green", "green", scale=100.0, average=True, fmt="{:.1f}"),
    ChartSpec("tokens/s", "throughput", "magenta", "magenta", fmt="{:,.0f}"),
    ChartSpec("learning rate", "learning_rate", "yellow", "yellow", log_y=True, fmt="{:.2e}"),
)
AVERAGE_COLOR, AVERAGE_STYLE = "orange", "dark_orange"
VAL_COLOR, VAL_STYLE = "red", "red"


def chart_series(spec: ChartSpec) -> ChartSeries:
    return ChartSeries(spec.column, spec.scale, MA_WINDOW if spec.average else None, spec.val_column)


def reduced_series(history: MetricsHistory, spec: ChartSpec, points: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The lines a chart draws for `history`, from scratch (the charts themselves keep a
    ChartSeries and read only new rows)."""
    series = chart_series(spec)
    series.update(history)
    return series.points(points)


def y_ticks(lo: float, hi: float, n: int, log: bool = False) -> tuple[list[float], list[str]]:
    """`n` evenly spaced ticks (geometric on a log axis) with short labels: 35.5k, 0.42, 3.2e-04."""
    if log and lo > 0:
        values = np.geomspace(lo, hi, n) if hi > lo else np.array([lo])
        return values.tolist(), [f"{v:.1e}" for v in values]
    if hi <= lo:
        return [lo], [f"{lo:.4g}"]
    values = np.linspace(lo, hi, n)
    if max(abs(lo), abs(hi)) >= 10_000:
        return values.tolist(), [format_count(v) for v in values]
    step = (hi - lo) / (n - 1)
    decimals = int(min(4, max(0, 1 - math.floor(math.log10(step)))))
    return values.tolist(), [f"{v:.{decimals}f}" for v in values]


class MetricChart(PlotextPlot):
    """One plotext chart of a history column. `prepare` (UI thread) reads the new rows and sets up
    a fresh plotext figure; the returned build (any thread) turns it into text; `show` puts that
    text on screen. Building a plot is slow pure Python: off the UI thread it delays no key."""

    def __init__(self, spec: ChartSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.series = chart_series(spec)
        self.points = 0
        self._text = Text("")

    def prepare(self, history: MetricsHistory) -> Callable[[], Text] | None:
        self.series.update(history)
        width, height = self.size.width, self.size.height
        if width < 4 or height < 2:
            return None
        spec, plt = self.spec, Plot()
        framed = height >= 10 and width >= 40
        plt.frame(framed)
        if not framed:
            plt.xticks([])
        series = self.series.points(max(16, 2 * width))  # braille: two dots per column
        if spec.log_y and len(series["value"][0]):
            plt.yscale("log")
        self.points = sum(len(x) for x, _ in series.values())
        for key, color in (("value", spec.color), ("average", AVERAGE_COLOR)):
            if key in series and len(series[key][0]):
                x, y = series[key]
                if spec.log_y:
                    keep = y > 0
                    x, y = x[keep], y[keep]
                plt.plot(x.tolist(), y.tolist(), marker="braille", color=color)
        if "val" in series and len(series["val"][0]):
            x, y = series["val"]
            plt.scatter(x.tolist(), y.tolist(), marker="dot", color=VAL_COLOR)
        ys = [y for key, (_, y) in series.items() if len(y)]
        if ys:
            values, labels = y_ticks(min(float(y.min()) for y in ys), max(float(y.max()) for y in ys),
                                     max(2, min(5, (height + 1) // 2)), spec.log_y)
            plt.yticks(values, labels)
        x = series["value"][0]
        if framed and len(x) > 1:
            xs = np.unique(np.linspace(x[0], x[-1], max(2, min(6, width // 14))).round())
            plt.xticks(xs.tolist(), [format_count(v) if v >= 10_000 else f"{v:.0f}" for v in xs])
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does (textual-plotext issue #5)
        plt.theme(self._get_plotext_theme_name(self.app.theme))

        def build() -> Text:
            # plotext has corner cases (a log axis over one value...): a chart that cannot draw
            # says so instead of taking the app, and the training, down with it
            try:
                return Text.from_ansi(plt.build())
            except Exception as exc:
                return Text(f"(chart unavailable: {type(exc).__name__})", style="dim")

        return build

    def show(self, text: Text) -> None:
        self._text = text
        self.refresh()

    def render(self) -> Text:
        return self._text


class ChartCaption(Widget):
    """One line over a chart: its name and latest values, coloured like the lines."""

    text: reactive[Text] = reactive(Text, layout=False)

    def render(self) -> Text:
        return self.text


class ChartPanel(Vertical):
    """A one-line caption with the latest values over a MetricChart."""

    def __init__(self, spec: ChartSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def compose(self) -> ComposeResult:
        yield ChartCaption(classes="chart-caption")
        yield MetricChart(self.spec, classes="chart")

    @property
    def chart(self) -> MetricChart:
        return self.query_one(MetricChart)

    def prepare(self, history: MetricsHistory) -> Callable[[], Text] | None:
        """New rows into the chart and the caption; returns the chart's plot build."""
        chart = self.chart
        build = chart.prepare(history)
        self.query_one(ChartCaption).text = self.caption(chart.series)
        return build

    def caption(self, series: ChartSeries) -> Text:
        spec, last = self.spec, series.last
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(spec.title, "bold")
        if not series.seen:
            return text
        text.append(" ")
        text.append(spec.fmt.format(last["value"]), spec.caption_style)
        for name, label, style in (("average", f"avg{MA_WINDOW}", AVERAGE_STYLE), ("val", "val", VAL_STYLE)):
            if name in last and last[name] == last[name]:  # not NaN
                text.append(f"  {label} ", "dim")
                text.append(spec.fmt.format(last[name]), style)
        return text


# ---- samples ------------------------------------------------------------------------------------
class OwnScroll:
    """For a scrolling widget whose box the layout fixes (the samples table, the log): a change of
    what it holds changes only its scrollable size, so it re-lays out only itself. Textual's
    virtual_size asks for a layout of the whole screen, which re-renders every widget: measured
    ~21 ms for one log line and ~40 ms for the samples table at 120x40, against ~2.5 ms for a
    header update."""

    virtual_size = Reactive(Size(0, 0), layout=False)

    def watch_virtual_size(self, size: Size) -> None:
        self._scroll_update(size)  # the scrollbars' sizes (showing or hiding one still lays out)


class SamplesTable(OwnScroll, DataTable):
    """Text samples, newest first, one line per cell; widths follow the terminal's. Enter on a row
    shows that sample in full."""

    MAX_ROWS = 50  # rebuilt whole on each new sample: kept small, it stays cheap
    MIN_REBUILD_S = 1.0  # a fast trainer samples many times a second: the table follows once a second

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, show_cursor=False, **kwargs)
        self._samples: list[TextSample] = []
        self._version = -1
        self._widths: tuple[int, ...] = ()
        self._rebuilt_at = float("-inf")

    def on_resize(self) -> None:
        self._rebuild()

    def on_focus(self) -> None:
        self.show_cursor = True

    def on_blur(self) -> None:
        self.show_cursor = False  # no highlighted row unless someone is reading the table

    def show(self, samples, version: int, throttle: bool = True) -> None:
        """Show the newest MAX_ROWS of `samples` (oldest first) unless `version` was shown already."""
        if version == self._version:
            return
        now = time.monotonic()
        if throttle and self._version >= 0 and now - self._rebuilt_at < self.MIN_REBUILD_S:
            return  # the next drain after the second is up shows it
        self._version, self._rebuilt_at = version, now
        self._samples = list(samples)[-self.MAX_ROWS:]
        self._rebuild()

    def column_widths(self) -> tuple[int, ...]:
        free = max(30, self.size.width - 6 - 5 - 2 * 5 - 2)  # step, acc, cell padding, scrollbar and a spare
        inp = free * 4 // 10
        tgt = (free - inp) // 2
        return 6, inp, tgt, free - inp - tgt, 5

    def _rebuild(self) -> None:
        row = self.cursor_row
        widths = self.column_widths()
        if widths != self._widths:
            self._widths = widths
            self.clear(columns=True)
            for name, w in zip(("step", "input (end)", "target", "model output", "acc"), widths):
                self.add_column(name, width=w, key=name)
        else:
            self.clear()
        _, w_in, w_tgt, w_out, _ = widths
        for i, s in enumerate(reversed(self._samples)):
            self.add_row(Text(f"{s.step:,}", justify="right"), tail(s.input, w_in),
                         Text(sanitize(s.target, w_tgt), no_wrap=True), Text(sanitize(s.output, w_out), no_wrap=True),
                         Text(f"{s.accuracy * 100:.0f}%", justify="right"), key=str(len(self._samples) - 1 - i))
        if self.has_focus and self.row_count:  # someone is reading: keep their place
            self.move_cursor(row=min(row, self.row_count - 1), animate=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        index = int(event.row_key.value)
        if 0 <= index < len(self._samples):
            self.app.push_screen(SampleScreen(self._samples[index]))


class SampleScreen(ModalScreen):
    """One sample in full, wrapped, every control character shown as an escape."""

    BINDINGS = [Binding("escape,enter,space", "dismiss", "close")]

    def __init__(self, sample: TextSample) -> None:
        super().__init__()
        self.sample = sample

    def compose(self) -> ComposeResult:
        s = self.sample
        text = Text()
        text.append(f"sample at step {s.step:,}, accuracy {s.accuracy * 100:.0f}%   (Esc closes)\n\n", "bold")
        for label, body in (("input", s.input), ("target", s.target), ("model output", s.output)):
            text.append(f"{label}\n", "bold underline")
            text.append(sanitize(body, 4000) + "\n\n")
        yield Static(text, id="sample-text")


def tail(text: str, width: int) -> Text:
    """The last `width` visible characters of untrusted text (an input's end leads to its target)."""
    safe = sanitize(text[-width * 4:])
    if len(safe) > width:
        safe = "…" + safe[-(width - 1):]
    return Text(safe, no_wrap=True)


# ---- log ----------------------------------------------------------------------------------------
class LogPane(OwnScroll, RichLog):
    """Checkpoints, dashboards, evaluations, warnings and errors, with the time they happened."""

    COMPONENT_CLASSES = {"log-pane--time", "log-pane--info", "log-pane--warning", "log-pane--error"}

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=1000, wrap=True, markup=False, highlight=False, min_width=20, **kwargs)
        self.texts: deque[str] = deque(maxlen=1000)  # what was added, unwrapped (for tests and copy)

    def add(self, line: LogLine) -> None:
        style = self.get_component_rich_style
        level = line.level if line.level in ("info", "warning", "error") else "info"
        text = Text(time.strftime("%H:%M:%S ", time.localtime(line.time)), style("log-pane--time"))
        text.append(sanitize(line.text, 2000), style(f"log-pane--{level}"))
        self.write(text)
        self.texts.append(text.plain)


# ---- help ---------------------------------------------------------------------------------------
KEYS = (
    ("p", "pause / resume (the trainer waits at a step boundary)"),
    ("c", "write a checkpoint now"),
    ("d", "draw the dashboard PNG and JSON now"),
    ("q, Ctrl+C, Ctrl+Q", "stop: finish the step, write the final checkpoint, dashboard and JSON, exit"),
    ("Tab / arrows", "move to the samples table or log and scroll them"),
    ("Enter", "on a sample: show it in full"),
    ("q q q", "while stopping, after 5 s: leave without waiting (no final checkpoint)"),
    ("?", "this help (Esc closes it)"),
)


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark", "dismiss", "close")]

    def __init__(self, read_only: bool = False, note: str = "") -> None:
        super().__init__()
        self.read_only = read_only
        self.note = note  # what the app's own keys add (attach: x detaches)

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("neurogen-tui keys\n\n", "bold")
        for key, what in KEYS:
            text.append(f"{key:>18}  ", "bold")
            text.append(what + "\n")
        if self.read_only:
            text.append("\nwatch mode: read-only; q closes the viewer and the run goes on.\n", "italic")
        else:
            text.append("\nClosing the terminal (or losing the SSH connection) detaches: training goes on, "
                        "and `neurogen-tui attach RUN_DIR` brings this screen back.\n", "italic")
        if self.note:
            text.append(f"\n{self.note}\n", "italic")
        yield Static(text, id="help-text")
