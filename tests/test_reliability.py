"""Faults: crafted, corrupt and mismatched checkpoints, a busy run dir, a full disk, SIGKILL."""
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest

from neurogen_tui.train import checkpoint as ckpt
from neurogen_tui.cli.entry import main
from neurogen_tui.run.files import read_jsonl
from neurogen_tui.run.lock import RunLock


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_crafted_to_run_code_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "checkpoint_step_000001.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"model": Boom(), "step": 1}, fh)
    code = main(["--headless", "--run-dir", str(tmp_path / "run"), "--resume", str(evil)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load checkpoint" in err and str(evil) in err
    assert not (tmp_path / "PWNED").exists()


def test_truncated_latest_checkpoint_falls_back_to_an_older_one(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run), "--checkpoint-interval", "2"]) == 0
    newest = run / "checkpoints" / "checkpoint_step_000005.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn file, e.g. copied off a dying disk
    with pytest.raises(ckpt.CheckpointError, match="checkpoint_step_000005.pt"):
        ckpt.load_checkpoint(newest)
    capsys.readouterr()
    assert main(["--headless", "--run-dir", str(run), "--resume", "latest", "--max-chunks", "6"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint_step_000005.pt" in out and "trying an older checkpoint" in out
    rows, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # resumed at 4, step 5 redone once


def test_resume_with_a_different_model_shape_says_what_differs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    code = main(["--headless", "--run-dir", str(run), "--resume", "latest", "--n-embd", "128"])
    err = capsys.readouterr().err
    assert code == 1
    assert "n_embd: checkpoint 64, now 128" in err


def test_second_process_on_the_same_run_dir_is_refused(tmp_path, capsys):
    lock = RunLock(tmp_path)
    try:
        code = main(["--test", "--headless", "--run-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and "is in use by a running neurogen-tui" in err and str(os.getpid()) in err
    finally:
        lock.release()
    assert main(["--test", "--headless", "--run-dir", str(tmp_path)]) == 0  # a released lock is no lock


def test_full_disk_on_checkpoint_retries_then_stops_cleanly(tiny_cfg, monkeypatch):
    from neurogen_tui.core.events import RunFailed
    from neurogen_tui.train.trainer import Trainer

    tiny_cfg.max_chunks = 20
    tiny_cfg.checkpoint_interval = 3
    real_save = ckpt.save_checkpoint
    calls = []

    def flaky_save(state, directory, step):
        calls.append(step)
        if step >= 6:
            raise OSError(28, "No space left on device")
        return real_save(state, directory, step)

    monkeypatch.setattr(ckpt, "save_checkpoint", flaky_save)
    trainer = Trainer(tiny_cfg)
    trainer.checkpointer.retry_delay = 0.01  # keep the retry pause short in tests
    result = trainer.run()
    assert isinstance(result, RunFailed)
    assert "No space left on device" in result.error and "checkpoint_step_000003.pt" in result.error
    assert calls == [3, 6, 6]  # one retry, then stop
    assert [p.name for p in ckpt.list_checkpoints(tiny_cfg.checkpoint_dir)] == ["checkpoint_step_000003.pt"]
    assert trainer.step == 6  # stopped right there


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_valid_files_and_resumes(tmp_path):
    run = tmp_path / "run"
    rng = random.Random(7)
    args = [sys.executable, "-m", "neurogen_tui", "--headless", "--model", "tiny", "--dataset", "sample",
            "--tokens-per-chunk", "512", "--checkpoint-interval", "3", "--viz-interval", "2",
            "--max-chunks", "100000", "--run-dir", str(run)]
    for attempt in range(4):
        extra = ["--resume", "latest"] if attempt else []
        proc = subprocess.Popen(args + extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = len(read_jsonl(run / "training_viz" / "metrics.jsonl")[0])
        deadline = time.time() + 120

        def progressed():
            rows = read_jsonl(run / "training_viz" / "metrics.jsonl")[0]
            return ckpt.list_checkpoints(run / "checkpoints") and rows and rows[-1]["step"] > before

        while time.time() < deadline and proc.poll() is None and not progressed():
            time.sleep(0.05)
        assert proc.poll() is None, "the run must be alive until killed"
        time.sleep(rng.random() * 3)  # somewhere in steps, dashboards, JSON exports or checkpoints
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # every file is its previous or new complete version
        for path in (run / "checkpoints").glob("checkpoint_step_*.pt"):
            ckpt.load_checkpoint(path)
        viz = run / "training_viz"
        for png in viz.glob("*.png"):
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
        for js in viz.glob("*.json"):
            import json

            json.loads(js.read_text())
        rows, _ = read_jsonl(viz / "metrics.jsonl")
        steps = [r["step"] for r in rows]
        assert steps == sorted(set(steps)), "no step twice in the history"
    assert ckpt.list_checkpoints(run / "checkpoints")
