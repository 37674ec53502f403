"""Dashboards and JSON exports: the seven panels, atomic files, schemas, scheduling, failures."""
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurogen_tui.core import machine
from neurogen_tui.viz import writer as viz_module
from neurogen_tui.viz import draw as viz_draw
from neurogen_tui.viz.figure import (PANEL_TITLES, Dashboard, build_figure, figure_png, prune_dashboards,
                                    render_png, table_rows)
from neurogen_tui.core.events import TextSample, TrainingMetrics
from neurogen_tui.run.files import JsonlWriter
from neurogen_tui.run.history import CHUNK, MetricsHistory, minmax_downsample, moving_average
from neurogen_tui.viz.history_json import encode_metrics_history
from neurogen_tui.viz.writer import VisualizationManager
from neurogen_tui.viz.draw import DashboardWriter, DrawRequest

PNG_END = b"IEND\xaeB`\x82"


def metrics(step: int, loss: float | None = None, val_loss=None) -> TrainingMetrics:
    loss = 5.0 - step * 0.01 if loss is None else loss
    return TrainingMetrics(step=step, loss=loss, accuracy=min(1.0, step / 200), tokens_per_sec=1000.0 + step,
                           gpu_memory_mb=0.0, learning_rate=1e-3 * (1 + step) / 100, timestamp=1.7e9 + step,
                           grad_norm=1.0, val_loss=val_loss)


def sample(step: int, text: str = "hello") -> TextSample:
    return TextSample(step=step, input=f"prompt {step} {text}", target="the target", output=f"out {step}", accuracy=0.5)


