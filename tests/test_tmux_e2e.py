"""End to end: the real `neurogen-tui` command in a real terminal (tmux), read off the screen."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 240  # seconds: only so a broken build fails instead of hanging; never a speed check

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Tmux:
    """One session on a private tmux server (its own socket), so tests never touch the user's."""

    def __init__(self, name: str, width: int, height: int):
        self.socket = f"ngt-test-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"  # never the one a test before just killed
        self.target = name
        self.size = (width, height)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True).stdout

    def start(self, command: str, env: dict[str, str] | None = None) -> None:
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", self.target,
                        "-x", str(self.size[0]), "-y", str(self.size[1]), *env_args, command], check=True)

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.target)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.target, *keys)

    def wait_for(self, pattern: str) -> str:
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared; the screen was:\n{self.screen()}")

    def kill_session(self) -> None:
        self.tmux("kill-session", "-t", self.target)

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def tmux(request):
    sessions = []

    def make(width=80, height=24):
        t = Tmux(f"s{len(sessions)}", width, height)
        sessions.append(t)
        return t

    yield make
    for t in sessions:
        t.close()


def command(run_dir: Path, *flags: str, pid_file: Path | None = None) -> str:
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "neurogen_tui", *flags, "--run-dir", str(run_dir)])
    pid = f"echo $$ > {shlex.quote(str(pid_file))}; exec " if pid_file else ""
    return f"cd {shlex.quote(str(ROOT))} && {pid}{cmd}; echo EXIT=$?; sleep 60"


