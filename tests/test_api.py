"""The logging API (#28): any training loop writes a run our commands open, and takes steering.
Real loops, in real processes: a plain PyTorch loop written here, Hugging Face's Trainer, Lightning."""
from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from neurogen_tui.run.metricsfile import read_metrics
from neurogen_tui.run.timeline import read_events

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HANG_GUARD = 200  # seconds: only so a broken build fails instead of hanging; never a speed check

# A real PyTorch loop that is not our trainer: a character bigram-ish MLP on the bundled sample's text.
LOOP = textwrap.dedent("""
    import sys, torch, zstandard, json
    import neurogen_tui as ngt
    run_dir, steps = sys.argv[1], int(sys.argv[2])
    raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[3], "rb")).read()
    text = " ".join(json.loads(line)["text"] for line in raw.decode().splitlines()[:200]).encode()
    data = torch.tensor(list(text), dtype=torch.long)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(256, 32), torch.nn.Flatten(), torch.nn.Linear(4 * 32, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = ngt.init(run_dir=run_dir, config={"lr": 1e-2, "context": 4}, total_steps=steps)
    run.steer_optimizer(opt)
    run.on_checkpoint(lambda: torch.save(model.state_dict(), run_dir + "/model.pt") or run_dir + "/model.pt")
    for step in range(steps):
        i = torch.randint(0, len(data) - 5, (64,))
        x, y = torch.stack([data[j:j + 4] for j in i]), data[i + 4]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        run.log({"train/loss": loss.item(), "lr": opt.param_groups[0]["lr"]})
        if run.should_stop:
            break
    run.finish()
""")


def sample_file() -> str:
    return str(ROOT / "neurogen_tui" / "assets" / "sample_train.jsonl.zst")


def wait_until(condition, what: str, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def rows(run: Path) -> list[dict]:
    path = run / "training_viz" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ctl(run: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurogen_tui", "ctl", str(run), *args], capture_output=True,
                          text=True, env=ENV, timeout=HANG_GUARD)


def test_importing_the_package_pulls_in_nothing_heavy():
    probe = "import sys, neurogen_tui\nprint(sorted(m for m in ('torch', 'textual', 'matplotlib', 'datasets', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_plain_pytorch_loop_is_paused_checkpointed_given_a_new_lr_and_stopped_from_ctl(tmp_path):
    script, run = tmp_path / "loop.py", tmp_path / "run"
    script.write_text(LOOP)
    proc = subprocess.Popen([sys.executable, str(script), str(run), "1000000", sample_file()], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(rows(run)) >= 20 or proc.poll() is not None, "20 steps")
        paused = ctl(run, "pause")
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        time.sleep(0.6)  # what was queued before the pause is written within a quarter second
        held = len(rows(run))
        time.sleep(1.0)
        assert len(rows(run)) == held  # log() blocks while paused
        saved = ctl(run, "checkpoint")  # a paused loop still takes it
        assert saved.returncode == 0 and (run / "model.pt").exists(), saved.stderr
        said = ctl(run, "set", "lr=0.003")
        assert said.returncode == 0 and "lr 0.01 -> 0.003" in said.stdout, said.stderr
        refused = ctl(run, "set", "warmup=10")
        assert refused.returncode == 2 and "it takes: lr, weight_decay" in refused.stderr
        assert ctl(run, "resume").returncode == 0
        wait_until(lambda: any(r["lr"] == 0.003 for r in rows(run)), "the new learning rate in the metrics")
        stopped = ctl(run, "stop")
        assert stopped.returncode == 0 and "should_stop" in stopped.stdout
        proc.wait(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "stopped" and info["writer"] == "logging API"
    kinds = [e["kind"] for e in read_events(run / "training_viz")]
    assert {"paused", "unpaused", "checkpoint", "setting"} <= set(kinds)
    assert json.loads((run / "config.json").read_text())["lr"] == 0.003  # kept current with the change
    table = read_metrics(run / "training_viz")
    assert table.extra == ("train/loss", "lr")
    losses = table.columns["train/loss"]
    assert np.isfinite(losses).all() and losses[-20:].mean() < losses[:20].mean()  # it really trains


def test_watch_shows_a_logging_api_runs_loss_on_the_loss_chart_and_says_what_it_lacks(tmp_path):
    import neurogen_tui as ngt
    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.charts import ChartPanel
    from neurogen_tui.tui.rundir import RunDirSource

    run = ngt.init(run_dir=tmp_path / "run", config={"lr": 1e-3})
    for step in range(50):
        run.log({"train/loss": 3.0 - step / 50, "val/loss": 3.1 - step / 60 if step % 10 == 0 else math.nan})
    run.finish()
    app = MonitorApp(RunDirSource(tmp_path / "run", poll=0.1))

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            while app.step < 49 or app.state != "finished":
                await pilot.pause(0.05)
            await pilot.pause(1.0)
            captions = {p.id: str(p.query_one("ChartCaption").text) for p in app.query(ChartPanel)}
            assert captions["chart-loss"].startswith("loss 2.0200")
            assert "not logged by this run" in captions["chart-accuracy"]
            await pilot.press("q")
            while app.return_code is None:
                await pilot.pause(0.05)

    asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))
    assert app.run_state.history.column("val_loss")[0] == pytest.approx(3.1)  # val/loss: the validation points


