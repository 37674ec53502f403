"""A run never keeps or saves a wrecked state (#26): a change right after a harmful one, a checkpoint
in the same window, two changes at one boundary, a full disk, the run directory deleted, and the
smaller holes an attack on the cockpit found."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from neurogen_tui.cli.entry import main
from neurogen_tui.control.protocol import ControlClient
from neurogen_tui.core.events import CheckpointSaved, CheckpointSkipped, GuardFired, SettingChanged, TrainingMetrics
from neurogen_tui.run.timeline import read_events
from neurogen_tui.train.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, write_error
from neurogen_tui.train.guard import CONFIRM_STEPS, SNAPSHOT_EVERY, Guard
from test_cockpit import HANG_GUARD, LiveRun, ctl, tiny_cfg, wait_until

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HARM = SNAPSHOT_EVERY + CONFIRM_STEPS + 5  # a trusted periodic copy exists by then, and the guard's window is full


class AtStep:
    """On the trainer's thread, right after step `step`'s metrics: `act()` (a request that lands at
    that step's boundary, as a quick client's would)."""

    def __init__(self, step: int, act) -> None:
        self.step, self.act, self.done = step, act, False

    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics) and event.step == self.step and not self.done:
            self.done = True
            self.act()


def absmax(state: dict) -> float:
    return max(float(t.abs().max()) for t in state["model"].values() if torch.is_tensor(t) and t.is_floating_point())


def level(rows: dict, before: int) -> float:
    return sorted(rows[s]["loss"] for s in range(before - 10, before))[5]


# ---- 1. a change one step after a harmful one ------------------------------------------------------------
def test_a_change_right_after_a_harmful_one_is_rolled_back_to_the_state_before_the_harm(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg, control=False) as run:
        t = run.trainer
        run.parts.bus.subscribe(AtStep(HARM, lambda: t.request_changes({"lr": 50.0})))
        run.parts.bus.subscribe(AtStep(HARM + 1, lambda: t.request_changes({"eval_interval": 100})))
        wait_until(lambda: run.of(GuardFired), "the guard")
        wait_until(lambda: t.step >= HARM + 25, "steps after the rollback")
    fired = run.of(GuardFired)
    assert len(fired) == 1 and fired[0].action == "rollback" and fired[0].step == HARM + 2
    assert f"rolled back to step {HARM}'s weights" in fired[0].outcome  # not to the wreck of step HARM + 1
    rows = {r["step"]: r for r in run.metrics()}
    after = [rows[s]["loss"] for s in range(HARM + 5, HARM + 25)]
    assert all(math.isfinite(v) and v < 1.5 * level(rows, HARM) for v in after)
    assert t.cfg.lr == pytest.approx(1e-3) and t.state != "paused"


def test_a_harmful_change_and_another_at_the_same_boundary_roll_back_to_the_settings_before_both(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg, control=False) as run:
        t = run.trainer

        def both() -> None:  # two clients, quicker than a step: one boundary takes both
            t.request_changes({"lr": 50.0})
            t.request_changes({"eval_interval": 100})

        run.parts.bus.subscribe(AtStep(HARM, both))
        wait_until(lambda: run.of(GuardFired), "the guard")
        wait_until(lambda: t.step >= HARM + 20, "steps after the rollback")
    fired = run.of(GuardFired)
    assert len(fired) == 1 and f"rolled back to step {HARM}'s weights" in fired[0].outcome
    assert t.cfg.lr == pytest.approx(1e-3) and t.cfg.eval_interval == cfg.eval_interval


# ---- 2. a checkpoint in the same window ------------------------------------------------------------------
def test_a_checkpoint_asked_for_right_after_a_harmful_change_never_holds_the_wreck(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg, control=False) as run:
        t = run.trainer
        run.parts.bus.subscribe(AtStep(HARM, lambda: t.request_changes({"lr": 50.0})))
        run.parts.bus.subscribe(AtStep(HARM + 1, t.request_checkpoint))
        wait_until(lambda: run.of(CheckpointSaved) or run.of(CheckpointSkipped), "the checkpoint")
        wait_until(lambda: t.step >= HARM + 20, "steps after it")
    fired = run.of(GuardFired)
    assert fired and fired[0].action == "rollback" and fired[0].step == HARM + 1  # seen before the save
    rows = {r["step"]: r for r in run.metrics()}
    for path in list_checkpoints(cfg.checkpoint_dir):
        state = load_checkpoint(path)
        assert state["config"]["lr"] != 50.0 and absmax(state) < 10, path.name
    assert all(math.isfinite(rows[s]["loss"]) for s in range(HARM + 3, HARM + 20))


def test_the_guards_copies_wait_for_a_step_after_them_and_a_state_is_judged_by_its_loss():
    from neurogen_tui.train.config import TrainingConfig

    g = Guard(TrainingConfig(guard_window=40))
    model, opt = torch.nn.Linear(2, 2), None
    opt = torch.optim.AdamW(model.parameters())
    g.take(10, model, opt, {"lr_scale": 1.0}, confirm=1)  # before a live change
    assert g.good is None  # not before the step after it was judged
    g.settle(11, False)
    assert g.good is not None and g.good.step == 10
    g.take(11, model, opt, {"lr_scale": 1.0}, confirm=1)  # a second change, one step later
    g.settle(12, True)  # that step was trouble: the copy of step 11 is the wreck
    assert g.good.step == 10 and g.pending is None
    assert g.judge_state(3.0) is False  # the window is still filling: cannot tell
    for step in range(1, 41):
        g.observe(step, 3.0 + 0.01 * (step % 3), 1.0)
    assert g.judge_state(2.9) is None and g.judge_state(3.05) is None
    assert g.judge_state(40.0).kind == "spike" and g.judge_state(math.nan).kind == "nonfinite"


def test_rotation_never_deletes_the_newest_trusted_checkpoint(tmp_path):
    for step in (10, 20, 30, 40):
        (tmp_path / f"checkpoint_step_{step:06d}.pt").write_bytes(b"x")
    trusted = tmp_path / "checkpoint_step_000010.pt"
    prune_checkpoints(tmp_path, 2, {tmp_path / "checkpoint_step_000040.pt", trusted})
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint_step_000010.pt", "checkpoint_step_000030.pt", "checkpoint_step_000040.pt"]


@pytest.mark.slow  # the in-process tests above take the same requests at exact boundaries in the default suite
@pytest.mark.parametrize("order", [("lr=50", "eval_interval=100", "checkpoint"), ("lr=50", "checkpoint", "eval_interval=100")])
def test_end_to_end_harm_then_change_and_checkpoint_then_sigkill_and_resume_ends_healthy(tmp_path, order):
    """As a user does it, in every order: a run in one process; from another, one request after the
    other as fast as a client can (each lands at the next step boundary); SIGKILL; --resume latest."""
    run_dir = tmp_path / "run"
    common = ["--headless", "--test", "--max-chunks", "100000", "--epochs", "0", "--tokens-per-chunk", "4096",
              "--eval-interval", "10000", "--viz-interval", "10000", "--checkpoint-interval", "40",
              "--run-dir", str(run_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "neurogen_tui", *common], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    metrics = run_dir / "training_viz" / "metrics.jsonl"

    def steps() -> int:
        return metrics.read_text().count("\n") if metrics.exists() else 0

    try:
        wait_until(lambda: steps() >= 70 or proc.poll() is not None, "70 steps")
        assert proc.poll() is None, proc.communicate()[1]
        client = ControlClient(json.loads((run_dir / "run.json").read_text())["socket"])
        replies = [client.request("checkpoint") if r == "checkpoint" else
                   client.request("set", settings=dict([r.split("=")])) for r in order]
        assert replies[0]["ok"], replies
        harmed = replies[0]["step"]
        wait_until(lambda: any(e["kind"] == "guard" for e in read_events(run_dir / "training_viz")), "the guard")
        wait_until(lambda: steps() >= harmed + 20 or proc.poll() is not None, "steps after the rollback")
        assert steps() >= harmed + 20, (replies, read_events(run_dir / "training_viz"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD)
    for path in list_checkpoints(run_dir / "checkpoints"):
        state = load_checkpoint(path)
        assert not (state["config"]["lr"] == 50.0 and absmax(state) > 10), f"{path.name} holds the wreck"
    resumed = subprocess.run([sys.executable, "-m", "neurogen_tui", "--headless", "--run-dir", str(run_dir),
                              "--resume", "latest", "--max-chunks", str(harmed + 60)],
                             capture_output=True, text=True, env=ENV, timeout=HANG_GUARD)
    assert resumed.returncode == 0, resumed.stderr
    rows = {r["step"]: r for r in map(json.loads, metrics.read_text().splitlines())}
    tail = [rows[s]["loss"] for s in range(harmed + 50, harmed + 61)]
    assert all(math.isfinite(v) and v < 1.3 * level(rows, harmed) for v in tail)
    final = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    assert final["step"] == harmed + 60 and final["config"]["lr"] != 50.0 and absmax(final) < 10


# ---- 3. two changes at one boundary -----------------------------------------------------------------------
def test_two_clients_racing_changes_at_one_boundary_never_leave_min_lr_above_lr(tmp_path):
    cfg = tiny_cfg(tmp_path, lr=1e-2, min_lr=1e-4)
    with LiveRun(cfg) as run:
        sock = json.loads((Path(cfg.run_dir) / "run.json").read_text())["socket"]
        for _ in range(20):
            start, replies = threading.Barrier(2), {}

            def send(name: str, value: str) -> None:
                start.wait()
                replies[name] = ControlClient(sock).request("set", settings={name: value})

            threads = [threading.Thread(target=send, args=a) for a in (("min_lr", "5e-3"), ("lr", "1e-3"))]
            for th in threads:
                th.start()
            for th in threads:
                th.join(HANG_GUARD)
            oks = [r["ok"] for r in replies.values()]
            assert sorted(oks) == [False, True], replies  # the second is refused, with the reason
            refused = next(r for r in replies.values() if not r["ok"])
            assert "must not exceed" in refused["error"] and refused.get("usage")
            assert run.trainer.cfg.min_lr <= run.trainer.cfg.lr
            reset = ControlClient(sock).request("set", settings={"lr": "1e-2", "min_lr": "1e-4"})
            assert reset["ok"], reset
    said = [e for e in run.of(SettingChanged) if e.refused]
    assert said and all(e.changes == {} for e in said)


def test_a_resume_never_fails_on_a_config_the_run_itself_saved(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run), "--lr", "1e-2"]) == 0
    path = list_checkpoints(run / "checkpoints")[-1]
    state = load_checkpoint(path)
    state["config"]["min_lr"] = 5e-3
    state["config"]["lr"] = 1e-3  # what an older version could save after two racing changes
    torch.save(state, path)
    assert main(["--headless", "--run-dir", str(run), "--resume", "latest", "--max-chunks", "6"]) == 0
    assert "resuming with --min-lr 0.001" in capsys.readouterr().out
    assert load_checkpoint(list_checkpoints(run / "checkpoints")[-1])["config"]["min_lr"] == 1e-3


# ---- 4. a full disk ---------------------------------------------------------------------------------------
def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs of the test's own (root only)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


@pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root")
def test_a_full_disk_holds_the_metrics_in_memory_and_writes_them_once_freed(small_disk, tmp_path):
    run_dir = small_disk / "run"
    screen = tmp_path / "screen.txt"  # what the headless display says, on a disk with room
    proc = subprocess.Popen([sys.executable, "-m", "neurogen_tui", "--headless", "--test", "--max-chunks", "100000",
                             "--epochs", "0", "--eval-interval", "10000", "--viz-interval", "100000",
                             "--checkpoint-interval", "100000", "--run-dir", str(run_dir)],
                            stdout=open(screen, "w"), stderr=subprocess.PIPE, text=True, env=ENV)
    metrics, events = run_dir / "training_viz" / "metrics.jsonl", run_dir / "training_viz" / "events.jsonl"

    def rows() -> list[dict]:
        return [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []

    try:
        wait_until(lambda: len(rows()) >= 20, "20 steps")
        filler = fill(small_disk)
        full_at = len(rows())
        wait_until(lambda: "cannot write metrics.jsonl" in screen.read_text() or proc.poll() is not None,
                   "the writer to say so")
        time.sleep(3)  # steps go on while the disk is full
        assert proc.poll() is None and screen.read_text().count("cannot write metrics.jsonl") == 1
        held_from = len(rows())
        filler.unlink()
        wait_until(lambda: len(rows()) > held_from + 20, "rows written again")
        sock = json.loads((run_dir / "run.json").read_text())["socket"]
        assert ControlClient(sock).request("stop")["ok"]
        proc.wait(HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0
    steps = [r["step"] for r in rows()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > full_at  # nothing lost, nothing twice
    said = [e.get("text", "") for e in read_events(events.parent) if e["kind"] == "storage"]
    assert any("cannot write metrics.jsonl" in s for s in said) and any("written again" in s for s in said)
    assert list_checkpoints(run_dir / "checkpoints")  # the final one, once there was room


@pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root")
def test_a_full_disk_during_a_checkpoint_says_no_space_left(small_disk, capsys):
    fill(small_disk)
    (small_disk / "filler").unlink()
    filler = small_disk / "filler2"
    filler.write_bytes(b"\0" * (7 * 2**20 + 600 * 1024))  # room for the metrics, not for a checkpoint
    code = main(["--test", "--headless", "--run-dir", str(small_disk / "run"), "--viz-interval", "1000"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "inline_container" not in err


def test_a_checkpoint_write_error_names_the_disk_not_torchs_internals(tmp_path):
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 32")
    except RuntimeError as exc:
        assert write_error(exc, tmp_path) == "No space left on device"
    plain = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 32")
    assert "inline_container" in write_error(plain, tmp_path)  # plenty of room: say what torch said


# ---- 5. the run directory deleted --------------------------------------------------------------------------
def start_run(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neurogen_tui", "--headless", "--test", "--max-chunks", "100000",
                             "--epochs", "0", "--eval-interval", "10000", "--viz-interval", "100000",
                             "--checkpoint-interval", "100000", "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def test_a_deleted_run_dir_stops_the_run_with_a_final_checkpoint_in_a_dir_of_its_own(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_run(run_dir)
    wait_until(lambda: (run_dir / "training_viz" / "metrics.jsonl").exists()
               and (run_dir / "training_viz" / "metrics.jsonl").read_text().count("\n") >= 10, "10 steps")
    shutil.rmtree(run_dir)
    out, err = proc.communicate(timeout=60)  # noticed within seconds
    assert proc.returncode == 0, err
    assert "was deleted or replaced while training" in out + err
    assert list_checkpoints(run_dir / "checkpoints")  # the directory taken again, the state kept
    assert json.loads((run_dir / "run.json").read_text())["state"] == "stopped"


@pytest.mark.slow  # the deleted-dir path itself stays in the default suite
def test_a_deleted_run_dir_taken_by_another_trainer_gets_nothing_from_the_first(tmp_path):
    from neurogen_tui.run.lock import RunLock

    run_dir = tmp_path / "run"
    proc = start_run(run_dir)
    wait_until(lambda: (run_dir / "training_viz" / "metrics.jsonl").exists()
               and (run_dir / "training_viz" / "metrics.jsonl").read_text().count("\n") >= 10, "10 steps")
    shutil.rmtree(run_dir)
    other = RunLock(run_dir)  # a second trainer takes the name at once
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        other.release()
    assert "without a final checkpoint" in out + err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "run.json").exists()


# ---- 6. smaller holes --------------------------------------------------------------------------------------
def test_idle_connections_do_not_lock_ctl_out(tmp_path, capsys):
    import socket

    from neurogen_tui.control.protocol import MAX_CLIENTS

    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg) as run:
        sock = json.loads((Path(cfg.run_dir) / "run.json").read_text())["socket"]
        idle = []
        try:
            for _ in range(MAX_CLIENTS):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sock)
                idle.append(s)
            wait_until(lambda: len(run.parts.service.server._conns) == MAX_CLIENTS, "every slot taken")
            code, out, _ = ctl(capsys, cfg.run_dir, "status")
            assert code == 0 and "running" in out  # an idle connection gave up its slot
        finally:
            for s in idle:
                s.close()


def test_odd_run_files_are_one_line_not_a_traceback(tmp_path, capsys):
    run = tmp_path / "runs" / "odd"
    (run / "training_viz" / "metrics.jsonl").mkdir(parents=True)  # a directory where the file should be
    (run / "run.json").write_text('{"state": "running", "updated_at": Infinity, "pid": 1}')
    assert main(["ls", str(tmp_path / "runs")]) == 0
    assert "odd" in capsys.readouterr().out
    assert main(["render", str(run), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and "Traceback" not in err
    assert main(["export", str(run), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl file to export" in err and "x.csv" not in err


def test_ctl_refuses_what_it_cannot_mean_and_says_each_thing_once(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg) as run:
        for args, said in ((["set", "lr=1e-3", "lr=2e-3"], "lr is given twice"),
                           (["set", "eval_interval=1_000"], "not a whole number"),
                           (["set", "lr=１e-3"], "not a number"),
                           (["prompt", "x" * 70_000], "over 64 KiB"),
                           (["prompt", "tokens=10000000", "hi"], "tokens must be a whole number from 1 to")):
            code, _, err = ctl(capsys, cfg.run_dir, *args)
            assert code == 2 and said in err, (args, err)
            assert "prompt: prompt:" not in err and "temperature" not in err
        code, out, _ = ctl(capsys, cfg.run_dir, "set", f"eval_interval={cfg.eval_interval}")
        assert code == 0 and "nothing changed" in out
        code, out, _ = ctl(capsys, cfg.run_dir, "status")
        loss = out.split("loss ")[1].split(",")[0].strip()
        assert len(loss.split(".")[1]) == 4  # `loss 5.3899`, not every digit a float has
    settings = [e for e in read_events(cfg.viz_dir) if e["kind"] == "setting"]
    assert settings == []  # a set to the same value is no change
    with pytest.raises(SystemExit) as exc:  # argparse's one line and status 2, for a flag too
        main(["--test", "--headless", "--run-dir", str(tmp_path / "x"), "--lr", "1_000"])
    assert exc.value.code == 2 and "not a number: '1_000'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