def test_app_in_tmux_at_80x24_trains_every_panel_the_chart_keys_and_x_leaves_it_going(tmux, tmp_path):
    t = tmux(80, 24)
    run_dir = tmp_path / "run"
    # --on-hangup stop: if this test fails half way, the fixture's kill-server stops the run with it
    t.start(command(run_dir, "--test", "--max-chunks", "100000", "--epochs", "0", "--on-hangup", "stop"))
    t.wait_for(r"RUNNING .*step \d*[3-9]/")
    screen = t.wait_for(r"(?s)loss .*accuracy % .*learning rate .*model output")  # the first charts drawn (a loaded machine is slower)
    lines = screen.splitlines()
    assert re.search(r"step \d+/100,000 +━*─+ +\d+%", lines[0]), lines[0]
    assert "elapsed" in lines[1] and "RSS" in lines[1]
    assert "tok/s" not in lines[1]  # throughput is said once: the tokens/s chart's caption
    assert "loss" in screen and "accuracy %" in screen and "learning rate" in screen
    assert re.search(r"tokens/s ema [\d,]+", screen) and not re.search(r"tokens/s [\d,]+ ema", screen)
    assert re.search(r"· step \d+–\d+", screen)  # no axis labels at this size: the caption says the range
    assert "model output" in screen  # the samples table's header
    assert re.search(r"p pause/resume +c checkpoint +d dashboard +q stop", lines[-1]), lines[-1]
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert re.search(r"\x1b\[[0-9;]*3[0-9;]*m", t.screen(escapes=True))  # coloured
    assert "ema 0.60" in lines[0]  # the smoothing weight
    # the chart keys (#19), each seen on the screen: header, loss caption, log pane
    t.keys("y")
    t.wait_for(r"loss log .*\n(.*\n)*.*loss: log Y axis")
    t.keys("s")
    t.wait_for(r"ema 0\.70(.*\n)+.*smoothing 0\.70")
    t.keys("t")
    t.wait_for(r"ema 0\.70 · x tokens(.*\n)+.*X axis: tokens")
    t.wait_for(r"· tok [\d.k]+–[\d.k]+")
    t.keys("z")
    screen = t.wait_for(r"ema 0\.70 · x tokens · last 10k(.*\n)+.*charts show the last 10k steps")
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert re.search(r"[\u2801-\u28ff]", screen)  # still plotted
    # x on a CPU box (the trainer in the app's process): the screen closes, the run goes on here
    t.keys("x")
    screen = t.wait_for(r"the run goes on in this process \(pid \d+\)")
    assert f"neurogen-tui attach {run_dir}" in screen.replace("\n", "") and "neurogen-tui.log" in screen.replace("\n", "")
    t.wait_for(r"step +\d+ \| loss")  # its progress goes on in this terminal
    assert json.loads((run_dir / "run.json").read_text())["state"] == "running"
    said = subprocess.run([sys.executable, "-m", "neurogen_tui", "ctl", str(run_dir), "stop"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert said.returncode == 0, said.stderr
    screen = t.wait_for(r"EXIT=\d+")
    assert "EXIT=0" in screen
    assert json.loads((run_dir / "run.json").read_text())["state"] == "stopped"


def test_a_smoke_run_closes_its_screen_and_watch_shows_it_as_it_happened(tmux, tmp_path):
    t = tmux(80, 24)
    run_dir = tmp_path / "run"
    t.start(command(run_dir, "--test"))
    screen = t.wait_for(r"EXIT=\d+")  # --test: the screen closes when the smoke run ends
    assert "EXIT=0" in screen
    assert re.search(r"neurogen-tui: completed at step 5; files: \S*training_viz", screen.replace("\n", ""))
    assert (run_dir / "checkpoints" / "checkpoint_step_000005.pt").exists()
    info = json.loads((run_dir / "run.json").read_text())
    checkpoint = next(e for e in map(json.loads, (run_dir / "training_viz" / "events.jsonl").read_text().splitlines())
                      if e["kind"] == "checkpoint")
    time.sleep(1.5)  # the viewer opens later than the run ended: what it shows must not be "now"
    w = tmux(80, 24)
    w.start(f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m neurogen_tui watch "
            f"{shlex.quote(str(run_dir))}; echo EXIT=$?; sleep 60")
    screen = w.wait_for(r"FINISHED")
    screen = w.wait_for(r"checkpoint_step_000005")
    elapsed = int(info["ended_at"] - info["started_at"])
    assert f"elapsed {elapsed // 60:02d}:{elapsed % 60:02d}" in screen, screen  # the run's, not the viewer's
    stamp = time.strftime("%H:%M:%S", time.localtime(checkpoint["time"]))
    assert re.search(stamp + r" step 5: checkpoint checkpoint_step_000005", screen), screen
    w.keys("q")
    assert "EXIT=0" in w.wait_for(r"EXIT=\d+")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_losing_the_terminal_with_on_hangup_stop_stops_the_run_like_q(tmux, tmp_path):
    """tmux kill-session hangs up the pane's terminal (SIGHUP, then SIGCONT), as an SSH drop does."""
    t = tmux(120, 40)
    run_dir = tmp_path / "run"
    pid_file = tmp_path / "pid"
    t.start(command(run_dir, "--test", "--max-chunks", "5000", "--epochs", "0", "--on-hangup", "stop",
                    pid_file=pid_file),
            env={"NO_COLOR": "1"})
    t.wait_for(r"RUNNING .*step [1-9]")
    escaped = t.screen(escapes=True)
    assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|38;[25]|9[0-7])[;m]", escaped), "NO_COLOR: no foreground colours"
    pid = int(pid_file.read_text())
    t.kill_session()
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    assert not _alive(pid), "the app kept running without its terminal"
    steps = (run_dir / "training_viz" / "metrics.jsonl").read_text().count("\n")
    assert 0 < steps < 5000
    assert (run_dir / "checkpoints" / f"checkpoint_step_{steps:06d}.pt").exists()  # the final checkpoint
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "stopped" and info["step"] == steps
    assert "run finished (stopped)" in (run_dir / "neurogen-tui.log").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    """Three real short runs of our trainer, learning rates 1e-3, 3e-3 and 1e-2, in one directory."""
    from neurogen_tui.cli import entry as cli

    root = tmp_path_factory.mktemp("sweep")
    for lr in ("1e-3", "3e-3", "1e-2"):
        assert cli.main(["--test", "--headless", "--max-chunks", "6", "--lr", lr, "--run-dir", str(root / f"lr{lr}")]) == 0
    return root


@pytest.mark.parametrize("size", [(80, 24), pytest.param((120, 40), marks=pytest.mark.slow)])  # 80x24: the tight one
def test_the_workspace_overlays_a_real_lr_sweep_diffs_it_and_opens_a_run(tmux, lr_sweep, size):
    """#29: `watch DIR` on three real runs: every run in the sidebar and the charts' legend, the
    config diff shows lr (the only key that differs), Enter opens one run's screen, Esc comes back."""
    t = tmux(*size)
    t.start(f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m neurogen_tui watch "
            f"{shlex.quote(str(lr_sweep))}; echo EXIT=$?; sleep 60")
    screen = t.wait_for(r"■ lr1e-3\s+■ lr3e-3\s+■ lr1e-2|■ lr1e-2\s+■ lr3e-3\s+■ lr1e-3")  # the legend, every run drawn
    assert "3 runs · 3 selected" in screen
    for name in ("lr1e-3", "lr3e-3", "lr1e-2"):
        assert re.search(rf"●\s+{name}\s+✓(\s+finished)?\s+6\s", screen), screen  # at 80 columns, the mark alone
    assert "Traceback" not in screen and all(len(line) <= size[0] for line in screen.splitlines())
    t.keys("d")
    screen = t.wait_for(r"final loss[\s\S]*0\.003")  # the diff, with the one key that differs: lr
    assert re.search(r"\blr\b", screen) and "0.01 " in screen and "0.001 " in screen, screen
    t.keys("Escape")
    t.wait_for(r"space select")
    t.keys("Enter")  # the run under the cursor, as its own screen
    screen = t.wait_for(r"FINISHED")
    assert "step 6" in screen or "6/6" in screen, screen
    t.keys("Escape")
    t.wait_for(r"3 runs · 3 selected")
    t.keys("q")
    assert "EXIT=0" in t.wait_for(r"EXIT=\d+")
