"""The cockpit (#20): the run's timeline (events.jsonl), live settings over the control channel
(`neurogen-tui ctl RUN set ...`), and the guard that rolls a diverging run back."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from neurogen_tui.cli.entry import main
from neurogen_tui.train.config import LIVE_SETTINGS, TrainingConfig, live_changes
from neurogen_tui.core.events import EventBus, GuardFired, LogMessage, SettingChanged, TrainingMetrics
from neurogen_tui.train.guard import CONFIRM_STEPS, SNAPSHOT_EVERY, Guard
from neurogen_tui.run.layout import RunState
from neurogen_tui.train.schedule import lr_at
from neurogen_tui.run.recorder import MetricsRecorder
from neurogen_tui.cli.session import RunParts, build_run
from neurogen_tui.run.timeline import Timeline, describe, digest, read_events
from neurogen_tui.train.trainer import Trainer

HANG_GUARD = 200  # seconds: only so a broken build fails instead of hanging; never a speed check
ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(tmp_path, **overrides) -> TrainingConfig:
    cfg = TrainingConfig(run_dir=str(tmp_path / "run"))
    cfg.apply_test_mode()
    cfg.max_chunks, cfg.epochs = 100_000, 0
    cfg.eval_interval = cfg.checkpoint_interval = cfg.viz_interval = 10_000
    cfg.sample_interval = 10_000
    cfg.warmup_steps = 5
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def wait_until(condition, what: str, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


class LiveRun:
    """A real run (trainer, files, control socket) training on a thread of the test process."""

    def __init__(self, cfg, control: bool = True) -> None:
        self.cfg = cfg
        if control:  # as `neurogen-tui` composes it: files, dashboards, run.json and the control socket
            self.parts = build_run(cfg, None, control=True)
        else:  # the trainer and its files only: no dashboard process to start
            bus = EventBus()
            recorder, timeline = MetricsRecorder(cfg.viz_dir), Timeline(cfg.viz_dir)
            bus.subscribe(recorder)
            bus.subscribe(timeline)
            self.parts = RunParts(Trainer(cfg, bus), bus, recorder, None, timeline=timeline)
        self.trainer = self.parts.trainer
        self.events: list = []
        self.parts.bus.subscribe(self.events.append)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.result = None

    def _run(self) -> None:
        self.result = self.trainer.run()
        self.parts.close()

    def __enter__(self) -> "LiveRun":
        self.thread.start()
        wait_until(lambda: self.trainer.step >= 2, "the first steps")
        return self

    def __exit__(self, *exc) -> None:
        self.trainer.request_stop()
        self.thread.join(HANG_GUARD)

    def of(self, kind) -> list:
        return [e for e in list(self.events) if isinstance(e, kind)]

    def metrics(self) -> list[dict]:
        path = Path(self.cfg.run_dir) / "training_viz" / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ctl(capsys, run_dir, *args) -> tuple[int, str, str]:
    code = main(["ctl", str(run_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


# ---- live settings ---------------------------------------------------------------------------------
def test_ctl_sets_each_live_setting_at_a_step_boundary_and_a_resumed_run_keeps_them(tmp_path, capsys):
    """And invalid values are refused with one line, exit 2, and the run untouched."""
    cfg = tiny_cfg(tmp_path)
    wanted = {"lr": "5e-4", "min_lr": "5e-5", "warmup_steps": "3", "lr_decay_steps": "400", "weight_decay": "0.05",
              "grad_clip": "0.5", "eval_interval": "7", "sample_interval": "9", "viz_interval": "11",
              "checkpoint_interval": "13", "lr_scale": "0.8"}
    assert set(wanted) == set(LIVE_SETTINGS)
    with LiveRun(cfg) as run:
        before = {k: getattr(run.trainer.cfg, k) for k in LIVE_SETTINGS}
        for args, says in ((["lr=abc"], "--lr: not a number"), (["lr=-1"], "--lr: must be a positive number"),
                           (["min_lr=5"], "must not exceed --lr"), (["batch_size=4"], "not a live setting"),
                           (["eval=later"], "only value is 'now'"), (["lr"], "expected NAME=VALUE"),
                           ([], "at least one"), (["guard_lr_factor=2"], "not a live setting")):
            code, out, err = ctl(capsys, cfg.run_dir, "set", *args)
            assert code == 2, (args, out, err)
            assert says in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        code, _, err = ctl(capsys, cfg.run_dir, "pause", "lr=1")
        assert code == 2 and "takes no NAME=VALUE" in err
        assert {k: getattr(run.trainer.cfg, k) for k in LIVE_SETTINGS} == before and not run.of(SettingChanged)

        for name, value in wanted.items():
            code, out, err = ctl(capsys, cfg.run_dir, "set", f"{name}={value}")
            assert code == 0, err
            assert out.startswith("neurogen-tui: set at step ") and f"{name} " in out and out.count("\n") == 1
            assert getattr(run.trainer.cfg, name) == type(getattr(TrainingConfig(), name) or 1)(float(value)), name
        changed_at = run.trainer.step
        code, out, _ = ctl(capsys, cfg.run_dir, "set", "eval=now")
        assert code == 0 and "evaluation now" in out
        wait_until(lambda: run.trainer.step >= changed_at + 30, "30 more steps")
        assert {g["weight_decay"] for g in run.trainer.optimizer.param_groups} == {0.0, 0.05}
        assert run.parts.viz.viz_interval == 11
    code, _, err = ctl(capsys, cfg.run_dir, "set", "lr=1e-3")  # the run has ended
    assert code == 1 and "not a live run" in err
    rows = run.metrics()
    after = [r for r in rows if r["step"] > changed_at + 1]
    for r in after:  # the schedule the new settings make, times the multiplier
        assert r["learning_rate"] == pytest.approx(0.8 * lr_at(r["step"] - 1, 5e-4, 5e-5, 3, 400), rel=1e-6)
    evals = [r["step"] for r in after if r.get("val_loss") is not None]
    assert evals and all(s % 7 == 0 or s == evals[0] for s in evals)  # eval=now, then every 7 steps
    checkpoints = sorted(int(p.stem.split("_")[-1]) for p in (Path(cfg.run_dir) / "checkpoints").glob("*.pt"))
    assert any(s % 13 == 0 for s in checkpoints)
    settings = [e for e in read_events(cfg.viz_dir) if e["kind"] == "setting"]
    assert [next(iter(e["changes"])) for e in settings] == list(wanted) + ["eval"]
    assert all(e["source"] == "ctl" for e in settings)

    # a resumed run keeps them: its learning rates follow the changed schedule
    last = rows[-1]["step"]
    assert main(["--resume", "latest", "--run-dir", cfg.run_dir, "--headless", "--max-chunks", str(last + 3)]) == 0
    resumed = [r for r in run.metrics() if r["step"] > last]
    assert [r["step"] for r in resumed] == [last + 1, last + 2, last + 3]
    for r in resumed:
        assert r["learning_rate"] == pytest.approx(0.8 * lr_at(r["step"] - 1, 5e-4, 5e-5, 3, 400), rel=1e-6)
    assert read_events(cfg.viz_dir)[-1]["kind"] in ("ended", "dashboard")
    assert any(e["kind"] == "resumed" for e in read_events(cfg.viz_dir))


def test_live_changes_check_values_as_the_flags_do():
    cfg = TrainingConfig()
    assert live_changes(cfg, {"lr": "3e-4", "eval-interval": "50"}) == {"lr": 3e-4, "eval_interval": 50}
    with pytest.raises(ValueError, match="--warmup-steps"):
        live_changes(cfg, {"warmup_steps": "-3"})


# ---- the guard --------------------------------------------------------------------------------------------
def test_the_guard_scores_spikes_robustly_and_settles_its_copies():
    cfg = TrainingConfig(guard_window=40)
    g = Guard(cfg)
    for step in range(1, 20):
        assert g.observe(step, 3.0 + 0.01 * (step % 3), 1.0) is None  # the window fills: no verdict yet
        g.settle(step, False)
    assert g.observe(20, 30.0, 1.0) is None  # still too few steps to judge against
    g.settle(20, False)
    spike = g.observe(21, 3.5, 1.0)
    assert spike is not None and spike.kind == "spike" and spike.action == "rollback"
    assert g.observe(22, 3.02, 1.0) is None  # noise is not a spike
    grad = g.observe(23, 3.0, 50.0)
    assert grad is not None and grad.kind == "grad" and grad.action == "warn"
    bad = g.observe(24, math.nan, 1.0)
    assert bad is not None and bad.kind == "nonfinite"
    # a flat series: the 1% floor keeps tiny wobbles from being spikes
    flat = Guard(cfg)
    for step in range(1, 41):
        flat.observe(step, 2.0, 1.0)
    assert flat.observe(41, 2.001, 1.0) is None and flat.observe(42, 2.5, 1.0).kind == "spike"

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    g.take(SNAPSHOT_EVERY, model, opt, {"lr_scale": 1.0})
    g.settle(SNAPSHOT_EVERY + 1, True)  # trouble right after the copy: never trusted
    assert g.good is None and g.pending is None
    g.take(2 * SNAPSHOT_EVERY, model, opt, {"lr_scale": 1.0})
    for step in range(2 * SNAPSHOT_EVERY + 1, 2 * SNAPSHOT_EVERY + CONFIRM_STEPS + 1):
        g.settle(step, False)
    assert g.good is not None and g.good.step == 2 * SNAPSHOT_EVERY
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(g.good.model["weight"], model.weight)  # a copy, not the live tensors
    for _ in range(cfg.guard_max_rollbacks):
        assert g.can_roll_back()
        g.rolled_back()
    assert not g.can_roll_back()  # after that many in a row: pause instead


class Corrupt:
    """At `step`, multiply every weight by `factor`: an injected divergence."""

    def __init__(self, trainer, step: int, factor: float = 40.0):
        self.trainer, self.step, self.factor, self.done = trainer, step, factor, False

    def __call__(self, event) -> None:
        if isinstance(event, TrainingMetrics) and event.step == self.step and not self.done:
            self.done = True
            with torch.no_grad():
                for p in self.trainer.model.parameters():
                    p.mul_(self.factor)


def test_the_guard_rolls_back_an_injected_spike(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg, control=False) as run:
        inject = SNAPSHOT_EVERY + CONFIRM_STEPS + 5
        run.parts.bus.subscribe(Corrupt(run.trainer, inject))
        wait_until(lambda: run.of(GuardFired), "the guard")
        wait_until(lambda: run.trainer.step >= inject + 15, "steps after the rollback")
        fired = run.of(GuardFired)[0]
    assert fired.action == "rollback" and fired.kind in ("spike", "nonfinite") and fired.step == inject + 1
    assert f"rolled back to step {SNAPSHOT_EVERY}'s weights" in fired.outcome
    rows = {r["step"]: r for r in run.metrics()}
    level = sorted(rows[s]["loss"] for s in range(inject - 10, inject))[5]
    assert rows[inject + 1]["loss"] > 3 * level  # the spike was real
    after = [rows[s]["loss"] for s in range(inject + 3, inject + 15)]
    assert all(math.isfinite(v) and v < 1.5 * level for v in after)  # and the run got over it
    assert run.trainer.cfg.lr_scale == 0.5
    assert rows[inject + 3]["learning_rate"] < 0.6 * rows[inject - 1]["learning_rate"]
    kinds = [e["kind"] for e in read_events(cfg.viz_dir)]
    assert "guard" in kinds and kinds.index("setting") < kinds.index("guard")
    said = [e.text for e in run.of(LogMessage) if e.text.startswith("guard at step")]
    assert said and "rolled back" in said[0]


@pytest.mark.slow
def test_a_guard_set_to_warn_says_a_lasting_trouble_once_a_window(tmp_path):
    cfg = tiny_cfg(tmp_path, guard_actions="spike=warn,nonfinite=warn", guard_window=40)
    with LiveRun(cfg, control=False) as run:
        run.parts.bus.subscribe(Corrupt(run.trainer, 30, factor=1e4))  # broken for good: every step after is trouble
        wait_until(lambda: run.trainer.step >= 60 or run.result is not None, "30 steps after the damage")
    fired = run.of(GuardFired)
    assert fired and all(f.action == "warn" for f in fired)
    assert len(fired) == 1 and fired[0].step == 31  # once in the window, though every step since was trouble


@pytest.mark.slow
def test_a_guard_set_to_pause_waits_for_a_human_with_the_reason_on_screen(tmp_path):
    cfg = tiny_cfg(tmp_path, guard_actions="spike=pause,nonfinite=pause")
    with LiveRun(cfg, control=False) as run:
        run.parts.bus.subscribe(Corrupt(run.trainer, 70))
        wait_until(lambda: run.trainer.state == RunState.PAUSED, "the pause")
        paused_at = run.trainer.step
        time.sleep(0.5)
        assert run.trainer.step == paused_at and run.of(GuardFired)[0].action == "pause"
        assert any("resume with p" in e.text for e in run.of(LogMessage))
        run.trainer.resume()
        wait_until(lambda: run.trainer.step > paused_at, "training again after resume")


@pytest.mark.slow  # test_wrecked_state.py's lr=50 tests (a harmful set, then more) keep this path in the default suite
def test_the_guard_undoes_a_destructive_learning_rate_set_from_ctl(tmp_path):
    """End to end, as a user does it: a run in one process, `neurogen-tui ctl RUN set lr=50` from
    another; the guard rolls back, lowers the learning rate, and training goes on with finite loss.
    Then the run is killed (SIGKILL): events.jsonl holds every line whole, like the other files."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "neurogen_tui", "--headless", "--test", "--max-chunks", "100000",
                             "--epochs", "0", "--eval-interval", "10000", "--viz-interval", "10000",
                             "--checkpoint-interval", "20", "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    metrics = run_dir / "training_viz" / "metrics.jsonl"

    def steps() -> int:
        return metrics.read_text().count("\n") if metrics.exists() else 0

    try:
        wait_until(lambda: steps() >= 30, "30 steps")
        said = subprocess.run([sys.executable, "-m", "neurogen_tui", "ctl", str(run_dir), "set", "lr=50"],
                              capture_output=True, text=True, env=env, timeout=HANG_GUARD)
        assert said.returncode == 0, said.stderr
        changed = int(said.stdout.split("set at step ")[1].split(":")[0])
        wait_until(lambda: any(e["kind"] == "guard" for e in read_events(run_dir / "training_viz")), "the guard")
        wait_until(lambda: steps() >= changed + 25, "steps after the rollback")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD)
    lines = (run_dir / "training_viz" / "events.jsonl").read_bytes().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole after SIGKILL
    assert events == read_events(run_dir / "training_viz")
    assert events[0]["kind"] == "started" and [e["kind"] for e in events].count("checkpoint") >= 2
    assert all(isinstance(e["time"], float) and isinstance(e["step"], int) for e in events)
    guard = next(e for e in events if e["kind"] == "guard")
    assert guard["action"] == "rollback" and f"rolled back to step {changed}'s weights" in guard["outcome"]
    by_guard = next(e for e in events if e["kind"] == "setting" and e["source"] == "guard")
    assert by_guard["changes"]["lr"] == [50.0, 0.001] and by_guard["changes"]["lr_scale"] == [1.0, 0.5]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    before = [r["loss"] for r in rows if changed - 10 < r["step"] <= changed]
    after = [r for r in rows if r["step"] > guard["step"] + 2]
    assert len(after) >= 15 and all(math.isfinite(r["loss"]) for r in after)
    assert sum(r["loss"] for r in after[-10:]) / 10 < 1.2 * max(before)  # trained on, not diverged
    assert max(r["learning_rate"] for r in after) < 0.001  # lowered, and 50 is gone
    assert "guard at step" in (run_dir / "neurogen-tui.log").read_text()


