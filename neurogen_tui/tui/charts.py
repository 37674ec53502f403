"""The metric charts: a one-line caption with the latest values over a plotext plot of a history
column, its smoothed line (TensorBoard's debiased EMA, the raw series faint behind it) and
validation points, drawn as the chart settings say (chartsettings.py: smoothing, X axis, window,
log Y axis).

A chart reads only the rows added since its last redraw (series.py), so a redraw at step 10M costs
what it costs at 10k. Reading the new rows, smoothing them and building the plot (slow pure
Python) all happen off the UI thread; a chart that is focused (Tab, arrows) takes the `y` key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ..core.text import format_count, format_duration
from ..core.palette import OKABE_ITO, hex_style
from ..run.history import MetricsHistory
from .chartsettings import ChartSettings
from .series import ChartSeries

# Shape says what colour says as well: the raw value is a faint braille line, its smoothed line
# half blocks, validation points dots, and each caption names its numbers (colours: core/palette.py).


@dataclass(frozen=True)
class ChartSpec:
    title: str
    column: str
    color: tuple[int, int, int]  # the series' colour (Okabe-Ito); the caption's numbers take it too
    scale: float = 1.0
    smooth: bool = False  # a noisy series: smoothed as the settings say (the learning rate is not)
    log_y: bool = False  # the default; `y` changes it for this chart
    val_column: str | None = None
    fmt: str = "{:.4f}"
    raw_in_caption: bool = True  # False: the caption says the smoothed value alone (one throughput, not two)


CHARTS = (
    ChartSpec("loss", "loss", OKABE_ITO["sky_blue"], smooth=True, val_column="val_loss"),
    ChartSpec("accuracy %", "accuracy", OKABE_ITO["bluish_green"], scale=100.0, smooth=True, fmt="{:.1f}"),
    ChartSpec("tokens/s", "throughput", OKABE_ITO["reddish_purple"], smooth=True, fmt="{:,.0f}", raw_in_caption=False),
    ChartSpec("learning rate", "learning_rate", OKABE_ITO["yellow"], log_y=True, fmt="{:.2e}"),
)
VAL_COLOR = OKABE_ITO["vermillion"]
MARK_COLORS = {"setting": OKABE_ITO["blue"], "guard": OKABE_ITO["orange"]}
MARK_LABELS = {"setting": "set", "guard": "guard"}  # vertical lines: settings changed, guard acted
SMOOTH_MARKER, VALUE_MARKER, VAL_MARKER = "hd", "braille", "dot"
FAINT = 0.55  # how far the raw line behind a smoothed one fades towards the background


def chart_series(spec: ChartSpec, settings: ChartSettings = ChartSettings()) -> ChartSeries:
    return ChartSeries(spec.column, spec.scale, settings.smoothing if spec.smooth else 0.0, spec.val_column,
                       settings.x)


def reduced_series(history: MetricsHistory, spec: ChartSpec, points: int,
                   settings: ChartSettings = ChartSettings()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The lines a chart draws for `history`, from scratch (the charts themselves keep a
    ChartSeries and read only new rows)."""
    series = chart_series(spec, settings)
    series.update(history)
    return series.points(points, settings.window)


def faint(rgb: tuple[int, int, int], background: Color) -> tuple[int, int, int]:
    """The colour faded towards the chart's background: the raw line behind a smoothed one."""
    mixed = Color(*rgb).blend(background, FAINT)
    return mixed.r, mixed.g, mixed.b


def y_ticks(lo: float, hi: float, n: int, log: bool = False) -> tuple[list[float], list[str]]:
    """`n` evenly spaced ticks (geometric on a log axis) with short labels: 35.5k, 0.42, 3.2e-04."""
    if log and lo > 0:
        values = np.geomspace(lo, hi, n) if hi > lo else np.array([lo])
        return values.tolist(), [plain(v) for v in values]
    if hi <= lo:
        return [lo], [f"{lo:.4g}"]
    values = np.linspace(lo, hi, n)
    if max(abs(lo), abs(hi)) >= 10_000:
        return values.tolist(), [format_count(v) for v in values]
    step = (hi - lo) / (n - 1)
    decimals = int(min(4, max(0, 1 - math.floor(math.log10(step)))))
    return values.tolist(), [f"{v:.{decimals}f}" for v in values]


