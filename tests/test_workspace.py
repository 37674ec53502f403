"""The runs workspace (#29): many runs side by side, filtered, diffed, grouped, opened, steered;
TensorBoard logdirs as runs; every metric a chart. Runs written by the logging API and our trainer."""
from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neurogen_tui.run.query import QueryError, differing_keys, groups, parse, select
from neurogen_tui.tui.runs import Workspace
from neurogen_tui.tui.workspace import OverlayPanel, WorkspaceApp

HANG_GUARD = 200
ROOT = Path(__file__).resolve().parents[1]


def make_runs(root: Path, finish: bool = True) -> list:
    """Six logging-API runs: three learning rates x two seeds, each with its own keys."""
    import neurogen_tui as ngt

    made = []
    for lr in (1e-3, 3e-3, 1e-2):
        for seed in (1, 2):
            rng = np.random.default_rng(seed)
            run = ngt.init(run_dir=root / f"lr{lr:g}-s{seed}", config={"lr": lr, "seed": seed, "model": "tiny"})
            for step in range(300):
                run.log({"train/loss": 3 * math.exp(-step * lr) + rng.random() * 0.1, "lr": lr,
                         "grad_norm": 1 + rng.random(), **({"eval/acc": step / 300} if step % 50 == 0 else {})})
            if finish:
                run.finish()
            made.append(run)
    return made


async def settle(pilot, app, condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.05)


def sidebar(app) -> list[str]:
    table = app.query_one("#runs-table")
    return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]


# ---- the filter language, the diff, the groups ----------------------------------------------------------
def test_the_filter_language_reads_names_configs_and_negation():
    runs = [{"name": "sweep-a", "state": "running", "config": {"lr": 1e-3, "model": "small"}, "step": 10},
            {"name": "debug-b", "state": "finished", "config": {"lr": 3e-3, "model": "small"}, "step": 500},
            {"name": "sweep-c", "state": "failed", "config": {"lr": 1e-4, "model": "base"}, "step": 20}]
    names = lambda q: [r["name"] for r in select(runs, q)]  # noqa: E731
    assert names("lr>=1e-3 model=small -name:debug") == ["sweep-a"]
    assert names("sweep") == ["sweep-a", "sweep-c"] and names("-sweep") == ["debug-b"]
    assert names("cfg.lr<1e-3") == ["sweep-c"] and names("state:run") == ["sweep-a"] and names("step>100") == ["debug-b"]
    assert names("seed=1") == []  # a key no run has: no run matches
    with pytest.raises(QueryError, match="not a regular expression"):
        parse("name:(")
    assert differing_keys([{"lr": 1, "seed": 1, "m": "x"}, {"lr": 1, "seed": 2, "m": "x"}]) == ["seed"]
    by = groups([{"config": {"lr": lr, "seed": s}} for lr in (1, 2) for s in (1, 2)], "seed")
    assert sorted(len(v) for v in by.values()) == [2, 2] and len(by) == 2  # each lr a group of its seeds


# ---- the workspace, driven -------------------------------------------------------------------------------------
def test_select_pin_filter_diff_group_and_open_a_run(tmp_path):
    make_runs(tmp_path / "runs")
    app = WorkspaceApp(tmp_path / "runs")

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app, lambda: len(sidebar(app)) == 6, "six runs in the sidebar")
            assert len(app.ws.selected()) == 6
            await settle(pilot, app, lambda: all(e.data is not None for e in app.ws.selected()), "their histories")
            await settle(pilot, app, lambda: "train/loss" not in str(app.query_one("#legend").render())
                         and any("loss" in str(p.query_one(".overlay-caption").render()) for p in app.query(OverlayPanel)),
                         "the first charts")
            captions = [str(p.query_one(".overlay-caption").render()) for p in app.query(OverlayPanel)]
            assert captions[:4] == ["loss", "learning_rate", "eval/acc", "grad_norm"]  # the seed's first, then theirs
            # space: the run under the cursor leaves the selection
            first = app.current()
            await pilot.press("space")
            assert not first.selected and len(app.ws.selected()) == 5
            # P: pinned, on top
            await pilot.press("down", "down", "P")
            pinned = next(e for e in app.ws.entries.values() if e.pinned)
            assert sidebar(app)[0] == pinned.name
            # f: the filter over config and names, answered as typed
            await pilot.press("f", *"lr>=3e-3", "enter")
            assert sorted(sidebar(app)) == ["lr0.003-s1", "lr0.003-s2", "lr0.01-s1", "lr0.01-s2"]
            # d: the config diff of the selected runs, only the keys that differ
            await pilot.press("d")
            diff = app.query_one("#diff")
            await settle(pilot, app, lambda: diff.row_count > 0, "the diff table")
            labels = [str(c.label) for c in diff.columns.values()]
            assert labels[0] == "run" and labels[3:] == ["steps", "final loss", "best loss", "val loss", "tok/s", "state"]
            assert set(labels[1:3]) == {"lr", "seed"}  # model is the same everywhere: not shown
            await pilot.press("o")  # sorted by the next column
            await pilot.press("d")
            # G seed: the runs that differ only in their seed, as one band each
            await pilot.press("G", *"seed", "enter")
            traces = app.traces("loss")
            assert len(traces) == 2 and all(t.low is not None and (t.high >= t.low).all() for t in traces)
            # /: the metrics grid filtered by pattern
            await pilot.press("/", *"grad", "enter")
            await settle(pilot, app, lambda: str(app.query(OverlayPanel).first().query_one(".overlay-caption").render())
                         .startswith("grad_norm"), "the filtered metrics")
            # Enter: the run under the cursor opens as its own screen (the command line runs it)
            await pilot.press("enter")
            await settle(pilot, app, lambda: app.return_value is not None, "the workspace to hand over")

    asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))
    kind, path = app.return_value
    assert kind == "open" and Path(path).name in {"lr0.003-s1", "lr0.003-s2", "lr0.01-s1", "lr0.01-s2"}


