"""The package as a user gets it: built from a clean clone, run as a console script; Ctrl+C."""
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs the git checkout")
def test_wheel_from_a_clean_clone_installs_and_runs_test_mode(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(clone)], check=True)
    wheel = next((tmp_path / "dist").glob("neurogen_tui-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "neurogen_tui/assets/sample_train.jsonl.zst" in names  # the bundled sample ships
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "neurogen-tui = neurogen_tui.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "neurogen_tui", "--test"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert (work / "checkpoints" / "checkpoint_step_000005.pt").exists()
    assert (work / "training_viz" / "metrics.jsonl").read_text().count("\n") == 5


def test_ctrl_c_stops_at_a_step_boundary_with_final_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "neurogen_tui", "--headless", "--model", "tiny",
                             "--dataset", "sample", "--tokens-per-chunk", "512", "--max-chunks", "100000",
                             "--run-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "training_viz" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    steps = metrics.read_text().count("\n")
    ckpts = sorted((tmp_path / "checkpoints").glob("checkpoint_step_*.pt"))
    assert ckpts and ckpts[-1].name == f"checkpoint_step_{steps:06d}.pt"
    assert "stopping after this step" in out
