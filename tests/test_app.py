"""The Textual app driven headless (App.run_test) over a real tiny training run."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import numpy as np
import pytest
from textual.widgets import Static
from rich.text import Text

from neurogen_tui.train.config import TrainingConfig
from neurogen_tui.core.events import RunFailed, StateChanged, TextSample
from neurogen_tui.run.history import MetricsHistory
from neurogen_tui.core.events import EventBus
from neurogen_tui.run.recorder import MetricsRecorder
from neurogen_tui.cli.session import RunParts, build_run, setup_logging
from neurogen_tui.train.trainer import Trainer
from neurogen_tui.tui.app import MonitorApp
from neurogen_tui.tui.charts import CHARTS, ChartCaption, ChartPanel, MetricChart, reduced_series, y_ticks
from neurogen_tui.tui.source import Capabilities, InProcessSource, RunSource, SourceDone
from neurogen_tui.tui.state import RunView, last_frames
from neurogen_tui.run.history import debiased_ema
from neurogen_tui.tui.series import BLOCK, ChartSeries
from neurogen_tui.tui.widgets import LogPane, RunHeader, SamplesTable

HANG_GUARD = 280  # seconds: only so a broken build fails instead of hanging (pytest-timeout is 300); never a speed check


def make_cfg(tmp_path, **overrides) -> TrainingConfig:
    cfg = TrainingConfig(run_dir=str(tmp_path / "run"))
    cfg.apply_test_mode()
    cfg.max_chunks = 2000  # long enough that the test, not the data, decides when it ends
    cfg.epochs = 0
    cfg.checkpoint_interval = 1000
    cfg.viz_interval = 1000  # dashboards drawn by the tests that ask for them, not every 2 steps
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def in_process(parts: RunParts) -> InProcessSource:
    return InProcessSource(parts)


def live_app(cfg, composed: bool = False, ui_budget: float | None = None) -> tuple[MonitorApp, object]:
    """The app over a real trainer. composed=True: the run exactly as `neurogen-tui` builds it
    (dashboard process included); otherwise trainer and metrics recorder only, which is what the
    app must also cope with (no VisualizationManager) and spares each test a dashboard process."""
    if composed:
        parts = build_run(cfg, None, control=False)
    else:
        bus = EventBus()
        recorder = MetricsRecorder(cfg.viz_dir)
        bus.subscribe(recorder)
        parts = RunParts(trainer=Trainer(cfg, bus), bus=bus, recorder=recorder, viz=None)
    return MonitorApp(in_process(parts), ui_budget=ui_budget), parts


async def wait_for(pilot, condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.05)


async def stop_and_wait_exit(pilot, app, key: str = "q") -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")


def log_text(app) -> str:
    return "\n".join(app.query_one(LogPane).texts)


def run(coro):
    return asyncio.run(coro)


# ---- live training ---------------------------------------------------------------------------
def test_under_the_cpu_budget_the_header_moves_every_second_and_the_charts_as_allowed(tmp_path):
    """The trainer on the app's thread (the CPU default) always costs it the GIL, so the screen keeps
    to --ui-budget: the header still follows the run, the first rows get the first chart redraw at
    once, and after it the screen has spent no more than its bank, its share and one redraw."""
    app, parts = live_app(make_cfg(tmp_path), ui_budget=0.01)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: all(c.points > 0 for c in app.query(MetricChart)), "the first chart redraw")
            assert app.budget.limited and app.budget.shares_gil
            spent, t0, step = app.budget.spent, time.monotonic(), app.query_one(RunHeader).info.step
            await asyncio.sleep(3.0)  # not the Pilot's pause: its own work would be charged too
            used, elapsed = app.budget.spent - spent, time.monotonic() - t0
            assert app.query_one(RunHeader).info.step > step  # the header follows the run
            # at most the bank, the share of the time, and one redraw begun on credit
            assert used <= app.budget.BANK + 0.01 * elapsed + 2 * max(app.chart_seconds, 0.1)
            await stop_and_wait_exit(pilot, app)
        return app.return_code

    assert run(scenario()) == 0


def test_an_exhausted_budget_still_redraws_the_charts_after_the_longest_wait(tmp_path, monkeypatch):
    """With an allowance that never covers a redraw, the charts (and samples) still move every
    BUSY_CHART_MAX_WAIT; a paused run is not limited at all."""
    monkeypatch.setattr(MonitorApp, "BUSY_CHART_MAX_WAIT", 1.0)
    app, parts = live_app(make_cfg(tmp_path), ui_budget=1e-6)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app._chart_key and app._chart_key[0] > 0, "the first chart redraw")
            app.budget.balance = -app.budget.MAX_DEBT  # as if the screen had spent far over its share
            first = app._chart_key[0]
            await wait_for(pilot, lambda: app._chart_key[0] > first, "a redraw after the longest wait")
            assert app.budget.limited and not app.budget.ready()
            await pilot.press("p")
            await wait_for(pilot, lambda: app.state == "paused", "the paused state")
            await pilot.pause(0.5)
            assert not app.budget.limited
            await stop_and_wait_exit(pilot, app)
        return app.return_code

    assert run(scenario()) == 0


def test_charts_and_samples_fill_then_q_exits_with_final_files(tmp_path):
    cfg = make_cfg(tmp_path)
    app, parts = live_app(cfg, composed=True)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.step >= 6 and app.query_one(SamplesTable).row_count >= 3,
                           "six steps and three samples")
            await pilot.pause(0.5)  # one chart redraw interval
            charts = list(app.query(MetricChart))
            assert len(charts) == len(CHARTS) and all(c.points > 0 for c in charts)
            await wait_for(pilot, lambda: all(re.search("[\u2801-\u28ff]", c.render().plain) for c in charts),
                           "braille plots on screen")
            caption = str(app.query_one("#chart-loss", ChartPanel).query_one(ChartCaption).text)
            assert caption.startswith("loss ") and " ema " in caption
            table = app.query_one(SamplesTable)
            newest, oldest = table.get_row_at(0)[0].plain, table.get_row_at(table.row_count - 1)[0].plain
            assert int(newest.replace(",", "")) > int(oldest.replace(",", ""))  # newest first
            assert app.query_one(RunHeader).info.state == "running"
            await stop_and_wait_exit(pilot, app)
        return app.return_code

    assert run(scenario()) == 0
    steps = (cfg.viz_dir / "metrics.jsonl").read_text().count("\n")
    assert steps == parts.trainer.step >= 6
    assert (cfg.checkpoint_dir / f"checkpoint_step_{steps:06d}.pt").exists()  # the final checkpoint
    assert app.run_state.result.reason == "stopped"
    if parts.viz is not None:  # the final dashboard and JSON exports
        assert (cfg.viz_dir / "training_latest.png").exists()
        assert (cfg.viz_dir / "metrics_history.json").exists()


def test_p_pauses_at_a_step_boundary_and_resumes(tmp_path):
    cfg = make_cfg(tmp_path)
    app, parts = live_app(cfg)

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.step >= 2, "two steps")
            await pilot.press("p")
            await wait_for(pilot, lambda: app.state == "paused", "the paused state")
            paused_at = parts.trainer.step
            await pilot.pause(1.0)  # ~30 steps' worth of time
            assert parts.trainer.step == paused_at and app.step == paused_at
            assert app.query_one(RunHeader).info.state == "paused"
            await pilot.press("p")
            await wait_for(pilot, lambda: app.step > paused_at + 2, "steps after resuming")
            assert app.state == "running"
            assert "pause requested" in log_text(app) and "resumed" in log_text(app)
            await stop_and_wait_exit(pilot, app)

    run(scenario())


def test_c_writes_a_checkpoint_now(tmp_path):
    cfg = make_cfg(tmp_path)
    app, parts = live_app(cfg)

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.step >= 2, "two steps")
            assert not list(cfg.checkpoint_dir.glob("*.pt"))  # the interval (1000) is far away
            await pilot.press("c")
            await wait_for(pilot, lambda: "checkpoint @ step" in log_text(app), "the checkpoint line")
            written = list(cfg.checkpoint_dir.glob("checkpoint_step_*.pt"))
            assert len(written) == 1
            assert f"checkpoints/{written[0].name}" in log_text(app)  # shown inside the run dir
            await stop_and_wait_exit(pilot, app)

    run(scenario())


def test_d_asks_the_dashboard_writer_or_says_it_is_unavailable(tmp_path):
    cfg = make_cfg(tmp_path)
    app, parts = live_app(cfg, composed=True)

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.step >= 1, "a step")
            await pilot.press("d")
            if parts.viz is None:
                assert "dashboards are unavailable" in log_text(app)
            else:
                await wait_for(pilot, lambda: "dashboard written: " in log_text(app), "the dashboard line")
                assert (cfg.viz_dir / "training_latest.png").exists()
            await stop_and_wait_exit(pilot, app)

    run(scenario())


def test_ctrl_c_and_sigterm_stop_the_trainer_instead_of_quitting(tmp_path):
    for trigger in ("ctrl+c", "sigterm"):
        cfg = make_cfg(tmp_path / trigger)
        app, parts = live_app(cfg)

        async def scenario():
            async with app.run_test() as pilot:
                await wait_for(pilot, lambda: app.step >= 2, "two steps")
                if trigger == "sigterm":  # delivered to this process; the app's loop handler catches it
                    os.kill(os.getpid(), signal.SIGTERM)
                    await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
                else:
                    await stop_and_wait_exit(pilot, app, "ctrl+c")

        run(scenario())
        assert app.return_code == 0, trigger
        steps = (cfg.viz_dir / "metrics.jsonl").read_text().count("\n")
        assert (cfg.checkpoint_dir / f"checkpoint_step_{steps:06d}.pt").exists(), trigger
        assert app.run_state.result.reason == "stopped"


def test_trainer_exception_shows_failed_and_exits_non_zero_after_q(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, checkpoint_interval=2)
    setup_logging(cfg)
    app, parts = live_app(cfg)
    real_step = parts.trainer.train_step

    def failing_step():
        if parts.trainer.step >= 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_step()

    monkeypatch.setattr(parts.trainer, "train_step", failing_step)

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.state == "failed", "the failed state")
            await pilot.pause(0.2)
            assert app.return_code is None  # the screen stays up until the user closes it
            assert app.query_one(RunHeader).info.state == "failed"
            text = log_text(app)
            assert "failed at step 4: RuntimeError: CUDA out of memory (simulated)" in text
            assert 'File "' in text and "failing_step" in text  # the traceback's last frames
            await stop_and_wait_exit(pilot, app)

    run(scenario())
    assert app.return_code == 1
    assert (cfg.checkpoint_dir / "checkpoint_step_000004.pt").exists()  # the last good checkpoint
    assert (cfg.viz_dir / "metrics.jsonl").read_text().count("\n") == 4
    log_file = (tmp_path / "run" / "neurogen-tui.log").read_text()
    assert "Traceback" in log_file and "CUDA out of memory (simulated)" in log_file


@pytest.mark.slow
def test_a_resumed_run_shows_its_whole_history(tmp_path):
    from neurogen_tui.train.checkpoint import list_checkpoints, load_checkpoint

    cfg = make_cfg(tmp_path, max_chunks=6)
    first = build_run(cfg, None, control=False)
    first.trainer.run()
    first.close()
    path = list_checkpoints(cfg.checkpoint_dir)[-1]
    cfg.max_chunks = 2000
    parts = build_run(cfg, (str(path), load_checkpoint(path)), control=False)
    app = MonitorApp(in_process(parts))

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: len(app.run_state.history) >= 6, "the earlier steps")
            await wait_for(pilot, lambda: app.step >= 9, "steps after the resume")
            await stop_and_wait_exit(pilot, app)

    run(scenario())
    steps = app.run_state.history.column("steps").tolist()
    assert steps[:9] == list(range(1, 10)) and steps == sorted(set(steps))


# ---- layout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_layout_fits_every_panel_on_screen(tmp_path, size):
    cfg = make_cfg(tmp_path)
    app, parts = live_app(cfg)
    width, height = size

    async def scenario():
        async with app.run_test(size=size) as pilot:
            await wait_for(pilot, lambda: app.step >= 3 and app.query_one(SamplesTable).row_count, "a sample")
            await pilot.pause(0.5)
            regions = {name: app.query_one(sel).region for name, sel in
                       [("header", RunHeader), ("samples", SamplesTable), ("log", LogPane), ("footer", "Footer")]}
            charts = [c.region for c in app.query(MetricChart)]
            for name, r in list(regions.items()) + [(f"chart{i}", r) for i, r in enumerate(charts)]:
                assert r.width > 0 and r.height > 0, name
                assert r.right <= width and r.bottom <= height, name
            assert regions["header"].y == 0 and regions["header"].height == 2
            assert regions["footer"].bottom == height
            assert min(r.height for r in charts) >= 4  # a chart you can read, even at 80x24
            assert regions["samples"].height >= 4  # header row and at least three samples
            screen = app.export_screenshot()
            assert "RUNNING" in screen and "step" in screen and "pause/resume" in screen
            if width >= 120:  # side by side on a wide terminal
                assert regions["log"].x > regions["samples"].x
            await stop_and_wait_exit(pilot, app)

    run(scenario())


# ---- widgets and state without training ------------------------------------------------------
class ScriptedSource(RunSource):
    """Events handed in by the test; produce() returns at once; the keys' commands are recorded."""

    caps = Capabilities(control=True, owns=True)

    def __init__(self, events):
        super().__init__()
        self.calls = []
        for e in events:
            self.put(e)

    def produce(self) -> None:
        pass

    def _record(self, name: str) -> str:
        self.calls.append(name)
        return name

    def toggle_pause(self) -> str:
        return self._record("toggle_pause")

    def checkpoint(self) -> str:
        return self._record("checkpoint")

    def draw(self) -> str:
        return self._record("draw")

    def stop(self) -> str:
        return self._record("stop")


