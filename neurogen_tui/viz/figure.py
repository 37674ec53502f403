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
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..core.text import sanitize, tail
from ..run.history import minmax_downsample, moving_average
from ..run.layout import STEP_PNG

MA_WINDOW = 50  # the seed's 50-step moving averages
RECENT_STEPS = 500
TABLE_TEXT = 40  # characters of sample text per table cell
MAX_POINTS = 2000  # ~2 points per pixel column of a panel at 150 DPI
FIGSIZE, DPI = (20, 12), 150
HEADER_GREEN = "#4CAF50"
PANEL_TITLES = ("Training Loss", "Training Accuracy", "Token Throughput", "Learning Rate Schedule",
                "Loss vs Accuracy", f"Recent Performance (last {RECENT_STEPS} steps)", "Recent Text Samples")
DASHBOARD_COLUMNS = ("steps", "loss", "accuracy", "throughput", "learning_rate", "val_loss", "mfu")

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
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # fewer labels: text is costly
    ax.xaxis.set_major_formatter(FuncFormatter(format_step))


def _percent(value) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) and np.isfinite(value) else "-"


def table_rows(samples: Sequence[Mapping]) -> list[list[str]]:
    """step / input / model output / accuracy cells, every text sanitized and cut to 40 characters."""
    return [[str(s["step"]), tail(str(s["input"]), TABLE_TEXT), sanitize(s["output"], limit=TABLE_TEXT),
             _percent(s["accuracy"])] for s in samples]


def dashboard_title(run_name: str, columns: Mapping[str, np.ndarray]) -> str:
    steps = columns["steps"]
    if not len(steps):
        return f"{sanitize(run_name, limit=80)} — no steps yet"
    acc, loss = float(columns["accuracy"][-1]) * 100, float(columns["loss"][-1])
    mfu = columns.get("mfu")
    parts = [f"loss {loss:.4f}" if np.isfinite(loss) else "", f"accuracy {acc:.1f}%" if np.isfinite(acc) else "",
             f"MFU {float(mfu[-1]) * 100:.1f}%" if mfu is not None and len(mfu) and np.isfinite(mfu[-1]) else ""]
    said = ", ".join(p for p in parts if p)  # a run that does not log a series: not "nan"
    return f"{sanitize(run_name, limit=80)} — step {int(steps[-1]):,}" + (f"   ({said})" if said else "")


MAX_MARKS = 200  # setting changes and guard actions marked, the newest
MARK_STYLES = {"setting": {"color": "tab:cyan", "ls": ":"}, "guard": {"color": "tab:red", "ls": "--"}}


def _set(line, x, y, max_points: int | None = None) -> bool:
    """Give a line new data (min/max reduced); False when there is nothing finite to draw."""
    if max_points is not None:
        x, y = minmax_downsample(x, y, max_points)
    line.set_data(x, y)
    return len(y) > 0


