"""The charts' keys (#19): focus, log Y, TensorBoard's smoothing, X axis, window, reset, and the
per-user file that keeps them from one use of the app to the next."""
from __future__ import annotations

import asyncio
import json
import re
import math

import numpy as np
import pytest

from neurogen_tui.core.events import StateChanged, TrainingMetrics
from neurogen_tui.run.history import debiased_ema
from neurogen_tui.tui import chartsettings
from neurogen_tui.tui.app import MonitorApp
from neurogen_tui.tui.charts import ChartPanel
from neurogen_tui.tui.chartsettings import SMOOTHING_LEVELS, ChartSettings
from neurogen_tui.tui.series import ChartSeries
from neurogen_tui.tui.source import Capabilities, RunSource
from neurogen_tui.tui.widgets import HelpScreen
from test_app import wait_for

STEPS = 3000
T0 = 1_700_000_000.0


def tensorboard_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's own smoothing, line for line (tensorboard/webapp/widgets/line_chart_v2/lib/
    smoothing: the EMA starts at 0, is debiased by 1 - weight**n, passes non-finite values
    through, and leaves a constant series alone)."""
    last = 0.0 if values else math.nan
    num_accum = 0
    constant = all(v == values[0] for v in values)
    out = []
    for value in values:
        if constant or not math.isfinite(value):
            out.append(value)
        else:
            last = last * weight + (1 - weight) * value
            num_accum += 1
            debias = 1 - weight ** num_accum if weight != 1 else 1.0
            out.append(last / debias)
    return out


@pytest.mark.parametrize("weight", [0.0, 0.1, 0.6, 0.9, 0.99])
def test_the_ema_is_tensorboards_debiased_formula(weight):
    rng = np.random.default_rng(3)
    y = 4.0 * np.exp(-np.arange(9000) / 3000) + rng.random(9000)
    y[[17, 4000]] = np.nan
    y[2500] = np.inf
    ours, last, count = debiased_ema(y, weight)
    theirs = np.array(tensorboard_smoothing(y.tolist(), weight))
    finite = np.isfinite(theirs)
    assert np.array_equal(np.isfinite(ours), finite)  # the same points passed through
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-12)
    assert count == int(np.isfinite(y).sum())
    if weight:
        # debiased: the first point is the first value, not (1 - weight) of it
        assert ours[0] == pytest.approx(y[0]) and ours[1] == pytest.approx(theirs[1])
    # in pieces (a chart reads new rows at each redraw) it equals the whole series at once
    a, last_a, count_a = debiased_ema(y[:1234], weight)
    b, _, _ = debiased_ema(y[1234:], weight, last_a, count_a)
    np.testing.assert_allclose(np.concatenate([a, b])[finite], ours[finite], rtol=1e-12)


def test_a_constant_series_stays_constant():
    ours, _, _ = debiased_ema(np.full(5000, 3.25), 0.95)
    np.testing.assert_allclose(ours, 3.25, rtol=1e-12)


def test_smoothing_is_computed_on_full_resolution_data_before_the_reduction():
    """A spike one step long moves the smoothed line by exactly what the EMA of every step says,
    though the drawn line is reduced to a few hundred points."""
    from neurogen_tui.run.history import MetricsHistory

    n = 50_000
    y = np.full(n, 2.0)
    y[30_000] = 100.0
    h = MetricsHistory()
    h.extend_columns({"steps": np.arange(1, n + 1), "loss": y})
    series = ChartSeries("loss", smoothing=0.9)
    series.update(h)
    sx, sy = series.points(200)["smooth"]
    full, _, _ = debiased_ema(y.astype(np.float32).astype(np.float64), 0.9)
    assert len(sx) <= 210
    assert sy.max() == pytest.approx(full.max())  # 2 + 0.1 * 98, not a block average of it
    assert full.max() == pytest.approx(2.0 + 0.1 * 98.0)


# ---- the settings and their file ------------------------------------------------------------
def test_settings_step_through_their_ranges():
    s = ChartSettings()
    assert (s.smoothing, s.x, s.window) == (0.6, "step", None)
    assert s.smoother(True).smoothing == 0.7 and s.smoother(False).smoothing == 0.5
    top = s
    for _ in SMOOTHING_LEVELS:
        top = top.smoother(True)
    assert top.smoothing == 0.99 and top.smoother(True).smoothing == 0.99  # the range ends at 0.99
    bottom = s
    for _ in SMOOTHING_LEVELS:
        bottom = bottom.smoother(False)
    assert bottom.smoothing == 0.0 and bottom.smoother(False).smoothing == 0.0
    assert ChartSettings(smoothing=0.75).smoother(True).smoothing == 0.8  # an edited value: the next level
    assert [s.next_x().x, s.next_x().next_x().x, s.next_x().next_x().next_x().x] == ["tokens", "time", "step"]
    windows, w = [], s
    for _ in range(4):
        w = w.next_window()
        windows.append(w.window)
    assert windows == [10_000, 1_000, 100, None]
    logged = s.toggle_log("loss", False)
    assert logged.is_log("loss", False) and not logged.toggle_log("loss", False).is_log("loss", False)
    assert logged.is_log("learning_rate", True)  # the others keep their default
    assert ChartSettings(smoothing=0.7, x="time", window=1000).summary() == "ema 0.70 · x wall time · last 1k"


def test_settings_file_round_trip_and_bad_files_are_ignored_with_one_warning(tmp_path):
    s = ChartSettings(smoothing=0.9, x="tokens", window=100).toggle_log("loss", False)
    assert chartsettings.save(s, tmp_path) is None
    assert chartsettings.load(tmp_path) == (s, None)
    path = tmp_path / chartsettings.FILE_NAME
    for bad, why in (("{not json", "ignored"), ('{"smoothing": 1.5}', "smoothing"), ('{"x": "epoch"}', "x must"),
                     ('{"window": 7}', "window"), ('{"log_y": {"loss": "yes"}}', "log_y"), ("[1, 2]", "object"),
                     (b"\xff\xfe\x00", "not read")):
        path.write_bytes(bad if isinstance(bad, bytes) else bad.encode())
        settings, warning = chartsettings.load(tmp_path)
        assert settings == ChartSettings(), bad
        assert warning and why in warning and "\n" not in warning, (bad, warning)
    assert chartsettings.load(tmp_path / "none") == (ChartSettings(), None)  # no file: nothing to say


def test_the_config_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("NEUROGEN_TUI_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert chartsettings.config_dir() == tmp_path / "neurogen-tui"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # XDG: a relative path is ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert chartsettings.config_dir() == tmp_path / "home" / ".config" / "neurogen-tui"


def test_a_settings_file_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    warning = chartsettings.save(ChartSettings(), blocker / "sub")  # a directory under a file
    assert warning and "not saved" in warning


# ---- the keys, in the app ---------------------------------------------------------------------
class RowsSource(RunSource):
    """A run that has trained STEPS steps: real metrics events through the app's own path."""

    caps = Capabilities(control=True, owns=True)

    def __init__(self, steps: int = STEPS) -> None:
        super().__init__()
        self.put(StateChanged("running"))
        rng = np.random.default_rng(0)
        for step in range(1, steps + 1):
            self.put(TrainingMetrics(step=step, loss=5.0 * math.exp(-step / 1000) + 0.5 + float(rng.random()),
                                     accuracy=0.3, tokens_per_sec=1000.0 + float(rng.random()), learning_rate=1e-3, gpu_memory_mb=0.0,
                                     timestamp=T0 + step * 0.5, tokens_seen=step * 2048, step_time=0.5,
                                     cpu_util=150.0, data_time=0.05,
                                     val_loss=2.0 if step % 500 == 0 else None))

    def produce(self) -> None:
        pass