@pytest.mark.slow
def test_a_change_lands_on_both_ranks_of_a_two_rank_run_at_the_same_step(tmp_path, capsys):
    """torchrun, 2 ranks on gloo: rank 0 takes `ctl set`, every rank applies it at one boundary
    (the ranks' learning rates are compared at every step; a difference is an error in the log)."""
    from test_distributed import _wait_for_steps, launch

    run_dir = tmp_path / "run"
    metrics = run_dir / "training_viz" / "metrics.jsonl"
    proc = launch(run_dir, "--max-chunks", "100000", "--warmup-steps", "2")
    try:
        _wait_for_steps(metrics, 4)
        code, out, err = ctl(capsys, run_dir, "set", "lr=3e-3", "lr_scale=0.5")
        assert code == 0, err
        changed = int(out.split("set at step ")[1].split(":")[0])
        _wait_for_steps(metrics, changed + 4)
    finally:
        ctl(capsys, run_dir, "stop")
        out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    after = [r for r in rows if r["step"] > changed]
    assert len(after) >= 3 and all(r["learning_rate"] == pytest.approx(0.5 * 3e-3) for r in after)
    log = (run_dir / "neurogen-tui.log").read_text()
    assert "set at step" in log and "different learning rates" not in log


# ---- the timeline ---------------------------------------------------------------------------------------
def test_the_digest_says_what_happened_since_the_last_viewer_left():
    t = 1000.0
    events = [{"kind": "started", "step": 0, "time": t, "total_steps": 1000},
              {"kind": "viewer attached", "step": 5, "time": t + 1},
              {"kind": "viewer detached", "step": 9, "time": t + 2},
              {"kind": "checkpoint", "step": 10, "time": t + 3, "path": "/x/checkpoint_step_000010.pt"},
              {"kind": "eval", "step": 12, "time": t + 4, "val_loss": 3.5},
              {"kind": "setting", "step": 13, "time": t + 5, "changes": {"lr": [1e-3, 50.0]}, "source": "ctl"},
              {"kind": "guard", "step": 15, "time": t + 6, "detail": "loss 9e3 against a recent 2.8",
               "action": "rollback", "outcome": "rolled back to step 13's weights"},
              {"kind": "eval", "step": 20, "time": t + 7, "val_loss": 3.1}]
    metrics = [{"step": 10 + i, "timestamp": t + 2 + (i if i < 20 else 20 + (i - 20) * 2.5),
                "tokens_per_sec": 10_000.0 if i < 20 else 4_000.0} for i in range(40)]
    lines = digest(events, metrics)
    text = "\n".join(lines)
    assert lines[0].startswith("since the last viewer left: steps 10 to 20")
    assert "1 checkpoint(s), the last at step 10" in text
    assert "2 evaluation(s): val loss 3.5000 -> 3.1000 (down)" in text
    assert "step 13: lr 0.001 -> 50 (ctl)" in text and "guard: loss 9e3" in text
    assert "throughput dropped: 10.0k -> 4.0k tokens/s" in text
    assert "ETA 16:27 -> 39:37" in text  # 1 s a step, then 2.5 s: the time left grew
    assert digest(events[:3]) == []  # nothing since the viewer left
    assert describe({"kind": "checkpoint", "step": 4, "path": "/a/b/c.pt"}) == "step 4: checkpoint c.pt"


