"""A real tiny model on the bundled sample: --test end to end, resume equivalence, control, schedule."""
import json
import math

import pytest
import torch

from neurogen_tui.train.checkpoint import list_checkpoints, load_checkpoint
from neurogen_tui.cli.entry import main
from neurogen_tui.core.events import EventBus, RunFinished, TextSample, TrainingMetrics
from neurogen_tui.run.files import read_jsonl
from neurogen_tui.train.schedule import lr_at
from neurogen_tui.train.trainer import Trainer

SEED_FIELDS = {"step", "loss", "accuracy", "tokens_per_sec", "gpu_memory_mb", "learning_rate", "timestamp"}


def test_test_mode_end_to_end_writes_metrics_and_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run)]) == 0
    rows, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert SEED_FIELDS | {"grad_norm"} <= set(row)
        assert 0.0 <= row["accuracy"] <= 1.0 and row["tokens_per_sec"] > 0
    assert all("val_loss" in r for r in rows if r["step"] % 2 == 0)  # eval every 2 steps in --test
    assert rows[-1]["loss"] < rows[0]["loss"]  # it really learns, even in 5 steps
    samples, _ = read_jsonl(run / "training_viz" / "samples.jsonl")
    assert [s["step"] for s in samples] == [1, 2, 3, 4, 5]  # --test samples every step
    assert {"input", "target", "output", "accuracy"} <= set(samples[0])
    ckpts = list_checkpoints(run / "checkpoints")
    assert [c.name for c in ckpts] == ["checkpoint_step_000005.pt"]
    state = load_checkpoint(ckpts[0])
    assert state["step"] == 5 and state["tokens_seen"] == 5 * 1024
    assert {"model", "optimizer", "scheduler", "data", "rng", "config", "tokenizer"} <= set(state)
    assert (run / "neurogen-tui.log").exists()
    # the seed's --test: a dashboard every 2 steps, each one drawn (none dropped while one draws)
    pngs = sorted(p.name for p in (run / "training_viz").glob("training_step_*.png"))
    assert pngs == ["training_step_000002.png", "training_step_000004.png", "training_step_000005.png"]
    assert (run / "training_viz" / "metrics.arrows").exists()


def run_trainer(cfg, resume=None, stop_at=None):
    bus = EventBus()
    losses = {}
    trainer = Trainer(cfg, bus, resume)

    def on_event(ev):
        if isinstance(ev, TrainingMetrics):
            losses[ev.step] = ev.loss
            if stop_at is not None and ev.step == stop_at:
                trainer.request_stop()

    bus.subscribe(on_event)
    result = trainer.run()
    assert isinstance(result, RunFinished), result
    return trainer, losses, result


def test_resume_continues_step_count_and_equals_uninterrupted_training(tiny_cfg, tmp_path):
    torch.set_num_threads(1)
    tiny_cfg.max_chunks = 8
    tiny_cfg.checkpoint_interval = 1000
    straight_cfg = type(tiny_cfg)(**{**tiny_cfg.to_dict(), "run_dir": str(tmp_path / "straight")})
    straight, straight_losses, _ = run_trainer(straight_cfg)

    first, first_losses, result = run_trainer(tiny_cfg, stop_at=4)
    assert result.reason == "stopped" and result.step == 4
    path = result.checkpoint
    assert path.endswith("checkpoint_step_000004.pt")
    shuffled = load_checkpoint(path)["data"]["shuffle"]  # the default order: shuffled, mid-window
    assert shuffled["tokens"] == tiny_cfg.shuffle_buffer and shuffled["taken"] > 0
    second, second_losses, result2 = run_trainer(tiny_cfg, resume=(path, load_checkpoint(path)))
    assert result2.step == 8 and sorted(second_losses) == [5, 6, 7, 8]
    for step in range(1, 9):
        got = first_losses.get(step, second_losses.get(step))
        assert got == pytest.approx(straight_losses[step], rel=1e-5, abs=1e-6), step
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert second.tokens_seen == straight.tokens_seen


class _LegacyTrainer(Trainer):
    """The trainer as it was before `model_config` was saved: LayerNorms with biases."""

    def setup(self):
        from neurogen_tui.train import trainer as trainer_mod

        real = trainer_mod.GPTConfig
        trainer_mod.GPTConfig = lambda **kw: real(**{**kw, "bias": True})
        try:
            super().setup()
        finally:
            trainer_mod.GPTConfig = real
        meta = self.checkpointer.meta
        self.checkpointer.meta = lambda: {k: v for k, v in meta().items() if k != "model_config"}


