"""What the terminal app costs the trainer, and how it answers while training keeps the cores busy.

    python benchmarks/bench_ui.py latency  [--model small] [--seconds 30] [--dashboards]
    python benchmarks/bench_ui.py overhead [--model tiny,small] [--steps 150] [--rounds 3]
    python benchmarks/bench_ui.py interleaved [--model tiny] [--seconds 240] [--period 6]
    python benchmarks/bench_ui.py charts   [--sizes 1000,100000,1000000,10000000]
    python benchmarks/bench_ui.py gil      [--seconds 10]
    python benchmarks/bench_ui.py tmux     [--presses 20]

latency: the app over a real training run (headless Textual, 120x40). A separate thread plays the
    terminal's input thread: at random moments it posts a key to the app's loop; the time until
    the key's action ran (and until the screen after it was composed) is the key latency. A 60 Hz
    timer measures how often the UI loop gets to run (its frame-rate ceiling). --dashboards adds
    the dashboard writer (drawing in its own process) with a dashboard every 10 steps.
overhead: trainer tokens/s without the app against the same run under it (charts, table, log):
    the trainer on a thread of the app's process (--in-process), and the trainer in a child
    process (the default on a GPU) alone and under the app. Whole runs alternate A B, B A, ... and the
    median is reported. On a shared VM whole runs drift by 10-20%: too coarse for a 1% target.
interleaved: one run under the app with the trainer on its thread (the CPU default), the screen's
    work switched on and off every --period seconds (A B B A): off, the app's timers are paused
    (the screen frozen, Textual's loop idle) and its CPU allowance neither grows nor is spent. The
    trainer's steps are counted per period from metrics.jsonl's timestamps, so the machine's
    drift falls on both alike; the ratio is steps/s with the screen working over steps/s without.
charts: the cost of one chart redraw (reduction + plotext build) against the history's length.
gil: the UI loop's rate while another thread holds the GIL in 50 ms pieces (json.dumps of a big
    object), the issue's warning, measured.
tmux: the real command in tmux: `?` sent with send-keys until the help is on the screen
    (capture-pane polled every ~2 ms): key-to-screen latency through a real terminal.
Every result prints as a markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_trainer import OtherLoad  # noqa: E402  (the machine is shared: measure the others too)

from textual import events  # noqa: E402
from textual.binding import Binding  # noqa: E402

from neurogen_tui.train.config import TrainingConfig  # noqa: E402
from neurogen_tui.core.events import EventBus  # noqa: E402
from neurogen_tui.run.history import MetricsHistory  # noqa: E402
from neurogen_tui.run.recorder import MetricsRecorder  # noqa: E402
from neurogen_tui.cli.session import RunParts, build_run  # noqa: E402
from neurogen_tui.train.trainer import Trainer  # noqa: E402
from neurogen_tui.tui.app import MonitorApp  # noqa: E402
from neurogen_tui.tui.charts import CHARTS  # noqa: E402
from neurogen_tui.tui.rundir import RunDirSource  # noqa: E402
from neurogen_tui.tui.source import InProcessSource  # noqa: E402


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def machine() -> str:
    import torch

    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), load average {load:.1f}"


def make_cfg(run_dir: Path, model: str, steps: int) -> TrainingConfig:
    cfg = TrainingConfig(run_dir=str(run_dir))
    cfg.apply_test_mode()
    cfg.apply_preset(model)
    cfg._model = model  # for the child's command line
    cfg.tokens_per_chunk = cfg.batch_size * cfg.seq_len * (4 if model == "small" else 2)
    cfg.max_chunks = steps
    cfg.epochs = 0
    cfg.sample_interval = 5
    cfg.eval_interval = 250
    cfg.checkpoint_interval = 100_000
    cfg.viz_interval = 10
    return cfg


def bare_parts(cfg: TrainingConfig) -> RunParts:
    bus = EventBus()
    recorder = MetricsRecorder(cfg.viz_dir)
    bus.subscribe(recorder)
    return RunParts(trainer=Trainer(cfg, bus), bus=bus, recorder=recorder, viz=None)


# The app's niceness raised hands the cores to a child trainer, but its screen then starves: at 10,
# on 2 busy cores, keys took 0.6 s at p95 (results/ui.md). Off unless NEUROGEN_TUI_APP_NICE asks.
APP_NICENESS = int(os.environ.get("NEUROGEN_TUI_APP_NICE", "0") or 0)


def lower_own_priority(by: int | None = None):
    """This process (the app, once the child trainer is started) yields the CPU to the trainer;
    returns a function that restores the old priority where allowed."""
    by = APP_NICENESS if by is None else by
    if by <= 0:
        return lambda: None
    try:
        old = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, old + by))
    except (OSError, AttributeError):
        return lambda: None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, old)


def in_process(parts: RunParts) -> InProcessSource:
    return InProcessSource(parts)


def probe_class(base):
    """`base` plus an invisible key whose action records when it ran and when the screen after it
    was composed; the action writes a log line, as p, c and d do."""

    class Probe(base):
        BINDINGS = [Binding("f12", "probe", show=False, priority=True)]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.handled: dict[int, float] = {}
            self.painted: dict[int, float] = {}
            self.ticks: list[float] = []
            self.probe_id = 0

        def on_mount(self) -> None:  # Textual calls MonitorApp.on_mount as well
            self.set_interval(1 / 60, lambda: self.ticks.append(time.perf_counter()))

        def action_probe(self) -> None:
            n = self.probe_id
            self.handled[n] = time.perf_counter()
            self._say(f"probe {n}")
            self.call_after_refresh(lambda: self.painted.setdefault(n, time.perf_counter()))

    return Probe


ProbeApp = probe_class(MonitorApp)


def press_keys(app: ProbeApp, loop, sent: dict, stop: threading.Event) -> None:
    """The terminal's input thread, played: a key at a random moment every 150-400 ms."""
    n = 0
    while not stop.wait(random.uniform(0.15, 0.4)):
        n += 1

        def post(n=n):
            app.probe_id = n
            app.post_message(events.Key("f12", None))

        sent[n] = time.perf_counter()
        loop.call_soon_threadsafe(post)