def test_samples_show_markup_and_escape_sequences_literally_one_line_each():
    hostile = TextSample(step=7, input="\x1b[2J\n[b]x[/b]",
                         target="[/bold] \u202etarget", output="\x9b31m out\r\n", accuracy=0.25)
    app = MonitorApp(ScriptedSource([hostile]))

    async def scenario():
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause(0.3)
            table = app.query_one(SamplesTable)
            row = table.get_row_at(0)
            assert all(isinstance(cell, Text) for cell in row)
            inp, tgt, out = (cell.plain for cell in row[1:4])
            assert inp == "\\x1b[2J\\n[b]x[/b]"
            assert "[/bold]" in tgt and "\\u202e" in tgt
            assert "\\x9b" in out and "\\r\\n" in out
            assert not any(ch in cell for cell in (inp, tgt, out) for ch in "\x1b\x07\n\r\x9b\u202e")
            table.focus()
            await pilot.press("enter")  # the sample in full, still inert
            full = str(app.screen.query_one("#sample-text").content)
            assert "\\x1b[2J\\n[b]x[/b]" in full and "\\x9b31m out\\r\\n" in full and "\x1b" not in full
            await pilot.press("escape")
            assert type(app.screen).__name__ != "SampleScreen"
            await pilot.press("q")

    run(scenario())