def test_attach_opens_with_a_digest_prompts_go_through_attach_and_ctl_and_ls_shows_the_last_event(tmp_path, capsys):
    from neurogen_tui.cli.commands import attach_source
    from neurogen_tui.control.protocol import ControlClient

    cfg = tiny_cfg(tmp_path)
    with LiveRun(cfg) as run:
        viewer = ControlClient.for_run(cfg.run_dir).subscribe()
        next(viewer)  # a viewer follows the run ...
        viewer.close()  # ... and leaves
        wait_until(lambda: any(e["kind"] == "viewer detached" for e in read_events(cfg.viz_dir)), "the viewer to leave")
        assert ctl(capsys, cfg.run_dir, "set", "lr=7e-4")[0] == 0
        assert ctl(capsys, cfg.run_dir, "checkpoint")[0] == 0
        source = attach_source(Path(cfg.run_dir), poll=0.1)
        said = [e.text for e in source.drain() if isinstance(e, LogMessage)]
        assert main(["ls", str(tmp_path)]) == 0
        table = capsys.readouterr().out
        # a prompt through attach (the app's g over the control channel), then through ctl
        source.ready.wait(10)
        assert "prompt sent" in source.prompt("temperature=0.9 The farm")
        answers: list[str] = []
        wait_until(lambda: answers.extend(e.text for e in source.drain() if isinstance(e, LogMessage)) or
                   any(s.startswith("answered at step") for s in answers), "the answer through attach")
        source.close()
        code, out, err = ctl(capsys, cfg.run_dir, "prompt", "tokens=5", "Once", "upon")
        assert code == 0, err
        assert out.startswith("neurogen-tui: answered at step ") and "Once upon →" in out
        code, _, err = ctl(capsys, cfg.run_dir, "prompt", "top_k=0", "x")
        assert code == 2 and "top_k must be a whole number from 1 to" in err
        step = run.trainer.step
        wait_until(lambda: run.trainer.step > step + 2, "training to go on")
    assert [r["input"] for r in prompt_rows(cfg)] == ["The farm", "Once upon"]
    assert said[0].startswith("since the last viewer left: steps ")
    assert any("1 checkpoint(s)" in s for s in said) and any("lr 0.001 -> 0.0007 (ctl)" in s for s in said)
    assert "LAST EVENT" in table.splitlines()[0] and "checkpoint checkpoint_step_" in table


