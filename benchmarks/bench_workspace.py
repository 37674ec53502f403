"""The runs workspace at scale (#29): a hundred runs of a hundred thousand steps.

    python benchmarks/bench_workspace.py generate /tmp/ws100 --runs 100 --steps 100000
    python benchmarks/bench_workspace.py measure /tmp/ws100

`generate` writes the runs as our trainer would (metrics.jsonl with its Arrow sidecar, run.json
finished, config.json with lr, seed and model), their loss curves differing by learning rate and
seed. `measure` opens the workspace on them headless (Textual's run_test, 120x40) in this process
and reports: the first full screen (every run in the sidebar and the first page of charts drawn
for the runs selected at open, from the files' last rows), every selected run's whole history behind
it, the sidebar's answer to a filter (the handler's time for each key of `lr>=3e-3`), and this
process's resident memory; then every run selected at once. Targets: <= 2 s, <= 100 ms, <= 300 MB.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurogen_tui.run.metricsfile import MetricsTable, fields_from_rows  # noqa: E402
from neurogen_tui.run.sidecar import SidecarWriter  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(root: Path, runs: int, steps: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i in range(runs):
        lr, seed = (1e-3, 3e-3, 1e-2, 3e-2)[i % 4], i // 4
        run = root / f"run{i:03d}-lr{lr:g}-s{seed}"
        viz = run / "training_viz"
        viz.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        step = np.arange(1, steps + 1)
        loss = 2.0 + 3.0 * np.exp(-step * lr / 50) + rng.normal(0, 0.05, steps)
        stamp = 1.7e9 + step * 0.05
        tps = 1e5 + rng.normal(0, 1e3, steps)
        lines = [f'{{"step": {s}, "loss": {a:.6f}, "accuracy": {0.5:.3f}, "tokens_per_sec": {t:.1f}, '
                 f'"learning_rate": {lr}, "timestamp": {ts:.3f}, "grad_norm": {1.0:.2f}}}\n'
                 for s, a, t, ts in zip(step.tolist(), loss.tolist(), tps.tolist(), stamp.tolist())]
        data = "".join(lines).encode()
        (viz / "metrics.jsonl").write_bytes(data)
        ends = np.cumsum([len(x) for x in lines]).astype(np.int64)
        cols = fields_from_rows([{"step": 1}])  # the field layout, then the real columns
        cols = {k: np.full(steps, np.nan) for k in cols}
        cols.update(step=step.astype(np.int64), loss=loss, accuracy=np.full(steps, 0.5), tokens_per_sec=tps,
                    learning_rate=np.full(steps, lr), timestamp=stamp, grad_norm=np.ones(steps))
        SidecarWriter(viz, MetricsTable(cols, ends, int(ends[-1]))).close()
        (run / "run.json").write_text(json.dumps({"state": "finished", "step": steps, "total_steps": steps,
                                                  "updated_at": float(stamp[-1]) + i, "reason": "completed"}))
        (run / "config.json").write_text(json.dumps({"lr": lr, "seed": seed, "model": "small", "max_chunks": steps}))
    print(f"wrote {runs} runs x {steps:,} steps to {root} in {time.perf_counter() - started:.0f} s")


def measure(root: Path) -> dict:
    from textual.widgets import Input

    from neurogen_tui.tui.workspace import OverlayPanel, WorkspaceApp

    out: dict = {}
    app = WorkspaceApp(root)

    def full() -> bool:  # every run listed, the first page's charts drawn for the selected runs
        drawn = [p for p in app.query(OverlayPanel) if str(p.query_one(".overlay-caption").render())]
        return bool(drawn) and app.query_one("#runs-table").row_count >= len(app.ws.entries) > 0 and all(
            e.data is not None for e in app.ws.selected())

    async def scenario():
        out["start"] = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            while not full():
                await pilot.pause(0.01)
                if time.perf_counter() - out["start"] > 120:
                    raise SystemExit("no first screen within 120 s")
            out["first_screen_s"] = time.perf_counter() - out["start"]
            out["rss_first_mb"] = rss_mb()
            while any(e.data is None or e.data.partial for e in app.ws.selected()):  # the full histories behind
                await pilot.pause(0.05)
            out["full_history_s"] = time.perf_counter() - out["start"]
            out["rss_mb"] = rss_mb()
            out["runs"], out["selected"] = len(app.ws.entries), len(app.ws.selected())
            await pilot.press("f")
            box = app.query_one("#query", Input)
            times = []
            for ch in "lr>=3e-3":
                box.value += ch  # the Changed handler runs the filter and redraws the sidebar
                t = time.perf_counter()
                app._typed(Input.Changed(box, box.value))
                times.append(time.perf_counter() - t)
            out["filter_ms_worst"] = 1000 * max(times)
            out["filter_ms_median"] = 1000 * sorted(times)[len(times) // 2]
            out["shown_after_filter"] = app.query_one("#runs-table").row_count
            await pilot.press("escape")
            app.ws.set_query("")
            for e in app.ws.entries.values():  # every run drawn at once: memory stays bounded (reduced lines)
                e.selected = True
            t = time.perf_counter()
            app.scan()
            while any(e.data is None or e.data.partial for e in app.ws.entries.values()):
                await pilot.pause(0.1)
            out["all_loaded_s"], out["rss_all_mb"] = time.perf_counter() - t, rss_mb()
            await pilot.press("q")

    asyncio.run(scenario())
    out.pop("start")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("dir", type=Path)
    g.add_argument("--runs", type=int, default=100)
    g.add_argument("--steps", type=int, default=100_000)
    m = sub.add_parser("measure")
    m.add_argument("dir", type=Path)
    args = p.parse_args()
    if args.cmd == "generate":
        generate(args.dir, args.runs, args.steps)
    else:
        r = measure(args.dir)
        print("| runs | selected at open | first full screen | every selected run's whole history | "
              "filter, per key (median / worst) | RSS then / after |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['runs']} | {r['selected']} | **{r['first_screen_s']:.2f} s** | {r['full_history_s']:.2f} s | "
              f"{r['filter_ms_median']:.1f} / **{r['filter_ms_worst']:.1f} ms** | {r['rss_first_mb']:.0f} / "
              f"**{r['rss_mb']:.0f} MB** |")
        print(f"\nEvery one of the {r['runs']} runs selected: all read in {r['all_loaded_s']:.1f} s, RSS "
              f"**{r['rss_all_mb']:.0f} MB**.")


if __name__ == "__main__":
    main()
