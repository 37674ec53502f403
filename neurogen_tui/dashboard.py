"""The seed's training dashboard as a pure function: history arrays and samples in, PNG bytes out.

Matplotlib's object API with the Agg canvas only (no pyplot, no global state), so it is safe on any
thread or in a worker process; it is imported on first use, so the training process never loads it
while the dashboards are drawn in their own process. Every series is reduced to per-bucket min/max before drawing (spikes
stay visible, the cost stays flat as the run grows) while moving averages use the full data.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .history import minmax_downsample, moving_average
from .text import sanitize

MA_WINDOW = 50  # the seed's 50-step moving averages
RECENT_STEPS = 500
TABLE_TEXT = 40  # characters of sample text per table cell
MAX_POINTS = 2000  # ~2 points per pixel column of a panel at 150 DPI
FIGSIZE, DPI = (20, 12), 150
HEADER_GREEN = "#4CAF50"
PANEL_TITLES = ("Training Loss", "Training Accuracy", "Token Throughput", "Learning Rate Schedule",
                "Loss vs Accuracy", f"Recent Performance (last {RECENT_STEPS} steps)", "Recent Text Samples")
DASHBOARD_COLUMNS = ("steps", "loss", "accuracy", "throughput", "learning_rate", "val_loss")
LATEST_FILE = "training_latest.png"
STEP_FILE = re.compile(r"^training_step_(\d+)\.png$")

# sample text may hold any character; DejaVu lacks some (CJK...) and they draw as boxes, not errors
warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)


def reduce_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of the points min/max downsampling keeps (global min and max always included)."""
    idx, _ = minmax_downsample(np.arange(len(y)), y, max_points)
    return idx