# ---- talk to the model ---------------------------------------------------------------------------------
def test_prompt_lines_take_options_first():
    from neurogen_tui.train.config import ConfigError
    from neurogen_tui.train.prompts import prompt_line

    assert prompt_line("Once upon a time") == ("Once upon a time", {"temperature": 0.0, "top_k": None, "tokens": 64})
    assert prompt_line("temperature=0.8 top_k=40 tokens=20 x=1 y", 64) == (
        "x=1 y", {"temperature": 0.8, "top_k": 40, "tokens": 20})
    assert prompt_line("t=0.5 k=3 n=7 hello")[1] == {"temperature": 0.5, "top_k": 3, "tokens": 7}
    for bad, says in (("", "no text"), ("temperature=hot hi", "must be a number"), ("top_k=0 hi", "from 1 to"),
                      ("temperature=0.8", "no text")):
        with pytest.raises(ConfigError, match=says):
            prompt_line(bad)


def prompt_rows(cfg) -> list[dict]:
    path = Path(cfg.run_dir) / "training_viz" / "samples.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "prompt"]


def test_pinned_prompts_are_answered_every_n_steps(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The farm\n\nIn the morning\n")
    cfg = tiny_cfg(tmp_path, prompt=("Once upon a time",), prompts=str(prompts), prompt_interval=10, prompt_tokens=8)
    with LiveRun(cfg, control=False) as run:
        wait_until(lambda: run.trainer.step >= 22, "22 steps")
    rows = prompt_rows(cfg)
    by_step = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r["input"])
    assert [s for s in sorted(by_step) if s <= 20] == [10, 20]
    assert all(by_step[s] == ["Once upon a time", "The farm", "In the morning"] for s in (10, 20))
    assert all(r["target"] == "" and r["accuracy"] is None and r["output"] for r in rows)


