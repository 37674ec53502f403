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
    [run] = (work / "runs").iterdir()  # a home of its own, not the current directory
    assert (run / "checkpoints" / "checkpoint_step_000005.pt").exists()
    assert (run / "training_viz" / "metrics.jsonl").read_text().count("\n") == 5
    # stdout is a pipe here, as under nohup or CI: a record stays one line (rich wrapped at 80 columns)
    lines = out.stdout.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 3 and all(line.rstrip().endswith("MB RSS") for line in steps), lines
    assert all("→" in line for line in lines if line.lstrip().startswith("sample @"))
    assert not any(line.startswith("| grad") for line in lines)


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


STOP_SIGNALS_PROBE = """
import os, signal, sys, time
from neurogen_tui.cli.signals import REPEAT_WINDOW_S, install_stop_signals
stops = []
install_stop_signals(lambda: stops.append(1), lambda msg: print(msg, flush=True))
os.kill(os.getpid(), signal.SIGINT)   # Ctrl+C from the terminal ...
os.kill(os.getpid(), signal.SIGINT)   # ... and torchrun forwarding the same one
time.sleep(0.1)
print(f"alive, {len(stops)} stop request(s)", flush=True)
time.sleep(REPEAT_WINDOW_S + 0.2)
os.kill(os.getpid(), signal.SIGTERM)  # a deliberate second signal
time.sleep(5)
print("not reached", flush=True)
"""


def test_a_signal_echoed_by_torchrun_is_one_stop_request_and_a_later_one_exits():
    proc = subprocess.run([sys.executable, "-c", STOP_SIGNALS_PROBE], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("SIGINT: stopping after this step")
    assert lines[1] == "alive, 1 stop request(s)"
    assert "not reached" not in proc.stdout and proc.returncode == 128 + signal.SIGTERM
