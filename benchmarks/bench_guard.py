"""What the guard costs a run (#20): the time its own work takes (the verdict on every step, the
copies of the training state) as a share of the training time, measured inside one run, and what
its last good copy takes in host memory.

    python benchmarks/bench_guard.py --model tiny,small --steps 300 --turns 3

Each turn trains a fresh run of `--steps` steps on the bundled sample with the guard on; the
guard's methods are timed where they run (on the training thread), so the share is exact however
noisy the machine; since #26 that includes the look at the state before each checkpoint (a forward
pass on the last batch), with a checkpoint every 100 steps. Also shown, side by side in turns: tokens/s with the guard off and on (on a
2-core VM this ratio moves by +-10% from run to run, far more than the guard costs). The copy is
taken every guard.SNAPSHOT_EVERY steps (device to host); its size is the two copies the guard can
hold at once (the trusted one and the one being confirmed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurogen_tui.train.config import TrainingConfig  # noqa: E402
from neurogen_tui.core.events import EventBus  # noqa: E402
from neurogen_tui.train import guard as guard_module  # noqa: E402
from neurogen_tui.train.guard import SNAPSHOT_EVERY  # noqa: E402

SPENT = {"seconds": 0.0, "probe": 0.0}  # all of the guard's time; of it, the looks before checkpoints


def timed(fn, key: str = "seconds"):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - started
            SPENT["seconds"] += spent
            if key != "seconds":
                SPENT[key] += spent

    return wrapper


for _name in ("observe", "settle", "take", "snapshot_due"):  # all it does on the training thread each step
    setattr(guard_module.Guard, _name, timed(getattr(guard_module.Guard, _name)))
guard_module.Guard.judge_state = timed(guard_module.Guard.judge_state, "probe")
from neurogen_tui.train.trainer import Trainer  # noqa: E402

Trainer.probe_loss = timed(Trainer.probe_loss, "probe")  # the look at a state before each checkpoint is written


def state_bytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def one_run(model: str, steps: int, guard: str, work: Path, checkpoint_interval: int) -> dict:
    cfg = TrainingConfig(run_dir=str(work / f"{model}-{guard}-{time.monotonic_ns()}"))
    cfg.apply_test_mode()
    cfg.apply_preset(model)
    cfg.tokens_per_chunk = cfg.batch_size * cfg.seq_len * 2
    cfg.max_chunks, cfg.epochs, cfg.guard = steps, 0, guard
    cfg.eval_interval = cfg.viz_interval = cfg.sample_interval = 10 ** 9
    cfg.checkpoint_interval = checkpoint_interval  # each checkpoint's state is judged first
    trainer = Trainer(cfg, EventBus())
    SPENT["seconds"] = SPENT["probe"] = 0.0
    times = []
    trainer.bus.subscribe(lambda e: times.append((e.step, time.perf_counter(), e.tokens_seen))
                          if type(e).__name__ == "TrainingMetrics" else None)
    trainer.run()
    skip = len(times) // 5  # the first steps (warm-up, the shuffle window filling) are left out
    (_, t0, k0), (_, t1, k1) = times[skip], times[-1]
    g = trainer.steer.guard
    trained = sum(times[i][1] - times[i - 1][1] for i in range(1, len(times)))
    out = {"tokens_per_sec": (k1 - k0) / (t1 - t0), "params": trainer.model.num_params(),
           "guard_share": SPENT["seconds"] / trained if trained else 0.0,
           "probe_share": SPENT["probe"] / trained if trained else 0.0}
    if g is not None:
        copy = g.good or g.pending
        out.update(snapshots=g.snapshots, snapshot_ms=1000 * g.snapshot_seconds / max(1, g.snapshots),
                   copy_mb=2 * (state_bytes(copy.model) + state_bytes(copy.optimizer)) / 2**20 if copy else 0.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny,small")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--checkpoint-interval", type=int, default=100,
                   help="steps between checkpoints, each judged first (default 100: 20x the product's 2000)")
    args = p.parse_args()
    print(f"checkpoint every {args.checkpoint_interval} steps\n")
    print("| model | params | guard's own time / training time | of it, judging checkpoints | copies | ms per copy | "
          "RAM for the copies | tokens/s off / on (ratio, noisy) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.model.split(","):
            ratios, off_rates, on_rates, shares, probes, on = [], [], [], [], [], {}
            for turn in range(args.turns):
                order = ("off", "on") if turn % 2 == 0 else ("on", "off")
                got = {mode: one_run(model, args.steps, mode, work, args.checkpoint_interval) for mode in order}
                off_rates.append(got["off"]["tokens_per_sec"])
                on_rates.append(got["on"]["tokens_per_sec"])
                ratios.append(got["on"]["tokens_per_sec"] / got["off"]["tokens_per_sec"])
                on = got["on"]
                shares.append(on["guard_share"])
                probes.append(on["probe_share"])
            print(f"| {model} | {on['params']:,} | **{100 * statistics.median(shares):.3f}%** | "
                  f"{100 * statistics.median(probes):.3f}% | "
                  f"{on['snapshots']} in {args.steps} steps (every {SNAPSHOT_EVERY}) | {on['snapshot_ms']:.1f} | "
                  f"{on['copy_mb']:.1f} MB | {statistics.median(off_rates):,.0f} / {statistics.median(on_rates):,.0f} "
                  f"({statistics.median(ratios):.3f}) |", flush=True)


if __name__ == "__main__":
    main()
