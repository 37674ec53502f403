"""What the logging API costs a training loop (#28), side by side with the APIs people already type:
wandb (offline) and trackio, each in a fresh process of its own, in turns, in one run.

    python benchmarks/bench_api.py --calls 100000 --turns 3      # wandb and trackio where installed

For each library: the import time (`import X` in a fresh interpreter, median of --imports), and
the cost of `run.log` of 8 scalars on the caller's thread: the median of per-call times over
--calls calls (each call timed with perf_counter_ns, the clock's own cost subtracted), and the
total wall time of the loop; then `finish` (everything on disk). wandb and trackio are
benchmark-only installs (pip install wandb trackio in the venv that runs this); a library that is
missing is said and skipped. Results: docs/benchmarks.md and benchmarks/results/api.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, os, sys, time
    lib, calls, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.chdir(where)
    t0 = time.perf_counter()
    if lib == "neurogen_tui":
        import neurogen_tui as api
        run = api.init(run_dir=os.path.join(where, "run"), config={"lr": 3e-4})
    elif lib == "wandb":
        os.environ["WANDB_MODE"] = "offline"; os.environ["WANDB_SILENT"] = "true"
        import wandb as api
        run = api.init(project="bench", dir=where, config={"lr": 3e-4})
    else:
        import trackio as api
        run = api.init(project="bench", config={"lr": 3e-4})
    started = time.perf_counter() - t0
    clock = time.perf_counter_ns
    overhead = min(-(clock() - clock()) for _ in range(1000))  # the clock's own cost, at its least
    per, loop0 = [], time.perf_counter()
    for step in range(calls):
        row = {"loss": 1.0 / (step + 1), "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0, "tokens_per_sec": 1e5,
               "val": 2.0, "mfu": 0.4, "step_time": 0.01}
        a = clock()
        run.log(row)
        per.append(clock() - a)
    loop = time.perf_counter() - loop0
    f0 = time.perf_counter()
    run.finish()
    fin = time.perf_counter() - f0
    per.sort()
    print(json.dumps({"init_s": started, "median_us": max(0.0, per[len(per) // 2] - overhead) / 1000,
                      "p99_us": per[int(len(per) * 0.99)] / 1000, "loop_s": loop, "finish_s": fin}))
""")


def available(lib: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {lib}"], capture_output=True, env=env()).returncode == 0


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "WANDB_MODE": "offline",
            "WANDB_SILENT": "true", "TRACKIO_DIR": tempfile.gettempdir()}


def import_time(lib: str, n: int) -> float:
    times = []
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", f"import time; t = time.perf_counter(); import {lib}; "
                              f"print(time.perf_counter() - t)"], capture_output=True, text=True, env=env())
        times.append(float(out.stdout.strip()))
    return statistics.median(times)


def process_time(code: str, n: int) -> float:
    """Median wall time of `python -c code`, start to exit."""
    import time

    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def one(lib: str, calls: int) -> dict:
    with tempfile.TemporaryDirectory() as where:
        out = subprocess.run([sys.executable, "-c", CHILD, lib, str(calls), where], capture_output=True, text=True,
                             env=env(), timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{lib}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else 'failed'}")
        return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith('{"init_s"')))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--imports", type=int, default=5)
    args = p.parse_args()
    libs = [lib for lib in ("neurogen_tui", "trackio", "wandb") if available(lib) or print(f"({lib} not installed: skipped)")]
    results: dict[str, list[dict]] = {lib: [] for lib in libs}
    for turn in range(args.turns):  # in turns, so a slow spell of the machine falls on every library
        for lib in (libs if turn % 2 == 0 else libs[::-1]):
            results[lib].append(one(lib, args.calls))
    bare, ours_import = process_time("pass", 11), process_time("import neurogen_tui", 11)
    print(f"`python -c 'import neurogen_tui'`: {1000 * ours_import:.0f} ms start to exit "
          f"(`python -c pass`: {1000 * bare:.0f} ms)\n")
    print(f"| library | import | log() of 8 scalars, median per call | p99 | {args.calls:,} calls | finish |")
    print("|---|---:|---:|---:|---:|---:|")
    ours = statistics.median(r["median_us"] for r in results["neurogen_tui"])
    for lib in libs:
        rs = results[lib]
        med = statistics.median(r["median_us"] for r in rs)
        ratio = "" if lib == "neurogen_tui" else f" ({med / ours:.0f}x ours)"
        print(f"| {lib} | {1000 * import_time(lib, args.imports):.0f} ms | **{med:.2f} us**{ratio} | "
              f"{statistics.median(r['p99_us'] for r in rs):.1f} us | {statistics.median(r['loop_s'] for r in rs):.2f} s | "
              f"{statistics.median(r['finish_s'] for r in rs):.2f} s |", flush=True)


if __name__ == "__main__":
    main()