def test_runs_appearing_while_it_is_open_show_up_and_a_live_run_is_steered_from_it(tmp_path):
    import threading

    import neurogen_tui as ngt

    make_runs(tmp_path / "runs")
    app = WorkspaceApp(tmp_path / "runs", control=True)
    app.SCAN_EVERY = 0.3
    done = threading.Event()
    live = ngt.init(run_dir=tmp_path / "runs" / "zz-live")

    def loop() -> None:  # a training loop of its own: a pause blocks its log()
        step = 0
        while not done.is_set() and not live.should_stop:
            live.log({"loss": 1.0 / (1 + step)})
            step += 1
            time.sleep(0.01)

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app, lambda: "zz-live" in sidebar(app), "the new run")
            app.query_one("#runs-table").move_cursor(row=sidebar(app).index("zz-live"))
            await pilot.press("p")  # pause the run under the cursor
            await settle(pilot, app, lambda: "pause at step" in app.status_text, "the acknowledgement")
            assert live.control.state == "paused"
            await pilot.press("p")  # and resume it
            await settle(pilot, app, lambda: "resume" in app.status_text, "the resume")

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))
    finally:
        done.set()
        live.control.resume()
        thread.join(HANG_GUARD)
        live.finish()


def test_a_tensorboard_logdir_is_a_run_shown_live_as_it_grows(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb" / "exp1"
    writer = SummaryWriter(str(logdir))
    for step in range(20):
        writer.add_scalar("train/loss", 3.0 - step / 20, step)
        writer.add_scalar("lr", 1e-3, step)
    writer.flush()
    ws = Workspace(tmp_path / "tb")
    ws.scan()
    [entry] = ws.entries.values()
    assert entry.summary["note"] == "TensorBoard logdir" and entry.selected
    ws.load_selected()
    assert entry.data.rows == 20 and entry.data.key_for("loss") == "train/loss"
    for step in range(20, 50):  # it grows: the next look reads only what was added
        writer.add_scalar("train/loss", 2.0 - step / 100, step)
    writer.flush()
    ws.load_selected()
    writer.close()
    assert entry.data.rows == 50 and entry.data.last_step == 49
    x, y = entry.data.line("loss", False, 1024)
    assert x[-1] == 49 and y[-1] == pytest.approx(1.51)
    out = subprocess.run([sys.executable, "-m", "neurogen_tui", "ls", str(tmp_path / "tb")], capture_output=True,
                         text=True)
    assert "exp1" in out.stdout and "TensorBoard logdir" in out.stdout


@pytest.mark.slow  # the bound is the benchmark's too (bench_workspace.py: 100 runs)
def test_memory_per_run_stays_bounded_by_reduction(tmp_path):
    """A run of 200k steps is held as ~REDUCED points a key, not every row."""
    from neurogen_tui.run.files import JsonlWriter
    from neurogen_tui.run.sidecar import SidecarWriter

    viz = tmp_path / "runs" / "long" / "training_viz"
    viz.mkdir(parents=True)
    lines, side = JsonlWriter(viz / "metrics.jsonl"), SidecarWriter(viz)
    for step in range(200_000):
        row = {"step": step, "timestamp": float(step), "loss": 1.0 / (1 + step)}
        side.add(row, lines.write(row))
    side.close()
    lines.close()
    ws = Workspace(tmp_path / "runs")
    ws.scan()
    ws.load_selected()
    [entry] = ws.entries.values()
    held = sum(len(ln.raw.points(10**9)[0]) + len(ln.smooth.points(10**9)[0]) for ln in entry.data.lines.values())
    assert entry.data.rows == 200_000 and held < 20_000
