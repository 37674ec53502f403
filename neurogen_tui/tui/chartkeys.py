"""The charts' keys, for the app (app.py binds them): focus and log axis of one chart; smoothing,
X axis and window of them all; reset. Each change is drawn at once, said in the log pane, shown
in the header and saved for the next use of the app (chartsettings.py)."""
from __future__ import annotations

from . import chartsettings
from .charts import ChartPanel
from .chartsettings import X_NAMES, ChartSettings, window_name


class ChartKeys:
    """Mixed into MonitorApp, whose state (chart_settings, run_state, monitor, draw_charts, _say)
    these actions use."""

    def _set_charts(self, settings: ChartSettings, said: str) -> None:
        """New chart settings: redrawn at once, saved for the next use of the app, and said."""
        self.chart_settings = settings
        self.run_state.charts = settings.summary()
        self._charts_changed = True
        warning = chartsettings.save(settings)
        self._say(said)
        if warning and not self._save_warned:  # once: a read-only home is not news at every key
            self._save_warned = True
            self._say(warning, "warning")
        self.draw_charts()

    def _focused_chart(self) -> ChartPanel | None:
        focused = self.focused
        if isinstance(focused, ChartPanel):
            return focused
        charts = getattr(self.monitor, "charts", None)
        if charts:  # none focused: the first chart takes the key, and the focus so the next y is seen to land
            charts[0].focus()
            return charts[0]
        return None

    def action_chart_log(self) -> None:
        panel = self._focused_chart()
        if panel is None:
            return
        spec = panel.spec
        settings = self.chart_settings.toggle_log(spec.column, spec.log_y)
        axis = "log" if settings.is_log(spec.column, spec.log_y) else "linear"
        self._set_charts(settings, f"{spec.title}: {axis} Y axis")

    def action_smoothing(self, direction: int) -> None:
        settings = self.chart_settings.smoother(up=direction > 0)
        if settings.smoothing == self.chart_settings.smoothing:
            limit = "most" if direction > 0 else "least"
            self._say(f"smoothing is already at its {limit} ({settings.smoothing:.2f})")
            return
        weight = f"{settings.smoothing:.2f}" if settings.smoothing else "off (raw values)"
        self._set_charts(settings, f"smoothing {weight}: TensorBoard's debiased EMA")

    def action_x_axis(self) -> None:
        settings = self.chart_settings.next_x()
        self._set_charts(settings, f"X axis: {X_NAMES[settings.x]}")

    def action_window(self) -> None:
        settings = self.chart_settings.next_window()
        self._set_charts(settings, f"charts show the {window_name(settings.window)}")

    def action_chart_reset(self) -> None:
        self._set_charts(ChartSettings(), f"charts reset: {ChartSettings().summary()}, X step, whole run, default axes")
