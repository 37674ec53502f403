"""What the guard costs a run (#20): training with --guard on against --guard off, in turns on the
same machine, and what its last good copy takes (host memory, time per copy).

    python benchmarks/bench_guard.py --model tiny,small --steps 300 --turns 3

Each turn trains a fresh run of `--steps` steps on the bundled sample with the guard off, then on
(the order alternates between turns); the ratio is the median over turns of on/off tokens per
second. The copy is taken every guard.SNAPSHOT_EVERY steps (device to host); its size is the two
copies the guard can hold at once (the trusted one and the one being confirmed).
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

from neurogen_tui.config import TrainingConfig  # noqa: E402
from neurogen_tui.events import EventBus  # noqa: E402
from neurogen_tui.guard import SNAPSHOT_EVERY  # noqa: E402
from neurogen_tui.trainer import Trainer  # noqa: E402


def state_bytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def one_run(model: str, steps: int, guard: str, work: Path) -> dict:
    cfg = TrainingConfig(run_dir=str(work / f"{model}-{guard}-{time.monotonic_ns()}"))
    cfg.apply_test_mode()
    cfg.apply_preset(model)
    cfg.tokens_per_chunk = cfg.batch_size * cfg.seq_len * 2
    cfg.max_chunks, cfg.epochs, cfg.guard = steps, 0, guard
    cfg.eval_interval = cfg.checkpoint_interval = cfg.viz_interval = cfg.sample_interval = 10 ** 9
    trainer = Trainer(cfg, EventBus())
    times = []
    trainer.bus.subscribe(lambda e: times.append((e.step, time.perf_counter(), e.tokens_seen))
                          if type(e).__name__ == "TrainingMetrics" else None)
    trainer.run()
    skip = len(times) // 5  # the first steps (warm-up, the shuffle window filling) are left out
    (s0, t0, k0), (s1, t1, k1) = times[skip], times[-1]
    g = trainer.steer.guard
    out = {"tokens_per_sec": (k1 - k0) / (t1 - t0), "params": trainer.model.num_params()}
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
    args = p.parse_args()
    print("| model | params | tokens/s off / on | ratio on/off (median of turns) | copies | ms per copy | RAM for the copies |")
    print("|---|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.model.split(","):
            ratios, off_rates, on_rates, on = [], [], [], {}
            for turn in range(args.turns):
                order = ("off", "on") if turn % 2 == 0 else ("on", "off")
                got = {mode: one_run(model, args.steps, mode, work) for mode in order}
                off_rates.append(got["off"]["tokens_per_sec"])
                on_rates.append(got["on"]["tokens_per_sec"])
                ratios.append(got["on"]["tokens_per_sec"] / got["off"]["tokens_per_sec"])
                on = got["on"]
            print(f"| {model} | {on['params']:,} | {statistics.median(off_rates):,.0f} / {statistics.median(on_rates):,.0f} | "
                  f"**{statistics.median(ratios):.3f}** | {on['snapshots']} in {args.steps} steps (every {SNAPSHOT_EVERY}) | "
                  f"{on['snapshot_ms']:.1f} | {on['copy_mb']:.1f} MB |", flush=True)


if __name__ == "__main__":
    main()