def test_model_has_no_layernorm_biases_and_a_checkpoint_from_before_resumes_with_them(tiny_cfg):
    tiny_cfg.max_chunks = 4
    trainer, _, result = run_trainer(tiny_cfg)
    assert not any(name.endswith(("ln1.bias", "ln_f.bias")) for name in trainer.model.state_dict())
    assert load_checkpoint(result.checkpoint)["model_config"]["bias"] is False

    legacy_cfg = type(tiny_cfg)(**{**tiny_cfg.to_dict(), "run_dir": tiny_cfg.run_dir + "-legacy", "max_chunks": 2})
    bus = EventBus()
    legacy = _LegacyTrainer(legacy_cfg, bus)
    old = legacy.run()
    state = load_checkpoint(old.checkpoint)
    assert "model_config" not in state and "ln_f.bias" in state["model"]
    legacy_cfg.max_chunks = 4
    resumed, losses, result = run_trainer(legacy_cfg, resume=(old.checkpoint, state))
    assert sorted(losses) == [3, 4] and all(math.isfinite(v) for v in losses.values())
    assert "ln_f.bias" in dict(resumed.model.named_parameters())  # built as the checkpoint was
    assert load_checkpoint(result.checkpoint)["model_config"]["bias"] is True  # it stays what it was


def test_resume_via_cli_appends_metrics_without_duplicates(tmp_path):
    run = str(tmp_path / "run")
    assert main(["--test", "--headless", "--run-dir", run]) == 0
    assert main(["--headless", "--run-dir", run, "--resume", "latest", "--max-chunks", "8"]) == 0
    rows, _ = read_jsonl(tmp_path / "run" / "training_viz" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_pause_blocks_steps_and_stop_ends_at_a_step_boundary(tiny_cfg):
    import threading
    import time

    tiny_cfg.max_chunks = 10_000
    trainer = Trainer(tiny_cfg)
    steps = []
    trainer.bus.subscribe(lambda ev: steps.append(ev.step) if isinstance(ev, TrainingMetrics) else None)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    while len(steps) < 3:
        time.sleep(0.01)
    trainer.pause()
    while trainer.state != "paused":
        time.sleep(0.01)
    frozen = len(steps)
    time.sleep(0.3)
    assert len(steps) == frozen  # paused: no step advances
    trainer.request_checkpoint()
    while trainer.last_checkpoint is None:
        time.sleep(0.01)
    assert trainer.last_checkpoint.endswith(f"{frozen:06d}.pt")  # written while paused
    trainer.resume()
    while len(steps) < frozen + 3:
        time.sleep(0.01)
    trainer.request_stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert trainer.state == "finished"
    assert steps == list(range(1, len(steps) + 1))


def test_text_sample_is_the_models_greedy_continuation(tiny_cfg):
    tiny_cfg.max_chunks = 1
    trainer = Trainer(tiny_cfg)
    samples = []
    trainer.bus.subscribe(lambda ev: samples.append(ev) if isinstance(ev, TextSample) else None)
    trainer.run()
    s = samples[0]
    tok = trainer.tokenizer
    prompt = torch.tensor([list(s.input.encode())])
    out = trainer.model.generate(prompt, len(s.target.encode()))[0, prompt.shape[1]:]
    assert tok.decode(out.tolist()) == s.output
    assert len(s.target.encode()) == min(tiny_cfg.sample_tokens, tiny_cfg.seq_len // 2)


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    lrs = [lr_at(s, 1e-3, 1e-4, 10, 100) for s in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1e-3
    assert max(lrs) == pytest.approx(1e-3, rel=0.1)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100]))  # monotone cosine decay
    assert lrs[99] == pytest.approx(1e-4, rel=0.01) and lrs[110] == 1e-4
    assert lr_at(500, 1e-3, 1e-4, 10, None) == 1e-3  # unknown length: constant after warmup


def test_non_finite_loss_skips_the_update_and_stops_after_max_bad_steps(tiny_cfg):
    tiny_cfg.max_chunks = 50
    tiny_cfg.max_bad_steps = 3
    trainer = Trainer(tiny_cfg)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.wte.weight[0, 0] = math.inf  # poison: every forward is now non-finite
    metrics = trainer.train_step()
    assert metrics.skipped and trainer.bad_steps == 1
    assert torch.equal(trainer.model.blocks[0].mlp.fc.weight, before["blocks.0.mlp.fc.weight"])  # no update
    result_reason = trainer._loop()
    assert result_reason == "too many bad steps" and trainer.bad_steps == 3


def test_metrics_jsonl_is_strict_json(tmp_path):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run)]) == 0
    for line in (run / "training_viz" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))

