"""The app of the terminal that starts a run, over the trainer in a child process (launch.py,
tui/owner.py): real children training a tiny model, the app driven through App.run_test."""
from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neurogen_tui.cli.launch import _drain, trainer_command
from neurogen_tui.run.info import read_run_info
from neurogen_tui.tui.app import MonitorApp
from neurogen_tui.tui.charts import CHARTS, MetricChart
from neurogen_tui.tui.rundir import RunDirSource
from neurogen_tui.tui.widgets import RunHeader, SamplesTable
from test_app import HANG_GUARD, log_text, wait_for

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--test", "--max-chunks", "2000", "--epochs", "0", "--checkpoint-interval", "1000",
        "--viz-interval", "1000"]


def start_child(run_dir: Path, *flags: str, prelude: str = "") -> tuple[subprocess.Popen, RunDirSource, MonitorApp]:
    """A trainer child as launch.py starts it; `prelude` runs in the child first (fault injection)."""
    command = trainer_command([*TINY, *flags, "--run-dir", str(run_dir)])
    if prelude:  # python -c "<prelude>; run the CLI", with the same arguments
        command = [sys.executable, "-c", f"{prelude}\nimport sys\nfrom neurogen_tui.cli.entry import main\n"
                                         f"sys.exit(main(sys.argv[1:]))", *command[3:]]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True, cwd=ROOT)
    source = RunDirSource(run_dir, poll=0.1, child=proc)
    app = MonitorApp(source)
    threading.Thread(target=_drain, args=(proc, [], [], False, source.child_line), daemon=True).start()
    return proc, source, app


def finish(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()


def steps_on_disk(run_dir: Path) -> int:
    path = run_dir / "training_viz" / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def test_the_app_drives_a_child_trainer_charts_samples_pause_checkpoint_and_q(tmp_path):
    run_dir = tmp_path / "run"
    proc, feed, app = start_child(run_dir)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            assert app.run_state.state == "starting"
            await wait_for(pilot, lambda: app.step >= 4 and app.query_one(SamplesTable).row_count >= 2,
                           "steps and samples from the child")
            assert read_run_info(run_dir)["pid"] == proc.pid != os.getpid()  # trained elsewhere
            await wait_for(pilot, lambda: all(c.points > 0 for c in app.query(MetricChart)), "chart points")
            assert len(list(app.query(MetricChart))) == len(CHARTS)
            header = app.query_one(RunHeader).info
            assert header.state == "running" and header.total == 2000 and header.device == "cpu"
            assert "started: " in log_text(app) and "parameters on cpu" in log_text(app)

            await pilot.press("p")
            await wait_for(pilot, lambda: app.state == "paused", "the paused state")
            await wait_for(pilot, lambda: "paused at step" in log_text(app), "the pause reply")
            paused_at = steps_on_disk(run_dir)
            await pilot.pause(1.0)
            assert steps_on_disk(run_dir) == paused_at  # the child really waits
            await pilot.press("c")
            await wait_for(pilot, lambda: "checkpoint written at step" in log_text(app), "the checkpoint reply")
            assert (run_dir / "checkpoints" / f"checkpoint_step_{paused_at:06d}.pt").is_file()
            await pilot.press("p")
            await wait_for(pilot, lambda: steps_on_disk(run_dir) > paused_at + 2, "steps after resuming")

            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the app to exit after the trainer")
        return app.return_code

    assert asyncio.run(scenario()) == 0
    assert finish(proc) == 0
    steps = steps_on_disk(run_dir)
    assert (run_dir / "checkpoints" / f"checkpoint_step_{steps:06d}.pt").is_file()  # the final checkpoint
    assert app.run_state.result.reason == "stopped" and read_run_info(run_dir)["state"] == "stopped"
    assert (run_dir / "training_viz" / "training_latest.png").is_file()  # the final dashboard


@pytest.mark.slow  # the child mode itself stays in the default suite
def test_a_trainer_failing_in_the_child_shows_failed_with_its_last_frames(tmp_path):
    run_dir = tmp_path / "run"
    prelude = ("from neurogen_tui.train.trainer import Trainer\n"
               "real = Trainer.train_step\n"
               "def failing_step(self):\n"
               "    if self.step >= 3:\n"
               "        raise RuntimeError('CUDA out of memory (simulated)')\n"
               "    return real(self)\n"
               "Trainer.train_step = failing_step")
    proc, feed, app = start_child(run_dir, "--checkpoint-interval", "1", prelude=prelude)

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.state == "failed", "the failed state")
            await wait_for(pilot, lambda: "failing_step" in log_text(app), "the traceback's frames")
            assert app.return_code is None  # the screen stays up until the user closes it
            text = log_text(app)
            assert "failed at step 3: RuntimeError: CUDA out of memory (simulated)" in text
            assert 'File "' in text and "full traceback in neurogen-tui.log" in text
            assert text.count("CUDA out of memory") == 1  # said once, not again from the log's tail
            await wait_for(pilot, lambda: app.run_state.done is not None, "the child's exit")
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
        return app.return_code

    assert asyncio.run(scenario()) == 1
    assert finish(proc) == 1
    assert (run_dir / "checkpoints" / "checkpoint_step_000003.pt").is_file()  # the last good checkpoint
    assert "Traceback" in (run_dir / "neurogen-tui.log").read_text()