def panels(app) -> list[ChartPanel]:
    return list(app.monitor.query(ChartPanel))


def loss_panel(app) -> ChartPanel:
    return app.monitor.query_one("#chart-loss", ChartPanel)


async def drawn(pilot, app, condition, what):
    """Wait until the charts were redrawn with the settings and `condition` holds."""
    await wait_for(pilot, lambda: not app._charts_changed and not app.charts_building and condition(), what)


def log_lines(app) -> str:
    return "\n".join(app.monitor.log_pane.texts)


def test_each_chart_key_changes_the_charts_and_says_so(own_config_dir):
    app = MonitorApp(RowsSource())

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: len(app.run_state.history) == STEPS and loss_panel(app).chart.series.seen == STEPS,
                           "the rows on the charts")
            loss = loss_panel(app)
            # the default: TensorBoard's 0.6, every step, the whole run, the header says the weight
            assert loss.chart.series.smoothing == 0.6 and "smooth" in loss.chart.series.lines
            assert app.monitor.header.info.charts == "ema 0.60"
            assert "ema 0.60" in app.monitor.header.render().plain

            # focus: Tab reaches the charts, the arrows move between them
            app.set_focus(None)
            await pilot.press("tab")
            assert app.focused is panels(app)[0]
            await pilot.press("right")
            assert app.focused is panels(app)[1]
            await pilot.press("left", "left")
            assert app.focused is panels(app)[-1]  # wraps round
            await pilot.press("right")
            assert app.focused is loss

            # y: a log Y axis on the focused chart only
            await pilot.press("y")
            await drawn(pilot, app, lambda: loss.chart.log_y, "the log axis")
            assert not panels(app)[1].chart.log_y and panels(app)[3].chart.log_y  # learning rate: log by default
            assert "loss: log Y axis" in log_lines(app)
            assert re.search(r"^ *\d+\.\d+[▀-▟⠀-⣿ ]", loss.chart.render().plain, re.M)  # a log axis' plain labels
            assert "loss log" in loss.query_one(".chart-caption").render().plain

            # s / S: the weight, on every smoothed chart, from the full series
            await pilot.press("s")
            await drawn(pilot, app, lambda: loss.chart.series.smoothing == 0.7, "smoothing 0.7")
            raw = app.run_state.history.column("loss").astype(np.float64)
            full, _, _ = debiased_ema(raw, 0.7)
            assert loss.chart.series.last["smooth"] == pytest.approx(full[-1])
            assert app.monitor.header.info.charts == "ema 0.70" and "smoothing 0.70" in log_lines(app)
            await pilot.press("S", "S")
            await drawn(pilot, app, lambda: loss.chart.series.smoothing == 0.5, "smoothing 0.5")
            assert panels(app)[1].chart.series.smoothing == 0.5
            assert panels(app)[3].chart.series.smoothing == 0.0  # the learning rate is never smoothed

            # t: step -> tokens -> wall time -> step
            await pilot.press("t")
            await drawn(pilot, app, lambda: loss.chart.series.x == "tokens", "X tokens")
            x, _ = loss.chart.series.points(10_000)["value"]
            assert x[0] == 2048 and x[-1] == STEPS * 2048
            await pilot.press("t")
            await drawn(pilot, app, lambda: loss.chart.series.x == "time", "X wall time")
            x, _ = loss.chart.series.points(10_000)["value"]
            assert x[0] == 0.0 and x[-1] == pytest.approx((STEPS - 1) * 0.5)  # seconds since the first step
            assert "x wall time" in app.monitor.header.info.charts
            await pilot.press("t")
            await drawn(pilot, app, lambda: loss.chart.series.x == "step", "X step")

            # z: whole run -> last 10k -> 1k -> 100 steps
            await pilot.press("z", "z")
            await drawn(pilot, app, lambda: app.chart_settings.window == 1000, "window 1k")
            x, y = loss.chart.series.points(10_000, app.chart_settings.window)["value"]
            assert x[0] == STEPS - 999 and x[-1] == STEPS and len(x) == 1000  # every step of the window
            assert "last 1k" in app.monitor.header.info.charts and "last 1k steps" in log_lines(app)
            await pilot.press("z")
            await drawn(pilot, app, lambda: app.chart_settings.window == 100, "window 100")
            assert loss.chart.points <= 4 * 100  # value, smoothed, validation points of 100 steps

            # 0: everything back
            await pilot.press("0")
            await drawn(pilot, app, lambda: app.chart_settings == ChartSettings(), "reset")
            assert not loss.chart.log_y and loss.chart.series.smoothing == 0.6 and loss.chart.series.x == "step"
            assert "charts reset" in log_lines(app)
            await pilot.press("q")

    asyncio.run(scenario())
    saved = json.loads((own_config_dir / chartsettings.FILE_NAME).read_text())
    assert saved == ChartSettings().to_json()


