"""The monitor: a header, four live charts, the samples table, a log pane and the footer. Layout
and colours in app.tcss; breakpoints (set on the app) stack everything at 80x24 and give a wider
terminal the samples table beside the log."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from .charts import CHARTS, ChartPanel
from .widgets import LogPane, RunHeader, SamplesTable


class MonitorScreen(Screen):
    AUTO_FOCUS = "#samples"  # the arrows scroll the samples at first; Tab reaches the charts (y acts on the loss chart until then)

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Grid(id="charts"):
            for spec in CHARTS:
                yield ChartPanel(spec, id=f"chart-{spec.column}")
        with Horizontal(id="bottom"):
            yield SamplesTable(id="samples")
            yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        # kept, not queried each time: the app updates them while a help screen may be on top
        self.header, self.log_pane = self.query_one(RunHeader), self.query_one(LogPane)
        self.samples_table, self.charts = self.query_one(SamplesTable), list(self.query(ChartPanel))