def test_help_opens_and_closes_from_the_keyboard():
    app = MonitorApp(ScriptedSource([]))

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.press("question_mark")
            assert type(app.screen).__name__ == "HelpScreen"
            help_text = app.screen.query_one("#help-text")
            assert "write a checkpoint now" in str(help_text.query_one(Static).content) and help_text.region.height > 5
            await pilot.press("escape")
            assert type(app.screen).__name__ != "HelpScreen"
            await pilot.press("q")

    run(scenario())


def test_a_read_only_viewers_help_lists_only_its_keys_and_scrolls_on_a_small_terminal():
    from neurogen_tui.tui.source import READ_ONLY

    class Viewer(ScriptedSource):
        caps = READ_ONLY

    app = MonitorApp(Viewer([]))

    async def scenario():
        async with app.run_test(size=(60, 20)) as pilot:
            await pilot.press("question_mark")
            box = app.screen.query_one("#help-text")
            text = str(box.query_one(Static).content)
            assert "close this viewer" in text and "this help" in text
            for key_of_a_run in ("write a checkpoint now", "pause / resume", "prompt the model", "live settings"):
                assert key_of_a_run not in text
            assert box.region.height <= 20 and box.virtual_size.height >= text.count("\n")  # all of it, scrolling
            await pilot.press("escape", "q")

    run(scenario())