def plain(value: float) -> str:
    """A log axis' label as a plain number where that is short (5.6, 0.0003, 120), else 3.2e-05."""
    text = f"{value:.2g}"
    return text if "e" not in text else f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")


X_NAMES = {"step": "step", "tokens": "tok", "time": "time"}


def x_label(value: float, axis: str) -> str:
    """An X tick: a step or token count (35.5k), or the wall time since the first step (12:34)."""
    if axis == "time":
        return format_duration(value)
    return format_count(value) if value >= 10_000 else f"{value:.0f}"


class MetricChart(PlotextPlot):
    """One plotext chart of a history column. `prepare` (UI thread) takes the size, theme and
    settings; the returned build (one thread at a time, off the UI thread) reads the new rows into
    the series and turns them into text; `show` puts that text on screen."""

    def __init__(self, spec: ChartSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.series = chart_series(spec)
        self.settings = ChartSettings()
        self.marks: list[tuple[float, str]] = []  # (x, kind) of the setting changes and guard actions drawn
        self.points = 0
        self.x_span = ""  # the X range, said in the caption where the chart has no axis labels
        self.rows = 0  # the history's rows when last built: with none of this chart's, the run does not log it
        self._text = Text("")

    @property
    def log_y(self) -> bool:
        return self.settings.is_log(self.spec.column, self.spec.log_y)

    def prepare(self, history: MetricsHistory, settings: ChartSettings | None = None,
                marks: list[tuple[int, str]] | None = None) -> Callable[[], Text] | None:
        if settings is not None:
            self.settings = settings
        marks = list(marks or ())
        width, height = self.size.width, self.size.height
        plot_theme, background = self._get_plotext_theme_name(self.app.theme), self.background_colors[1]
        spec, settings, log_y = self.spec, self.settings, self.log_y

        def build() -> Text:
            self.series.configure(settings.smoothing if spec.smooth else 0.0, settings.x)
            self.series.wanted = [step for step, _ in marks]
            self.series.update(history)
            self.rows = len(history)
            self.marks = self.series.mark_positions(marks)
            if width < 4 or height < 2:
                return Text("")
            # plotext has corner cases (a log axis over one value...): a chart that cannot draw
            # says so instead of taking the app, and the training, down with it
            try:
                return Text.from_ansi(self._figure(width, height, log_y, plot_theme, background).build())
            except Exception as exc:
                return Text(f"(chart unavailable: {type(exc).__name__})", style="dim")

        return build

    def _figure(self, width: int, height: int, log_y: bool, theme: str, background: Color) -> Plot:
        spec, settings, plt = self.spec, self.settings, Plot()
        framed = height >= 10 and width >= 40
        plt.frame(framed)
        if not framed:
            plt.xticks([])
        series = self.series.points(max(16, 2 * width), settings.window)  # braille: two dots per column
        x = series["value"][0]
        # no axis labels on a small chart: its caption says the X range instead
        self.x_span = "" if framed or not len(x) else (
            f"{X_NAMES.get(settings.x, settings.x)} {x_label(x[0], settings.x)}–{x_label(x[-1], settings.x)}")
        if log_y:
            series = {key: (x[y > 0], y[y > 0]) for key, (x, y) in series.items()}
            if len(series["value"][0]):
                plt.yscale("log")
        self.points = sum(len(x) for x, _ in series.values())
        smoothed = "smooth" in series
        lines = (("value", faint(spec.color, background) if smoothed else spec.color, VALUE_MARKER),
                 ("smooth", spec.color, SMOOTH_MARKER))  # the smoothed line over the faint raw one
        for key, color, marker in lines:
            if key in series and len(series[key][0]):
                x, y = series[key]
                plt.plot(x.tolist(), y.tolist(), marker=marker, color=color)
        if "val" in series and len(series["val"][0]):
            x, y = series["val"]
            plt.scatter(x.tolist(), y.tolist(), marker=VAL_MARKER, color=VAL_COLOR)
        ys = [y for _, y in series.values() if len(y)]
        shown_x = series["value"][0]
        if len(shown_x) and ys:
            top = max(float(y.max()) for y in ys)
            for mark_x, kind in self.marks:
                if shown_x[0] <= mark_x <= shown_x[-1]:
                    colour = MARK_COLORS.get(kind, MARK_COLORS["setting"])
                    plt.vline(mark_x, colour)
                    plt.text(MARK_LABELS.get(kind, "set"), mark_x, top, color=colour)  # told apart from a frame
        if ys:
            values, labels = y_ticks(min(float(y.min()) for y in ys), max(float(y.max()) for y in ys),
                                     max(2, min(5, (height + 1) // 2)), log_y)
            plt.yticks(values, labels)
        x = series["value"][0]
        if framed and len(x) > 1:
            xs = np.unique(np.linspace(x[0], x[-1], max(2, min(6, width // 14))).round())
            plt.xticks(xs.tolist(), [x_label(v, settings.x) for v in xs])
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does (textual-plotext issue #5)
        plt.theme(theme)
        return plt

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


class ChartPanel(Vertical, can_focus=True):
    """A one-line caption with the latest values over a MetricChart. Focusable (Tab), so `y` knows
    which chart to set; the arrows move the focus to the next or previous chart."""

    BINDINGS = [Binding("left,up", "move(-1)", "previous chart", show=False),
                Binding("right,down", "move(1)", "next chart", show=False)]

    def __init__(self, spec: ChartSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def compose(self) -> ComposeResult:
        yield ChartCaption(classes="chart-caption")
        yield MetricChart(self.spec, classes="chart")

    @property
    def chart(self) -> MetricChart:
        return self.query_one(MetricChart)

    def prepare(self, history: MetricsHistory, settings: ChartSettings | None = None,
                marks: list[tuple[int, str]] | None = None) -> Callable[[], tuple[Text, Text]]:
        """The build (off the UI thread) that reads the new rows and returns (caption, plot)."""
        chart = self.chart
        plot = chart.prepare(history, settings, marks)

        def build() -> tuple[Text, Text]:
            text = plot()
            return self.caption(chart.series), text

        return build

    def show(self, caption: Text, plot: Text) -> None:
        captions = self.query(ChartCaption)
        if not captions:  # a build that ends as the app closes: the panel's children are gone
            return
        captions.first().text = caption
        self.chart.show(plot)

    def action_move(self, by: int) -> None:
        panels = list(self.screen.query(ChartPanel))
        panels[(panels.index(self) + by) % len(panels)].focus()

    def caption(self, series: ChartSeries) -> Text:
        spec, last = self.spec, series.last
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(spec.title, "bold")
        if self.chart.log_y:
            text.append(" log", "dim")
        if not series.seen or last["value"] != last["value"]:  # no rows yet, or none with this series
            if self.chart.rows:  # a loop that is not our trainer may not log this series at all
                text.append(" not logged by this run", "dim")
            return text
        has_ema = "smooth" in last and last["smooth"] == last["smooth"]  # not NaN
        if spec.raw_in_caption or not has_ema:
            text.append(" ")
            text.append(spec.fmt.format(last["value"]), hex_style(spec.color))
        for name, label, style in (("smooth", "ema", hex_style(spec.color) + " bold"),
                                   ("val", "val", hex_style(VAL_COLOR))):
            if name in last and last[name] == last[name]:  # not NaN
                text.append(f" {label} ", "dim")  # single spaces: three numbers fit 39 columns (80x24)
                text.append(spec.fmt.format(last[name]), style)
        if self.chart.x_span:
            text.append(f" · {self.chart.x_span}", "dim")
        return text