async def run_latency(cfg: TrainingConfig, seconds: float, composed: bool, child: bool = False) -> dict:
    proc = None
    if child:  # the trainer in a child process (dashboards: composed, every 10 steps)
        from neurogen_tui.cli.launch import trainer_command

        flags = child_flags(cfg) + (["--viz-interval", "10", "--viz-budget", "0"] if composed else [])
        proc = subprocess.Popen(trainer_command(flags), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        app = ProbeApp(RunDirSource(cfg.run_dir, poll=0.25, child=proc))
        restore = lower_own_priority()
    else:
        parts = build_run(cfg, None, control=False) if composed else bare_parts(cfg)
        app = ProbeApp(in_process(parts))
    sent: dict[int, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        while app.step < 3:
            await pilot.pause(0.1)
        stop = threading.Event()
        thread = threading.Thread(target=press_keys, args=(app, asyncio.get_running_loop(), sent, stop))
        first_step, t0 = app.step, time.perf_counter()
        app.ticks.clear()
        thread.start()
        await asyncio.sleep(seconds)
        stop.set()
        thread.join()
        await pilot.pause(0.5)
        steps, span = app.step - first_step, time.perf_counter() - t0
        ticks = np.diff(app.ticks) * 1000
        await pilot.press("q")
        while app.return_code is None:
            await pilot.pause(0.1)
    if proc is not None:
        proc.wait()
        restore()
    handled = [(app.handled[n] - sent[n]) * 1000 for n in sent if n in app.handled]
    painted = [(app.painted[n] - sent[n]) * 1000 for n in sent if n in app.painted]
    return {"keys": len(sent), "answered": len(handled), "p50": pct(handled, 50), "p95": pct(handled, 95),
            "max": max(handled), "paint_p50": pct(painted, 50), "paint_p95": pct(painted, 95), "paint_max": max(painted),
            "tick_hz": 1000 / float(np.mean(ticks)), "tick_p95": pct(ticks, 95), "tick_max": float(ticks.max()),
            "steps_per_s": steps / span, "chart_ms": app.chart_seconds * 1000}


def cmd_latency(args) -> None:
    print(f"machine: {machine()}\n")
    print("| workload | keys | action p50 / p95 / max (ms) | on screen p50 / p95 / max (ms) | "
          "UI loop (60 Hz timer) | tick p95 / max (ms) | steps/s | chart redraw (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.model.split(","):
        for child, composed in itertools.product([m == "child" for m in args.modes.split(",")],
                                                 [False, True] if args.dashboards else [False]):
            OtherLoad.wait_quiet(args.wait_quiet)
            load = OtherLoad()
            with tempfile.TemporaryDirectory() as tmp:
                cfg = make_cfg(Path(tmp) / "run", model, 100_000)
                r = asyncio.run(run_latency(cfg, args.seconds, composed, child))
            name = f"{model} model, trainer in a {'child process' if child else 'thread (--in-process)'}"
            name += ", dashboards every 10 steps" if composed else ""
            name += " (others' CPU not separated)" if child else f" (others {load.share():.0%} of the CPU)"
            print(f"| {name} | {r['answered']}/{r['keys']} | {r['p50']:.1f} / {r['p95']:.1f} / {r['max']:.1f} | "
                  f"{r['paint_p50']:.1f} / {r['paint_p95']:.1f} / {r['paint_max']:.1f} | {r['tick_hz']:.1f} Hz | "
                  f"{r['tick_p95']:.1f} / {r['tick_max']:.1f} | {r['steps_per_s']:.1f} | {r['chart_ms']:.1f} |",
                  flush=True)


# ---- overhead -----------------------------------------------------------------------------------
class Run:
    """One training run's figures: tokens/s over the run, the median step time (the trainer's own
    measure of one optimizer step), CPU seconds of the trainer and of the UI (this process less
    the trainer thread, or all of this process when the trainer is a child) - CPU time is not
    stretched by other processes."""

    def __init__(self, run_dir: Path, trainer_cpu: float, ui_cpu: float, wall: float):
        rows = [json.loads(line) for line in (run_dir / "training_viz" / "metrics.jsonl").read_text().splitlines()][5:]
        self.tok_s = (rows[-1]["tokens_seen"] - rows[0]["tokens_seen"]) / (rows[-1]["timestamp"] - rows[0]["timestamp"])
        self.step_ms = statistics.median(r["step_time"] for r in rows) * 1000
        self.trainer_cpu, self.other_cpu, self.wall = trainer_cpu, ui_cpu, wall


def timed(parts: RunParts) -> dict:
    """Make parts.trainer.run record its own thread's CPU time."""
    seen: dict = {}
    run = parts.trainer.run

    def timed_run():
        t0 = time.thread_time()
        try:
            return run()
        finally:
            seen["cpu"] = time.thread_time() - t0

    parts.trainer.run = timed_run
    return seen


def run_bare(cfg: TrainingConfig) -> Run:
    parts = bare_parts(cfg)
    seen = timed(parts)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    thread = threading.Thread(target=parts.trainer.run)  # a thread, as under the app
    thread.start()
    thread.join()
    parts.close()
    return Run(Path(cfg.run_dir), seen["cpu"], time.process_time() - cpu0 - seen["cpu"], time.perf_counter() - wall0)


async def until_done(app) -> None:
    """The app at 120x40 until its run has ended, then q. It waits with asyncio.sleep, not the
    Pilot's pause (which waits for the screen to settle, ~1 ms of the UI thread each time): only
    the app's own work is measured."""
    async with app.run_test(size=(120, 40)) as pilot:
        while app.run_state.done is None:
            await asyncio.sleep(0.25)
        await pilot.press("q")


def run_app(cfg: TrainingConfig) -> Run:
    """--in-process: the trainer on a thread of the app's process."""
    parts = bare_parts(cfg)
    seen = timed(parts)
    app = MonitorApp(in_process(parts))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    asyncio.run(until_done(app))
    return Run(Path(cfg.run_dir), seen["cpu"], time.process_time() - cpu0 - seen["cpu"], time.perf_counter() - wall0)


def child_flags(cfg: TrainingConfig) -> list[str]:
    """The CLI flags of make_cfg's run (no dashboards in the measured window, as bare_parts)."""
    return ["--test", "--model", cfg._model, "--tokens-per-chunk", str(cfg.tokens_per_chunk),
            "--max-chunks", str(cfg.max_chunks), "--epochs", "0", "--sample-interval", str(cfg.sample_interval),
            "--eval-interval", str(cfg.eval_interval), "--checkpoint-interval", "100000",
            "--viz-interval", "100000", "--run-dir", cfg.run_dir]


def run_child(cfg: TrainingConfig, with_app: bool) -> Run:
    """The trainer in a child process (launch.py's command; the default on a GPU), alone or under
    the app (tui/rundir.py's source over the child) in this process."""
    from neurogen_tui.cli.launch import trainer_command

    env = dict(os.environ)
    if torch_threads := getattr(cfg, "_threads", 0):
        env["OMP_NUM_THREADS"] = str(torch_threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    proc = subprocess.Popen(trainer_command(child_flags(cfg)), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    if with_app:
        restore = lower_own_priority()
        asyncio.run(until_done(MonitorApp(RunDirSource(cfg.run_dir, poll=0.25, child=proc))))
        restore()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(Path(cfg.run_dir), usage.ru_utime + usage.ru_stime, time.process_time() - cpu0,
               time.perf_counter() - wall0)


VARIANTS = {
    "thread": (("no display", run_bare), ("app, --in-process", run_app)),
    "child": (("child alone", lambda cfg: run_child(cfg, False)), ("child + app", lambda cfg: run_child(cfg, True))),
}


def cmd_overhead(args) -> None:
    print(f"machine: {machine()}\n")
    print("| model | trainer | runs | tok/s, without / with the app (median) | ratio | median step, without / "
          "with (ms) | UI CPU per second of run | trainer CPU per step, without / with (ms) | others' CPU share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.model.split(","):
        for mode in args.modes.split(","):
            (name_a, fn_a), (name_b, fn_b) = VARIANTS[mode]
            runs: dict[str, list[Run]] = {name_a: [], name_b: []}
            others = []
            for fn in (fn_a, fn_b):  # untimed warm-up: imports, allocator, the datasets cache
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = make_cfg(Path(tmp) / "run", model, 10)
                    cfg._threads = args.threads
                    fn(cfg)
            for r in range(args.rounds):
                for name, fn in (((name_a, fn_a), (name_b, fn_b)) if r % 2 == 0 else ((name_b, fn_b), (name_a, fn_a))):
                    OtherLoad.wait_quiet(args.wait_quiet)
                    load = OtherLoad()
                    with tempfile.TemporaryDirectory() as tmp:
                        cfg = make_cfg(Path(tmp) / "run", model, args.steps)
                        cfg._threads = args.threads
                        runs[name].append(fn(cfg))
                    one = runs[name][-1]
                    others.append(load.share(one.trainer_cpu if mode == "child" else 0.0))
                    print(f"<!-- {model} {name}: {one.tok_s:,.0f} tok/s, step {one.step_ms:.1f} ms, trainer CPU "
                          f"{one.trainer_cpu:.1f} s, UI CPU {one.other_cpu:.1f} s in {one.wall:.1f} s; "
                          f"others {others[-1]:.0%} -->", flush=True)

            def med(name: str, fn) -> float:
                return statistics.median(fn(x) for x in runs[name])

            ui = med(name_b, lambda x: x.other_cpu / x.wall) - med(name_a, lambda x: x.other_cpu / x.wall)
            tok_a, tok_b = med(name_a, lambda x: x.tok_s), med(name_b, lambda x: x.tok_s)
            print(f"| {model} | {'thread of the app (CPU default)' if mode == 'thread' else 'child process (GPU default)'} "
                  f"| {args.rounds} + {args.rounds} | {tok_a:,.0f} / {tok_b:,.0f} | {tok_b / tok_a:.3f} | "
                  f"{med(name_a, lambda x: x.step_ms):.1f} / {med(name_b, lambda x: x.step_ms):.1f} | "
                  f"{ui * 1000:.0f} ms ({ui:.1%} of a core) | "
                  f"{med(name_a, lambda x: x.trainer_cpu / args.steps) * 1000:.0f} / "
                  f"{med(name_b, lambda x: x.trainer_cpu / args.steps) * 1000:.0f} | "
                  f"{min(others):.0%}-{max(others):.0%} |", flush=True)


# ---- interleaved ----------------------------------------------------------------------------------
class SwitchedApp(MonitorApp):
    """MonitorApp whose periodic work (the drain and chart timers) can be paused and resumed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timers = []
        self._saved_balance = 0.0

    def set_interval(self, *args, **kwargs):
        timer = super().set_interval(*args, **kwargs)
        self.timers.append(timer)
        return timer

    def screen_off(self) -> None:
        for timer in self.timers:
            timer.pause()
        self.budget.tick(self.run_state.trained)  # charge what the period spent, then hold the allowance where it is
        self._saved_balance = self.budget.balance

    def screen_on(self) -> None:
        self.budget.forget()  # the next tick starts counting afresh: the pause earns nothing
        self.budget.balance = self._saved_balance
        for timer in self.timers:
            timer.resume()


def cmd_interleaved(args) -> None:
    print(f"machine: {machine()}\n")
    print("| model | --ui-budget | periods on + off | steps/s, screen frozen / working | ratio | screen CPU a "
          "second while working | others' CPU share |")
    print("|---|---|---|---|---|---|---|")
    for model in args.model.split(","):
        OtherLoad.wait_quiet(args.wait_quiet)
        load = OtherLoad()
        with tempfile.TemporaryDirectory() as tmp:
            cfg = make_cfg(Path(tmp) / "run", model, 1_000_000)
            parts = bare_parts(cfg)
            app = SwitchedApp(in_process(parts), ui_budget=args.ui_budget)
            periods: list[tuple[str, float, float, float]] = []  # (on/off, start, end, screen CPU)

            async def scenario():
                async with app.run_test(size=(120, 40)) as pilot:
                    while app.run_state.step < 20:  # setup, first steps and the first chart redraw
                        await asyncio.sleep(0.25)
                    await asyncio.sleep(2.0)
                    order = itertools.cycle(("on", "off", "off", "on"))
                    end = time.time() + args.seconds
                    while time.time() < end:
                        mode = next(order)
                        (app.screen_on if mode == "on" else app.screen_off)()
                        spent, t0 = app.budget.spent, time.time()
                        await asyncio.sleep(args.period)
                        if mode == "on":
                            app.budget.tick(app.run_state.trained)
                        periods.append((mode, t0, time.time(), app.budget.spent - spent))
                    app.screen_on()
                    await pilot.press("q")
                    while app.return_code is None:
                        await asyncio.sleep(0.1)

            asyncio.run(scenario())
            stamps = np.array([json.loads(line)["timestamp"] for line in
                               (cfg.viz_dir / "metrics.jsonl").read_text().splitlines()])
        steps = {"on": 0, "off": 0}
        secs = {"on": 0.0, "off": 0.0}
        cpu = 0.0
        pairs = []
        for mode, t0, t1, spent in periods[1:]:  # the first: the switch from the warm-up
            n = int(((stamps > t0 + 0.2) & (stamps <= t1)).sum())  # a step that straddles the switch: skipped
            steps[mode] += n
            secs[mode] += t1 - t0 - 0.2
            cpu += spent if mode == "on" else 0.0
            pairs.append((mode, n / (t1 - t0 - 0.2)))
        ratio = (steps["on"] / secs["on"]) / (steps["off"] / secs["off"])
        rates_on = [r for m, r in pairs if m == "on"]
        rates_off = [r for m, r in pairs if m == "off"]
        print(f"| {model} | {args.ui_budget:g} | {len(rates_on)} + {len(rates_off)} of {args.period:g} s | "
              f"{steps['off'] / secs['off']:.1f} / {steps['on'] / secs['on']:.1f} | **{ratio:.3f}** | "
              f"{cpu / secs['on'] * 1000:.1f} ms | {load.share(0.0):.0%} |", flush=True)


# ---- charts -------------------------------------------------------------------------------------
def cmd_charts(args) -> None:
    """One redraw as the app does it: the rows added since the last redraw (100 here) read into
    each chart's ChartSeries, reduced to the chart's width, and the plotext build at 60x12."""
    from textual_plotext.plot import Plot

    from neurogen_tui.tui.charts import chart_series

    print(f"machine: {machine()}\n")
    print("| history (steps) | first load, 4 charts (ms) | redraw: 100 new rows, reduction (ms) | "
          "redraw: plot build, 4 charts at 60x12 (ms) | points drawn |")
    print("|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        h = MetricsHistory()
        rng = np.random.default_rng(0)

        def grow(start: int, count: int) -> None:
            steps = np.arange(start + 1, start + count + 1)
            h.extend_columns({"steps": steps, "loss": 5 * np.exp(-steps / max(n, 1)) + rng.random(count) * 0.1,
                              "accuracy": rng.random(count), "throughput": 1e4 + rng.random(count),
                              "learning_rate": np.full(count, 1e-3), "val_loss": np.where(steps % 250 == 0, 4.0, np.nan)})

        grow(0, n)
        series = [chart_series(spec) for spec in CHARTS]
        t0 = time.perf_counter()
        for cs in series:
            cs.update(h)
        first_ms = (time.perf_counter() - t0) * 1000
        reduce_ms, build_ms, points = [], [], 0
        for r in range(5):
            grow(n + r * 100, 100)
            t0 = time.perf_counter()
            lines = [cs.points(120) for cs in series if cs.update(h) or True]
            reduce_ms.append((time.perf_counter() - t0) * 1000)
            t1 = time.perf_counter()
            for chart_lines in lines:
                plt = Plot()
                for x, y in chart_lines.values():
                    if len(x):
                        plt.plot(x.tolist(), y.tolist(), marker="braille")
                plt.plotsize(60, 12)
                plt.build()
            build_ms.append((time.perf_counter() - t1) * 1000)
            points = sum(len(x) for chart_lines in lines for x, _ in chart_lines.values())
        print(f"| {n:,} | {first_ms:.0f} | {statistics.median(reduce_ms):.1f} | {statistics.median(build_ms):.1f} | "
              f"{points} |", flush=True)


# ---- GIL ----------------------------------------------------------------------------------------
def cmd_gil(args) -> None:
    from textual.app import App

    def payload(n: int) -> dict:
        return {"rows": [{"step": i, "loss": i * 0.5, "text": "x" * 20} for i in range(n)]}

    def dumps_ms(obj) -> float:
        t0 = time.perf_counter()
        json.dumps(obj)
        return (time.perf_counter() - t0) * 1000

    probe = statistics.median(dumps_ms(payload(10_000)) for _ in range(5))
    big = payload(int(10_000 * 50 / probe))  # one json.dumps of ~50 ms on this machine, now
    dumps_ms = statistics.median(dumps_ms(big) for _ in range(3))

    class Ticker(App):
        def on_mount(self):
            self.ticks = []
            self.set_interval(1 / 60, lambda: self.ticks.append(time.perf_counter()))

    async def measure(hold: bool) -> tuple[float, float]:
        app = Ticker()
        stop = threading.Event()

        def holder():
            while not stop.wait(0.05):
                json.dumps(big)

        async with app.run_test() as pilot:
            thread = threading.Thread(target=holder)
            if hold:
                thread.start()
            await asyncio.sleep(args.seconds)
            stop.set()
            if hold:
                thread.join()
            ticks = np.diff(app.ticks) * 1000
            await pilot.press("ctrl+q")
        return 1000 / float(np.mean(ticks)), pct(ticks, 95)

    print(f"machine: {machine()}; one json.dumps of the test object: {dumps_ms:.0f} ms\n")
    print("| another thread | UI loop (60 Hz timer) | tick p95 (ms) |")
    print("|---|---|---|")
    for hold in (False, True):
        hz, p95 = asyncio.run(measure(hold))
        what = f"json.dumps ({dumps_ms:.0f} ms) every 50 ms" if hold else "idle"
        print(f"| {what} | {hz:.1f} Hz | {p95:.1f} |", flush=True)


# ---- tmux ---------------------------------------------------------------------------------------
def cmd_tmux(args) -> None:
    sock = f"ngt-bench-{os.getpid()}"
    tm = ["tmux", "-L", sock]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "neurogen_tui", "--test", "--max-chunks",
                                                "100000", "--epochs", "0", "--run-dir", str(Path(tmp) / "run")])
        subprocess.run([*tm, "-f", "/dev/null", "new-session", "-d", "-s", "b", "-x", "120", "-y", "40",
                        f"cd {shlex.quote(str(ROOT))} && {cmd}"], check=True)

        def screen() -> str:
            return subprocess.run([*tm, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout

        def wait(pattern: str, present: bool = True, limit: float = 120.0) -> float:
            t0 = time.perf_counter()
            while (re.search(pattern, screen()) is not None) != present:
                if time.perf_counter() - t0 > limit:
                    raise RuntimeError(f"{pattern!r} never {'appeared' if present else 'went'}")
            return time.perf_counter() - t0

        try:
            wait(r"RUNNING .*step \d+")
            OtherLoad.wait_quiet(args.wait_quiet)
            load = OtherLoad()
            time.sleep(3)
            t_poll = []
            for _ in range(20):
                t0 = time.perf_counter()
                screen()
                t_poll.append(time.perf_counter() - t0)
            opened, closed = [], []
            for _ in range(args.presses):
                time.sleep(random.uniform(0.2, 0.5))
                subprocess.run([*tm, "send-keys", "-t", "b", "?"])
                opened.append(wait("neurogen-tui keys") * 1000)
                time.sleep(random.uniform(0.2, 0.5))
                subprocess.run([*tm, "send-keys", "-t", "b", "Escape"])
                closed.append(wait("neurogen-tui keys", present=False) * 1000)
            others = load.share()
            subprocess.run([*tm, "send-keys", "-t", "b", "q"])
            wait(r"RUNNING", present=False)
        finally:
            time.sleep(5)
            subprocess.run([*tm, "kill-server"])
    both = opened + closed
    print(f"machine: {machine()}; one capture-pane takes {statistics.median(t_poll) * 1000:.1f} ms (included)\n")
    print("| key, through tmux | presses | to screen p50 (ms) | p95 (ms) | max (ms) |")
    print("|---|---|---|---|---|")
    print(f"| `?` opens help, Esc closes it (others {others:.0%} of the CPU) | {len(both)} | {pct(both, 50):.0f} | {pct(both, 95):.0f} | {max(both):.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("latency")
    a.add_argument("--model", default="small")
    a.add_argument("--seconds", type=float, default=30.0)
    a.add_argument("--dashboards", action="store_true")
    a.add_argument("--modes", default="child,thread", help="child: the trainer in a child process (neurogen-tui's "
                   "default on a GPU); thread: on a thread of the app's process (its default on a CPU)")
    a = sub.add_parser("overhead")
    a.add_argument("--model", default="tiny,small")
    a.add_argument("--steps", type=int, default=150)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--modes", default="thread,child",
                   help="thread: no display vs the app with the trainer on its thread (--in-process); "
                        "child: the trainer child alone vs under the app (the default on a GPU)")
    a = sub.add_parser("interleaved")
    a.add_argument("--model", default="tiny")
    a.add_argument("--seconds", type=float, default=240.0, help="measured time, after the warm-up")
    a.add_argument("--period", type=float, default=6.0, help="seconds with the screen working, then without")
    a.add_argument("--ui-budget", type=float, default=MonitorApp.UI_BUDGET, help="the app's --ui-budget")
    a = sub.add_parser("charts")
    a.add_argument("--sizes", default="1000,100000,1000000,10000000")
    a = sub.add_parser("gil")
    a.add_argument("--seconds", type=float, default=10.0)
    a = sub.add_parser("tmux")
    a.add_argument("--presses", type=int, default=20)
    for a in sub.choices.values():
        a.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                       help="wait up to S seconds for other processes to leave the CPU before each measurement")
        a.add_argument("--threads", type=int, default=0,
                       help="torch threads (default: torch's own); 1 keeps a shared machine's noise down")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    {"latency": cmd_latency, "overhead": cmd_overhead, "interleaved": cmd_interleaved, "charts": cmd_charts, "gil": cmd_gil, "tmux": cmd_tmux}[args.cmd](args)


if __name__ == "__main__":
    main()
