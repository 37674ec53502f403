"""`attach`, the hang-up behaviour and stale runs, over real tiny trainings.

The fast tests run the trainer in a thread of this process and the attached app through
App.run_test: every key still goes through the real control socket. The slow ones (-m slow) use
real processes: a pty that hangs up, a tmux pane that is killed, a run killed with SIGKILL.
"""
from __future__ import annotations

import asyncio
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neurogen_tui.cli.entry import main
from neurogen_tui.cli.commands import attach_source, main_ls
from neurogen_tui.control.protocol import ControlClient
from neurogen_tui.run.files import read_jsonl
from neurogen_tui.run.info import liveness, read_run_info
from neurogen_tui.run.listing import newest_run
from neurogen_tui.tui.app import MonitorApp
from neurogen_tui.tui.rundir import RunDirSource
from neurogen_tui.tui.source import InProcessSource
from neurogen_tui.tui.widgets import LogPane
from test_control import HANG_GUARD, LiveRun, build_without_dashboards, make_cfg, shared, wait_until  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def attached(run: LiveRun) -> MonitorApp:
    return MonitorApp(RunDirSource(run.cfg.run_dir, poll=0.1, info=read_run_info(run.cfg.run_dir)))


def log_text(app) -> str:
    return "\n".join(app.query_one(LogPane).texts)


async def until(pilot, condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.05)


@pytest.fixture
def live(tmp_path):
    runs = []

    def start(name: str = "run", **overrides) -> LiveRun:
        run = LiveRun(tmp_path / name, **overrides)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.finish()


# ---- attach: the keys drive a run in another thread through the socket ----------------------------
def test_attach_pauses_resumes_checkpoints_and_stops_the_run(live):
    run = live()
    app = attached(run)

    async def scenario():
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: app.run_state.state == "running" and app.step >= 2, "the running run")
            await pilot.press("p")
            await until(pilot, lambda: "paused at step" in log_text(app), "the pause acknowledged")
            assert run.parts.trainer.state == "paused" and app.run_state.state == "paused"
            paused_at = run.step
            await pilot.press("c")
            await until(pilot, lambda: "checkpoint written at step" in log_text(app), "the checkpoint acknowledged")
            ckpt = run.cfg.checkpoint_dir / f"checkpoint_step_{paused_at:06d}.pt"
            assert ckpt.is_file() and f"checkpoint written at step {paused_at}: " in log_text(app)
            assert ckpt.name in log_text(app)  # the screen may show the path relative to the run dir
            await pilot.pause(0.3)
            assert run.step == paused_at  # still paused
            await pilot.press("p")
            await until(pilot, lambda: "resumed at step" in log_text(app), "the resume acknowledged")
            await until(pilot, lambda: run.step > paused_at and app.step > paused_at,
                        "steps after resuming, on the screen too")
            await pilot.press("q")  # stop the run itself; the viewer leaves once the trainer has exited
            await until(pilot, lambda: app.return_code is not None, "the viewer to exit")

    asyncio.run(scenario())
    assert app.return_code == 0
    run.thread.join(HANG_GUARD)
    assert run.result.reason == "stopped"
    assert read_run_info(run.cfg.run_dir)["state"] == "stopped"
    steps = len(read_jsonl(run.cfg.viz_dir / "metrics.jsonl")[0])
    assert (run.cfg.checkpoint_dir / f"checkpoint_step_{steps:06d}.pt").is_file()


def test_x_detaches_and_a_viewer_hangup_only_closes_the_viewer(shared):
    run = shared
    for how in ("x", "sighup", "ctrl+c"):
        app = attached(run)

        async def scenario():
            async with app.run_test() as pilot:
                await until(pilot, lambda: app.run_state.state == "running", "the running state")
                if how == "sighup":  # the viewer's own terminal went away
                    os.kill(os.getpid(), signal.SIGHUP)
                else:
                    await pilot.press(how)
                await until(pilot, lambda: app.return_code is not None, "the viewer to close")

        asyncio.run(scenario())
        before = run.step
        wait_until(lambda: run.step > before, f"the run going on after {how}")
        assert not run.parts.trainer.stop_requested, how


@pytest.mark.slow  # two apps at once; two subscribers are in the default suite (test_control)
def test_two_viewers_at_once_both_follow_and_control(shared):
    run = shared
    first, second = attached(run), attached(run)

    async def scenario():
        async with first.run_test() as p1, second.run_test() as p2:
            await until(p1, lambda: first.run_state.state == "running" and second.run_state.state == "running",
                        "both viewers running")
            await p2.press("p")  # one viewer pauses; the other sees it
            await until(p1, lambda: first.run_state.state == "paused", "the pause on the other viewer")
            await p1.press("p")
            await until(p2, lambda: second.run_state.state == "running", "the resume on the first viewer")
            await p1.press("x")
            await p2.press("x")
            await until(p1, lambda: first.return_code is not None and second.return_code is not None, "both closed")

    asyncio.run(scenario())