def test_a_child_that_cannot_start_shows_its_error_line(tmp_path):
    run_dir = tmp_path / "run"
    proc, feed, app = start_child(run_dir, "--data-files", str(tmp_path / "missing" / "*.jsonl"))

    async def scenario():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.run_state.done is not None, "the child's exit")
            await pilot.pause(0.3)
            text = log_text(app)
            assert "missing" in text and "exited with status 2 before it started" in text
            assert app.state == "failed"
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
        return app.return_code

    assert asyncio.run(scenario()) == 1
    assert finish(proc) == 2


def test_q_while_the_trainer_is_still_starting_ends_it(tmp_path):
    run_dir = tmp_path / "run"
    proc, feed, app = start_child(run_dir, prelude="import time\ntime.sleep(60)")

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.pause(0.3)
            await pilot.press("p")
            await wait_for(pilot, lambda: "still starting" in log_text(app), "the refusal")
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
        return app.return_code

    assert asyncio.run(scenario()) == 0
    assert finish(proc) == -signal.SIGTERM
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_the_real_command_on_a_terminal_trains_in_a_child_that_stops_when_the_app_is_killed(tmp_path):
    """`neurogen-tui` on a tty opens the app and trains in a child; SIGKILL to the app (nothing can
    catch it) still leaves a final checkpoint: the child is told by the kernel (PR_SET_PDEATHSIG)."""
    run_dir = tmp_path / "run"
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child process
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "neurogen_tui", *TINY, "--no-in-process",
                                  "--run-dir", str(run_dir)])
    try:
        deadline = time.monotonic() + HANG_GUARD
        while steps_on_disk(run_dir) < 3:
            assert time.monotonic() < deadline, "no steps"
            try:
                os.read(master, 65536)  # keep the pty drained
            except OSError:
                pass
            time.sleep(0.1)
        trainer = read_run_info(run_dir)["pid"]
        assert trainer != pid
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while read_run_info(run_dir)["state"] not in ("stopped", "failed"):
            assert time.monotonic() < deadline, "the trainer did not stop after its parent died"
            time.sleep(0.1)
        info = read_run_info(run_dir)
        assert info["state"] == "stopped"
        assert info["step"] == steps_on_disk(run_dir) >= 3
        assert (run_dir / "checkpoints" / f"checkpoint_step_{info['step']:06d}.pt").is_file()
    finally:
        os.close(master)
        info = read_run_info(run_dir) or {}
        if info.get("pid") and info.get("state") in ("running", "starting", "paused", "stopping"):
            try:
                os.kill(info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("flags, expected", [([], "start"), (["--no-in-process"], "launch"),
                                             (["--in-process"], "start"), (["--headless", "--no-in-process"], "start")])
def test_the_app_trains_in_a_child_unless_asked_not_to(tmp_path, monkeypatch, flags, expected):
    """Which road the command takes on a terminal: the app over a child trainer (launch), or the
    trainer in this process (start: on a CPU by default, --in-process, or --headless)."""
    import neurogen_tui.cli.launch
    import neurogen_tui.cli.session
    from neurogen_tui.cli.entry import main

    taken = []
    monkeypatch.setattr(neurogen_tui.cli.launch, "launch", lambda argv, cfg, headless: taken.append("launch") or 0)
    monkeypatch.setattr(neurogen_tui.cli.session, "start", lambda cfg, resume, headless: taken.append("start") or 0)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["--test", "--run-dir", str(tmp_path / "run"), *flags]) == 0
    assert taken == [expected]