def test_a_prompt_from_the_app_is_answered_at_a_step_boundary_and_training_goes_on(tmp_path):
    import asyncio

    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.dialogs import PromptScreen, SettingsScreen
    from neurogen_tui.tui.source import InProcessSource
    cfg = tiny_cfg(tmp_path, prompt=("The farm",), prompt_interval=5)
    parts = LiveRun(cfg, control=False).parts  # no dashboard process: the app copes without one
    app = MonitorApp(InProcessSource(parts))

    async def until(pilot, condition, what):
        deadline = time.monotonic() + HANG_GUARD
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await pilot.pause(0.05)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: parts.trainer.step >= 1, "the first step")
            await pilot.press("g")
            assert isinstance(app.screen, PromptScreen)
            await pilot.press("q")  # a letter of the prompt here, not stop (each key waits on a busy app: one)
            field = app.screen.query_one("#prompt-input")
            assert field.value == "q" and not parts.trainer.stop_requested
            field.value = "quiet farm"
            await pilot.press("enter")
            asked_at = parts.trainer.step
            await until(pilot, lambda: any(s.input == "quiet farm" for s in app.run_state.answers), "the answer")
            await until(pilot, lambda: parts.trainer.step > asked_at + 3, "training to go on")
            # e: the settings dialog sends what changed; a paused run takes it too (and keys are quick)
            parts.trainer.pause()
            await until(pilot, lambda: parts.trainer.state == "paused", "the pause")
            await pilot.press("e")
            assert isinstance(app.screen, SettingsScreen)
            field = app.screen.query_one("#set-eval_interval")
            assert field.value == "10000"
            field.value = "9"
            field.focus()
            await pilot.press("enter")
            await until(pilot, lambda: parts.trainer.cfg.eval_interval == 9, "the setting")
            parts.trainer.resume()
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None, "exit")

    asyncio.run(scenario())
    assert app.state != "failed"
    answered = [r for r in prompt_rows(cfg) if r["input"] == "quiet farm"]
    assert len(answered) == 1 and answered[0]["output"]
    assert any("set at step" in t for t in app.monitor.log_pane.texts)
    assert any(t.endswith(f"answer @ step {answered[0]['step']}: quiet farm → {answered[0]['output'][:80]}")
               for t in app.monitor.log_pane.texts)