def test_the_training_app_keeps_training_after_a_hangup_and_can_be_stopped_by_attach(tmp_path):
    """--on-hangup continue (the default) in the app that trains: SIGHUP leaves the trainer going."""
    from neurogen_tui.cli.session import setup_logging
    from neurogen_tui.cli.signals import continue_app_after_hangup

    cfg = make_cfg(tmp_path / "run")
    setup_logging(cfg)
    parts = build_without_dashboards(cfg)
    app = MonitorApp(InProcessSource(parts))
    app.after_hangup = lambda redirect: continue_app_after_hangup(cfg.run_dir, redirect)

    async def scenario():
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.step >= 1, "a step")
            os.kill(os.getpid(), signal.SIGHUP)
            await pilot.pause(0.2)
            hung_up_at = parts.trainer.step
            await until(pilot, lambda: parts.trainer.step >= hung_up_at + 2, "steps after the hang-up")
            assert not parts.trainer.stop_requested and app.return_code is None
            client = ControlClient(read_run_info(cfg.run_dir)["socket"])
            assert client.request("pause")["state"] == "paused"
            assert Path(client.request("checkpoint")["path"]).is_file()
            assert client.request("stop")["ok"]
            await until(pilot, lambda: app.return_code is not None, "the app to leave once the run ended")

    asyncio.run(scenario())
    assert app.return_code == 0 and app.run_state.result.reason == "stopped"
    log = (tmp_path / "run" / "neurogen-tui.log").read_text()
    assert "SIGHUP: the terminal went away; training continues" in log
    assert read_run_info(cfg.run_dir)["state"] == "stopped"