def format_step(value: float, _pos=None) -> str:
    """Step ticks as 950, 12k, 1.5M: no offset text or scientific notation on step axes."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:.0f}"


def step_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(format_step))


def _plot_reduced(ax, x, y, max_points, **style) -> None:
    xs, ys = minmax_downsample(x, y, max_points)
    ax.plot(xs, ys, **style)


def _title(ax, i: int) -> None:
    # an explicit y skips matplotlib's automatic title placement, a third of the drawing time
    ax.set_title(PANEL_TITLES[i], fontweight="bold", y=1.0)


def _no_data(ax, what: str = "no data yet") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="gray")


def _panel_loss(ax, c, max_points) -> None:
    _title(ax, 0)
    x, loss = c["steps"], c["loss"]
    if not len(x):
        return _no_data(ax)
    _plot_reduced(ax, x, loss, max_points, color="tab:blue", lw=1, alpha=0.7, label="loss")
    val = c.get("val_loss")
    if val is not None and np.isfinite(val).any():
        vx, vy = minmax_downsample(x, val, max_points)
        ax.plot(vx, vy, color="tab:purple", marker="o" if len(vx) <= 100 else None, ms=4, lw=1.5,
                label="validation loss")
    if len(x) >= MA_WINDOW:
        _plot_reduced(ax, x, moving_average(loss, MA_WINDOW), max_points, color="red", ls="--", lw=2,
                      label=f"{MA_WINDOW}-step moving average", zorder=3)
    step_axis(ax)
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=9)


def _panel_accuracy(ax, c, max_points) -> None:
    _title(ax, 1)
    x, acc = c["steps"], c["accuracy"] * 100.0
    ax.set_ylim(0, 100)
    step_axis(ax)
    ax.set_ylabel("accuracy (%)")
    if not len(x):
        return _no_data(ax)
    _plot_reduced(ax, x, acc, max_points, color="tab:green", lw=1, alpha=0.7, label="accuracy")
    if len(x) >= MA_WINDOW:
        _plot_reduced(ax, x, moving_average(acc, MA_WINDOW), max_points, color="orange", ls="--", lw=2,
                      label=f"{MA_WINDOW}-step moving average")
    ax.legend(loc="lower right", fontsize=9)


def _panel_throughput(ax, c, max_points) -> None:
    _title(ax, 2)
    step_axis(ax)
    ax.set_ylabel("tokens/s")
    if not len(c["steps"]):
        return _no_data(ax)
    _plot_reduced(ax, c["steps"], c["throughput"], max_points, color="purple", lw=1)


def _panel_lr(ax, c, max_points) -> None:
    _title(ax, 3)
    step_axis(ax)
    ax.set_ylabel("learning rate")
    lr = c["learning_rate"]
    if not len(lr):
        return _no_data(ax)
    _plot_reduced(ax, c["steps"], lr, max_points, color="darkorange", lw=1.5)
    if (lr[np.isfinite(lr)] > 0).any():
        ax.set_yscale("log")


def _panel_scatter(fig, ax, c, max_points) -> None:
    _title(ax, 4)
    ax.set_xlabel("loss")
    ax.set_ylabel("accuracy (%)")
    loss, acc, steps = c["loss"], c["accuracy"], c["steps"]
    ok = np.isfinite(loss) & np.isfinite(acc)
    if not ok.any():
        return _no_data(ax)
    idx = np.flatnonzero(ok)
    if len(idx) > max_points:  # the points that bound both series, spread over the whole run
        keep = np.union1d(reduce_indices(loss[idx], max_points), reduce_indices(acc[idx], max_points))
        idx = idx[keep]
    sc = ax.scatter(loss[idx], acc[idx] * 100.0, c=steps[idx], cmap="viridis", s=8, alpha=0.7)
    fig.colorbar(sc, ax=ax, label="step")


def _panel_recent(ax, c) -> None:
    _title(ax, 5)
    step_axis(ax)
    ax.set_ylabel("loss", color="tab:blue")
    x = c["steps"][-RECENT_STEPS:]
    if not len(x):
        return _no_data(ax)
    (l1,) = ax.plot(x, c["loss"][-RECENT_STEPS:], color="tab:blue", lw=1.2, label="loss")
    right = ax.twinx()
    (l2,) = right.plot(x, c["accuracy"][-RECENT_STEPS:] * 100.0, color="tab:green", lw=1.2, label="accuracy")
    right.set_ylabel("accuracy (%)", color="tab:green")
    ax.legend(handles=[l1, l2], loc="upper left", fontsize=9)


def _tail(text: str, limit: int) -> str:
    """The last `limit` characters, made safe: the part of the prompt that leads into the output."""
    safe = sanitize(text[-limit * 4:])
    return safe if len(safe) <= limit else "…" + safe[-(limit - 1):]


def _percent(value) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) and np.isfinite(value) else "-"


def table_rows(samples: Sequence[Mapping]) -> list[list[str]]:
    """step / input / model output / accuracy cells, every text sanitized and cut to 40 characters."""
    return [[str(s["step"]), _tail(str(s["input"]), TABLE_TEXT), sanitize(s["output"], limit=TABLE_TEXT),
             _percent(s["accuracy"])] for s in samples]


def _panel_samples(ax, samples: Sequence[Mapping]) -> None:
    _title(ax, 6)
    ax.axis("off")
    if not samples:
        return _no_data(ax, "no text samples yet")
    table = ax.table(cellText=table_rows(samples), colLabels=["step", "input (end)", "model output", "accuracy"],
                     colWidths=[0.08, 0.41, 0.41, 0.1], cellLoc="left", loc="upper center")
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    table.scale(1, 2.0)
    for (row, col), cell in table.get_celld().items():
        cell.get_text().set_parse_math(False)  # "$x$" in a sample is text, not mathtext
        cell.PAD = 0.1 if col in (0, 3) else 0.015  # padding is a share of the cell's width
        if row == 0:
            cell.set_facecolor(HEADER_GREEN)
            cell.get_text().set_color("white")
            cell.get_text().set_fontweight("bold")


def dashboard_title(run_name: str, columns: Mapping[str, np.ndarray]) -> str:
    steps = columns["steps"]
    if not len(steps):
        return f"{sanitize(run_name, limit=80)} — no steps yet"
    acc = float(columns["accuracy"][-1]) * 100
    return (f"{sanitize(run_name, limit=80)} — step {int(steps[-1]):,}   "
            f"(loss {float(columns['loss'][-1]):.4f}, accuracy {acc:.1f}%)")


def build_figure(columns: Mapping[str, np.ndarray], samples: Sequence[Mapping], run_name: str,
                 display_samples: int = 5, max_points: int = MAX_POINTS):
    """The seven-panel dashboard titled with the run and its step. `columns` holds MetricsHistory
    arrays (accuracy as 0..1); `samples` are TextSample dicts, the newest last (the table shows the
    last `display_samples`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(dashboard_title(run_name, columns), fontsize=16, fontweight="bold", parse_math=False)
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 0.85], hspace=0.38, wspace=0.22,
                            left=0.05, right=0.97, top=0.92, bottom=0.03)
    axes = [fig.add_subplot(grid[i // 3, i % 3]) for i in range(6)]
    _panel_loss(axes[0], columns, max_points)
    _panel_accuracy(axes[1], columns, max_points)
    _panel_throughput(axes[2], columns, max_points)
    _panel_lr(axes[3], columns, max_points)
    _panel_scatter(fig, axes[4], columns, max_points)
    _panel_recent(axes[5], columns)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    _panel_samples(fig.add_subplot(grid[2, :]), list(samples)[-display_samples:] if display_samples > 0 else [])
    return fig


def figure_png(fig) -> bytes:
    """The figure as PNG bytes, rendered once: the same bytes go to every file that shows it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig) if not isinstance(fig.canvas, FigureCanvasAgg) else fig.canvas
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    # zlib level 1: a quarter of level 6's time for a ~20% larger file
    image.convert("RGB").save(buf, format="png", compress_level=1, dpi=(fig.dpi, fig.dpi))
    return buf.getvalue()


def render_png(columns: Mapping[str, np.ndarray], samples: Sequence[Mapping], run_name: str,
               display_samples: int = 5, max_points: int = MAX_POINTS) -> bytes:
    return figure_png(build_figure(columns, samples, run_name, display_samples, max_points))


# ---- dashboard files ---------------------------------------------------------------------------------
def step_file(step: int) -> str:
    return f"training_step_{step:06d}.png"


def dashboard_files(viz_dir: Path) -> list[tuple[int, Path]]:
    """training_step_*.png in a directory as (step, path), oldest first."""
    with contextlib.suppress(FileNotFoundError):
        found = [(int(m.group(1)), Path(e.path)) for e in os.scandir(viz_dir) if (m := STEP_FILE.match(e.name))]
        return sorted(found)
    return []


def prune_dashboards(viz_dir: Path, keep: int, after_step: int | None = None) -> list[Path]:
    """Delete step dashboards newer than `after_step` (a resumed run redraws them), then all but
    the newest `keep` (0 keeps every one). Returns the deleted paths."""
    files = dashboard_files(viz_dir)
    doomed = [p for s, p in files if after_step is not None and s > after_step]
    kept = [p for s, p in files if after_step is None or s <= after_step]
    if keep > 0:
        doomed += kept[:-keep]
    for path in doomed:
        with contextlib.suppress(OSError):
            path.unlink()
    return doomed