def columns(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    val = np.full(n, np.nan, np.float32)
    val[9::10] = 2.0
    return {"steps": steps, "loss": (3 + rng.standard_normal(n)).astype(np.float32),
            "accuracy": rng.uniform(0, 1, n).astype(np.float32), "throughput": np.full(n, 1e4, np.float32),
            "learning_rate": np.linspace(1e-3, 1e-4, n, dtype=np.float32), "val_loss": val}


def samples_dicts(n: int) -> list[dict]:
    return [{"step": i, "input": f"input {i}", "output": f"output {i}", "accuracy": 0.25, "target": "t"}
            for i in range(n)]


def axis_by_title(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def feed(manager, steps, samples_every=1):
    for step in steps:
        manager(metrics(step, val_loss=2.5 if step % 10 == 0 else None))
        if step % samples_every == 0:
            manager(sample(step))


# ---- the figure ------------------------------------------------------------------------------------
def test_dashboard_has_the_seven_panels_of_the_seed():
    fig = build_figure(columns(800), samples_dicts(8), "my-run")
    titles = [ax.get_title() for ax in fig.axes]
    for title in PANEL_TITLES:
        assert title in titles
    assert "my-run" in fig._suptitle.get_text() and "step 800" in fig._suptitle.get_text()
    assert tuple(fig.get_size_inches()) == (20, 12) and fig.dpi == 150

    loss_ax = axis_by_title(fig, "Training Loss")
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    ma = lines["50-step moving average"]
    assert ma.get_color() == "red" and ma.get_linestyle() == "--"
    assert "validation loss" in lines
    acc_ax = axis_by_title(fig, "Training Accuracy")
    assert acc_ax.get_ylim() == (0, 100)
    assert {line.get_label(): line for line in acc_ax.get_lines()}["50-step moving average"].get_color() == "orange"
    assert axis_by_title(fig, "Learning Rate Schedule").get_yscale() == "log"
    scatter_ax = axis_by_title(fig, "Loss vs Accuracy")
    assert scatter_ax.collections[0].get_cmap().name == "viridis"
    assert any(ax.get_ylabel() == "step" for ax in fig.axes)  # the colour bar
    recent = axis_by_title(fig, PANEL_TITLES[5])
    assert len(recent.get_lines()[0].get_xdata()) == 500
    assert any(ax is not recent and ax.bbox.bounds == recent.bbox.bounds for ax in fig.axes)  # the right axis

    table = axis_by_title(fig, "Recent Text Samples").tables[0]
    cells = table.get_celld()
    assert [cells[0, c].get_text().get_text() for c in range(4)] == ["step", "input (end)", "model output", "accuracy"]
    assert cells[0, 0].get_facecolor()[:3] == pytest.approx((0x4C / 255, 0xAF / 255, 0x50 / 255))
    assert max(row for row, _ in cells) == 5  # the last five samples
    assert cells[5, 0].get_text().get_text() == "7"


def test_dashboard_draws_an_empty_history():
    png = figure_png(build_figure({k: v[:0] for k, v in columns(10).items()}, [], "empty"))
    assert png.endswith(PNG_END)


def test_a_reused_dashboard_draws_what_a_fresh_one_does():
    reused = Dashboard()
    render_png({k: v[:30] for k, v in columns(30, seed=3).items()}, samples_dicts(2), "first", reuse=reused)
    later, samples = columns(600), samples_dicts(7)
    assert render_png(later, samples, "second", reuse=reused) == render_png(later, samples, "second")


def test_sample_text_is_sanitized_cut_to_40_and_never_mathtext():
    long_tail = "x" * 100 + " $x^2$ \x1b[31mred"
    rows = table_rows([{"step": 3, "input": long_tail, "output": "a $\\frac{ b\x1b]0;evil\x07" + "y" * 80,
                        "accuracy": 0.5}])
    step, inp, out, acc = rows[0]
    assert len(inp) <= 40 and len(out) <= 40
    assert inp.endswith("$x^2$ \\x1b[31mred") and "\x1b" not in inp + out
    assert out.startswith("a $\\frac{ b\\x1b]0;evil\\x07") and acc == "50.0%"
    fig = build_figure(columns(20), [{"step": 3, "input": long_tail, "output": "a $\\frac{ b", "accuracy": 0.5}], "r")
    table = axis_by_title(fig, "Recent Text Samples").tables[0]
    cell = table.get_celld()[1, 2].get_text()
    assert cell.get_text() == "a $\\frac{ b" and cell.get_parse_math() is False
    assert figure_png(fig).endswith(PNG_END)  # as mathtext, the unbalanced "\frac{" would raise


def test_moving_average_is_the_trailing_50_step_mean():
    y = np.arange(1, 201, dtype=float)
    ma = moving_average(y, 50)
    assert ma[0] == 1 and ma[9] == pytest.approx(np.mean(y[:10]))
    assert ma[120] == pytest.approx(np.mean(y[71:121]))
    fig = build_figure(columns(200), [], "r")
    drawn = {l.get_label(): l for l in axis_by_title(fig, "Training Loss").get_lines()}["50-step moving average"]
    loss = columns(200)["loss"].astype(float)
    expected = [np.mean(loss[max(0, i - 49):i + 1]) for i in range(200)]
    assert np.allclose(drawn.get_ydata(), expected, rtol=1e-5)


def test_downsampling_keeps_global_max_and_min_of_the_series():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(1_000_000)
    y[123_457], y[876_543] = 50.0, -50.0  # one-step spikes
    xs, ys = minmax_downsample(np.arange(len(y)), y, 2000)
    assert len(ys) <= 2002 and ys.max() == 50.0 and ys.min() == -50.0
    assert 123_457 in xs and 876_543 in xs
    c = columns(200_000)
    c["loss"][77_777] = 99.0
    fig = build_figure(c, [], "r")
    raw = {l.get_label(): l for l in axis_by_title(fig, "Training Loss").get_lines()}["loss"]
    assert len(raw.get_ydata()) <= 2002 and raw.get_ydata().max() == 99.0
    ma = {l.get_label(): l for l in axis_by_title(fig, "Training Loss").get_lines()}["50-step moving average"]
    full_ma = moving_average(c["loss"], 50)  # averaged over the full data, then reduced
    assert np.isin(ma.get_ydata(), full_ma).all()


# ---- files -----------------------------------------------------------------------------------------
@pytest.fixture
def fake_png(monkeypatch):
    """A quick stand-in for the drawing (2 MB, so a torn read would show): for tests about files."""
    import neurogen_tui.viz.figure as dashboard

    body = os.urandom(2 << 20)
    monkeypatch.setattr(dashboard, "render_png", lambda cols, samples, name, *args, **kwargs:
                        b"\x89PNG step %d " % cols["steps"][-1] + body + PNG_END)


def test_manager_writes_dashboards_and_json_that_a_reader_can_use(tmp_path):
    manager = VisualizationManager(tmp_path, "demo", viz_interval=10, mode="thread")
    feed(manager, range(1, 26))
    manager.close()
    manager.close()  # idempotent
    latest = tmp_path / "training_latest.png"
    with Image.open(latest) as img:
        assert img.size == (3000, 1800)
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # not a blank canvas (the closed-figure bug writes one)
    assert latest.read_bytes() == (tmp_path / "training_step_000025.png").read_bytes()

    data = json.loads((tmp_path / "metrics_history.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert list(data)[:5] == ["steps", "loss", "accuracy", "throughput", "learning_rate"]
    assert {"gpu_memory_mb", "val_loss"} <= set(data)
    assert data["steps"] == list(range(1, 26))
    assert all(len(v) == 25 for v in data.values())
    assert data["loss"][4] == pytest.approx(metrics(5).loss, rel=1e-6)
    assert data["accuracy"][19] == pytest.approx(0.1)  # a fraction, as in metrics.jsonl
    assert data["val_loss"][9] == 2.5 and data["val_loss"][0] is None

    samples = json.loads((tmp_path / "text_samples.json").read_text())
    assert samples[0] == {"step": 1, "input": "prompt 1 hello", "output": "out 1", "accuracy": 0.5,
                          "target": "the target"}
    assert len(samples) == 25


def test_text_samples_json_keeps_text_exactly_and_stays_bounded(tmp_path, fake_png):
    manager = VisualizationManager(tmp_path, viz_interval=10_000, mode="thread")
    for step in range(1, 1201):
        manager(metrics(step))
        manager(sample(step, "$x$ \x1b[31m ü 中\n"))
    manager.close()
    samples = json.loads((tmp_path / "text_samples.json").read_text(encoding="utf-8"))
    assert len(samples) == viz_module.MAX_SAMPLES and samples[0]["step"] == 201 and samples[-1]["step"] == 1200
    assert samples[-1]["input"] == "prompt 1200 $x$ \x1b[31m ü 中\n"


def test_encoded_history_is_strict_json_matching_the_columns():
    h = MetricsHistory()
    for step in range(1, 8):
        h.append({"step": step, "loss": [1.5, math.nan, math.inf][step % 3], "accuracy": step / 7,
                  "learning_rate": 3e-5 * step, "timestamp": 1.7e9 + step / 3})
    data = json.loads(encode_metrics_history(h), parse_constant=lambda c: pytest.fail(c))
    assert data["steps"] == list(range(1, 8))
    assert data["loss"][:3] == [None, None, 1.5]
    assert data["accuracy"] == pytest.approx([s / 7 for s in range(1, 8)], rel=1e-6)
    assert data["learning_rate"][0] == pytest.approx(3e-5, rel=1e-6)
    assert data["timestamp"][2] == pytest.approx(1.7e9 + 1.0, abs=1e-6)
    assert data["gpu_memory_mb"] == [None] * 7
    assert json.loads(encode_metrics_history(h, rows=2))["steps"] == [1, 2]


def test_encoding_streams_across_storage_chunks():
    n = CHUNK + 10
    h = MetricsHistory()
    h.extend_columns({"steps": np.arange(n), "loss": np.arange(n, dtype=np.float32) / 4})
    data = json.loads(encode_metrics_history(h))
    assert data["steps"] == list(range(n)) and data["loss"][CHUNK + 3] == (CHUNK + 3) / 4


def test_readers_never_see_a_partial_png_or_json(tmp_path, fake_png):
    writer = DashboardWriter(tmp_path, json_interval=0.0, json_growth=0.0)
    stop, problems, seen = threading.Event(), [], {"png": 0, "json": 0}

    def reader():
        while not stop.is_set():
            for name, check in (("training_latest.png", lambda b: b.startswith(b"\x89PNG") and b.endswith(PNG_END)),
                                ("metrics_history.json", lambda b: json.loads(b) is not None)):
                try:
                    data = (tmp_path / name).read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    ok = check(data)
                except ValueError:
                    ok = False
                seen[name.split(".")[-1]] += 1
                if not ok:
                    problems.append((name, len(data)))

    thread = threading.Thread(target=reader)
    thread.start()
    c = columns(5_000)
    try:
        for step in range(1, 11):
            rows = step * 500
            writer.add({k: v[len(writer.history):rows] for k, v in c.items()}, samples_dicts(1))
            writer.handle(DrawRequest(rows, periodic=True), lambda *a: None)
    finally:
        stop.set()
        thread.join()
    assert not problems
    assert seen["png"] > 5 and seen["json"] > 5
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_metrics_history_json_is_not_rewritten_on_every_draw(tmp_path):
    now = [0.0]
    writer = DashboardWriter(tmp_path, json_interval=60.0, json_growth=0.05, clock=lambda: now[0])
    reports = []
    notify = lambda kind, path, *detail: reports.append((kind, os.path.basename(path)))  # noqa: E731
    c = columns(2000)

    def draw_to(rows):
        writer.add({k: v[len(writer.history):rows] for k, v in c.items()}, [])
        writer.handle(DrawRequest(rows, draw=False), notify)
        return writer.json_writes

    assert draw_to(1000) == 1  # the first export happens at once
    now[0] = 30.0
    assert draw_to(1500) == 1  # too soon
    now[0] = 61.0
    assert draw_to(1500) == 2  # a minute later, and the history grew by half
    now[0] = 200.0
    assert draw_to(1510) == 2  # time enough, but under 5% new rows: not worth rewriting 1500
    assert draw_to(1600) == 3
    writer.handle(DrawRequest(1600, draw=False, final=True), notify)
    assert writer.json_writes == 3  # nothing new since: the file is already complete
    writer.add({k: v[1600:1601] for k, v in c.items()}, [])
    writer.handle(DrawRequest(1601, draw=False, final=True), notify)
    assert writer.json_writes == 4
    # each write after the first copied the rows already on disk and encoded only the new ones
    assert (tmp_path / "metrics_history.json").read_bytes() == encode_metrics_history(writer.history)
    assert len(json.loads((tmp_path / "metrics_history.json").read_text())["steps"]) == 1601


def test_a_metrics_history_json_changed_behind_our_back_is_rewritten_whole(tmp_path):
    writer = DashboardWriter(tmp_path, json_interval=0.0, json_growth=0.0)
    c = columns(300)
    writer.add({k: v[:100] for k, v in c.items()}, [])
    writer.handle(DrawRequest(100, draw=False), lambda *a: None)
    (tmp_path / "metrics_history.json").write_text('{"steps": []}')  # someone edited it
    writer.add({k: v[100:300] for k, v in c.items()}, [])
    writer.handle(DrawRequest(300, draw=False), lambda *a: None)
    assert (tmp_path / "metrics_history.json").read_bytes() == encode_metrics_history(writer.history)


def test_keep_dashboards_bounds_the_step_files(tmp_path, fake_png):
    writer = DashboardWriter(tmp_path, keep_dashboards=3)
    written = []
    c = columns(14)
    for step in range(2, 15, 2):
        writer.add({k: v[len(writer.history):step] for k, v in c.items()}, [])
        writer.handle(DrawRequest(step, periodic=True), lambda kind, path, *d: written.append(path))
    remaining = sorted(p.name for p in tmp_path.glob("training_step_*.png"))
    assert remaining == ["training_step_000010.png", "training_step_000012.png", "training_step_000014.png"]
    assert len({p for p in written if "training_step_" in p}) == 7  # all were written, the oldest went
    assert prune_dashboards(tmp_path, keep=0, after_step=12) == [tmp_path / "training_step_000014.png"]
    writer.keep_dashboards = 0  # --keep-dashboards all
    for step in range(16, 21, 2):
        writer.add({k: np.array([step]) for k in ("steps",)}, [])
        writer.handle(DrawRequest(len(writer.history), periodic=True), lambda *a: None)
    assert len(list(tmp_path.glob("training_step_*.png"))) == 5


def test_a_newer_request_replaces_a_waiting_one(tmp_path, monkeypatch):
    import neurogen_tui.viz.figure as dashboard

    release, entered, drawn = threading.Event(), threading.Event(), []

    def slow_render(cols, samples, name, *args, **kwargs):
        drawn.append(int(cols["steps"][-1]))
        entered.set()
        release.wait(10)
        return b"\x89PNG" + PNG_END

    monkeypatch.setattr(dashboard, "render_png", slow_render)
    manager = VisualizationManager(tmp_path, viz_interval=1, mode="thread")
    manager(metrics(1))
    assert entered.wait(10)
    for step in range(2, 30):  # all due while step 1 is still being drawn
        manager(metrics(step))
    release.set()
    manager.close()
    assert drawn == [1, 29]  # no backlog: the waiting requests collapsed into the newest
    assert sorted(p.name for p in tmp_path.glob("training_step_*.png")) == [
        "training_step_000001.png", "training_step_000029.png"]


def test_request_draw_writes_the_latest_dashboard_only(tmp_path, fake_png):
    manager = VisualizationManager(tmp_path, viz_interval=1000, mode="thread")
    done = threading.Event()
    manager.add_listener(lambda kind, path: done.set() if path.endswith("training_latest.png") else None)
    feed(manager, range(1, 8))
    manager.request_draw()
    assert done.wait(30)
    assert not list(tmp_path.glob("training_step_*.png"))
    manager.close()


def test_a_failed_write_is_reported_and_the_previous_file_kept(tmp_path, fake_png, monkeypatch):
    manager = VisualizationManager(tmp_path, viz_interval=5, mode="thread")
    reports, drawn = [], threading.Event()
    manager.add_listener(lambda kind, path: (reports.append((kind, path)), drawn.set()))
    feed(manager, range(1, 6))
    assert drawn.wait(30)
    while manager._request is not None or len(reports) < 2:
        threading.Event().wait(0.01)
    before = (tmp_path / "training_latest.png").read_bytes()
    real_write = viz_draw.atomic_write

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(viz_draw, "atomic_write", disk_full)
    reports.clear()
    feed(manager, range(6, 11))
    while not any(kind == "error" for kind, _ in reports):
        threading.Event().wait(0.01)
    assert (tmp_path / "training_latest.png").read_bytes() == before
    monkeypatch.setattr(viz_draw, "atomic_write", real_write)
    manager.close()
    assert any(kind == "error" and "No space left on device" in msg for kind, msg in reports)
    assert (tmp_path / "training_latest.png").read_bytes() != before  # the final one got through
    assert json.loads((tmp_path / "metrics_history.json").read_text())["steps"][-1] == 10


def test_process_mode_draws_in_another_process_and_survives_its_death(tmp_path):
    manager = VisualizationManager(tmp_path, "proc", viz_interval=5, mode="process")
    reports, first = [], threading.Event()
    manager.add_listener(lambda kind, path: (reports.append((kind, path)), first.set()))
    feed(manager, range(1, 6))
    assert first.wait(60)
    assert ("dashboard", str(tmp_path / "training_step_000005.png")) in reports
    child = manager._backend._proc
    assert child.pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, child.pid) >= 10  # the trainer comes first
    while manager._request is not None:
        threading.Event().wait(0.01)
    child.kill()
    child.join(10)
    feed(manager, range(6, 11))
    manager.close()
    assert any(kind == "error" and "dashboard process" in msg for kind, msg in reports)
    assert json.loads((tmp_path / "metrics_history.json").read_text())["steps"] == list(range(1, 11))


def test_resume_starts_from_the_run_so_far(tmp_path, tiny_cfg, fake_png):
    viz_dir = tiny_cfg.viz_dir
    rows, samples = JsonlWriter(viz_dir / "metrics.jsonl"), JsonlWriter(viz_dir / "samples.jsonl")
    for step in range(1, 21):
        rows.write(metrics(step).to_dict())
        samples.write(sample(step).to_dict())
    rows.close()
    samples.close()
    for step in (4, 8, 12, 16):
        (viz_dir / f"training_step_{step:06d}.png").write_bytes(b"old")
    manager = VisualizationManager.for_run(tiny_cfg, resume_step=10, mode="thread")
    try:
        assert list(manager.history.column("steps")) == list(range(1, 11))
        assert [s.step for s in manager.samples] == list(range(1, 11))
        assert sorted(p.name for p in viz_dir.glob("training_step_*.png")) == [
            "training_step_000004.png", "training_step_000008.png"]
        manager(metrics(11))
    finally:
        manager.close()
    assert json.loads((viz_dir / "metrics_history.json").read_text())["steps"] == list(range(1, 12))


def test_a_drawing_bug_is_reported_and_the_exports_still_happen(tmp_path, monkeypatch):
    import neurogen_tui.viz.figure as dashboard

    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(dashboard, "render_png", broken)
    writer = DashboardWriter(tmp_path)
    reports = []
    writer.add({k: v[:3] for k, v in columns(3).items()}, samples_dicts(2))
    writer.handle(DrawRequest(3, periodic=True, final=True), lambda kind, msg, *detail: reports.append((kind, msg)))
    assert ("error", "draw failed: ZeroDivisionError: oops") in reports
    assert json.loads((tmp_path / "metrics_history.json").read_text())["steps"] == [1, 2, 3]
    assert len(json.loads((tmp_path / "text_samples.json").read_text())) == 2


def _burning_render(drawn):
    def render(cols, samples, name, *args, **kwargs):
        drawn.append(int(cols["steps"][-1]))
        end = time.thread_time() + 0.05  # a dashboard's CPU cost, scaled down
        while time.thread_time() < end:
            pass
        return b"\x89PNG" + PNG_END
    return render


@pytest.mark.parametrize("load, expect_waits", [(1.9, True), (0.2, False)])
def test_periodic_dashboards_keep_to_the_cpu_budget_only_when_every_core_is_busy(
        tmp_path, monkeypatch, load, expect_waits):
    """2 cores, 1.9 of them busy: after a draw of 0.05 CPU-s, the next periodic one waits for 0.05 / 1% =
    5 s of training (these steps report none); `d` does not wait; the final one is always drawn. With 0.2
    busy nothing waits."""
    import neurogen_tui.viz.figure as dashboard

    drawn, reports = [], []
    monkeypatch.setattr(dashboard, "render_png", _burning_render(drawn))
    monkeypatch.setattr(machine.MachineLoad, "busy_cores", lambda self: load)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    manager = VisualizationManager(tmp_path, viz_interval=1, mode="thread", cpu_budget=0.01)
    manager.add_listener(lambda kind, detail: reports.append((kind, detail)))
    manager(metrics(1))
    deadline = time.monotonic() + 10
    while not drawn and time.monotonic() < deadline:
        time.sleep(0.01)
    for step in range(2, 6):
        manager(metrics(step))
        time.sleep(0.1)
    before_d = list(drawn)
    latest = tmp_path / "training_latest.png"
    manager.request_draw()  # `d`: drawn now, budget or not
    deadline = time.monotonic() + 10
    while drawn == before_d and time.monotonic() < deadline:
        time.sleep(0.01)
    assert drawn[-1] == 5 and latest.exists()
    manager.close()
    steps = sorted(int(p.stem[-6:]) for p in tmp_path.glob("training_step_*.png"))
    if expect_waits:
        assert steps == [1, 5]  # 2-4 waited; the final draw shows step 5
        assert manager.throttled > 0
        said = [d for k, d in reports if k == "info"]
        assert len(said) == 1 and "at most every" in said[0] and "(--viz-budget 1.0%)" in said[0]
        assert len(f"dashboard: {said[0]}") <= 69  # one line of the app's log pane at 80x24
    else:
        assert steps == [1, 2, 3, 4, 5] and manager.throttled == 0


def test_machine_load_counts_the_cores_kept_busy_since_the_last_mark():
    """Burning one core for the whole window shows up as at least half a busy core (other
    processes can only add to it), and never more than the machine has."""
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat here")
    load = machine.MachineLoad()
    load.mark()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        pass
    busy = load.busy_cores()
    assert 0.5 <= busy <= machine.cores() + 0.05


def test_the_dashboard_budget_runs_on_training_time(tmp_path, monkeypatch):
    """Every core busy: after a draw of c CPU-s under a 1% budget, the next periodic one waits for
    c / 1% seconds of training. Steps reporting 0.6 of that each: the first after the draw waits, the
    second draws."""
    import dataclasses

    import neurogen_tui.viz.figure as dashboard

    drawn = []
    monkeypatch.setattr(dashboard, "render_png", _burning_render(drawn))
    monkeypatch.setattr(machine.MachineLoad, "busy_cores", lambda self: 1.9)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    manager = VisualizationManager(tmp_path, viz_interval=1, mode="thread", cpu_budget=0.01)
    try:
        manager(metrics(1))
        deadline = time.monotonic() + 10
        while (not drawn or manager.allowance.ready()) and time.monotonic() < deadline:
            time.sleep(0.01)
        owed = manager.allowance.wait()  # seconds of training the next periodic draw waits for
        assert owed >= 0.05 / 0.01 * 0.9  # the draw burnt 0.05 s of CPU
        for step in (2, 3):
            manager(dataclasses.replace(metrics(step), step_time=0.6 * owed))
            time.sleep(0.2)
        while len(drawn) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert drawn == [1, 3] and manager.throttled > 0
    finally:
        manager.close()


def test_a_dashboard_owed_to_the_budget_does_not_hold_back_the_json(tmp_path, monkeypatch):
    """While a periodic draw waits for the budget and steps keep submitting requests, the JSON
    schedule still gets its turn every json_interval (it used to wait for the draw)."""
    import json

    import neurogen_tui.viz.figure as dashboard

    drawn = []
    monkeypatch.setattr(dashboard, "render_png", _burning_render(drawn))
    monkeypatch.setattr(machine.MachineLoad, "busy_cores", lambda self: 1.9)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    manager = VisualizationManager(tmp_path, viz_interval=1, mode="thread", cpu_budget=0.01, json_interval=0.3)
    history = tmp_path / "metrics_history.json"
    try:
        manager(metrics(1))
        deadline = time.monotonic() + 10
        while not drawn and time.monotonic() < deadline:
            time.sleep(0.01)
        step, rows = 1, 0
        while rows < 10 and time.monotonic() < deadline:  # steps of no training time: the draw stays owed
            step += 1
            manager(metrics(step))
            time.sleep(0.05)
            if history.exists():
                rows = len(json.loads(history.read_text())["steps"])
        assert rows >= 10 and drawn == [1]
    finally:
        manager.close()


@pytest.mark.parametrize("load, draw_each, said", [(0.2, False, True), (1.9, False, False), (0.2, True, False)])
def test_a_step_dashboard_replaced_while_one_draws_is_said_once_and_draw_each_keeps_every_one(
        tmp_path, monkeypatch, load, draw_each, said):
    """Steps faster than a draw: each waiting request is replaced by the newer one, and the log says so
    once, where a core is spare (on a busy machine the CPU budget's own line explains it). With
    draw_each (--test) the training thread waits instead and every step gets its dashboard."""
    import neurogen_tui.viz.figure as dashboard

    drawn, reports = [], []
    slow = _burning_render(drawn)

    def render(*args, **kwargs):
        time.sleep(0.15)  # a draw that outlasts the steps below
        return slow(*args, **kwargs)

    monkeypatch.setattr(dashboard, "render_png", render)
    monkeypatch.setattr(machine.MachineLoad, "busy_cores", lambda self: load)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    manager = VisualizationManager(tmp_path, viz_interval=1, mode="thread", draw_each=draw_each)
    manager.add_listener(lambda kind, detail: reports.append((kind, detail)))
    for step in range(1, 9):
        manager(metrics(step))
        time.sleep(0.02)
    manager.close()
    steps = sorted(int(p.stem[-6:]) for p in tmp_path.glob("training_step_*.png"))
    thinned = [d for k, d in reports if k == "info" and "thinned" in d]
    assert len(thinned) == (1 if said else 0), reports
    if draw_each:
        assert steps == list(range(1, 9))
    else:
        assert steps[-1] == 8 and len(steps) < 8
