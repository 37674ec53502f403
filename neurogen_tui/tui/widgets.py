"""The screen's widgets: header line, samples table, log pane, and the help and sample screens
(the charts are in charts.py).

Widgets only display what they are given (a HeaderInfo, a MetricsHistory, samples, log lines);
they never reach for the trainer. Every piece of dataset or model text goes through sanitize()
and into a rich Text, so markup and escape sequences in it are shown, never interpreted.
Colours live in app.tcss (component classes); plot line colours are plotext names below.
"""
from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.reactive import Reactive, reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, RichLog, Static

from ..core.events import TextSample
from ..core.text import format_count, format_duration, sanitize, tail
from ..run.layout import RunState
from .source import Capabilities
from .state import HeaderInfo, LogLine


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
        charts = f"  {i.charts}" if i.charts else ""
        if i.total:
            frac = min(1.0, i.step / i.total)
            room = width - top.cell_len - 7 - len(charts)
            if room >= 8:
                filled = round(frac * room)
                top.append("  ")
                top.append("━" * filled, style("run-header--bar"))
                top.append("─" * (room - filled), style("run-header--bar-empty"))  # apart without colour too
            top.append(f" {frac * 100:3.0f}%")
        top.append(charts, label)
        bottom = Text(no_wrap=True, overflow="ellipsis")
        eta = "paused" if i.state == RunState.PAUSED else format_duration(i.eta)
        # throughput is the tokens/s chart's caption (smoothed): one figure, said once
        parts = [("elapsed", format_duration(i.elapsed)), ("ETA", eta if i.total else "-"),
                 ("tokens", format_count(i.tokens_seen))]
        if i.mfu is not None:
            parts.append(("MFU", f"{i.mfu * 100:.1f}%"))
        if i.gpu:
            parts.append(("GPU", f"{i.gpu} {i.gpu_more}" if i.gpu_more and width >= 120 else i.gpu))
        if i.data:
            parts.append(("data", i.data))
        if i.cpu:
            parts.append(("CPU", i.cpu))
        if i.memory:
            parts.append(i.memory)
        for n, (name, value) in enumerate(parts):
            bottom.append(" " if n == 0 else "  ")
            bottom.append(f"{name} ", label)
            bottom.append(value)
        return Text("\n").join([top, bottom])


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
    PROMPT_ROWS = 3  # answers to prompts shown above the samples
    MIN_REBUILD_S = 1.0  # a fast trainer samples many times a second: the table follows once a second

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, show_cursor=False, **kwargs)
        self._samples: list[TextSample] = []
        self._answers: list[TextSample] = []
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
        samples = list(samples)
        self._answers = [s for s in samples if s.kind == "prompt"]  # every answer kept, for their history
        # the newest answers to prompts stay on top (asked for, they must not scroll away), then the samples
        self._samples = self._answers[-self.PROMPT_ROWS:] + [s for s in samples if s.kind != "prompt"][-self.MAX_ROWS:]
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
        answers = sum(s.kind == "prompt" for s in self._samples)
        order = [*range(answers - 1, -1, -1), *range(len(self._samples) - 1, answers - 1, -1)]  # each part newest first
        for index in order:
            s = self._samples[index]
            prompt = s.kind == "prompt"  # a prompt's answer: no target, no accuracy
            self.add_row(Text(f"{s.step:,}", justify="right"), Text(tail(s.input, w_in), no_wrap=True),
                         Text("(prompt)", style="italic", no_wrap=True) if prompt
                         else Text(sanitize(s.target, w_tgt), no_wrap=True),
                         Text(sanitize(s.output, w_out), no_wrap=True),
                         Text("-" if prompt or s.accuracy is None else f"{s.accuracy * 100:.0f}%", justify="right"),
                         key=str(index))
        if self.has_focus and self.row_count:  # someone is reading: keep their place
            self.move_cursor(row=min(row, self.row_count - 1), animate=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        index = int(event.row_key.value)
        if 0 <= index < len(self._samples):
            sample = self._samples[index]
            earlier = [s for s in self._answers if s.input == sample.input and s.step < sample.step]
            self.app.push_screen(SampleScreen(sample, earlier if sample.kind == "prompt" else []))


class SampleScreen(ModalScreen):
    """One sample in full, wrapped, every control character shown as an escape."""

    BINDINGS = [Binding("escape,enter,space", "dismiss", "close")]

    def __init__(self, sample: TextSample, earlier: list[TextSample] | None = None) -> None:
        super().__init__()
        self.sample = sample
        self.earlier = earlier or []  # a prompt's earlier answers, oldest first

    def compose(self) -> ComposeResult:
        s = self.sample
        text = Text()
        if s.kind == "prompt":
            text.append(f"prompt answered at step {s.step:,}   (Esc closes)\n\n", "bold")
            parts = [("prompt", s.input), ("model output", s.output)]
        else:
            text.append(f"sample at step {s.step:,}, accuracy {s.accuracy * 100:.0f}%   (Esc closes)\n\n", "bold")
            parts = [("input", s.input), ("target", s.target), ("model output", s.output)]
        for label, body in parts:
            text.append(f"{label}\n", "bold underline")
            text.append(sanitize(body, 4000) + "\n\n")
        if self.earlier:  # the same prompt's answers as the run went on
            text.append("earlier answers\n", "bold underline")
            for e in reversed(self.earlier[-20:]):
                text.append(f"step {e.step:,}: ", "bold")
                text.append(sanitize(e.output, 400) + "\n")
        yield Static(text, id="sample-text")


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
KEYS = (  # short enough for one line each in the help at 80x24; the third field: who has the key
    ("p", "pause / resume (the trainer waits at a step boundary)", "pause"),
    ("c", "write a checkpoint now", "checkpoint"),
    ("d", "draw the dashboard PNG and JSON now", "draw"),
    ("q ^C ^Q", "stop: final checkpoint, dashboard and JSON, then exit", "control"),
    ("q q q", "while stopping, after 5 s: leave without them", "control"),
    ("q ^C", "close this viewer (the run goes on)", "read-only"),
    ("x", "close this screen, the run goes on (attach reopens it)", "detach"),
    ("Tab arrows", "focus a chart, the samples or the log; scroll", ""),
    ("Enter", "on a sample: show it in full", ""),
    ("y", "log / linear Y axis of the focused chart", ""),
    ("s / S", "more / less smoothing (TensorBoard's EMA)", ""),
    ("t", "X axis: step, tokens seen, wall time", ""),
    ("z", "window: whole run, last 10k, 1k, 100 steps", ""),
    ("0", "reset the charts (they are kept for next time)", ""),
    ("g", "prompt the model as it is now (answer in the samples)", "prompt"),
    ("e", "change live settings (learning rate, intervals, ...)", "set"),
    ("?", "this help (Esc closes it)", ""),
)


def keys_for(caps: Capabilities) -> list[tuple[str, str]]:
    """The keys that do something for this source: a read-only viewer is not told of p, c or e."""
    has = {"": True, "control": caps.control, "read-only": not caps.control, "detach": caps.detach}
    return [(key, what) for key, what, who in KEYS if has.get(who, caps.control and who in caps.can)]


def help_notes(caps: Capabilities) -> list[str]:
    """What the keys mean for this source, beyond the table."""
    if not caps.control:
        return ["watch mode: read-only; q closes the viewer and the run goes on."]
    notes = ["Closing the terminal (or losing the SSH connection) detaches: training goes on, "
             "and `neurogen-tui attach RUN_DIR` brings this screen back."]
    if caps.detach and caps.owns:
        notes.append("x closes this screen and leaves the run going (this terminal follows it; "
                     "`neurogen-tui attach` opens the screen again).")
    elif caps.detach:
        notes.append("attached: q stops the run itself (final checkpoint and exports, then the trainer exits); "
                     "x or Ctrl+C detaches: this viewer closes and the run goes on.")
    return notes


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark", "dismiss", "close")]

    def __init__(self, caps: Capabilities) -> None:
        super().__init__()
        self.caps = caps

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("neurogen-tui keys\n", "bold")
        for key, what in keys_for(self.caps):
            text.append(f"{key:>10}  ", "bold")
            text.append(what + "\n")
        text.append("\n" + "\n".join(help_notes(self.caps)), "italic")
        with VerticalScroll(id="help-text"):  # a small terminal scrolls it rather than cutting it
            yield Static(text)
