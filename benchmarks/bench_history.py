"""How long a long run's history takes to open, export, and what --tensorboard costs training (#18).

    python benchmarks/bench_history.py read [--sizes 1000,100000,1000000,10000000]
    python benchmarks/bench_history.py watch [--steps 1000000] [--old DIR]
    python benchmarks/bench_history.py export [--steps 1000000]
    python benchmarks/bench_history.py tensorboard [--block 25] [--blocks 24]

read: a metrics.jsonl of N steps written as the recorder writes it (every field of a step, a
    validation loss every 250), read by `runfiles.load_history` (what render, compare and a resumed
    run use) three ways in one run: the line-by-line reader of before (json.loads a row, kept
    here as it was), the new reader with no sidecar (pyarrow over the JSONL: runs of older
    versions), and with the metrics.arrows sidecar the recorder now writes.
watch: `neurogen-tui watch` on an N-step run, the app headless at 120x40: seconds from starting
    the process until the header shows the last step and every chart has drawn; with --old DIR
    (a checkout of the code before), the same for that code, in turns.
export: `neurogen-tui export` of an N-step run to csv, parquet and tensorboard.
nosidecar: a run of --steps (1M) steps whose sidecar is gone (an older version, another writer), in
    turns: a naive row-by-row json.loads read of metrics.jsonl; `watch` until the header shows the
    last step (its first screen is read from the file's tail); the naive dashboard (that read, then
    the seed's panels with every point plotted) against `neurogen-tui render`, cold (no sidecar: it
    builds one) and warm (the sidecar the cold one left).
tensorboard: the trainer as `--headless` composes it with `--tensorboard`, in blocks of steps
    taking turns (A B B A) with the event writer's process stopped (SIGSTOP) or running: whatever it
    did not get to while stopped it does in the next running block, so its cost falls on those.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from neurogen_tui.run.history import MetricsHistory, columns_from_rows  # noqa: E402
from neurogen_tui.run.metricsfile import read_metrics  # noqa: E402
from neurogen_tui.run.sidecar import SidecarWriter  # noqa: E402
from neurogen_tui.run.reader import load_history, rows_from_jsonl  # noqa: E402


def write_run(run: Path, n: int, seed: int = 0) -> Path:
    """A run dir whose metrics.jsonl has `n` steps in the recorder's own line format."""
    viz = run / "training_viz"
    viz.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(viz / "metrics.jsonl", "w") as fh:
        for start in range(0, n, 100_000):
            k = min(100_000, n - start)
            steps = np.arange(start + 1, start + k + 1)
            loss = 3 * np.exp(-steps / 1e6) + rng.random(k) * 0.1
            cols = zip(steps.tolist(), loss.tolist(), rng.random(k).tolist(), (20000 + rng.random(k) * 1000).tolist(),
                       (1e-3 * rng.random(k)).tolist(), (1.7e9 + steps * 0.05).tolist(), (rng.random(k) * 2).tolist(),
                       (400 + rng.random(k)).tolist(), (0.05 + rng.random(k) * 0.01).tolist())
            fh.write("".join(
                f'{{"step": {s}, "loss": {lo!r}, "accuracy": {a!r}, "tokens_per_sec": {t!r}, "gpu_memory_mb": 0.0, '
                f'"learning_rate": {lr!r}, "timestamp": {ts!r}, "grad_norm": {g!r}, '
                + (f'"val_loss": {lo!r}, ' if s % 250 == 0 else "")
                + f'"tokens_seen": {s * 4096}, "rss_mb": {r!r}, "step_time": {st!r}, "skipped": false}}\n'
                for s, lo, a, t, lr, ts, g, r, st in cols))
    return viz


