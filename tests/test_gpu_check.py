"""benchmarks/gpu_check.py --dry-run: the GPU check's every step, tiny, on the CPU, so the one call
on a GPU machine does not fail on a typo (issue #17)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _dry_run(tmp_path_factory, parts: str):
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--parts", parts, "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), done.stdout


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The quick parts, in the default suite: the environment and the model loops."""
    return _dry_run(tmp_path_factory, "env,model_eager,model_compile")


@pytest.fixture(scope="module")
def dry_run_slow(tmp_path_factory):
    """The parts that start whole runs or processes (the app in a terminal three ways, one-rank DDP and
    FSDP, the logging API in a loop, `pytest -m gpu`):
    ~40 s on a 2-core CPU, so in the slow suite; run it (`pytest -m slow tests/test_gpu_check.py`)
    before spending a GPU session."""
    return _dry_run(tmp_path_factory, "app,nccl,api,tests")


def test_dry_run_measures_every_part_and_writes_its_tables(dry_run):
    out, results, stdout = dry_run
    assert results["dry_run"] is True
    assert results["env"]["torch"] == torch.__version__
    model = results["model_eager"]
    assert set(model["loops"]) == {"trainer", "bare", "bare_item"}
    assert all(row["tokens_per_sec"] > 0 and row["ms_per_step"] > 0 for row in model["loops"].values())
    assert model["params"] > 0 and model["samples"] >= 1  # the trainer ran as composed, samples included
    assert 0.2 < model["trainer_vs_bare"] < 5
    assert "skipped in the dry run" in results["model_compile"]["error"]
    report = (out / "results.md").read_text()
    assert "trainer / bare =" in report and report in stdout + "\n"


@pytest.mark.slow
def test_dry_run_drives_the_real_app_in_a_terminal_and_reads_its_keys(dry_run_slow):
    _, results, _ = dry_run_slow
    runs = {r["mode"]: r for r in results["app"]["runs"]}
    assert set(runs) == {"headless", "child", "in_process"}
    for mode, r in runs.items():
        assert r["exit"] == 0, (mode, r)
        assert r["tokens_per_sec"] and r["tokens_per_sec"] > 0, (mode, r)
    for mode in ("child", "in_process"):  # the help screen reached the terminal after `?`
        assert runs[mode]["help_key_s"] and all(k is not None and k < 5 for k in runs[mode]["help_key_s"])
        assert runs[mode]["terminal_bytes"] > 10 * runs["headless"]["terminal_bytes"] > 0
        assert results["app"][f"{mode}_ratio"] > 0


@pytest.mark.slow
def test_dry_run_measures_the_logging_api_inside_a_real_loop(dry_run_slow):
    out, results, _ = dry_run_slow
    api = results["api"]  # every step's row written, the ratio measured
    assert api["rows_written"] == (api["blocks"] + 1) * api["block"] and api["logged_vs_item"] > 0
    assert "with run.log() / without =" in (out / "results.md").read_text()


@pytest.mark.slow
def test_dry_run_starts_steps_checkpoints_and_resumes_one_rank_ddp_and_fsdp(dry_run_slow):
    _, results, _ = dry_run_slow
    for strategy, suffix in (("ddp", ".pt"), ("fsdp", ".dcp")):
        e = results["nccl"][strategy]
        assert e["ok"], e
        assert e["steps"] == list(range(1, 10))
        assert e["start"]["backend"] == "gloo"  # the dry run's; NCCL on the GPU
        assert e["start"]["checkpoint"].endswith("checkpoint_step_000006" + suffix)
        assert e["resume"]["checkpoint"].endswith("checkpoint_step_000009" + suffix)


@pytest.mark.slow  # a pytest in a subprocess; benchmarks/gpu_rehearsal.py runs it too
def test_dry_run_collects_the_gpu_tests_which_skip_without_cuda(dry_run_slow):
    _, results, _ = dry_run_slow
    assert results["tests"]["exit"] == 0
    assert "skipped" in results["tests"]["summary"] and "passed" not in results["tests"]["summary"]


def test_without_a_gpu_the_real_check_refuses_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--dry-run" in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_wheel_list_carries_every_requirement_the_device_image_lacks(capsys):
    """#31: a wheel missing from docs/distributed.md's list must fail here, not on the GPU."""
    import importlib.metadata

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_rehearsal

    try:
        importlib.metadata.distribution("neurogen-tui")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("neurogen-tui is not installed here (its requirements are read from its metadata)")
    assert gpu_rehearsal.main(["--plan-only"]) == 0, capsys.readouterr().out
    assert ", 0 nowhere" in capsys.readouterr().out
    assert {"datasets", "dill", "multiprocess", "textual"} <= {p.split("==")[0] for p in gpu_rehearsal.wheel_list()}
