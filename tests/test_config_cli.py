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
    code = main(["--headless", "--run-dir", str(run), "--model", "tiny", "--max-chunks", "1"])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    # --overwrite moves the old files aside instead of deleting them
    assert main(["--test", "--headless", "--overwrite", "--run-dir", str(run)]) == 0
    archived = list((run / "previous_runs").glob("*/checkpoints/checkpoint_step_000005.pt"))
    assert archived, "the previous run's checkpoint must be kept"
