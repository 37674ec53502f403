"""One metric of many runs in one plotext chart: each run its own colour (Okabe-Ito, then another
marker for each round of seven), smoothed where the settings smooth, the raw line faint behind;
or, grouped (runs that differ only in one key, a seed), each group's mean with its min-max band.
Built off the UI thread: `overlay_text` is a plain function of arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.color import Color
from textual_plotext.plot import Plot

from ..core.text import format_count
from ..run.history import band
from ..run.query import group_label, groups
from .charts import faint, plain, x_label
from .runs import REDUCED, Workspace

MARKERS = ("braille", "hd", "dot", "sd")  # one a round of the palette: run 8 is drawn unlike run 1


@dataclass
class Trace:
    """A run's (or a group's) line in one chart."""

    label: str
    rgb: tuple[int, int, int]
    round: int
    x: np.ndarray
    y: np.ndarray
    smooth: np.ndarray | None = None  # the EMA at the same x; None: not smoothed
    low: np.ndarray | None = None  # a group's min and max at the same x (a band)
    high: np.ndarray | None = None
    pinned: bool = False


def _ticks(lo: float, hi: float, n: int, log: bool) -> tuple[list[float], list[str]]:
    if log and lo > 0:
        values = np.geomspace(lo, hi, n) if hi > lo else np.array([lo])
        return values.tolist(), [plain(v) for v in values]
    values = np.linspace(lo, hi, n) if hi > lo else np.array([lo])
    labels = [format_count(v) if max(abs(lo), abs(hi)) >= 10_000 else f"{v:.3g}" for v in values]
    return values.tolist(), labels


def overlay_text(traces: list[Trace], width: int, height: int, log_y: bool, x_axis: str, theme: str,
                 background: Color) -> Text:
    """The chart as text; a chart that cannot draw (plotext's corner cases) says so."""
    if width < 4 or height < 2:
        return Text("")
    try:
        return Text.from_ansi(_figure(traces, width, height, log_y, x_axis, theme, background).build())
    except Exception as exc:
        return Text(f"(chart unavailable: {type(exc).__name__})", style="dim")


def _figure(traces, width, height, log_y, x_axis, theme, background) -> Plot:
    plt = Plot()
    framed = height >= 10 and width >= 40
    plt.frame(framed)
    if not framed:
        plt.xticks([])
    ys = []
    for t in sorted(traces, key=lambda t: t.pinned):  # the pinned run drawn last: on top
        x, y = t.x, t.y
        keep = np.isfinite(y) & ((y > 0) if log_y else True)
        if not keep.any():
            continue
        marker = MARKERS[t.round % len(MARKERS)]
        if t.low is not None and t.high is not None:  # a group: the band's edges faint, the mean bold
            for edge in (t.low, t.high):
                plt.plot(x[keep].tolist(), edge[keep].tolist(), marker=marker, color=faint(t.rgb, background))
            ys += [t.low[keep], t.high[keep]]
        if t.smooth is not None:
            plt.plot(x[keep].tolist(), y[keep].tolist(), marker=marker, color=faint(t.rgb, background))
            plt.plot(x[keep].tolist(), t.smooth[keep].tolist(), marker="hd" if t.round == 0 else marker, color=t.rgb)
            ys.append(t.smooth[keep])
        else:
            plt.plot(x[keep].tolist(), y[keep].tolist(), marker=marker, color=t.rgb)
        ys.append(y[keep])
    if log_y and ys:
        plt.yscale("log")
    if ys:
        lo, hi = min(float(v.min()) for v in ys), max(float(v.max()) for v in ys)
        values, labels = _ticks(lo, hi, max(2, min(5, (height + 1) // 2)), log_y)
        plt.yticks(values, labels)
        xs = [t.x for t in traces if len(t.x)]
        if framed and xs:
            x0, x1 = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
            ticks = np.unique(np.linspace(x0, x1, max(2, min(6, width // 14))).round())
            plt.xticks(ticks.tolist(), [x_label(v, x_axis) for v in ticks])
    plt.plotsize(width, height)
    plt._set_size(width, height)
    plt.theme(theme)
    return plt


def traces(ws: Workspace, metric: str, points: int, x_axis: str) -> list[Trace]:
    """The lines of `metric` for the workspace's selected runs (`points` each, at most): raw with
    the EMA beside it, or, grouped by a key, each group's mean with its min-max band."""
    runs = [e for e in ws.selected() if e.data is not None]
    smooth = ws.weight > 0
    if ws.group_key:
        out = []
        for values, members in groups([{**e.summary, "entry": e} for e in runs], ws.group_key).items():
            lines = [r["entry"].data.line(metric, smooth, REDUCED) for r in members]
            got = band([ln for ln in lines if ln is not None], points)
            if got is not None:
                rgb, round_ = members[0]["entry"].colour
                x, mean, low, high = got
                out.append(Trace(group_label(values), rgb, round_, x, mean, None, low, high))
        return out
    out = []
    for e in runs:
        raw = e.data.line(metric, False, points)
        if raw is None:
            continue
        smoothed = e.data.line(metric, True, points) if smooth else None
        y_smooth = None
        if smoothed is not None and len(smoothed[0]):
            y_smooth = np.interp(raw[0], smoothed[0], smoothed[1])
        rgb, round_ = e.colour
        out.append(Trace(e.name, rgb, round_, _x(e, raw[0], x_axis), raw[1], y_smooth, pinned=e.pinned))
    return out


def _x(entry, steps: np.ndarray, x_axis: str) -> np.ndarray:
    """Steps, or seconds since the run's first step (from its timestamps)."""
    if x_axis == "step":
        return steps
    stamps = entry.data.lines.get("timestamp")
    line = stamps.raw.points(REDUCED) if stamps else None
    if line is None or not len(line[0]):
        return steps
    return np.interp(steps, line[0], line[1]) - float(line[1][0])
