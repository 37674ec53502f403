"""Every invalid flag fails before any work with one clear line and exit status 2."""
import pytest

from neurogen_tui.cli.entry import main


@pytest.mark.parametrize("argv, needle", [
    (["--viz-interval", "0"], "--viz-interval must be a positive number"),
    (["--checkpoint-interval", "-5"], "--checkpoint-interval must be a positive number"),
    (["--max-chunks", "0"], "--max-chunks must be a positive number"),
    (["--eval-interval", "0"], "--eval-interval must be a positive number"),
    (["--n-embd", "100", "--n-head", "3"], "--n-embd (100) must be divisible by --n-head (3)"),
    (["--tokens-per-chunk", "1000"], "--tokens-per-chunk (1000) must be a multiple of"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--min-lr", "0.1", "--lr", "0.01"], "--min-lr (0.1) must not exceed --lr"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda[:N] or mps"),
    (["--data-files", "/nonexistent/*.jsonl.zst"], "--data-files: no file matches"),
    (["--val-data-files", "/nonexistent/v.jsonl"], "--val-data-files: no file matches"),
    (["--tokenizer", "/nonexistent/tokenizer.json"], "--tokenizer: file not found"),
    (["--resume", "latest"], "--resume latest: no checkpoint_step_*.pt"),
    (["--resume", "/nonexistent/checkpoint.pt"], "checkpoint not found"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints must not be negative"),
])
def test_invalid_flag_fails_with_one_line_and_status_2(tmp_path, capsys, argv, needle):
    code = main(["--headless", "--run-dir", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err
    assert err.startswith("neurogen-tui: error:") and "\n" not in err  # one line, no traceback
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any work


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_device_this_machine_lacks_is_a_usage_error_before_any_file(tmp_path, capsys, device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > int(device.partition(":")[2] or 0):
        pytest.skip(f"this machine has {device}")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(["--headless", "--test", "--device", device, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"neurogen-tui: error: --device {device}:") and "\n" not in err
    assert not (tmp_path / "run").exists()  # not even run.json or empty JSONL files


def test_unwritable_run_dir_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["--headless", "--run-dir", str(blocker)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_argparse_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--max-chunks", "ten"])
    assert exc.value.code == 2


def test_help_is_grouped():
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    text = out.getvalue()
    for group in ("run:", "data:", "model:", "optimisation:", "monitoring:"):
        assert group in text
    assert "--tokens-per-chunk" in text and "--viz-interval" in text


def test_existing_run_is_not_overwritten_silently(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    code = main(["--headless", "--run-dir", str(run), "--dataset", "sample", "--model", "tiny", "--max-chunks", "1"])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    # --overwrite moves the old files aside instead of deleting them
    assert main(["--test", "--headless", "--overwrite", "--run-dir", str(run)]) == 0
    archived = list((run / "previous_runs").glob("*/checkpoints/checkpoint_step_000005.pt"))
    assert archived, "the previous run's checkpoint must be kept"


def test_without_network_the_hub_is_said_at_once_and_nothing_is_left_behind(tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    started = time.monotonic()
    assert main(["--headless"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face hub" in err and "--dataset sample" in err and err.count("\n") == 1
    assert time.monotonic() - started < 30 and list(tmp_path.iterdir()) == []


def test_runs_get_a_home_of_their_own_and_resume_latest_finds_the_newest(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--test", "--headless"]) == 0
    assert main(["--test", "--headless"]) == 0  # a second smoke run moves nothing: it has its own directory
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.endswith("-test") for r in runs)
    assert {p.name for p in tmp_path.iterdir()} == {"runs"}  # the current directory stays clean
    assert main(["--headless", "--resume", "latest", "--max-chunks", "7"]) == 0
    newest = max(runs, key=lambda r: (r / "run.json").stat().st_mtime)
    assert (newest / "checkpoints" / "checkpoint_step_000007.pt").exists()
    assert "previous_runs" not in {p.name for r in runs for p in r.iterdir()}


def test_a_short_run_warms_up_for_a_tenth_of_it_and_reaches_its_lr(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert main(["--headless", "--dataset", "sample", "--model", "tiny", "--tokens-per-chunk", "512", "--lr", "3e-3",
                 "--max-chunks", "40", "--eval-interval", "1000", "--viz-interval", "1000", "--run-dir", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "training_viz" / "metrics.jsonl").read_text().splitlines()]
    peak = max(r["learning_rate"] for r in rows)
    assert peak == pytest.approx(3e-3, rel=0.05) and rows[4]["learning_rate"] > 2.5e-3  # at the peak by step 5
    capsys.readouterr()
    assert main(["--headless", "--dataset", "sample", "--model", "tiny", "--tokens-per-chunk", "512",
                 "--max-chunks", "3", "--warmup-steps", "10", "--run-dir", str(tmp_path / "warm")]) == 0
    out = capsys.readouterr().out
    assert out.count("--warmup-steps 10 is not shorter than --max-chunks 3") == 1


def test_headless_into_a_pipe_says_something_every_15_seconds_and_each_sample_once(monkeypatch):
    import io

    from rich.console import Console

    from neurogen_tui.cli import headless
    from neurogen_tui.core.events import RunStarted, TextSample, TrainingMetrics
    from neurogen_tui.train.config import TrainingConfig

    clock = [1000.0]
    monkeypatch.setattr(headless.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    display = headless.HeadlessDisplay(TrainingConfig(viz_interval=1000), Console(file=out, width=200))
    display(RunStarted("cpu", "cpu", 1000, 0, None))

    def step(n: int) -> None:
        display(TrainingMetrics(step=n, loss=3.0, accuracy=0.1, tokens_per_sec=1e3, gpu_memory_mb=0.0,
                                learning_rate=1e-3, timestamp=0.0))

    display(TextSample(1, "in", "tgt", "out", 0.5))
    for n in range(1, 6):  # quick steps: nothing to say yet
        clock[0] += 1.0
        step(n)
    assert "step " not in out.getvalue()
    clock[0] += 11.0  # 16 s since the start: a slow run's pipe hears of it
    step(6)
    clock[0] += 16.0
    step(7)
    lines = out.getvalue().splitlines()
    assert [line.split("|")[0].strip() for line in lines if line.startswith("step ")] == ["step      6", "step      7"]
    assert sum("sample @1" in line for line in lines) == 1  # the same sample is not repeated