def old_load_history(viz_dir: Path) -> MetricsHistory:
    """runfiles.load_history as it was before #18: json.loads a row, 65,536 rows per bulk append."""
    history, batch = MetricsHistory(), []
    for row in rows_from_jsonl(viz_dir / "metrics.jsonl"):
        if isinstance(row.get("step"), int):
            batch.append(row)
        if len(batch) >= 1 << 16:
            history.extend_columns(columns_from_rows(batch))
            batch.clear()
    if batch:
        history.extend_columns(columns_from_rows(batch))
    return history


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cmd_read(args) -> None:
    sizes = [int(x) for x in args.sizes.split(",")]
    t0 = time.perf_counter()
    import pyarrow.json  # noqa: F401  (once per process: timed apart from the reads)

    print(f"importing pyarrow (once per process): {time.perf_counter() - t0:.2f} s\n")
    print("| steps | metrics.jsonl | before: a row at a time | new, no sidecar (pyarrow) | new, with metrics.arrows | sidecar size |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            viz = write_run(Path(tmp) / "run", n)
            size = (viz / "metrics.jsonl").stat().st_size
            old_s = None
            if n <= args.old_up_to:
                old_s, old = timed(lambda: old_load_history(viz))
                assert len(old) == n
            bare_s, new = timed(lambda: load_history(viz))
            assert len(new) == n
            SidecarWriter(viz, read_metrics(viz)).close()
            side_s, fast = timed(lambda: load_history(viz))
            assert len(fast) == n and np.array_equal(fast.column("loss"), new.column("loss"), equal_nan=True)
            if old_s is not None:
                assert np.array_equal(old.column("loss"), fast.column("loss"), equal_nan=True)
            side = (viz / "metrics.arrows").stat().st_size
            print(f"| {n:,} | {size / 2**20:,.0f} MiB | {'-' if old_s is None else f'{old_s:.2f} s'} | {bare_s:.2f} s | "
                  f"**{side_s:.3f} s** | {side / 2**20:,.0f} MiB |", flush=True)


WATCH = r"""
import asyncio, sys, time
t0 = time.perf_counter()
from neurogen_tui.tui.app import MonitorApp
from neurogen_tui.tui.charts import MetricChart
from neurogen_tui.tui.rundir import RunDirSource
run, n = sys.argv[1], int(sys.argv[2])
app = MonitorApp(RunDirSource(run))
async def main():
    async with app.run_test(size=(120, 40)) as pilot:
        while not (app.step >= n and all(c.points > 0 for c in app.query(MetricChart))):
            await pilot.pause(0.01)
            if time.perf_counter() - t0 > 600: raise SystemExit("timeout")
        print(f"FIRST_SCREEN {time.perf_counter() - t0:.3f}")
asyncio.run(main())
"""


def watch_time(code_dir: Path, run: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    out = subprocess.run([sys.executable, "-c", WATCH, str(run), str(n)], capture_output=True, text=True, env=env,
                         cwd=code_dir, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith("FIRST_SCREEN"):
            return float(line.split()[1])
    raise SystemExit(f"watch under {code_dir} failed: {out.stderr[-1500:]}")


def cmd_watch(args) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        run = Path(tmp) / "run"
        viz = write_run(run, args.steps)
        SidecarWriter(viz, read_metrics(viz)).close()  # as the recorder leaves it
        codes = [("new", ROOT)] + ([("before", Path(args.old))] if args.old else [])
        results: dict[str, list[float]] = {name: [] for name, _ in codes}
        for r in range(args.rounds):
            for name, code in (codes if r % 2 == 0 else codes[::-1]):
                results[name].append(watch_time(code, run, args.steps))
        print(f"\n`watch` on a {args.steps:,}-step run, seconds from starting the process to the last step "
              f"in the header with every chart drawn ({args.rounds} rounds, in turns):\n")
        print("| code | first screen (s), median | runs |")
        print("|---|---:|---|")
        for name, times in results.items():
            print(f"| {name} | **{statistics.median(times):.2f}** | {', '.join(f'{t:.2f}' for t in times)} |")


NAIVE_PANELS = ("loss", "accuracy", "throughput", "learning_rate", "grad_norm", "val_loss", "rss_mb")


def naive_dashboard(viz: Path, out: Path) -> None:
    """The seed's dashboard drawn the naive way: every row json.loads-ed, every point plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = old_load_history(viz)
    steps = history.column("steps")
    fig, axes = plt.subplots(2, 4, figsize=(20, 10))
    for ax, name in zip(axes.flat, NAIVE_PANELS):
        ys = history.column(name)
        ax.plot(steps, ys, lw=0.5)
        ax.set_title(name)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def cmd_nosidecar(args) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        run = Path(tmp) / "run"
        viz = write_run(run, args.steps)
        side = viz / "metrics.arrows"
        size = (viz / "metrics.jsonl").stat().st_size
        rows: dict[str, list[float]] = {k: [] for k in ("naive read", "watch", "naive dashboard", "render cold",
                                                         "render warm")}

        def render() -> float:
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "neurogen_tui", "render", str(run), "-o",
                                   str(Path(tmp) / "out.png")], capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise SystemExit(done.stderr)
            return time.perf_counter() - t0

        for r in range(args.rounds):
            rows["naive read"].append(timed(lambda: old_load_history(viz))[0])
            side.unlink(missing_ok=True)
            rows["watch"].append(watch_time(ROOT, run, args.steps))
            rows["naive dashboard"].append(timed(lambda: naive_dashboard(viz, Path(tmp) / "naive.png"))[0])
            side.unlink(missing_ok=True)
            rows["render cold"].append(render())
            assert side.exists(), "render left no sidecar"
            rows["render warm"].append(render())
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rows.items()), flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"\n{args.steps:,} steps, metrics.jsonl {size / 2**20:,.0f} MiB, no sidecar, {args.rounds} rounds in "
              "turns (median seconds):\n")
        print("| what | seconds | runs | against the naive way |")
        print("|---|---:|---|---:|")
        base = {"watch": "naive read", "render cold": "naive dashboard", "render warm": "naive dashboard"}
        for k, v in rows.items():
            ratio = f"{med[k] / med[base[k]]:.3f}" if k in base else "-"
            print(f"| {k} | **{med[k]:.2f}** | {', '.join(f'{t:.2f}' for t in v)} | {ratio} |")


def cmd_export(args) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        run = Path(tmp) / "run"
        viz = write_run(run, args.steps)
        SidecarWriter(viz, read_metrics(viz)).close()
        print(f"\n`neurogen-tui export` of a {args.steps:,}-step run:\n")
        print("| format | seconds | output |")
        print("|---|---:|---:|")
        for fmt in ("csv", "parquet", "tensorboard"):
            out = Path(tmp) / f"out-{fmt}"
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "neurogen_tui", "export", str(run), "--format", fmt, "-o",
                                   str(out / "metrics.x") if fmt != "tensorboard" else str(out)],
                                  capture_output=True, text=True, cwd=ROOT)
            secs = time.perf_counter() - t0
            if done.returncode:
                raise SystemExit(done.stderr)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"| {fmt} | {secs:.1f} | {size / 2**20:,.0f} MiB |", flush=True)


def cmd_tensorboard(args) -> None:
    from bench_trainer import SteppedTrainer, make_config

    run_dir = tempfile.mkdtemp(prefix="bench-tb-", dir=args.tmp)
    try:
        total = (args.blocks + 1) * args.block + 1
        cfg = make_config(args.config, total, str(Path(run_dir) / "t"))
        cfg.tensorboard = True
        trainer = SteppedTrainer(cfg, display=True)
        proc = trainer.parts.tensorboard.proc
        trainer.run(args.block)  # warm-up: the writer's process has started and caught up
        time.sleep(3)
        times = trainer.blocks_in_turns("on", "off", args.blocks, args.block,
                                        lambda v: os.kill(proc.pid, signal.SIGCONT if v == "on" else signal.SIGSTOP))
        os.kill(proc.pid, signal.SIGCONT)
        trainer.close()
        events = list((Path(run_dir) / "t" / "tensorboard").glob("events.out.tfevents.*"))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    ratio = sum(times["on"]) / sum(times["off"])
    pairs = [off / on for on, off in zip(times["on"], times["off"])]
    print(f"\nconfig {args.config}: {len(times['on'])} + {len(times['off'])} blocks of {args.block} steps, in turns; "
          f"{len(events)} event file(s)\n")
    print("| event writer | ms/step |")
    print("|---|---:|")
    for v in ("off", "on"):
        print(f"| {v} | {sum(times[v]) / (len(times[v]) * args.block) * 1e3:.2f} |")
    print(f"\n**training speed with --tensorboard writing / stopped = {1 / ratio:.3f}** "
          f"(block pairs: median {statistics.median(pairs):.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tmp", default=None, help="where to write the synthetic runs (default: the system's temp dir)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read")
    r.add_argument("--sizes", default="1000,100000,1000000,10000000")
    r.add_argument("--old-up-to", type=int, default=10_000_000, help="largest size the old reader is timed on")
    w = sub.add_parser("watch")
    w.add_argument("--steps", type=int, default=1_000_000)
    w.add_argument("--old", metavar="DIR", help="a checkout of the code before, to time in turns")
    w.add_argument("--rounds", type=int, default=2)
    ns = sub.add_parser("nosidecar")
    ns.add_argument("--steps", type=int, default=1_000_000)
    ns.add_argument("--rounds", type=int, default=2)
    e = sub.add_parser("export")
    e.add_argument("--steps", type=int, default=1_000_000)
    t = sub.add_parser("tensorboard")
    t.add_argument("--config", choices=("default", "nanogpt"), default="default")
    t.add_argument("--block", type=int, default=25)
    t.add_argument("--blocks", type=int, default=24)
    args = p.parse_args(argv)
    {"read": cmd_read, "watch": cmd_watch, "nosidecar": cmd_nosidecar, "export": cmd_export, "tensorboard": cmd_tensorboard}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
