"""Figures of many series: `compare` (several runs, or groups of them as a mean with its min-max
band, overlaid on the seed's four panels) and the metrics grid `render` draws for a run that logs
its own keys rather than the seed's (a run of the logging API, a TensorBoard logdir, `--grid`)."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..core.palette import hex_style, run_colour
from ..core.text import sanitize
from ..run.history import band, debiased_ema, minmax_downsample
from .figure import DPI, FIGSIZE, MAX_POINTS, step_axis

COMPARE_PANELS = (("loss", "Training Loss", "loss", False), ("accuracy", "Training Accuracy", "accuracy (%)", False),
                  ("throughput", "Token Throughput", "tokens/s", False),
                  ("learning_rate", "Learning Rate Schedule", "learning rate", True))
COMPARE_SMOOTHING = 0.6  # TensorBoard's default weight, and the terminal charts' (chart key s)
LINE_STYLES = ("-", "--", ":", "-.")  # a run's line past the palette's seven colours
SMOOTHED = ("loss", "accuracy", "throughput")
GRID_COLUMNS = 4
GRID_MAX = 24  # panels in one grid PNG (six rows of four); --metrics chooses among more
Columns = Mapping[str, np.ndarray]


def _figure(title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=16, fontweight="bold", parse_math=False)
    return fig


def _scale(column: str, y: np.ndarray) -> np.ndarray:
    return y * 100.0 if column == "accuracy" else y


def _run_lines(ax, index: int, name: str, cols: Columns, column: str, smoothing: float, max_points: int) -> None:
    """One run on one panel: raw faint and its EMA solid (or raw alone), validation loss as points."""
    rgb, round_ = run_colour(index)
    colour, style = hex_style(rgb), LINE_STYLES[round_ % len(LINE_STYLES)]
    x, y = cols["steps"], _scale(column, cols[column])
    label = sanitize(name, limit=40)
    smooth = column in SMOOTHED and smoothing > 0
    ax.plot(*minmax_downsample(x, y, max_points), color=colour, lw=1, ls=style, alpha=0.25 if smooth else 1.0,
            label=None if smooth else label)
    if smooth:
        ax.plot(*minmax_downsample(x, debiased_ema(y, smoothing)[0], max_points), color=colour, lw=2, ls=style,
                label=label)
    val = cols.get("val_loss") if column == "loss" else None
    if val is not None and np.isfinite(val).any():
        keep = np.isfinite(val)
        ax.plot(x[keep], val[keep], "o", color=colour, ms=5, mec="black", mew=0.5, label=f"{label} (validation)")


def _group_band(ax, index: int, label: str, members: list[Columns], column: str, smoothing: float,
                max_points: int) -> None:
    """A group of runs (seeds): the mean of their (smoothed) lines bold, their min-max as a band."""
    rgb, round_ = run_colour(index)
    colour = hex_style(rgb)
    lines = []
    for cols in members:
        x, y = cols["steps"], _scale(column, cols[column])
        keep = np.isfinite(y)
        x, y = x[keep], y[keep]
        if column in SMOOTHED and smoothing > 0 and len(y):
            y = debiased_ema(y, smoothing)[0]
        lines.append((x.astype(np.float64), y.astype(np.float64)))
    got = band(lines, max_points)
    if got is None:
        return
    x, mean, low, high = got
    ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    ax.plot(x, mean, color=colour, lw=2, ls=LINE_STYLES[round_ % len(LINE_STYLES)],
            label=f"{sanitize(label, limit=40)} (mean of {len(members)})")


def compare_figure(runs: list[tuple[str, Columns]], max_points: int = MAX_POINTS,
                   smoothing: float = COMPARE_SMOOTHING, groups: list[tuple[str, list[Columns]]] | None = None):
    """`neurogen-tui compare`: loss, accuracy, throughput and LR of several runs overlaid, one
    Okabe-Ito colour and label per run. Every run is smoothed alike, whatever its length: the raw
    series faint, TensorBoard's debiased EMA (`smoothing`, as the terminal charts) solid; validation
    loss as points in the run's colour where the run has it. With `groups` ((label, the runs'
    columns)), each group is drawn instead as its mean line and min-max band."""
    what = f"{len(groups)} groups of runs" if groups else f"{len(runs)} training runs"
    fig = _figure(f"Comparing {what} (EMA {smoothing:g})")
    axes = fig.subplots(2, 2, gridspec_kw=dict(hspace=0.25, wspace=0.15, left=0.05, right=0.98, top=0.92, bottom=0.06))
    for ax, (column, title, ylabel, log_scale) in zip(axes.flat, COMPARE_PANELS):
        ax.set_title(title, fontweight="bold", y=1.0)
        step_axis(ax)
        ax.set_ylabel(ylabel)
        if groups:
            for index, (label, members) in enumerate(groups):
                _group_band(ax, index, label, members, column, smoothing, max_points)
        else:
            for index, (name, cols) in enumerate(runs):
                _run_lines(ax, index, name, cols, column, smoothing, max_points)
        everything = [cols for _, cols in runs] + [c for _, members in groups or () for c in members]
        if log_scale and any((c[column][np.isfinite(c[column])] > 0).any() for c in everything):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            for text in ax.legend(fontsize=10).get_texts():
                text.set_parse_math(False)
    return fig


def logged_metrics(columns: Columns) -> list[str]:
    """The columns worth a panel: every key with a finite value but the step and the clock."""
    return [k for k, v in columns.items() if k not in ("step", "steps", "timestamp") and len(v)
            and np.isfinite(np.asarray(v, dtype=np.float64)).any()]


def grid_figure(columns: Columns, run_name: str, names: list[str], max_points: int = MAX_POINTS,
                smoothing: float = COMPARE_SMOOTHING):
    """Every logged metric of one run (`names`, at most GRID_MAX) a panel of its own, four a row:
    the raw series faint and its EMA solid, the run's last step in the title."""
    steps = np.asarray(columns["step"] if "step" in columns else columns["steps"], dtype=np.float64)
    last = f"step {int(steps[-1]):,}" if len(steps) else "no steps"
    fig = _figure(f"{sanitize(run_name, limit=60)}: {len(names)} logged metrics, {last}")
    rows = max(1, math.ceil(len(names) / GRID_COLUMNS))
    height = 1.4 + 3.2 * rows  # inches: a row of panels keeps its shape however many rows there are
    fig.set_size_inches(FIGSIZE[0], height)
    fig.subplots_adjust(hspace=0.5, wspace=0.2, left=0.04, right=0.99, top=1 - 0.9 / height, bottom=0.5 / height)
    colour = hex_style(run_colour(0)[0])
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, GRID_COLUMNS, i + 1)
        ax.set_title(sanitize(name, limit=48), fontsize=10, y=1.0)
        y = np.asarray(columns[name], dtype=np.float64)
        keep = np.isfinite(y)
        x, y = steps[keep], y[keep]
        few = len(y) <= 50
        ax.plot(*minmax_downsample(x, y, max_points), color=colour, lw=1, alpha=1.0 if few else 0.3,
                marker="o" if few else None, ms=3)
        if not few and smoothing > 0:
            ax.plot(*minmax_downsample(x, debiased_ema(y, smoothing)[0], max_points), color=colour, lw=1.5)
        step_axis(ax)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig
