"""What the dashboards cost: drawing time by history size, history memory, JSON export, training speed.

    python benchmarks/bench_dashboard.py all            # everything below, in one run
    python benchmarks/bench_dashboard.py draw [--sizes 1000,100000,1000000,10000000]
    python benchmarks/bench_dashboard.py memory [--steps 10000000]
    python benchmarks/bench_dashboard.py json [--steps 1000000] [--rate 10]
    python benchmarks/bench_dashboard.py training [--rounds 2] [--block 100] [--modes process,thread]

draw: one dashboard (DashboardWriter.draw: snapshot, min/max reduction, render, two atomic PNG
    writes, the figure already built as in a running dashboard process) against the seed's design,
    which plots every point (np.convolve moving averages, every step in the scatter) and saves with
    matplotlib's defaults. Median of 3 (the seed's: 1 above 1M), CPU time and wall time.
memory: a MetricsHistory filled with N steps: tracemalloc's peak and bytes per step.
json: a simulated run of N steps arriving at --rate steps/s (a simulated clock) with a check every
    50 steps, through DashboardWriter's schedule, every write real; against rewriting every 50 steps
    (measured at 10 sizes, summed over the 50-step grid: too long to run for real).
training: the real trainer (session.build_run, default model, bundled sample) in one run whose
    steps alternate between blocks with a dashboard every 50 steps and blocks without (ABBA order,
    so drifting machine load hits both alike); once with the drawing in a process (the default),
    once in a thread. A round is A B B A; its ratio is tokens/s of its 'on' blocks over its 'off'
    blocks; the median over rounds resists bursts of other work on a shared machine.
Results print as markdown tables; see benchmarks/results/dashboard.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from neurogen_tui.viz.figure import DASHBOARD_COLUMNS, FIGSIZE, DPI, MA_WINDOW, RECENT_STEPS
from neurogen_tui.run.history import CHUNK, MetricsHistory
from neurogen_tui.run.files import atomic_write
from neurogen_tui.viz.history_json import write_metrics_history
from neurogen_tui.viz.draw import DashboardWriter, DrawRequest

SAMPLES = [{"step": i * 5, "input": "The harbour was quiet in the morning and the boats",
            "output": "were out at sea before the sun came up over the", "accuracy": 0.4, "target": "t"}
           for i in range(5)]


def synthetic_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A plausible run: decaying noisy loss with a spike, rising accuracy, cosine LR, sparse val."""
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1, dtype=np.int64)
    t = steps / n
    loss = (2.5 * np.exp(-5 * t) + 1.2 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    loss[n // 3] = 9.0
    val = np.full(n, np.nan, np.float32)
    val[249::250] = loss[249::250] + 0.1
    return {"steps": steps, "timestamp": 1.7e9 + steps * 0.5, "loss": loss,
            "accuracy": np.clip(0.6 - 0.07 * loss + 0.02 * rng.standard_normal(n), 0, 1).astype(np.float32),
            "throughput": (2e4 + 500 * rng.standard_normal(n)).astype(np.float32),
            "learning_rate": (1e-4 + 0.5 * (1 + np.cos(np.pi * t)) * 9e-4).astype(np.float32),
            "gpu_memory_mb": np.zeros(n, np.float32), "rss_mb": np.full(n, 600, np.float32),
            "grad_norm": rng.uniform(0.5, 2, n).astype(np.float32), "val_loss": val,
            "tokens_seen": (steps * 4096).astype(np.float32),
            "mfu": np.full(n, np.nan, np.float32)}  # a CPU run: no MFU (the dashboard draws no MFU axis)


def history_of(columns: dict[str, np.ndarray]) -> MetricsHistory:
    h = MetricsHistory()
    n = len(columns["steps"])
    for start in range(0, n, CHUNK):
        h.extend_columns({k: v[start:start + CHUNK] for k, v in columns.items()})
    return h


def seed_dashboard(c: dict[str, np.ndarray], samples: list[dict], path: Path) -> None:
    """The seed's design: every point of every series drawn, saved with matplotlib's defaults."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Training dashboard - step {int(c['steps'][-1])}")
    ax = fig.subplots(3, 3).flat
    steps, loss, acc = c["steps"], c["loss"], c["accuracy"] * 100
    kernel = np.ones(MA_WINDOW) / MA_WINDOW
    ax[0].plot(steps, loss, "b-", alpha=0.6)
    ax[0].plot(steps[MA_WINDOW - 1:], np.convolve(loss, kernel, mode="valid"), "r--")
    ax[1].plot(steps, acc, "g-", alpha=0.6)
    ax[1].plot(steps[MA_WINDOW - 1:], np.convolve(acc, kernel, mode="valid"), "--", color="orange")
    ax[1].set_ylim(0, 100)
    ax[2].plot(steps, c["throughput"], color="purple")
    ax[3].semilogy(steps, c["learning_rate"], color="orange")
    sc = ax[4].scatter(loss, acc, c=steps, cmap="viridis", alpha=0.6)
    fig.colorbar(sc, ax=ax[4])
    ax[5].plot(steps[-RECENT_STEPS:], loss[-RECENT_STEPS:], "b-")
    ax[5].twinx().plot(steps[-RECENT_STEPS:], acc[-RECENT_STEPS:], "g-")
    for a, title in zip(ax, ("Training Loss", "Training Accuracy", "Token Throughput", "Learning Rate Schedule",
                             "Loss vs Accuracy", "Recent Performance")):
        a.set_title(title)
    ax[6].axis("off")
    ax[6].table(cellText=[[s["step"], s["input"][:40], s["output"][:40], f"{s['accuracy']:.1%}"] for s in samples],
                colLabels=["Step", "Input", "Output", "Acc"], loc="center")
    ax[7].axis("off")
    ax[8].axis("off")
    fig.savefig(path, dpi=DPI)


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls."""
    return cpu_and_wall(fn, repeats)[1]


def cpu_and_wall(fn, repeats: int) -> tuple[float, float]:
    """Median CPU time and wall time. Drawing is single-threaded, so its CPU time is what it takes
    on an idle core: the figure to read when other work shares the machine."""
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def bench_draw(sizes: list[int], baseline_max: int) -> None:
    print(f"\n### Dashboard time by history size (one dashboard, written to disk; load average "
          f"{os.getloadavg()[0]:.1f})\n")
    print("CPU time (wall time in brackets: inflated when other work shares the cores)\n")
    print("| steps | this (min/max reduced) | seed design (every point) | speed-up (CPU) |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = DashboardWriter(tmp)
        warm.add(synthetic_columns(100), SAMPLES)
        warm.draw(DrawRequest(100, periodic=True), lambda *a: None)  # fonts, caches, imports
        for n in sizes:
            columns = synthetic_columns(n)
            writer = DashboardWriter(tmp, history=history_of(columns))
            writer.add(None, SAMPLES)
            writer.draw(DrawRequest(n, periodic=True), lambda *a: None)  # as in a run: the figure exists
            ours = cpu_and_wall(lambda: writer.draw(DrawRequest(n, periodic=True), lambda *a: None), 3)
            del writer
            row = f"| {n:,} | {ours[0]:.2f} s ({ours[1]:.2f} s) |"
            if n <= baseline_max:
                cols = {k: columns[k] for k in DASHBOARD_COLUMNS}
                seed = cpu_and_wall(lambda: seed_dashboard(cols, SAMPLES, tmp / "seed.png"), 3 if n <= 1_000_000 else 1)
                print(f"{row} {seed[0]:.2f} s ({seed[1]:.2f} s) | {seed[0] / ours[0]:.1f}x |", flush=True)
            else:
                print(f"{row} not run | |", flush=True)
            del columns


def bench_memory(steps: int) -> None:
    print(f"\n### History memory at {steps:,} steps\n")
    columns = synthetic_columns(CHUNK)
    tracemalloc.start()
    h = MetricsHistory()
    for start in range(0, steps, CHUNK):
        h.extend_columns({k: v[:min(CHUNK, steps - start)] for k, v in columns.items()})
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print("| steps | history.nbytes | tracemalloc peak | bytes/step (peak) |")
    print("|---:|---:|---:|---:|")
    print(f"| {len(h):,} | {h.nbytes / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {peak / len(h):.1f} |")


def bench_json(steps: int, rate: float, every: int = 50) -> None:
    print(f"\n### metrics_history.json over a simulated {steps:,}-step run ({rate:g} steps/s, checked every {every})\n")
    columns = synthetic_columns(steps)
    with tempfile.TemporaryDirectory() as tmp:
        clock = [0.0]
        writer = DashboardWriter(tmp, clock=lambda: clock[0])
        started, exporting = time.perf_counter(), 0.0
        for rows in range(every, steps + 1, every):
            writer.add({k: v[rows - every:rows] for k, v in columns.items()}, [])
            clock[0] = rows / rate
            before, writes = time.perf_counter(), writer.json_writes
            writer.export_json(DrawRequest(rows, draw=False, final=rows == steps), lambda *a: None)
            if writer.json_writes > writes:  # the time of the exports themselves, measured from outside
                exporting += time.perf_counter() - before
        wall = time.perf_counter() - started
        size = os.path.getsize(Path(tmp) / "metrics_history.json")
        sizes = np.linspace(steps // 10, steps, 10).astype(int)
        history = writer.history
        per_write = [timed(lambda n=n: atomic_write(Path(tmp) / "naive.json", lambda fh: write_metrics_history(fh, history, n)), 1)
                     for n in sizes]
    slope, intercept = np.polyfit(sizes, per_write, 1)
    grid = np.arange(every, steps + 1, every)
    naive = float(np.sum(slope * grid + intercept))
    print("| schedule | writes | total export time |")
    print("|---|---:|---:|")
    print(f"| this: every >= 60 s and >= 5% growth, and at the end | {writer.json_writes} | "
          f"{exporting:.0f} s (simulation wall {wall:.0f} s) |")
    print(f"| rewrite every {every} steps | {len(grid):,} | {naive:,.0f} s ({naive / 3600:.1f} h, extrapolated "
          f"from {per_write[-1]:.2f} s per write at {steps:,} steps) |")
    print(f"\nfinal file: {size / 2**20:.0f} MiB, {size / steps:.0f} bytes/step")


ORDER = "ABBA"  # on/off blocks in this order, repeated: a drift in machine load hits both alike


def train_blocks(mode: str, rounds: int, block: int) -> tuple[list[float], list[float]]:
    """One real training run (session.build_run, default model, bundled sample) whose steps come in
    blocks of `block`; in 'on' blocks a dashboard is drawn every 50 steps (mid-block, so a drawing
    never spills into an 'off' block), in 'off' blocks none. Returns tokens/s of on and off blocks."""
    from neurogen_tui.train.config import TrainingConfig
    from neurogen_tui.core.events import TrainingMetrics
    from neurogen_tui.cli.session import build_run
    from neurogen_tui.viz.writer import VisualizationManager

    pattern = (ORDER * rounds).replace("A", "1").replace("B", "0")
    if mode == "thread":
        pattern = pattern.replace("1", "t")
    warm = 10
    steps = warm + block * len(pattern)
    with tempfile.TemporaryDirectory() as tmp:
        # evaluation and checkpoints off: they would land in some blocks and not others
        cfg = TrainingConfig(run_dir=tmp, dataset="sample", max_chunks=steps, epochs=0,
                             eval_interval=10 ** 9, checkpoint_interval=10 ** 9)
        VisualizationManager.default_mode = "thread" if mode == "thread" else "process"
        parts = build_run(cfg, None, control=False)
        viz = parts.viz
        viz.viz_interval = 10 ** 9  # draws come from the block schedule below
        marks: dict[int, float] = {}

        def on_event(event) -> None:
            if isinstance(event, TrainingMetrics):
                marks[event.step] = time.perf_counter()
                i, offset = divmod(event.step - warm, block)
                if 0 <= i < len(pattern) and pattern[i] != "0" and offset % 50 == 25:
                    viz.request_draw()

        parts.bus.subscribe(on_event)
        parts.trainer.run()
        parts.close()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for i, kind in enumerate(pattern):
        start, end = warm + i * block, warm + (i + 1) * block
        rates[kind != "0"].append(block * cfg.tokens_per_chunk / (marks[end] - marks[start]))
    print(f"  {mode}: on {[round(r) for r in rates[True]]} off {[round(r) for r in rates[False]]}",
          file=sys.stderr, flush=True)
    return rates[True], rates[False]


def bench_training(rounds: int, block: int, modes: list[str]) -> None:
    import torch

    print(f"\n### Training speed with dashboards on vs off (default model, a dashboard every 50 steps, "
          f"{rounds} ABBA rounds of {block}-step blocks per run, torch threads {torch.get_num_threads()}, "
          f"load average at start {os.getloadavg()[0]:.1f})\n")
    print("| dashboards drawn in | tokens/s on (median block) | tokens/s off (median block) | "
          "ratio on/off: median of rounds [quartiles] | pooled |")
    print("|---|---:|---:|---:|---:|")
    for mode in modes:
        on, off = train_blocks(mode, rounds, block)
        per_round = [sum(on[2 * r:2 * r + 2]) / sum(off[2 * r:2 * r + 2]) for r in range(rounds)]
        q1, q2, q3 = statistics.quantiles(per_round, n=4) if rounds > 1 else (per_round * 3)
        pooled = (len(on) / sum(1 / r for r in on)) / (len(off) / sum(1 / r for r in off))
        print(f"| {mode} | {statistics.median(on):,.0f} | {statistics.median(off):,.0f} | "
              f"{statistics.median(per_round):.3f} [{q1:.3f}, {q3:.3f}] | {pooled:.3f} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["all", "draw", "memory", "json", "training"])
    p.add_argument("--sizes", default="1000,100000,1000000,10000000")
    p.add_argument("--baseline-max", type=int, default=10_000_000, help="largest size the seed design is run at")
    p.add_argument("--memory-steps", type=int, default=10_000_000)
    p.add_argument("--json-steps", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=10.0, help="simulated steps/s for the json benchmark")
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds of on/off blocks per training run")
    p.add_argument("--block", type=int, default=100, help="steps per on or off block")
    p.add_argument("--modes", default="process,thread")
    args = p.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    if args.what in ("all", "draw"):
        bench_draw([int(s) for s in args.sizes.split(",")], args.baseline_max)
    if args.what in ("all", "memory"):
        bench_memory(args.memory_steps)
    if args.what in ("all", "json"):
        bench_json(args.json_steps, args.rate)
    if args.what in ("all", "training"):
        bench_training(args.rounds, args.block, args.modes.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