class Dashboard:
    """The seven-panel figure, built once and updated in place for each dashboard: the process that
    draws them keeps its axes, ticks and text layouts, which is a third of matplotlib's time."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = fig = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        self.title = fig.suptitle("", fontsize=16, fontweight="bold", parse_math=False)
        grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 0.85], hspace=0.38, wspace=0.22,
                                left=0.05, right=0.97, top=0.92, bottom=0.03)
        self.axes = axes = [fig.add_subplot(grid[i // 3, i % 3]) for i in range(6)]
        self.table_ax = fig.add_subplot(grid[2, :])
        self.table_ax.axis("off")
        for i, ax in enumerate(axes + [self.table_ax]):
            # an explicit y skips matplotlib's automatic title placement, a third of the drawing time
            ax.set_title(PANEL_TITLES[i], fontweight="bold", y=1.0)
        for ax, ylabel in zip(axes, ("loss", "accuracy (%)", "tokens/s", "learning rate", "accuracy (%)", "loss")):
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if ax is not axes[4]:
                step_axis(ax)
        axes[4].set_xlabel("loss")
        axes[1].set_ylim(0, 100)
        ma = f"{MA_WINDOW}-step moving average"
        self.loss = axes[0].plot([], [], color="tab:blue", lw=1, alpha=0.7, label="loss")[0]
        self.val = axes[0].plot([], [], color="tab:purple", ms=4, lw=1.5, label="validation loss")[0]
        self.loss_ma = axes[0].plot([], [], color="red", ls="--", lw=2, label=ma, zorder=3)[0]
        self.acc = axes[1].plot([], [], color="tab:green", lw=1, alpha=0.7, label="accuracy")[0]
        self.acc_ma = axes[1].plot([], [], color="orange", ls="--", lw=2, label=ma)[0]
        self.throughput = axes[2].plot([], [], color="purple", lw=1, label="tokens/s")[0]
        self.lr = axes[3].plot([], [], color="darkorange", lw=1.5)[0]
        self.scatter = axes[4].scatter(np.empty(0), np.empty(0), c=np.empty(0), cmap="viridis", s=8, alpha=0.7)
        fig.colorbar(self.scatter, ax=axes[4], label="step")
        self.recent_right = axes[5].twinx()
        self.recent_right.set_ylabel("accuracy (%)", color="tab:green")
        axes[5].set_ylabel("loss", color="tab:blue")
        self.recent_loss = axes[5].plot([], [], color="tab:blue", lw=1.2, label="loss")[0]
        self.recent_acc = self.recent_right.plot([], [], color="tab:green", lw=1.2, label="accuracy")[0]
        axes[5].legend(handles=[self.recent_loss, self.recent_acc], loc="upper left", fontsize=9)
        self.empty = [ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes,
                              color="gray") for ax in axes + [self.table_ax]]
        self.empty[-1].set_text("no text samples yet")
        self.table = None
        self._legends: dict[int, tuple] = {}
        self.mfu = None  # MFU (%) on the throughput panel's right axis, made on the first finite value
        self._marks: list = []  # the vertical lines of the last update's setting changes and guard actions

    def update(self, columns: Mapping[str, np.ndarray], samples: Sequence[Mapping], run_name: str,
               display_samples: int = 5, max_points: int = MAX_POINTS, marks: Sequence[tuple[int, str]] = ()):
        """Show `columns` (MetricsHistory arrays, accuracy as 0..1) and the last `display_samples`
        of `samples` (TextSample dicts, the newest last), with `marks` ((step, "setting" | "guard"),
        from events.jsonl) as vertical lines on the step panels; returns the figure."""
        c = columns
        x, loss, acc = c["steps"], c["loss"], c["accuracy"] * 100.0
        val = c.get("val_loss", np.empty(0))
        long_enough = len(x) >= MA_WINDOW
        self.title.set_text(dashboard_title(run_name, c))
        shown = [_set(self.loss, x, loss, max_points), _set(self.val, x, val, max_points)]
        self.val.set_marker("o" if len(self.val.get_xdata()) <= 100 else "None")
        shown.append(long_enough and _set(self.loss_ma, x, moving_average(loss, MA_WINDOW), max_points))
        self._legend(0, [self.loss, self.val, self.loss_ma], shown, "upper right")
        shown = [_set(self.acc, x, acc, max_points)]
        shown.append(long_enough and _set(self.acc_ma, x, moving_average(acc, MA_WINDOW), max_points))
        self._legend(1, [self.acc, self.acc_ma], shown, "lower right")
        _set(self.throughput, x, c["throughput"], max_points)
        mfu = c.get("mfu")
        if mfu is not None and (self.mfu is not None or np.isfinite(mfu).any()):
            self._update_mfu(x, mfu * 100.0, max_points)
        if _set(self.lr, x, c["learning_rate"], max_points) and (self.lr.get_ydata() > 0).all():
            if self.axes[3].get_yscale() != "log":
                self.axes[3].set_yscale("log")
        self._update_scatter(x, loss, c["accuracy"], max_points)
        _set(self.recent_loss, x[-RECENT_STEPS:], loss[-RECENT_STEPS:])
        _set(self.recent_acc, x[-RECENT_STEPS:], acc[-RECENT_STEPS:])
        for ax in self.axes + [self.recent_right]:
            if ax is not self.axes[4]:  # relim() ignores collections: the scatter sets its own limits
                ax.relim()
            ax.autoscale_view()
        lacks = {1: acc, 2: c["throughput"], 3: c["learning_rate"], 4: acc}  # panels of a series a run may not log
        for i, (ax, text) in enumerate(zip(self.axes, self.empty)):
            missing = len(x) and i in lacks and not np.isfinite(lacks[i]).any()
            text.set_text("not logged by this run" if missing else "no data yet")
            text.set_visible(not len(x) or bool(missing))
        self._update_table(list(samples)[-display_samples:] if display_samples > 0 else [])
        self._update_marks(marks, int(x[-1]) if len(x) else 0)
        return self.fig

    def _update_marks(self, marks: Sequence[tuple[int, str]], last: int) -> None:
        for line in self._marks:
            line.remove()
        self._marks = []
        for step, kind in list(marks)[-MAX_MARKS:]:
            if step > last:
                continue
            style = MARK_STYLES.get(kind, MARK_STYLES["setting"])
            for i in (0, 1, 2, 3):  # the step panels over the whole run
                self._marks.append(self.axes[i].axvline(step, lw=1, alpha=0.7, zorder=1, **style))

    def _update_mfu(self, x, mfu, max_points) -> None:
        """Model FLOPs utilization over the device's peak (a CUDA run on a known or --peak-tflops
        GPU): a second series of the throughput panel, on its own axis."""
        if self.mfu is None:
            right = self.axes[2].twinx()
            right.set_ylabel("MFU (%)", color="tab:red")
            self.mfu = right.plot([], [], color="tab:red", lw=1, alpha=0.8, label="MFU (%)")[0]
            self.axes[2].legend(handles=[self.throughput, self.mfu], loc="lower right", fontsize=9)
        ok = np.isfinite(mfu)
        _set(self.mfu, x[ok], mfu[ok], max_points)
        top = float(mfu[ok].max()) if ok.any() else 1.0
        self.mfu.axes.set_ylim(0, max(1.0, top * 1.6))  # from zero: utilization, not its wiggle

    def _legend(self, i: int, lines: list, shown: list, loc: str) -> None:
        for line, ok in zip(lines, shown):
            line.set_visible(bool(ok))  # before the legend, which copies each line's look
        handles = tuple(line for line, ok in zip(lines, shown) if ok)
        if self._legends.get(i) != handles:  # rebuilt only when the series drawn change
            self._legends[i] = handles
            legend = self.axes[i].legend(handles=list(handles), loc=loc, fontsize=9)
            legend.set_visible(bool(handles))

    def _update_scatter(self, steps, loss, acc, max_points) -> None:
        ok = np.flatnonzero(np.isfinite(loss) & np.isfinite(acc))
        if len(ok) > max_points:  # the points that bound both series, spread over the whole run
            half = max_points // 2
            ok = ok[np.union1d(reduce_indices(loss[ok], half), reduce_indices(acc[ok], half))]
        xy = np.column_stack([loss[ok], acc[ok] * 100.0])
        self.scatter.set_offsets(xy)
        self.scatter.set_array(steps[ok].astype(float))
        if len(ok):
            self.scatter.set_clim(float(steps[ok].min()), float(max(steps[ok].max(), steps[ok].min() + 1)))
            ax = self.axes[4]
            ax.ignore_existing_data_limits = True
            ax.update_datalim(xy)

    def _update_table(self, samples: list[Mapping]) -> None:
        rows = table_rows(samples)
        self.empty[-1].set_visible(not rows)
        if self.table is not None and len(self.table.get_celld()) == 4 * (len(rows) + 1):
            for (row, col), cell in self.table.get_celld().items():
                if row:
                    cell.get_text().set_text(rows[row - 1][col])
            return
        if self.table is not None:
            self.table.remove()
            self.table = None
        if rows:
            self.table = _make_table(self.table_ax, rows)


def _make_table(ax, rows: list[list[str]]):
    table = ax.table(cellText=rows, colLabels=["step", "input (end)", "model output", "accuracy"],
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
    return table


def build_figure(columns: Mapping[str, np.ndarray], samples: Sequence[Mapping], run_name: str,
                 display_samples: int = 5, max_points: int = MAX_POINTS):
    """The seven-panel dashboard titled with the run and its step, as a new figure."""
    return Dashboard().update(columns, samples, run_name, display_samples, max_points)


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
               display_samples: int = 5, max_points: int = MAX_POINTS, reuse: Dashboard | None = None,
               marks: Sequence[tuple[int, str]] = ()) -> bytes:
    """The dashboard as PNG bytes; `reuse` is a Dashboard to update instead of building a new one."""
    return figure_png((reuse or Dashboard()).update(columns, samples, run_name, display_samples, max_points, marks))


# ---- dashboard files ---------------------------------------------------------------------------------
def dashboard_files(viz_dir: Path) -> list[tuple[int, Path]]:
    """training_step_*.png in a directory as (step, path), oldest first."""
    with contextlib.suppress(FileNotFoundError):
        found = [(int(m.group(1)), Path(e.path)) for e in os.scandir(viz_dir) if (m := STEP_PNG.match(e.name))]
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
