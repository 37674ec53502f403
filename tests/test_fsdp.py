"""`--strategy fsdp`: FSDP2 fully_shard on CPU/gloo (torch supports it there), checkpoints written
with torch.distributed.checkpoint as a directory, resumed exactly, and refused when unsafe."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurogen_tui.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, prune_checkpoints, resolve_resume
from neurogen_tui.cli.entry import main

STEPS = 4


def launch(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEUROGEN_TUI_DIST_TIMEOUT": "60"}
    proc = subprocess.run([sys.executable, "-m", "neurogen_tui", "--test", "--nproc-per-node", "2", "--headless",
                           "--strategy", "fsdp", "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "training_viz" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def weights(ckpt_dir: Path, tmp: Path) -> dict:
    """A DCP directory as one plain state dict, with torch's own converter (what a user runs to
    take a sharded checkpoint elsewhere)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{ckpt_dir.parent.parent.name}-{ckpt_dir.name}.pt"
    dcp_to_torch_save(str(ckpt_dir), str(out))
    return torch.load(out, weights_only=True)["model"]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """4 steps of a 2-rank FSDP job, a sharded checkpoint every 2 steps."""
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    proc = launch(run_dir, "--max-chunks", str(STEPS), "--checkpoint-interval", "2")
    return run_dir, proc