def test_values_are_read_as_numbers_and_log_never_raises_into_the_loop(tmp_path, capsys):
    import torch

    import neurogen_tui as ngt

    run = ngt.init(run_dir=tmp_path / "run")
    run.log({"loss": torch.tensor(2.5), "acc": np.float32(0.25), "nan": math.nan, "inf": math.inf,
             "nested": {"deep": {"x": 1}}, "text": "nope", "vector": torch.ones(3), "step": 7})
    run.log({"text": "again"})  # one warning a key
    run.log(None)  # not a dict: a warning, not an exception
    run.log({"loss": 2.0}, step="x")
    run.finish()
    row = rows(tmp_path / "run")[0]
    assert row["loss"] == 2.5 and row["acc"] == pytest.approx(0.25) and row["nan"] is None and row["inf"] is None
    assert row["nested/deep/x"] == 1 and row["step_"] == 7 and "text" not in row and "vector" not in row
    err = capsys.readouterr().err
    assert err.count("'text' is a str") == 1 and "'vector' is a Tensor" in err and "log() could not take" in err


def test_hostile_names_and_text_are_kept_exactly_on_disk_and_shown_inert(tmp_path, capsys):
    import neurogen_tui as ngt
    from neurogen_tui.run.reader import load_samples

    evil = "\x1b]0;pwned\x07\x1b[2J[bold red]x[/]"
    long_key = "k" * 10_000
    run = ngt.init(run_dir=tmp_path / "run", name="n" + evil)
    run.log({evil: 1.0, long_key: 2.0})
    run.log_text(evil, evil + " out")
    run.finish()
    table = read_metrics(tmp_path / "run" / "training_viz")
    assert table.extra == (evil, long_key) and table.columns[long_key][0] == 2.0
    [sample] = load_samples(tmp_path / "run" / "training_viz")
    assert sample["input"] == evil  # on disk exactly
    assert ngt.__name__ and subprocess.run([sys.executable, "-m", "neurogen_tui", "ls", str(tmp_path)],
                                           capture_output=True, text=True, env=ENV).stdout.count("\x1b") == 0


def test_a_crash_marks_the_run_failed_with_its_traceback(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent("""
        import sys, neurogen_tui as ngt
        run = ngt.init(run_dir=sys.argv[1])
        for step in range(5):
            run.log({"loss": 1.0})
        raise ValueError("boom at step 5")
    """))
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                         env=ENV, timeout=HANG_GUARD)
    assert out.returncode == 1 and "ValueError: boom at step 5" in out.stderr  # the loop's own traceback, as ever
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["state"] == "failed" and info["error"] == "ValueError: boom at step 5"
    assert len(rows(tmp_path / "run")) == 5
    assert "Traceback" in (tmp_path / "run" / "neurogen-tui.log").read_text()


