"""Data parallel on one machine: tokens/s of N ranks against 1 rank, and the per-step cost of the
control agreement (one 4-integer all-reduce).

    .venv/bin/python benchmarks/bench_distributed.py throughput [--ranks 1,2] [--steps 30] [--model small]
    .venv/bin/python benchmarks/bench_distributed.py agreement [--ranks 2] [--iters 2000]

throughput runs the real CLI (`neurogen-tui --nproc-per-node N --headless`) on the bundled sample
and reports the median job-wide tokens/s of metrics.jsonl after the first 5 steps. On CPU each
rank gets cores/N threads, so the comparison is the same machine split differently.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def throughput(ranks: int, steps: int, model: str, tokens: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "neurogen_tui", "--headless", "--model", model, "--dataset", "sample",
               "--epochs", "0", "--max-chunks", str(steps), "--tokens-per-chunk", str(tokens), "--device", device,
               "--eval-interval", str(10 * steps), "--sample-interval", str(10 * steps),
               "--viz-interval", str(10 * steps), "--checkpoint-interval", str(10 * steps),
               "--nproc-per-node", str(ranks), "--run-dir", str(run_dir)]
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        rows = [json.loads(line) for line in (run_dir / "training_viz" / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_sec"] for r in rows[5:]] or [r["tokens_per_sec"] for r in rows]
    mfu = [r["mfu"] for r in rows[5:] if "mfu" in r]
    return {"ranks": ranks, "tokens_per_sec": statistics.median(tps),
            "step_ms": statistics.median(r["step_time"] for r in rows[5:] or rows) * 1e3,
            "mfu": statistics.median(mfu) if mfu else None, "wall_s": wall}


def _agreement_worker(rank: int, world: int, iters: int, port: int, queue) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    flags = torch.zeros(4, dtype=torch.int32)
    for _ in range(50):
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(iters):
        flags = torch.tensor([False, False, False, False], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        flags.tolist()
    elapsed = time.perf_counter() - started
    if rank == 0:
        queue.put(elapsed / iters)
    dist.destroy_process_group()


def agreement(ranks: int, iters: int) -> float:
    """Seconds per agreement (build the flags, all-reduce, read them back), gloo, on this machine."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_agreement_worker, args=(r, ranks, iters, port, queue)) for r in range(ranks)]
    for p in procs:
        p.start()
    result = queue.get(timeout=300)
    for p in procs:
        p.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("throughput", "agreement"))
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--model", default="small")
    p.add_argument("--tokens-per-chunk", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", type=int, default=2000)
    args = p.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.what == "throughput":
        print("| ranks | tokens/s (job) | step ms | MFU | wall s |\n|---|---|---|---|---|")
        for n in ranks:
            r = throughput(n, args.steps, args.model, args.tokens_per_chunk, args.device)
            mfu = f"{r['mfu'] * 100:.1f}%" if r["mfu"] is not None else "-"
            print(f"| {n} | {r['tokens_per_sec']:,.0f} | {r['step_ms']:.1f} | {mfu} | {r['wall_s']:.0f} |", flush=True)
    else:
        for n in ranks if ranks != [1, 2] else [2]:
            print(f"agreement, {n} ranks (gloo): {agreement(n, args.iters) * 1e6:.0f} µs per step")


if __name__ == "__main__":
    main()