def test_fsdp_writes_sharded_checkpoints_from_every_rank_and_files_from_rank_zero(fsdp_run):
    run_dir, proc = fsdp_run
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in ckpts] == ["checkpoint_step_000002.dcp", "checkpoint_step_000004.dcp"]
    for ckpt in ckpts:  # one shard file per rank, DCP's metadata, our meta.pt; no leftover .partial
        assert sorted(p.name for p in ckpt.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    assert not list((run_dir / "checkpoints").glob("*.partial"))
    meta = load_checkpoint(ckpts[-1])
    assert meta["step"] == STEPS and meta["world_size"] == 2 and meta["model"] is None
    assert meta["sharded_dir"] == str(ckpts[-1]) and len(meta["data_ranks"]) == 2
    assert meta["config"]["strategy"] == "fsdp"
    assert sorted(losses(run_dir)) == [1, 2, 3, 4]  # one writer
    assert "FSDP2: 3 shard groups" in (run_dir / "neurogen-tui.log").read_text()
    assert "[rank 1]" not in proc.stderr and "Traceback" not in proc.stderr
    samples = [json.loads(line) for line in (run_dir / "training_viz" / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[0]["step"] == 1  # greedy sampling runs on the sharded model


@pytest.mark.slow
def test_fsdp_trains_like_ddp_on_the_same_global_batch(fsdp_run, tmp_path):
    """Sharding changes where parameters live, not the arithmetic: the same 2-rank job with
    --strategy ddp gives the same per-step loss and the same weights, to float tolerance."""
    run_dir, _ = fsdp_run
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "NEUROGEN_TUI_DIST_TIMEOUT": "60"}
    proc = subprocess.run([sys.executable, "-m", "neurogen_tui", "--test", "--nproc-per-node", "2", "--headless",
                           "--max-chunks", str(STEPS), "--run-dir", str(ddp_dir)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    ddp, fsdp = losses(ddp_dir), losses(run_dir)
    assert list(fsdp) == list(ddp) == [1, 2, 3, 4]
    assert list(fsdp.values()) == pytest.approx(list(ddp.values()), abs=1e-5)
    ddp_model = load_checkpoint(ddp_dir / "checkpoints" / "checkpoint_step_000004.pt")["model"]
    fsdp_model = weights(run_dir / "checkpoints" / "checkpoint_step_000004.dcp", tmp_path)
    assert set(fsdp_model) == set(ddp_model)
    for name, tensor in ddp_model.items():
        torch.testing.assert_close(fsdp_model[name], tensor, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow  # two more 2-rank runs; the sharded checkpoints' writing and the match with DDP stay in the default suite
def test_fsdp_resume_from_a_sharded_checkpoint_continues_exactly(fsdp_run, tmp_path):
    """Steps 1-2, checkpoint, then 3-4 in a new job resumed from the DCP directory: the same
    losses and weights as the job that ran 1-4 straight."""
    straight, _ = fsdp_run
    run_dir = tmp_path / "resumed"
    shutil.copytree(straight, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint_step_000004.dcp")
    (run_dir / ".neurogen-tui.lock").unlink(missing_ok=True)
    proc = launch(run_dir, "--resume", "latest", "--max-chunks", str(STEPS))
    assert "checkpoint_step_000002.dcp" in (run_dir / "neurogen-tui.log").read_text()
    assert list(losses(run_dir)) == [1, 2, 3, 4]  # rows after the checkpoint were trimmed, then rewritten
    assert list(losses(run_dir).values()) == pytest.approx(list(losses(straight).values()), abs=1e-6)
    a = weights(straight / "checkpoints" / "checkpoint_step_000004.dcp", tmp_path)
    b = weights(run_dir / "checkpoints" / "checkpoint_step_000004.dcp", tmp_path)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5, msg=name)
    assert "Traceback" not in proc.stderr


def test_a_sharded_checkpoint_is_refused_by_another_strategy(fsdp_run, capsys):
    run_dir, _ = fsdp_run
    code = main(["--resume", "latest", "--run-dir", str(run_dir), "--nproc-per-node", "2", "--strategy", "ddp",
                 "--max-chunks", "6"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a sharded checkpoint of a --strategy fsdp run" in err
    assert "--strategy fsdp --nproc-per-node 2" in err
    assert not (run_dir / "checkpoints" / "checkpoint_step_000006.dcp").exists()


def test_fsdp_needs_more_than_one_rank(tmp_path, capsys):
    assert main(["--test", "--headless", "--strategy", "fsdp", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurogen-tui: error: --strategy fsdp shards the model across ranks")
    assert not (tmp_path / "run" / "checkpoints").exists()


class _RunsCode:
    """Pickles as a call to os.system: what a crafted .metadata would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_dcp_metadata_is_refused_before_torch_unpickles_it(fsdp_run, tmp_path):
    """DCP reads .metadata with plain pickle; we read it first with an allow-list unpickler."""
    run_dir, _ = fsdp_run
    bad = tmp_path / "checkpoints" / "checkpoint_step_000009.dcp"
    shutil.copytree(run_dir / "checkpoints" / "checkpoint_step_000004.dcp", bad)
    marker = tmp_path / "pwned"
    (bad / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match=r"checkpoint_step_000009\.dcp: unsafe or corrupt \.metadata"):
        load_checkpoint(bad)
    assert not marker.exists()
    # `latest` says so and falls back to the newest readable checkpoint
    shutil.copytree(run_dir / "checkpoints" / "checkpoint_step_000002.dcp", bad.with_name("checkpoint_step_000002.dcp"))
    path, state, warnings = resolve_resume("latest", bad.parent)
    assert path.name == "checkpoint_step_000002.dcp" and state["step"] == 2
    assert len(warnings) == 1 and "unsafe or corrupt .metadata" in warnings[0]
    assert not marker.exists()


def test_an_incomplete_sharded_checkpoint_is_never_latest(fsdp_run, tmp_path):
    run_dir, _ = fsdp_run
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(run_dir / "checkpoints", ckpts)
    (ckpts / "checkpoint_step_000006.dcp.partial").mkdir()  # a job killed while writing
    half = ckpts / "checkpoint_step_000008.dcp"
    half.mkdir()  # a directory without its metadata
    path, state, warnings = resolve_resume("latest", ckpts)
    assert path.name == "checkpoint_step_000004.dcp" and state["step"] == 4
    assert warnings == [f"cannot load checkpoint {half}: no .metadata (an incomplete sharded checkpoint); "
                        f"trying an older checkpoint"]
    prune_checkpoints(ckpts, 1, {ckpts / "checkpoint_step_000004.dcp"})  # retention removes directories
    assert [p.name for p in list_checkpoints(ckpts)] == ["checkpoint_step_000004.dcp", "checkpoint_step_000008.dcp"]