def test_sigkill_loses_at_most_a_second_and_leaves_every_file_readable_and_the_run_stale(tmp_path):
    script = tmp_path / "fast.py"
    script.write_text(textwrap.dedent("""
        import sys, time, neurogen_tui as ngt
        run = ngt.init(run_dir=sys.argv[1])
        step = 0
        while True:
            run.log({"loss": 1.0 / (1 + step), "lr": 1e-3}, step=step)
            if step % 200 == 0:
                print(step, flush=True)
            step += 1
            time.sleep(0.0005)
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                            env=ENV)
    printed = []
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline and (not printed or int(printed[-1]) < 2000):
        printed.append(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    last_printed = int(printed[-1])
    written = rows(tmp_path / "run")
    steps = [r["step"] for r in written]
    assert steps == list(range(len(steps)))  # every line whole, none lost in between
    per_second = 2000  # at most ~2000 steps a second here (0.5 ms sleeps): a second of them, at most, is lost
    assert last_printed - steps[-1] <= per_second, (last_printed, steps[-1])
    table = read_metrics(tmp_path / "run" / "training_viz")
    assert len(table) == len(steps)
    out = subprocess.run([sys.executable, "-m", "neurogen_tui", "ls", str(tmp_path)], capture_output=True,
                         text=True, env=ENV)
    assert " stale " in out.stdout
    # and `watch` says so too (#30): the header's state, and a line in the log
    import asyncio

    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.rundir import RunDirSource

    async def watch():
        app = MonitorApp(RunDirSource(tmp_path / "run", poll=0.1))
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(200):
                await pilot.pause(0.05)
                if app.run_state.state == "stale":
                    break
            assert app.run_state.state == "stale"
            assert app.run_state.header().state == "stale"

    asyncio.run(watch())


@pytest.mark.slow
def test_a_100k_step_loop_loses_nothing_after_finish(tmp_path):
    import neurogen_tui as ngt

    run = ngt.init(run_dir=tmp_path / "run")
    for step in range(100_000):
        run.log({"loss": 1.0, "acc": 0.5, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6})
    run.finish()
    table = read_metrics(tmp_path / "run" / "training_viz")
    assert len(table) == 100_000 and table.columns["step"][-1] == 99_999


def test_import_neurogen_tui_as_wandb_works_for_the_common_subset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import neurogen_tui as wandb

    wandb.init(project="proj", config={"lr": 3e-4, "model": {"width": 64}})
    assert wandb.config.lr == 3e-4 and wandb.config["model"]["width"] == 64
    wandb.config.update({"seed": 3})
    for step in range(3):
        wandb.log({"loss": 1.0 / (step + 1)})
    wandb.summary["best"] = 0.33
    with pytest.raises(AttributeError, match="as a drop-in for wandb it supports init, log, finish"):
        wandb.Table  # noqa: B018
    wandb.finish()
    [made] = (tmp_path / "runs" / "proj").iterdir()
    assert json.loads((made / "config.json").read_text()) == {"lr": 3e-4, "model.width": 64, "seed": 3}
    assert [r["step"] for r in rows(made)] == [0, 1, 2]
    assert json.loads((made / "run.json").read_text())["summary"] == {"best": 0.33}


def test_only_rank_zero_writes_under_torchrun(tmp_path, monkeypatch):
    import neurogen_tui as ngt

    monkeypatch.setenv("RANK", "1")
    run = ngt.init(run_dir=tmp_path / "run")
    run.log({"loss": 1.0})
    run.finish()
    assert not (tmp_path / "run").exists() and not run.should_stop


def test_a_run_that_declares_no_checkpoint_refuses_one_and_says_what_it_lacks(tmp_path):
    import neurogen_tui as ngt

    run = ngt.init(run_dir=tmp_path / "run")
    run.log({"loss": 1.0})
    try:
        said = ctl(tmp_path / "run", "checkpoint")
        assert said.returncode == 1 and "registered no run.on_checkpoint" in said.stderr
        status = json.loads(ctl(tmp_path / "run", "status", "--json").stdout)
        assert status["supports"] == ["pause", "stop"]
    finally:
        run.finish()


def test_a_hugging_face_trainer_run_shows_in_watch_and_stops_on_ctl_with_a_saved_checkpoint(tmp_path):
    pytest.importorskip("transformers")
    script = tmp_path / "hf.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
        from neurogen_tui.integrations.hf import NeurogenCallback
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=256, n_positions=64,
                                               bos_token_id=0, eos_token_id=0))
        class Bytes(torch.utils.data.Dataset):
            def __len__(self): return 100000
            def __getitem__(self, i):
                ids = torch.tensor([(i * 7 + k * 13) % 256 for k in range(32)])
                return {"input_ids": ids, "labels": ids}
        args = TrainingArguments(output_dir=sys.argv[1] + "/hf", max_steps=100000, logging_steps=2,
                                 per_device_train_batch_size=4, report_to=[], save_strategy="no", use_cpu=True,
                                 disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=Bytes(),
                callbacks=[NeurogenCallback(run_dir=sys.argv[1] + "/run")]).train()
    """))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(rows(run)) >= 3 or proc.poll() is not None, "the Trainer's first logs")
        assert proc.poll() is None, proc.stderr.read()
        said = ctl(run, "stop")
        assert said.returncode == 0, said.stderr
        proc.wait(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert list((tmp_path / "hf").glob("checkpoint-*/model.safetensors"))  # saved on the way out
    table = read_metrics(run / "training_viz")
    assert {"loss", "learning_rate", "grad_norm"} <= set(table.columns) and np.isfinite(table.columns["loss"]).any()
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "stopped" and json.loads((run / "config.json").read_text())["model.n_layer"] == 2


@pytest.mark.slow  # Lightning's import alone is seconds; the HF Trainer's test covers an adapter in the default suite
def test_a_lightning_run_logs_through_the_logger_and_takes_a_checkpoint_and_a_stop_from_ctl(tmp_path):
    pytest.importorskip("lightning")
    script = tmp_path / "lit.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, lightning as L
        from neurogen_tui.integrations.lightning import NeurogenCallback, NeurogenLogger
        class Model(L.LightningModule):
            def __init__(self):
                super().__init__(); self.net = torch.nn.Linear(8, 1); self.save_hyperparameters({"width": 8})
            def training_step(self, batch, i):
                x, y = batch; loss = torch.nn.functional.mse_loss(self.net(x), y)
                self.log("train_loss", loss); return loss
            def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=0.05)
        torch.manual_seed(0)
        x = torch.randn(4096, 8); data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
        logger = NeurogenLogger(run_dir=sys.argv[1])
        trainer = L.Trainer(max_steps=1000000, logger=logger, callbacks=[NeurogenCallback(logger)], log_every_n_steps=1,
                            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                            accelerator="cpu")
        trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=32))
    """))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(rows(run)) >= 5 or proc.poll() is not None, "Lightning's first logs")
        assert proc.poll() is None, proc.stderr.read()
        saved = ctl(run, "checkpoint")
        assert saved.returncode == 0 and ".ckpt" in saved.stdout, saved.stderr
        said = ctl(run, "set", "lr=0.01")
        assert said.returncode == 0, said.stderr
        assert ctl(run, "stop").returncode == 0
        proc.wait(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert list((run / "checkpoints").glob("step=*.ckpt"))
    table = read_metrics(run / "training_viz")
    assert "train_loss" in table.extra and np.isfinite(table.columns["train_loss"]).all()
    assert json.loads((run / "config.json").read_text())["width"] == 8
    assert json.loads((run / "run.json").read_text())["state"] == "stopped"
