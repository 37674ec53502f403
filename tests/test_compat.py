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
