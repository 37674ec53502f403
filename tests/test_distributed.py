"""Data-parallel training on torch.distributed (gloo on CPU), launched the way users launch it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neurogen_tui.train.checkpoint import list_checkpoints, load_checkpoint
from neurogen_tui.cli.entry import main
from neurogen_tui.train.config import TrainingConfig
from neurogen_tui.train.batches import BatchStream
from neurogen_tui.train.data import DocumentStream, open_local, train_opener
from neurogen_tui.train.device import accumulation
from neurogen_tui.core.events import EventBus, TrainingMetrics
from neurogen_tui.cli.launch import root_cause
from neurogen_tui.train.tokenizer import load_tokenizer
from neurogen_tui.train.trainer import Trainer

STEPS = 3


def launch(run_dir: Path, *extra: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "NEUROGEN_TUI_DIST_TIMEOUT": "60"}
    return subprocess.Popen([sys.executable, "-m", "neurogen_tui", "--test", "--nproc-per-node", "2", "--headless",
                             "--run-dir", str(run_dir), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """`neurogen-tui --nproc-per-node 2 --headless`: 3 steps of 1024 tokens, one micro-batch per rank."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    proc = launch(run_dir, "--max-chunks", str(STEPS))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    return run_dir, out, err


class _RoundRobin:
    """One process, one optimizer step = rank 0's micro-batch then rank 1's: the global batch the
    2-rank job trains on."""

    def __init__(self, streams):
        self.streams, self.i = streams, 0

    def next_batch(self):
        batch = self.streams[self.i % len(self.streams)].next_batch()
        self.i += 1
        return batch

    def state(self):
        return self.streams[0].state()


class _OneRankSameGlobalBatch(Trainer):
    def _setup_data(self, state):
        super()._setup_data(state)
        opener, remote = train_opener(self.cfg)
        self.batches = _RoundRobin([self.train_batches({}, opener, remote, r, 2) for r in range(2)])