def test_enter_on_a_prompts_answer_shows_its_history_of_answers():
    import asyncio

    from neurogen_tui.core.events import StateChanged, TextSample
    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.source import Capabilities, RunSource
    from neurogen_tui.tui.widgets import SampleScreen, SamplesTable

    class Answers(RunSource):
        caps = Capabilities(control=True, owns=True)

        def produce(self) -> None:
            pass

    source = Answers()
    source.put(StateChanged("running"))
    for step, answer in ((100, "the the the"), (200, "the farm was"), (300, "the farm was quiet")):
        source.put(TextSample(step, "The farm", "", answer, None, "prompt"))
        source.put(TextSample(step, "a block of text", "its continuation", "its contin", 0.5))
    app = MonitorApp(source)

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.monitor.query_one(SamplesTable)
            await wait_for_rows(pilot, table)
            table.focus()
            table.move_cursor(row=0)  # answers to prompts on top, newest first: the step-300 one
            await pilot.press("enter")
            screen = app.screen
            shown = str(screen.query_one("#sample-text").content)
            await pilot.press("escape", "q")
        return screen, shown, [str(table.get_row_at(i)[2]) for i in range(table.row_count)]

    async def wait_for_rows(pilot, table):
        deadline = time.monotonic() + HANG_GUARD
        while table.row_count < 6:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)

    screen, shown, targets = asyncio.run(scenario())
    assert isinstance(screen, SampleScreen) and [e.step for e in screen.earlier] == [100, 200]
    assert "prompt answered at step 300" in shown and "earlier answers" in shown
    assert shown.index("step 200: the farm was") < shown.index("step 100: the the the")  # newest first
    assert targets[:3] == ["(prompt)"] * 3 and "(prompt)" not in targets[3:]  # answers on top, no target


def test_values_a_run_cannot_survive_are_refused(tmp_path):
    from neurogen_tui.train.config import ConfigError
    from neurogen_tui.train.prompts import prompt_line

    for text in ("nan", "inf", "-inf"):
        with pytest.raises(ConfigError, match="must be a positive number"):
            live_changes(TrainingConfig(), {"lr": text})
        with pytest.raises(ConfigError, match="must not be negative"):
            live_changes(TrainingConfig(), {"weight_decay": text})
    for bad in ("temperature=nan hi", "temperature=inf hi", "temperature=1e-45 hi"):
        with pytest.raises(ConfigError, match="temperature must be 0 .greedy. or 0.001 to 1e6"):
            prompt_line(bad)


def test_a_hand_edited_timeline_is_described_not_a_traceback():
    odd = [{"kind": "setting", "step": 3, "changes": "oops", "time": "later"}, {"kind": "eval", "val_loss": True}]
    assert describe(odd[0]) == "step 3: setting"
    assert digest(odd)[0].startswith("since the start")
