"""Soak (slow, not in the default run): 100,000 tiny steps, memory flat after warm-up, files valid.

    NEUROGEN_SOAK_STEPS=100000 python -m pytest -m slow tests/test_soak.py -s
"""
import json
import os

import pytest

from neurogen_tui.cli.entry import main
from neurogen_tui.run.files import read_jsonl

STEPS = int(os.environ.get("NEUROGEN_SOAK_STEPS", "100000"))


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_soak_memory_stays_flat_and_files_stay_valid(tmp_path):
    run = tmp_path / "run"
    code = main(["--headless", "--dataset", "sample", "--epochs", "0", "--n-layer", "1", "--n-head", "1",
                 "--n-embd", "16", "--seq-len", "16", "--batch-size", "2", "--tokens-per-chunk", "32",
                 "--max-chunks", str(STEPS), "--eval-interval", "5000", "--eval-iters", "1",
                 "--checkpoint-interval", "20000", "--viz-interval", "1000", "--run-dir", str(run)])
    assert code == 0
    rows, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    rss = [r["rss_mb"] for r in rows]
    warm = rss[len(rss) // 10]
    # beyond the compact history (56 B/step), memory must not grow with steps
    allowance = 56 * STEPS / 2**20 + 64
    print(f"\nsoak: {STEPS} steps, RSS after warm-up {warm:.0f} MB, at end {rss[-1]:.0f} MB, "
          f"max {max(rss):.0f} MB")
    assert rss[-1] - warm < allowance
    for path in (run / "training_viz").glob("*.json"):
        json.loads(path.read_text())