def test_state_eta_memory_and_failure_frames():
    rs = RunView("r")
    rs.apply(StateChanged("running"))
    rs.total = 100
    t0 = 1000.0
    for step in range(1, 11):
        rs.apply_all([_metrics(step, t0 + step * 0.5, rss=321.0)])
    assert rs.eta() == pytest.approx(90 * 0.5)
    assert rs.header().memory == ("RSS", "321 MB")
    rs.apply(_metrics(11, t0 + 6, gpu=2048.0))
    assert rs.header().memory == ("GPU peak", "2,048 MB")
    rs.apply(StateChanged("paused"))
    assert rs.eta() is None
    tb = 'Traceback:\n  File "a.py", line 1, in f\n    x\n  File "b.py", line 2, in g\n    y\nValueError: z\n'
    rs.apply(RunFailed(11, "ValueError: z", tb))
    lines = [line.text for line in rs.take_logs()]
    assert lines[0] == "failed at step 11: ValueError: z"
    assert any('File "b.py", line 2, in g' in line for line in lines)
    assert last_frames(tb, 1) == ['File "b.py", line 2, in g']
    rs.apply(StateChanged("running"))
    assert rs.state == "failed"  # a late event cannot hide a failure


def test_a_flood_of_metrics_in_one_drain_lands_whole_and_in_order():
    bulk, single = RunView("r"), RunView("r")
    events = [_metrics(step, 1000.0 + step * 0.001, rss=100.0) for step in range(1, 5001)]
    events[2500].val_loss = 3.5
    bulk.apply_all(events)  # one drain of a fast trainer: the bulk path
    for event in events:
        single.apply_all([event])  # one event per drain: the row path
    for name in ("steps", "loss", "val_loss", "timestamp", "tokens_seen"):
        np.testing.assert_array_equal(bulk.history.column(name), single.history.column(name))
    assert bulk.step == single.step == 5000 and bulk.tokens_seen == 5000 * 1024
    assert bulk.header().memory == ("RSS", "100 MB")


