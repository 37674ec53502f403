"""What earlier versions wrote still works: a checkpoint from the main of 2026-11-26 (be875bc)."""
import json
import shutil
from pathlib import Path

import pytest

from neurogen_tui.cli import main
from neurogen_tui.files import read_jsonl

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
    from neurogen_tui.checkpoint import load_checkpoint
    from neurogen_tui.config import TrainingConfig

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