def test_two_ranks_match_one_rank_on_the_same_global_batch(two_rank_run, tmp_path):
    """What is compared: the 2-rank job (each rank a disjoint half of the documents, DDP averaging
    gradients) against one process whose gradient accumulation runs over exactly those two
    halves' micro-batches. Same global batch, so per-step loss and the final weights must agree up
    to float summation order."""
    run_dir, _, _ = two_rank_run
    cfg = TrainingConfig(run_dir=str(tmp_path / "one"))
    cfg.apply_test_mode()
    cfg.max_chunks = STEPS
    bus, seen = EventBus(), []
    bus.subscribe(lambda e: seen.append(e) if isinstance(e, TrainingMetrics) else None)
    trainer = _OneRankSameGlobalBatch(cfg, bus)
    assert trainer.run().step == STEPS
    rows = [json.loads(line) for line in (run_dir / "training_viz" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["loss"] for r in rows] == pytest.approx([m.loss for m in seen], abs=1e-5)
    assert [r["tokens_seen"] for r in rows] == [m.tokens_seen for m in seen] == [1024, 2048, 3072]
    ddp = load_checkpoint(run_dir / "checkpoints" / f"checkpoint_step_{STEPS:06d}.pt")
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    # the checkpoint holds each rank's own place in the stream, and says for how many ranks
    assert ddp["world_size"] == 2
    for rank, stream in enumerate(trainer.batches.stream.streams):
        assert ddp["data_ranks"][rank]["index"] == stream.state()["index"]
        assert torch.equal(ddp["data_ranks"][rank]["leftover"], stream.state()["leftover"])


def test_only_rank_zero_writes_the_run_dir(two_rank_run):
    run_dir, out, err = two_rank_run
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert files == sorted(["checkpoints/checkpoint_step_000003.pt", "neurogen-tui.log", "run.json",
                            "training_viz/metrics.jsonl", "training_viz/samples.jsonl",
                            "training_viz/metrics_history.json", "training_viz/text_samples.json",
                            "training_viz/training_latest.png", "training_viz/training_step_000002.png",
                            "training_viz/training_step_000003.png", ".neurogen-tui.lock"]) or \
        all("rank" not in f for f in files)
    assert (run_dir / "training_viz" / "metrics.jsonl").read_text().count("\n") == STEPS  # one writer
    assert out.count("finished (completed) at step 3") == 1  # one rank speaks
    assert "[rank 1]" not in err and "Traceback" not in err
    assert "2 x cpu (gloo)" in out


def test_resuming_with_another_number_of_ranks_is_refused(two_rank_run, capsys):
    run_dir, _, _ = two_rank_run
    code = main(["--resume", "latest", "--run-dir", str(run_dir), "--nproc-per-node", "1", "--max-chunks", "5"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("neurogen-tui: error: cannot resume: the checkpoint was written by 2 rank(s)")
    assert "--nproc-per-node 2" in err and err.count("\n") == 1
    assert not (run_dir / "checkpoints" / "checkpoint_step_000005.pt").exists()


def test_ranks_read_disjoint_documents_that_cover_the_stream(shard):
    tok = load_tokenizer(None)
    opener = lambda: open_local([str(shard)])  # noqa: E731
    every = list(DocumentStream(opener, first=3))
    halves = [list(DocumentStream(opener, first=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(halves[0] + halves[1]) == sorted(every) and not set(halves[0]) & set(halves[1])
    assert halves[0][0] == every[0] and halves[1][0] == every[1]
    # resume: a rank's saved position (a global document index) continues its own share
    docs = DocumentStream(opener, first=3, rank=1, world_size=2)
    it = iter(docs)
    head = [next(it) for _ in range(5)]
    rest = list(DocumentStream(opener, start=docs.index, first=3, rank=1, world_size=2))
    assert head + rest == halves[1]
    assert tok  # the tokenizer is only needed below


def test_ranks_open_only_their_own_shards_when_the_shards_divide(tmp_path):
    """Four files, two ranks: each rank streams two whole shards (on the hub: downloads only
    those), the held-out validation documents are skipped on rank 0 alone, and a saved position
    continues the rank's own stream. Three files do not divide: every-other-document instead."""
    from conftest import write_jsonl_zst

    files = [str(write_jsonl_zst(tmp_path / f"part-{i}.jsonl.zst",
                                 [{"text": f"shard {i} document {j}"} for j in range(6)])) for i in range(4)]
    opener = lambda: open_local(files)  # noqa: E731
    every = list(DocumentStream(opener, first=2))
    ranks = [DocumentStream(opener, first=2, rank=r, world_size=2) for r in range(2)]
    assert [d.by_shard for d in ranks] == [True, True] and ranks[0].shards == 4
    halves = [list(d) for d in ranks]
    assert {t.split()[1] for t in halves[0]} == {"0", "2"} and {t.split()[1] for t in halves[1]} == {"1", "3"}
    assert sorted(halves[0] + halves[1]) == sorted(every)  # disjoint, and nothing but the holdout left out
    assert halves[0][0] == "shard 0 document 2" and halves[1][0] == "shard 1 document 0"
    docs = DocumentStream(opener, first=2, rank=1, world_size=2)
    it = iter(docs)
    head = [next(it) for _ in range(4)]
    assert docs.state() == {"epoch": 0, "index": 4, "by_shard": True}
    rest = list(DocumentStream(opener, start=docs.index, first=2, rank=1, world_size=2, by_shard=True))
    assert head + rest == halves[1]
    three = lambda: open_local(files[:3])  # noqa: E731
    assert not DocumentStream(three, rank=0, world_size=2).by_shard
    # a checkpoint from before shard reading (no by_shard) resumes in the mode it was written in
    trainer = Trainer(TrainingConfig())
    trainer.tokenizer, trainer._holdout = load_tokenizer(None), 2
    old = trainer.train_batches({"index": 5, "epoch": 0}, opener, False, 1, 2)
    assert old.docs.by_shard is False


def test_batches_given_back_leave_the_position_unchanged(shard):
    tok = load_tokenizer(None)
    stream = BatchStream(DocumentStream(lambda: open_local([str(shard)])), tok, 64, 4)
    stream.next_batch()
    before = stream.state()
    taken = [stream.next_batch(), stream.next_batch()]
    stream.unread(taken)
    after = stream.state()
    assert before["index"] <= after["index"]  # documents read ahead stay buffered as tokens
    again = [stream.next_batch(), stream.next_batch()]
    for (x1, y1), (x2, y2) in zip(taken, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_accumulation_adapts_to_world_size_and_says_when_it_does_not_divide():
    assert accumulation(4096, 512, 2) == (4, "")
    accum, note = accumulation(1024, 512, 3)
    assert accum == 1 and "1536 tokens" in note and "--tokens-per-chunk 1024" in note


def test_root_cause_names_the_rank_torchrun_reports():
    report = """Root Cause (first observed failure):
[0]:
  time      : 2025-01-01_00:00:00
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242""".splitlines()
    assert root_cause(report) == "rank 1 was killed by SIGKILL"
    assert root_cause(["nothing"]) == ""
    assert root_cause([r.replace("-9 (pid: 4242)  (SIGKILL)", "1 (pid: 4242) ") for r in report]) == \
        "rank 1 exited with status 1"


def _rank_pid(root: int, rank: int) -> int | None:
    """The pid of the descendant of `root` that torchrun started as `rank`."""
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
                return pid
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return None


def _wait_for_steps(metrics: Path, n: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < n):
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_a_message_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "--max-chunks", "100000", "--checkpoint-interval", "2", "--tokens-per-chunk", "1024")
    _wait_for_steps(run_dir / "training_viz" / "metrics.jsonl", 3)
    pid = _rank_pid(proc.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)  # seconds, not the collective timeout
    assert proc.returncode == 1
    assert "rank 1 was killed by SIGKILL" in err and err.strip().splitlines()[-1].startswith("neurogen-tui: error:")
    last = list_checkpoints(run_dir / "checkpoints")[-1]
    assert load_checkpoint(last)["world_size"] == 2


@pytest.mark.slow
def test_control_channel_pauses_checkpoints_and_stops_all_ranks_together(tmp_path):
    from neurogen_tui.control.protocol import ControlClient

    run_dir = tmp_path / "run"
    metrics = run_dir / "training_viz" / "metrics.jsonl"
    proc = launch(run_dir, "--max-chunks", "100000")
    _wait_for_steps(metrics, 2)
    client = ControlClient.for_run(run_dir)
    assert client.request("pause")["state"] == "paused"
    steps = metrics.read_text().count("\n")
    time.sleep(1.0)
    assert metrics.read_text().count("\n") == steps  # no rank trains while paused
    saved = client.request("checkpoint")
    assert saved["ok"] and saved["step"] == steps
    assert client.request("resume")["ok"]
    _wait_for_steps(metrics, steps + 2)
    assert client.request("stop")["ok"]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    final = metrics.read_text().count("\n")
    last = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    assert last["step"] == final and len(last["data_ranks"]) == 2  # both ranks stopped at that step
    assert "finished (stopped)" in out


@pytest.mark.slow
def test_the_app_pauses_checkpoints_and_stops_a_two_rank_run(tmp_path):
    """The app that `neurogen-tui --nproc-per-node 2` opens is attach's, on rank 0's control
    channel: driven here by Pilot against a real 2-rank job."""
    import asyncio

    from neurogen_tui.run.info import read_run_info
    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.rundir import RunDirSource

    run_dir = tmp_path / "run"
    metrics = run_dir / "training_viz" / "metrics.jsonl"
    proc = launch(run_dir, "--max-chunks", "100000")
    _wait_for_steps(metrics, 2)
    app = MonitorApp(RunDirSource(run_dir, poll=0.1, info=read_run_info(run_dir)))

    async def until(pilot, condition, what):
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await pilot.pause(0.05)

    def steps():
        return metrics.read_text().count("\n")

    async def scenario():
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: app.run_state.state == "running", "the running run")
            await pilot.press("p")
            await until(pilot, lambda: app.run_state.state == "paused", "the pause")
            paused_at = steps()
            await pilot.pause(1.0)
            assert steps() == paused_at  # neither rank trains
            await pilot.press("c")
            ckpt = run_dir / "checkpoints" / f"checkpoint_step_{paused_at:06d}.pt"
            await until(pilot, ckpt.is_file, "the checkpoint while paused")
            await pilot.press("p")
            await until(pilot, lambda: steps() > paused_at, "steps after resuming")
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None, "the viewer to exit")

    asyncio.run(scenario())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    final = steps()
    last = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    assert last["step"] == final and len(last["data_ranks"]) == 2
    assert read_run_info(run_dir)["state"] == "stopped"