def _metrics(step, ts, rss=0.0, gpu=0.0):
    from neurogen_tui.core.events import TrainingMetrics

    return TrainingMetrics(step=step, loss=5.0 - step * 0.01, accuracy=0.1, tokens_per_sec=1000.0,
                           gpu_memory_mb=gpu, learning_rate=1e-3, timestamp=ts, rss_mb=rss, tokens_seen=step * 1024)


def test_charts_draw_a_reduced_series_on_long_runs():
    h = MetricsHistory()
    n = 300_000
    steps = np.arange(1, n + 1)
    h.extend_columns({"steps": steps, "loss": 5 + np.sin(steps / 1000.0), "val_loss": np.full(n, np.nan),
                      "accuracy": np.full(n, 0.5), "learning_rate": np.full(n, 1e-3), "throughput": np.ones(n)})
    h.extend_columns({"steps": np.array([n + 1]), "loss": np.array([50.0])})  # a spike stays visible
    series = reduced_series(h, CHARTS[0], 160)
    x, y = series["value"]
    assert len(x) <= 170 and 50.0 in y and x[0] == 1 and x[-1] == n + 1
    assert len(series["smooth"][0]) <= 170


def test_chart_series_read_incrementally_match_the_whole_series_reduction():
    rng = np.random.default_rng(1)
    n = 5 * BLOCK + 123
    loss = rng.random(n) + 3.0
    loss[7777] = 40.0  # a spike
    val = np.where(np.arange(n) % 250 == 0, 2.5, np.nan)
    h = MetricsHistory()
    series = ChartSeries("loss", smoothing=0.6, val_column="val_loss")
    done = 0
    while done < n:  # rows arrive in uneven batches, a redraw after each
        k = int(rng.integers(1, 3000))
        h.extend_columns({"steps": np.arange(done + 1, done + k + 1)[: n - done], "loss": loss[done:done + k],
                          "val_loss": val[done:done + k]})
        series.update(h)
        done = min(n, done + k)
    full_ema, _, _ = debiased_ema(loss.astype(np.float32).astype(np.float64), 0.6)
    assert series.last["smooth"] == pytest.approx(full_ema[-1])
    x, y = series.points(200)["value"]
    assert len(x) <= 210 and y.max() == pytest.approx(40.0) and x[y.argmax()] == 7778
    assert y.min() == pytest.approx(loss.astype(np.float32).min())
    sx, sy = series.points(200)["smooth"]
    assert sy.max() == pytest.approx(full_ema.max()) and sx[-1] == n
    assert series.last["val"] == 2.5 and len(series.points(200)["val"][0]) <= 210
    # a window is drawn from every point of the last N steps, not from the reduced store
    wx, wy = series.points(1000, window=100)["value"]
    assert list(wx) == list(range(n - 99, n + 1))
    np.testing.assert_allclose(wy, loss[-100:].astype(np.float32))
    np.testing.assert_allclose(series.points(1000, window=100)["smooth"][1], full_ema[-100:])


