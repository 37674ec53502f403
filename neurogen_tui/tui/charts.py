"""The metric charts: a one-line caption with the latest values over a plotext plot of a history
column, its moving average and validation points.

A chart reads only the rows added since its last redraw (series.py), so a redraw at step 10M costs
what it costs at 10k; building the plot (slow pure Python) happens off the UI thread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ..history import MetricsHistory
from ..text import format_count
from .series import ChartSeries

MA_WINDOW = 50  # the seed's 50-step moving average, as on the PNG dashboards


# Okabe & Ito's colour-blind-safe palette (tbtui's default too): the hues stay apart for protan,
# deutan and tritan vision. Shape says what colour says as well: the value is a braille line, its
# average a line of half blocks, validation points dots, and each caption names its numbers.
OKABE_ITO = {"orange": (230, 159, 0), "sky_blue": (86, 180, 233), "bluish_green": (0, 158, 115),
             "yellow": (240, 228, 66), "blue": (0, 114, 178), "vermillion": (213, 94, 0),
             "reddish_purple": (204, 121, 167)}


def hex_style(rgb: tuple[int, int, int]) -> str:
    """A colour as a rich style, for the caption in the line's own colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class ChartSpec:
    title: str
    column: str
    color: tuple[int, int, int]  # the series' colour (Okabe-Ito); the caption's numbers take it too
    scale: float = 1.0
    average: bool = False
    log_y: bool = False
    val_column: str | None = None
    fmt: str = "{:.4f}"


CHARTS = (
    ChartSpec("loss", "loss", OKABE_ITO["sky_blue"], average=True, val_column="val_loss"),
    ChartSpec("accuracy %", "accuracy", OKABE_ITO["bluish_green"], scale=100.0, average=True, fmt="{:.1f}"),
    ChartSpec("tokens/s", "throughput", OKABE_ITO["reddish_purple"], fmt="{:,.0f}"),
    ChartSpec("learning rate", "learning_rate", OKABE_ITO["yellow"], log_y=True, fmt="{:.2e}"),
)
AVERAGE_COLOR, VAL_COLOR = OKABE_ITO["orange"], OKABE_ITO["vermillion"]
AVERAGE_MARKER, VALUE_MARKER, VAL_MARKER = "hd", "braille", "dot"


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
        for key, color, marker in (("value", spec.color, VALUE_MARKER), ("average", AVERAGE_COLOR, AVERAGE_MARKER)):
            if key in series and len(series[key][0]):
                x, y = series[key]
                if spec.log_y:
                    keep = y > 0
                    x, y = x[keep], y[keep]
                plt.plot(x.tolist(), y.tolist(), marker=marker, color=color)
        if "val" in series and len(series["val"][0]):
            x, y = series["val"]
            plt.scatter(x.tolist(), y.tolist(), marker=VAL_MARKER, color=VAL_COLOR)
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
        text.append(spec.fmt.format(last["value"]), hex_style(spec.color))
        for name, label, style in (("average", f"avg{MA_WINDOW}", hex_style(AVERAGE_COLOR)),
                                   ("val", "val", hex_style(VAL_COLOR))):
            if name in last and last[name] == last[name]:  # not NaN
                text.append(f"  {label} ", "dim")
                text.append(spec.fmt.format(last[name]), style)
        return text