def test_chart_settings_survive_a_restart_and_a_corrupt_file_is_a_warning(own_config_dir):
    async def first():
        app = MonitorApp(RowsSource(50))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: len(app.run_state.history) == 50, "rows")
            assert app.focused is app.monitor.samples_table  # where the arrows went before the charts had keys
            await pilot.press("y", "s", "s", "t", "z", "z", "z")  # y: no chart focused, so the loss chart
            assert app.focused is loss_panel(app)
            await drawn(pilot, app, lambda: app.chart_settings.window == 100, "the keys")
            await pilot.press("q")
        return app.chart_settings

    async def second():
        app = MonitorApp(RowsSource(50))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: loss_panel(app).chart.series.seen == 50, "rows")
            state = (app.chart_settings, loss_panel(app).chart.log_y, loss_panel(app).chart.series.smoothing,
                     loss_panel(app).chart.series.x, app.monitor.header.info.charts, log_lines(app))
            await pilot.press("q")
        return state

    before = asyncio.run(first())
    assert before == ChartSettings(smoothing=0.8, x="tokens", window=100, log_y=(("loss", True),))
    settings, log_y, smoothing, x, header, _ = asyncio.run(second())
    assert settings == before and log_y and smoothing == 0.8 and x == "tokens"
    assert header == "ema 0.80 · x tokens · last 100"

    (own_config_dir / chartsettings.FILE_NAME).write_text('{"smoothing": "lots"')
    settings, log_y, smoothing, *_, log = asyncio.run(second())
    assert settings == ChartSettings() and not log_y and smoothing == 0.6
    assert "chart settings" in log and "ignored" in log and "using the defaults" in log
    assert (own_config_dir / chartsettings.FILE_NAME).read_text() == '{"smoothing": "lots"'  # left as it was


