"""What earlier versions wrote still works: a checkpoint from the main of 2026-11-26 (be875bc)."""
import json
import shutil
from pathlib import Path

import pytest

from neurogen_tui.cli.entry import main
from neurogen_tui.run.files import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_main_be875bc"


def test_a_checkpoint_from_the_previous_main_resumes_where_that_main_resumed_it(tmp_path):
    """The fixture was written by be875bc (expected.json says how) and resumed there for three more
    steps; this version must resume it the same way: the same steps, the same losses."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE / "checkpoint_step_000003.pt", run / "checkpoints")
    assert main(["--headless", "--run-dir", str(run), "--resume", "latest", "--max-chunks", "6"]) == 0
    rows, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 5, 6]
    losses = {str(r["step"]): r["loss"] for r in rows}
    assert losses == pytest.approx(expected["losses_after_resume"], rel=1e-5)
    val = {str(r["step"]): r["val_loss"] for r in rows if "val_loss" in r}
    assert val == pytest.approx(expected["val_loss_after_resume"], rel=1e-5)
    assert (run / "checkpoints" / "checkpoint_step_000006.pt").is_file()


def test_process_flags_are_neither_saved_in_checkpoints_nor_taken_back_from_old_ones(tmp_path):
    """The fixture's config has headless=True (how be875bc's process ran it); a resumed run is
    shown the way this process is asked to show it, and its own checkpoints keep only the recipe."""
    from neurogen_tui.train.checkpoint import load_checkpoint
    from neurogen_tui.train.config import TrainingConfig

    old = load_checkpoint(FIXTURE / "checkpoint_step_000003.pt")["config"]
    assert old["headless"] is True and "log_interval" in old
    cfg = TrainingConfig.from_checkpoint({**old, "in_process": True, "resume": "latest", "test": True})
    assert cfg.headless is False and cfg.in_process is None and cfg.resume is None and not cfg.test
    assert (cfg.n_embd, cfg.seq_len, cfg.tokens_per_chunk) == (16, 32, 128)  # the recipe is
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE / "checkpoint_step_000003.pt", run / "checkpoints")
    assert main(["--headless", "--run-dir", str(run), "--resume", "latest", "--max-chunks", "4"]) == 0
    saved = load_checkpoint(run / "checkpoints" / "checkpoint_step_000004.pt")["config"]
    process_flags = {"run_dir", "resume", "headless", "in_process", "on_hangup", "test", "overwrite", "ui_budget"}
    assert not process_flags & set(saved) and "log_interval" not in saved
    assert saved["n_embd"] == 16 and saved["max_chunks"] == 4


RUN_FIXTURE = Path(__file__).parent / "fixtures" / "run_main_ad6c296"


def fixture_run(tmp_path) -> Path:
    """The run directory written by the main of 2026-12-03 (ad6c296) with `--test --n-embd 16 --n-head 2
    --n-layer 1 --seq-len 32` (its PNGs left out), copied so nothing writes into the fixture."""
    run = tmp_path / "run_main_ad6c296"
    shutil.copytree(RUN_FIXTURE, run)
    return run


def test_a_run_directory_from_the_previous_main_opens_in_watch(tmp_path):
    import asyncio

    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.rundir import RunDirSource
    from neurogen_tui.tui.widgets import LogPane, SamplesTable

    run = fixture_run(tmp_path)
    recorded, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    app = MonitorApp(RunDirSource(run, poll=0.1))

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            # the metrics, the samples table and the end come in their own polls: wait for all of them
            while app.state != "finished" or app.step < 5 or app.query_one(SamplesTable).row_count < 5:
                await pilot.pause(0.05)
            history = app.run_state.history
            assert history.column("steps").tolist() == [1, 2, 3, 4, 5]
            assert history.last("loss") == pytest.approx(recorded[-1]["loss"])
            assert app.query_one(SamplesTable).row_count == 5
            assert "run finished (completed) at step 5" in "\n".join(app.query_one(LogPane).texts)
            await pilot.press("q")
            while app.return_code is None:  # the viewer closes on its next turn
                await pilot.pause(0.05)

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert app.return_code == 0


def test_a_run_directory_from_the_previous_main_renders_lists_and_resumes(tmp_path, capsys):
    run = fixture_run(tmp_path)
    assert main(["render", str(run), "-o", str(tmp_path / "render.png")]) == 0
    assert (tmp_path / "render.png").stat().st_size > 10_000
    assert main(["ls", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "run_main_ad6c296" in listing and "finished" in listing
    assert main(["--headless", "--run-dir", str(run), "--resume", "latest", "--max-chunks", "7"]) == 0
    rows, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]  # appended after the old rows, none repeated