def test_y_tick_labels_are_short():
    _, labels = y_ticks(839.0, 59_700.0, 3)
    assert labels == ["839", "30.3k", "59.7k"]
    _, labels = y_ticks(3.24, 5.54, 3)
    assert labels == ["3.2", "4.4", "5.5"]
    _, labels = y_ticks(1e-4, 1e-3, 2, log=True)
    assert labels == ["0.0001", "0.001"]  # plain numbers where they are short
    _, labels = y_ticks(0.77, 6.4, 3, log=True)
    assert labels == ["0.77", "2.2", "6.4"]  # not 7.7e-01, 5.6e+00
    _, labels = y_ticks(3e-6, 3e-5, 2, log=True)
    assert labels == ["3.0e-6", "3.0e-5"]


def test_q_after_the_producer_ended_exits_with_its_code():
    app = MonitorApp(ScriptedSource([StateChanged("failed"), SourceDone(1)]))

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.pause(0.3)
            assert app.return_code is None
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "exit")

    run(scenario())
    assert app.return_code == 1


def test_a_stop_that_hangs_can_be_abandoned_with_q_three_times():
    controller = ScriptedSource([StateChanged("running")])  # its producer never ends
    app = MonitorApp(controller)
    app.FORCE_AFTER = 0.0

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.press("q")
            await pilot.pause(0.2)
            assert app.return_code is None and app.state == "stopping" and controller.calls == ["stop"]
            await pilot.press("q")
            assert app.return_code is None and "if it hangs" in log_text(app)
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "exit")

    run(scenario())
    assert app.return_code == 130 and app.forced


def test_a_subclass_calling_super_on_mount_still_starts_one_producer():
    class CountingFeed(ScriptedSource):
        calls = 0

        def produce(self):
            CountingFeed.calls += 1

    class Sub(MonitorApp):
        def on_mount(self):  # Textual calls MonitorApp.on_mount too
            super().on_mount()

    app = Sub(CountingFeed([]))

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.pause(0.3)

    run(scenario())
    assert CountingFeed.calls == 1



def test_charts_use_the_okabe_ito_palette_with_a_shape_for_each_line():
    """Colour-blind safe colours, and shape saying what colour says: the value a braille line, its
    smoothed line half blocks, validation points dots (#19)."""
    from textual.app import App

    from neurogen_tui.tui.charts import OKABE_ITO, VAL_COLOR, ChartPanel, faint, hex_style

    palette = set(OKABE_ITO.values())
    assert {spec.color for spec in CHARTS} | {VAL_COLOR} <= palette
    assert len({spec.color for spec in CHARTS} | {VAL_COLOR}) == len(CHARTS) + 1  # all apart
    h = MetricsHistory()
    n = 400
    steps = np.arange(1, n + 1)
    h.extend_columns({"steps": steps, "loss": 5 - steps / 100.0, "val_loss": np.where(steps % 100 == 0, 4.0, np.nan),
                      "accuracy": np.full(n, 0.5), "learning_rate": np.full(n, 1e-3), "throughput": np.ones(n)})

    class ChartApp(App):
        CSS = "ChartPanel { height: 14; } .chart-caption { height: 1; } .chart { height: 1fr; }"

        def compose(self):
            yield ChartPanel(CHARTS[0])

    async def drawn():
        app = ChartApp()
        async with app.run_test(size=(80, 16)) as pilot:
            await pilot.pause()  # laid out: the chart knows its size
            panel = app.query_one(ChartPanel)
            caption, text = panel.prepare(h)()
            return text, caption, faint(CHARTS[0].color, panel.chart.background_colors[1])

    text, caption, faded = asyncio.run(drawn())
    colours = {(s.style.color.triplet.red, s.style.color.triplet.green, s.style.color.triplet.blue)
               for s in text.spans if not isinstance(s.style, str) and s.style.color and s.style.color.triplet}
    assert {CHARTS[0].color, faded, VAL_COLOR} <= colours and faded != CHARTS[0].color  # the raw line faint
    plain = text.plain
    assert any("\u2800" <= c <= "\u28ff" for c in plain)  # braille: the raw value
    assert any(c in "▀▄▌▐▖▗▘▝▚▞▙▛▜▟█" for c in plain)  # half blocks: the smoothed line
    assert "•" in plain  # dots: validation
    assert hex_style(CHARTS[0].color) in {str(s.style) for s in caption.spans}