def test_chart_keys_wait_under_the_help_screen():
    app = MonitorApp(RowsSource(20))

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("s", "t")
            assert app.chart_settings == ChartSettings()
            await pilot.press("escape", "s")
            assert app.chart_settings.smoothing == 0.7
            await pilot.press("q")

    asyncio.run(scenario())


def test_the_header_shows_cpu_and_the_data_share():
    app = MonitorApp(RowsSource(40))

    async def scenario():
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, lambda: app.monitor.header.info.step == 40, "rows")
            text = app.monitor.header.render().plain
            await pilot.press("q")
        return app.monitor.header.info, text

    info, text = asyncio.run(scenario())
    assert info.cpu == "150%" and info.data == "10%"  # 0.05 s of each 0.5 s step
    assert "CPU 150%" in text and "data 10%" in text


def test_setting_changes_and_guard_actions_are_marked_on_the_charts_and_the_png():
    from neurogen_tui.viz.figure import Dashboard
    from neurogen_tui.core.events import GuardFired, SettingChanged

    source = RowsSource(600)
    source.put(SettingChanged(200, {"lr": [1e-3, 50.0]}, "ctl"))
    source.put(GuardFired(201, "spike", "loss 9e3 against a recent 2.8", "rollback", "rolled back"))
    app = MonitorApp(source)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: loss_panel(app).chart.marks, "the marks")
            on_steps = list(loss_panel(app).chart.marks)
            await pilot.press("t")
            await drawn(pilot, app, lambda: loss_panel(app).chart.series.x == "tokens", "X tokens")
            on_tokens = list(loss_panel(app).chart.marks)
            await pilot.press("q")
        return on_steps, on_tokens

    on_steps, on_tokens = asyncio.run(scenario())
    assert on_steps == [(200.0, "setting"), (201.0, "guard")]
    assert on_tokens == [(200 * 2048.0, "setting"), (201 * 2048.0, "guard")]  # the tokens seen at those steps

    steps = np.arange(1, 301)
    columns = {"steps": steps, "loss": np.full(300, 3.0), "accuracy": np.full(300, 0.3), "throughput": np.ones(300),
               "learning_rate": np.full(300, 1e-3), "val_loss": np.full(300, np.nan), "mfu": np.full(300, np.nan)}
    board = Dashboard()
    board.update(columns, [], "run", marks=[(100, "setting"), (150, "guard"), (900, "guard")])
    assert len(board._marks) == 2 * 4  # two marks within the run, on the four step panels
    assert sorted({line.get_xdata()[0] for line in board._marks}) == [100, 150]
    board.update(columns, [], "run")
    assert board._marks == []  # a reused figure does not keep old lines