# ---- choosing what to attach to ---------------------------------------------------------------------
def write_record(path: Path, **info) -> Path:
    (path / "training_viz").mkdir(parents=True, exist_ok=True)
    (path / "training_viz" / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    (path / "run.json").write_text(json.dumps(info))
    return path


def test_attach_without_a_live_trainer_opens_read_only(tmp_path, capsys):
    run = write_record(tmp_path / "done", state="finished", reason="completed", updated_at=time.time())
    source = attach_source(run, 0.5)
    assert not source.caps.control and not source.caps.detach
    assert "showing it read-only" in capsys.readouterr().err


def test_attach_picks_the_live_run_under_a_directory(live, tmp_path):
    write_record(tmp_path / "older", state="finished", updated_at=time.time() + 100)
    run = live("current")
    assert newest_run(tmp_path) == tmp_path / "current"
    assert newest_run(tmp_path / "older") == tmp_path / "older"  # a run dir itself is taken as is
    source = attach_source(newest_run(tmp_path), 0.5)
    assert source.caps.control and source.caps.detach and not source.caps.owns
    assert run.client.request("status")["ok"]


# ---- real processes (slow) ----------------------------------------------------------------------------
TRAIN = [sys.executable, "-m", "neurogen_tui", "--model", "tiny", "--dataset", "sample", "--epochs", "0",
         "--tokens-per-chunk", "512", "--max-chunks", "100000", "--eval-interval", "1000"]


def steps_on_disk(run_dir: Path) -> int:
    return len(read_jsonl(run_dir / "training_viz" / "metrics.jsonl")[0])


def wait_for_steps(run_dir: Path, n: int, what: str = "") -> int:
    return wait_until(lambda: steps_on_disk(run_dir) >= n and steps_on_disk(run_dir), what or f"{n} steps")


def stop_through_the_channel(run_dir: Path, proc) -> None:
    client = ControlClient(read_run_info(run_dir)["socket"])
    assert client.request("stop")["ok"]
    assert proc.wait(HANG_GUARD) == 0
    info = read_run_info(run_dir)
    assert info["state"] == "stopped"
    steps = steps_on_disk(run_dir)
    assert (run_dir / "checkpoints" / f"checkpoint_step_{steps:06d}.pt").is_file()


def spawn_on_a_pty(argv: list[str]):
    """The process gets a pty as its controlling terminal; closing the master hangs it up."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=lambda: __import__("fcntl").ioctl(0, __import__("termios").TIOCSCTTY, 0))
    os.close(slave)
    out = bytearray()

    def drain() -> None:  # a full pty buffer would block the child's writes
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            out.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()
    return proc, master, out


@pytest.mark.slow
def test_headless_run_whose_terminal_hangs_up_keeps_training_and_writing(tmp_path):
    run_dir = tmp_path / "run"
    proc, master, out = spawn_on_a_pty(TRAIN + ["--headless", "--run-dir", str(run_dir)])
    try:
        before = wait_for_steps(run_dir, 3)
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP
        wait_until(lambda: "SIGHUP: the terminal went away; training continues" in
                   (run_dir / "neurogen-tui.log").read_text(), "the hang-up line in the log")
        hung_up_at = steps_on_disk(run_dir)
        wait_for_steps(run_dir, hung_up_at + 5, "steps after the hang-up")
        assert proc.poll() is None
        stop_through_the_channel(run_dir, proc)
        assert "files:" in (run_dir / "neurogen-tui.log").read_text()  # stdout now appends to the log
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_on_hangup_stop_keeps_the_old_behaviour(tmp_path):
    run_dir = tmp_path / "run"
    proc, master, out = spawn_on_a_pty(TRAIN + ["--headless", "--on-hangup", "stop", "--run-dir", str(run_dir)])
    wait_for_steps(run_dir, 2)
    os.close(master)
    assert proc.wait(HANG_GUARD) == 0  # no EIO from the dead terminal on the way out
    assert read_run_info(run_dir)["state"] == "stopped"
    steps = steps_on_disk(run_dir)
    assert (run_dir / "checkpoints" / f"checkpoint_step_{steps:06d}.pt").is_file()
    assert "stopping after this step (--on-hangup stop)" in (run_dir / "neurogen-tui.log").read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_app_in_a_tmux_pane_survives_sighup_and_stays_attachable(tmp_path):
    run_dir = tmp_path / "run"
    session = f"ngt-attach-{os.getpid()}"
    socket_name = f"ngt-{os.getpid()}-{os.urandom(4).hex()}"  # never the one a test before just killed
    tmux = ["tmux", "-L", socket_name]
    command = " ".join(TRAIN + ["--run-dir", str(run_dir)])
    subprocess.run(tmux + ["new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                           f"cd {ROOT} && {command}"], check=True)
    pid = None
    try:
        wait_for_steps(run_dir, 3)
        pid = read_run_info(run_dir)["pid"]
        screen = subprocess.run(tmux + ["capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        assert "RUNNING" in screen  # the app, not the headless bar
        subprocess.run(tmux + ["kill-server"], check=True)  # SIGHUP to the pane's process
        before = steps_on_disk(run_dir)
        wait_for_steps(run_dir, before + 3, "steps after the pane died")
        info = read_run_info(run_dir)
        assert liveness(info) == "running" and info["pid"] == pid
        client = ControlClient(info["socket"])
        reply = client.request("pause")
        assert reply["state"] == "paused"
        ckpt = Path(client.request("checkpoint")["path"])
        assert ckpt.is_file() and ckpt.name == f"checkpoint_step_{reply['step']:06d}.pt"
        assert client.request("resume")["ok"]
        assert "SIGHUP: the terminal went away" in (run_dir / "neurogen-tui.log").read_text()
        assert client.request("stop")["ok"]
        wait_until(lambda: read_run_info(run_dir)["state"] == "stopped", "the run to end")
        wait_until(lambda: liveness(dict(info, state="running")) == "stale", "the process to exit")
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        if pid and liveness(read_run_info(run_dir) or {}) in ("running", "paused", "stopping"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_run_shows_as_stale_and_resumes_with_resume_latest(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(TRAIN + ["--headless", "--checkpoint-interval", "3", "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: list((run_dir / "checkpoints").glob("checkpoint_step_*.pt")), "a checkpoint")
        ControlClient(read_run_info(run_dir)["socket"]).request("pause")  # a checkpoint-aligned stop point
        proc.send_signal(signal.SIGKILL)
        proc.wait(HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_run_info(run_dir)["state"] in ("running", "paused")  # what the dead process left
    assert main_ls([str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[:2] == ["killed", "stale"]
    source = attach_source(run_dir, 0.5)  # attach: nothing to control, so read-only
    assert not source.caps.control
    capsys.readouterr()

    last = max(int(p.stem.split("_")[-1]) for p in (run_dir / "checkpoints").glob("checkpoint_step_*.pt"))
    assert main(["--resume", "latest", "--headless", "--max-chunks", str(last + 2), "--run-dir", str(run_dir)]) == 0
    rows = read_jsonl(run_dir / "training_viz" / "metrics.jsonl")[0]
    assert [r["step"] for r in rows] == list(range(1, last + 3))  # continued, no step twice
    info = read_run_info(run_dir)
    assert info["state"] == "finished" and info["pid"] == os.getpid()
