"""How fast the trainer trains: against a bare loop, and against nanoGPT's CPU recipe.

    python benchmarks/bench_trainer.py overhead [--config default|nanogpt] [--variants bare,trainer] [--quick]
    python benchmarks/bench_trainer.py interleaved [--block 25] [--blocks 24] [--quick]
    python benchmarks/bench_trainer.py nanogpt [--variants nanogpt,trainer] [--interleaved] [--quick]
    python benchmarks/bench_trainer.py profile [--config default|nanogpt] [--quick]

overhead: the trainer as `neurogen-tui --headless` composes it (session.build_run: metrics.jsonl,
    a text sample every 5 steps, evaluation every 250, a dashboard every 50 in the dashboard
    process, run.json and the control socket; plus the headless progress display drawing to a
    terminal on /dev/null) against a bare loop on the same GPT class, seed, optimizer, LR schedule
    and data. Both read batches through the same BatchStream, so data loading is in both. Whole
    runs alternate A B, B A, ... in one process (background work such as dashboards lands in the
    run that caused it); tokens/s is the median over rounds.
interleaved: the same two loops in one process, taking turns in blocks of steps (A B B A), the
    trainer held between its blocks by its own pause at a step boundary. Whole runs on a shared VM
    drift by 20% from one to the next; blocks of a few seconds see the same machine.
nanogpt: our trainer with the recipe's flags against benchmarks/nanogpt_reference.py, 2000 steps
    each: wall time per step and validation loss. With --interleaved, both in one process taking
    turns in blocks of steps (as `interleaved` does), which is how the per-step target is judged.
profile: what each piece of monitoring costs per step, and a cProfile of a short run.

`--variants` may also name `nodash`: the trainer with its VisualizationManager closed before the
run, to tell the dashboards' share of the overhead from the rest, and `nodisplay`: the trainer
without the headless progress bar; and `nanogpt` takes `bare` (our model in a bare loop), to tell
the model's share of a difference from the trainer's. Every result prints as a
markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nanogpt_reference as ref  # noqa: E402

from neurogen_tui.cli.entry import build_parser  # noqa: E402
from neurogen_tui.train.config import apply_flags  # noqa: E402
from neurogen_tui.train.config import TrainingConfig  # noqa: E402
from neurogen_tui.train.validate import validate  # noqa: E402
from neurogen_tui.train.batches import BatchStream  # noqa: E402
from neurogen_tui.train.data import SAMPLE_TRAIN, SAMPLE_VAL, DocumentStream, open_local, train_opener  # noqa: E402
from neurogen_tui.core.events import (EvalResult, EventBus, RunFinished, RunStarted, StateChanged,  # noqa: E402
                                 TextSample, TrainingMetrics)
from neurogen_tui.train.model import GPT, GPTConfig  # noqa: E402
from neurogen_tui.train.schedule import lr_at  # noqa: E402
from neurogen_tui.cli.session import build_run  # noqa: E402
from neurogen_tui.train.tokenizer import load_tokenizer  # noqa: E402
from neurogen_tui.train.trainer import Trainer  # noqa: E402

# The recipe's flags as the issue gives them, in neurogen-tui's spelling.
NANOGPT_FLAGS = ("--n-layer 4 --n-head 4 --n-embd 128 --seq-len 64 --batch-size 12 --tokens-per-chunk 768 "
                 "--lr 1e-3 --min-lr 1e-4 --warmup-steps 100 --max-chunks 2000 --eval-interval 250 "
                 "--eval-iters 20 --beta2 0.99 --epochs 0").split()  # the recipe's AdamW betas; it samples with replacement
# The text the nanogpt benchmark trains on: the bundled sample, or --data DIR (train.jsonl.zst and
# validation.jsonl.zst in SlimPajama's format, as ../shared/data/gutenberg holds two novels)
DATA = {"train": SAMPLE_TRAIN, "val": SAMPLE_VAL}


def make_config(name: str, steps: int, run_dir: str) -> TrainingConfig:
    """'default': what `neurogen-tui --headless --dataset sample` trains; 'nanogpt': the recipe's flags."""
    argv = (["--dataset", "sample"] if name == "default" else
            [*NANOGPT_FLAGS, "--data-files", str(DATA["train"]), "--val-data-files", str(DATA["val"])])
    cfg = apply_flags(vars(build_parser().parse_args(argv + ["--run-dir", run_dir])))
    cfg.max_chunks = steps
    return validate(cfg)


# ---- one run of each contestant --------------------------------------------------------------------
@dataclass
class Trial:
    variant: str
    seconds: float  # the training loop's wall time
    steps: int
    tokens: int
    step_times: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    cpu_seconds: float = 0.0  # CPU time of this process (all threads) and its dashboard process

    @property
    def cpu_ms_per_step(self) -> float:
        return self.cpu_seconds / self.steps * 1e3

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds

    @property
    def ms_per_step(self) -> float:
        return self.seconds / self.steps * 1e3

    @property
    def median_step_ms(self) -> float:
        return statistics.median(self.step_times) * 1e3


class LoopClock:
    """First subscriber on the bus: times the loop from RunStarted to the 'stopping' state (setup,
    the final checkpoint and the final exports, once per run, are outside), step by step."""

    def __init__(self):
        self.start = self.end = self._last = self.cpu = 0.0
        self.step_times: list[float] = []
        self.evals: list[EvalResult] = []
        self.samples = 0

    def __call__(self, event) -> None:
        now = time.perf_counter()
        if isinstance(event, RunStarted):
            self.start = self._last = now
            self.cpu = -_cpu_seconds(os.getpid())
        elif isinstance(event, TrainingMetrics):  # from one step's metrics to the next: one whole iteration
            self.step_times.append(now - self._last)
            self._last = now
        elif isinstance(event, EvalResult):
            self.evals.append(event)
        elif isinstance(event, TextSample):
            self.samples += 1
        elif isinstance(event, StateChanged) and event.state == "stopping":
            self.end = now
            self.cpu += _cpu_seconds(os.getpid())


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def settle(pid: int | None, poll: float = 0.05, limit: float = 30.0) -> float | None:
    """Wait until process `pid` (the dashboard process) has stopped using CPU: called at the end of
    a trainer block, so a dashboard its steps asked for is drawn, and timed, in that block rather
    than slowing the other loop's next one. Returns when it was last seen drawing (None: idle all
    along), and the block is charged up to then: not for the polls that found it idle (two polls,
    ~1% of a 9 s block, were charged to every trainer block before). Conservative: in a real run
    the rest of the draw would overlap the next steps."""
    if not pid:
        return None
    end = time.perf_counter() + limit
    last, still, busy_at = _cpu_seconds(pid), 0, None
    while still < 2 and time.perf_counter() < end:
        time.sleep(poll)
        now = _cpu_seconds(pid)
        if now != last:
            busy_at, still = time.perf_counter(), 0
        else:
            still += 1
        last = now
    return busy_at


def trainer_trial(cfg: TrainingConfig, variant: str = "trainer", display: bool = True) -> Trial:
    """One run composed as run_headless composes it, on this thread; the display draws to a
    terminal on /dev/null, so rich renders exactly what it renders for a user."""
    parts = build_run(cfg, None)
    if variant == "nodash" and parts.viz is not None:  # attribution only: the same run without dashboards
        parts.bus.unsubscribe(parts.viz)
        parts.viz.close()
        parts.viz = None
    clock = LoopClock()
    parts.bus.subscribers.insert(0, clock)
    dashboards = []
    if parts.viz is not None and hasattr(parts.viz, "add_listener"):
        parts.viz.add_listener(lambda kind, path: dashboards.append(path)
                               if kind == "dashboard" and "training_step_" in str(path) else None)
    with contextlib.ExitStack() as stack:
        if display:
            from rich.console import Console

            from neurogen_tui.cli.headless import HeadlessDisplay

            devnull = stack.enter_context(open(os.devnull, "w"))
            shown = HeadlessDisplay(cfg, console=Console(file=devnull, force_terminal=True, width=120))
            parts.bus.subscribe(shown)
            stack.enter_context(shown)
        result = parts.trainer.run()
    proc = getattr(getattr(getattr(parts.viz, "_backend", None), "_proc", None), "pid", None)
    viz_cpu = _cpu_seconds(proc) if proc else 0.0  # the dashboard process, up to the loop's end
    parts.close()
    if not isinstance(result, RunFinished) or result.step != cfg.max_chunks:
        raise SystemExit(f"{variant}: the run did not complete: {result}")
    return Trial(variant, clock.end - clock.start, result.step, result.tokens_seen, clock.step_times,
                 {"evals": [(e.step, e.val_loss) for e in clock.evals], "samples": clock.samples,
                  "dashboards": len(dashboards), "viz_process_cpu_s": viz_cpu, "model": parts.trainer.model},
                 clock.cpu + viz_cpu)


def bare_trial(cfg: TrainingConfig) -> Trial:
    """Nothing but training: the trainer's model class, seed, optimizer, LR schedule, clipping and
    BatchStream (data loading is in both); the loss is read once per step, as any loop logs it."""
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(cfg.tokenizer)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.seq_len, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout))
    optimizer = model.configure_optimizer(cfg.lr, cfg.weight_decay, "cpu")
    opener, _ = train_opener(cfg)
    batches = BatchStream(DocumentStream(opener, epochs=cfg.epochs), tok, cfg.seq_len, cfg.batch_size)
    accum = cfg.grad_accum_steps
    model.train()
    cpu = -_cpu_seconds(os.getpid())
    marks = [time.perf_counter()]
    for step in range(cfg.max_chunks):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_chunks)
        for _ in range(accum):
            x, y = batches.next_batch()
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        marks.append(time.perf_counter())
    cpu += _cpu_seconds(os.getpid())
    return Trial("bare", marks[-1] - marks[0], cfg.max_chunks, cfg.max_chunks * cfg.tokens_per_chunk,
                 [b - a for a, b in zip(marks, marks[1:])], {"model": model, "evals": []}, cpu_seconds=cpu)


def nanogpt_trial(steps: int, data_dir: Path, work: Path) -> Trial:
    """benchmarks/nanogpt_reference.py: nanoGPT's train.py loop (steps + 1 iterations)."""
    work.mkdir(parents=True, exist_ok=True)
    c = ref.RecipeConfig(out_dir=str(work / "out"), max_iters=steps, lr_decay_iters=steps)
    with open(work / "nanogpt.log", "w") as fh:
        cpu = -_cpu_seconds(os.getpid())  # setup (model init, ~0.1 s) included
        res = ref.train(c, data_dir, log=lambda line: print(line, file=fh))
        cpu += _cpu_seconds(os.getpid())
    return Trial("nanogpt", res.loop_seconds, res.iterations, res.iterations * c.batch_size * c.block_size,
                 res.step_times, {"evals": [(e["iter"], e["val"]) for e in res.evals], "model": res.model,
                                  "recipe": c}, cpu)


class OtherLoad:
    """The machine is shared: how much of its CPU other processes used over a window, from
    /proc/stat's busy time less this process's and its dashboard process's."""

    def __init__(self):
        self.busy, self.total, self.own = self._machine() + (_cpu_seconds(os.getpid()),)

    @staticmethod
    def _machine() -> tuple[float, float]:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
        return (sum(f) - f[3] - f[4]) / hz, sum(f) / hz  # busy, all (idle and iowait are not busy)

    def share(self, extra_own: float = 0.0) -> float:
        """Others' share of all cores since this object was made, 0..1."""
        busy, total = self._machine()
        own = _cpu_seconds(os.getpid()) - self.own + extra_own
        return max(0.0, busy - self.busy - own) / max(1e-9, total - self.total)

    @classmethod
    def wait_quiet(cls, limit: float, threshold: float = 0.15) -> float:
        """Wait until others use under `threshold` of the cores for 3 s running, at most `limit` s."""
        start, quiet = time.monotonic(), 0
        while quiet < 3 and time.monotonic() - start < limit:
            probe = cls()
            time.sleep(1.0)
            quiet = quiet + 1 if probe.share() < threshold else 0
        return time.monotonic() - start


def rounds(variants: list[str], n: int) -> list[str]:
    """A B, B A, A B, ...: slow drift on the machine falls on every variant alike."""
    return [v for r in range(n) for v in (variants if r % 2 == 0 else variants[::-1])]


# ---- overhead: trainer vs bare loop ------------------------------------------------------------
def cmd_overhead(args) -> dict:
    variants = args.variants.split(",")
    for v in variants:  # untimed warm-up: imports, allocator, datasets cache, matplotlib's font cache
        one_overhead_trial(v, args.config, 3, args.display)
    trials: list[Trial] = []
    for i, v in enumerate(rounds(variants, args.rounds)):
        waited = OtherLoad.wait_quiet(args.wait_quiet)
        load = OtherLoad()
        t = one_overhead_trial(v, args.config, args.steps, args.display)
        t.info["others"] = load.share(t.info.get("viz_process_cpu_s", 0.0))
        trials.append(t)
        extra = (f", {t.info['samples']} samples, {t.info['dashboards']} dashboards, dashboard process "
                 f"{t.info['viz_process_cpu_s']:.1f} s CPU" if v != "bare" else "")
        print(f"trial {i + 1}: {v:>8} {t.tokens_per_sec:7.0f} tok/s ({t.seconds:.1f} s, median step "
              f"{t.median_step_ms:.1f} ms, CPU {t.cpu_ms_per_step:.1f} ms/step{extra}; other processes {t.info['others']:.0%} of the CPU, "
              f"waited {waited:.0f} s for quiet)", flush=True)
    by = {v: [t for t in trials if t.variant == v] for v in variants}
    med = {v: statistics.median(t.tokens_per_sec for t in ts) for v, ts in by.items()}
    base = variants[0]
    print(f"\nconfig {args.config}: {args.steps} steps per run, {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads, headless display {'on' if args.display else 'off'}\n")
    print(f"| loop | tokens/s, median of {args.rounds} | min | max | median step ms | ratio to {base} (medians) "
          f"| ratio per round | CPU ms/step (median) | others' CPU share per run |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    rows = {}
    for v, ts in by.items():
        tps = [t.tokens_per_sec for t in ts]
        per_round = [a.tokens_per_sec / b.tokens_per_sec for a, b in zip(ts, by[base])]
        step_ms = statistics.median(t.median_step_ms for t in ts)
        cpu_ms = statistics.median(t.cpu_ms_per_step for t in ts)
        rows[v] = {"tokens_per_sec": tps, "median": med[v], "ratio": med[v] / med[base], "per_round": per_round,
                   "median_step_ms": step_ms, "cpu_ms_per_step": cpu_ms, "info": [{k: x for k, x in t.info.items() if k != "model"} for t in ts]}
        print(f"| {v} | {med[v]:.0f} | {min(tps):.0f} | {max(tps):.0f} | {step_ms:.1f} | {med[v] / med[base]:.3f} | "
              + ", ".join(f"{r:.3f}" for r in per_round) + f" | {cpu_ms:.1f} | "
              + ", ".join(f"{t.info['others']:.0%}" for t in ts) + " |")
    return {"config": args.config, "steps": args.steps, "rounds": args.rounds, "results": rows}


# ---- interleaved: trainer and bare loop taking turns in one process, block by block --------------
class BareLoop:
    """bare_trial's loop, a block of steps at a time."""

    def __init__(self, cfg: TrainingConfig):
        torch.manual_seed(cfg.seed)
        tok = load_tokenizer(cfg.tokenizer)
        self.cfg = cfg
        self.model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.seq_len, n_layer=cfg.n_layer,
                                   n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout))
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, "cpu")
        opener, _ = train_opener(cfg)
        self.batches = BatchStream(DocumentStream(opener, epochs=cfg.epochs), tok, cfg.seq_len, cfg.batch_size)
        self.step = 0
        self.model.train()

    def run(self, n: int) -> None:
        cfg, accum = self.cfg, self.cfg.grad_accum_steps
        for _ in range(n):
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_chunks)
            for _ in range(accum):
                x, y = self.batches.next_batch()
                logits = self.model(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
                (loss / accum).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss.item()
            self.step += 1


class SteppedTrainer:
    """The trainer exactly as `neurogen-tui --headless` composes and runs it (Trainer.run on its own
    thread, every subscriber, the dashboard process, the progress display drawing to /dev/null),
    held at a step boundary by its own pause between blocks: resume, let it do `n` steps, and time
    from the resume to the moment it waits again (its whole loop body: step, evaluation, metrics,
    sample, dashboard request, checkpoint)."""

    def __init__(self, cfg: TrainingConfig, display: bool):
        import threading

        from neurogen_tui.core.events import StateChanged as _State

        self.parts = build_run(cfg, None)
        self.trainer = self.parts.trainer
        self._stack = contextlib.ExitStack()
        if display:
            from rich.console import Console

            from neurogen_tui.cli.headless import HeadlessDisplay

            devnull = self._stack.enter_context(open(os.devnull, "w"))
            shown = HeadlessDisplay(cfg, console=Console(file=devnull, force_terminal=True, width=120))
            self.parts.bus.subscribe(shown)
            self._stack.enter_context(shown)
        self.steps, self.dashboards, self.samples, self._target = 0, 0, 0, 0
        self.evals: list[EvalResult] = []
        self._paused = threading.Event()

        def watch(event):
            if isinstance(event, TrainingMetrics):
                self.steps = event.step
                if self.steps >= self._target:
                    self.trainer.pause()  # it waits at the boundary after this step's sample
            elif isinstance(event, TextSample):
                self.samples += 1
            elif isinstance(event, EvalResult):
                self.evals.append(event)
            elif isinstance(event, _State) and event.state in ("paused", "finished", "failed"):
                self._paused.set()

        self.parts.bus.subscribers.insert(0, watch)
        if self.parts.viz is not None and hasattr(self.parts.viz, "add_listener"):
            self.parts.viz.add_listener(lambda kind, path: setattr(self, "dashboards", self.dashboards + 1)
                                        if kind == "dashboard" and "training_step_" in str(path) else None)
        self.trainer.pause()  # setup runs, then it waits before step 1
        self._thread = threading.Thread(target=self.trainer.run, daemon=True)
        self._thread.start()
        self._paused.wait()

    @property
    def viz_pid(self) -> int | None:
        return getattr(getattr(getattr(self.parts.viz, "_backend", None), "_proc", None), "pid", None)

    def run(self, n: int) -> None:
        self._target = self.steps + n
        self._paused.clear()
        self.trainer.resume()
        self._paused.wait()

    def close(self) -> None:
        self.trainer.request_stop()
        self._thread.join()
        self.parts.close()  # the run's last words (notices from their own thread) while the display is open
        self._stack.close()

    def blocks_in_turns(self, a: str, b: str, blocks: int, block: int, switch) -> dict[str, list[float]]:
        """`blocks` blocks of `block` steps, variants `a` and `b` in turns (in_turns); `switch(variant)`
        sets one up before its block. Seconds per block, by variant."""
        times: dict[str, list[float]] = {a: [], b: []}
        for variant in in_turns(a, b, blocks):
            switch(variant)
            t0 = time.perf_counter()
            self.run(block)
            times[variant].append(time.perf_counter() - t0)
        return times


def in_turns(a: str, b: str, blocks: int) -> list[str]:
    """A B B A A B B A ...: two variants taking turns, each first as often as the other (a drift of
    the machine over the run falls on both alike)."""
    return [v for r in range(blocks // 2) for v in ((a, b, b, a)[2 * (r % 2):][:2])]


def cmd_interleaved(args) -> dict:
    """Blocks of `--block` steps, A B B A: the trainer's block then the bare loop's, and so on. A
    block takes seconds, so the machine's drift (which moves whole-run figures by 20% on a shared
    VM) falls on both alike. The dashboard process may still be drawing when a bare block starts;
    its CPU time is split by block so that spill-over is visible rather than hidden. Unless
    --no-settle, a trainer block ends only when the dashboard process is idle again, so the
    dashboards' cost is charged to the trainer, not to the bare loop's next block."""
    run_dir = tempfile.mkdtemp(prefix="bench-interleaved-")
    total = args.blocks * args.block
    try:
        trainer = SteppedTrainer(make_config(args.config, total + 1, str(Path(run_dir) / "t")), args.display)
        bare = BareLoop(make_config(args.config, total + 1, str(Path(run_dir) / "b")))
        trainer.run(args.block)  # untimed warm-up of both: first-step allocations, dashboard import
        bare.run(args.block)
        times = {"trainer": [], "bare": []}
        viz_cpu = {"trainer": 0.0, "bare": 0.0}
        load = OtherLoad()
        for variant in in_turns("trainer", "bare", args.blocks):
            viz0 = _cpu_seconds(trainer.viz_pid) if trainer.viz_pid else 0.0
            t0 = time.perf_counter()
            (trainer if variant == "trainer" else bare).run(args.block)
            t1 = time.perf_counter()
            if variant == "trainer" and args.settle:
                t1 = max(t1, settle(trainer.viz_pid) or t1)
            times[variant].append(t1 - t0)
            if trainer.viz_pid:
                viz_cpu[variant] += _cpu_seconds(trainer.viz_pid) - viz0
        others = load.share(sum(viz_cpu.values()))
        info = {"dashboards": trainer.dashboards, "samples": trainer.samples, "steps": trainer.steps}
        trainer.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    n = len(times["trainer"])
    per_pair = [b / t for t, b in zip(times["trainer"], times["bare"])]
    ratio = sum(times["bare"]) / sum(times["trainer"])
    q1, med, q3 = statistics.quantiles(per_pair, n=4)
    tok = make_config(args.config, 1, run_dir).tokens_per_chunk
    print(f"\nconfig {args.config}: {n} blocks of {args.block} steps each, interleaved A B B A, "
          f"{torch.get_num_threads()} threads, headless display {'on' if args.display else 'off'}; "
          f"{info['dashboards']} dashboards, {info['samples']} samples, other processes {others:.0%} of the CPU\n")
    print("| loop | tokens/s (all blocks) | ms/step | dashboard process CPU during its blocks (s) |")
    print("|---|---:|---:|---:|")
    for v in ("bare", "trainer"):
        secs = sum(times[v])
        print(f"| {v} | {n * args.block * tok / secs:,.0f} | {secs / (n * args.block) * 1e3:.1f} | {viz_cpu[v]:.1f} |")
    print(f"\n**trainer / bare = {ratio:.3f}** (block pairs: median {med:.3f}, quartiles {q1:.3f}-{q3:.3f})")
    return {"config": args.config, "block": args.block, "blocks": n, "times": times, "ratio": ratio,
            "per_pair": per_pair, "viz_cpu": viz_cpu, "others": others, **info}


def one_overhead_trial(variant: str, config: str, steps: int, display: bool) -> Trial:
    run_dir = tempfile.mkdtemp(prefix=f"bench-{variant}-")
    try:
        cfg = make_config(config, steps, run_dir)
        return bare_trial(cfg) if variant == "bare" else trainer_trial(cfg, variant, display and variant != "nodisplay")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# ---- nanoGPT's CPU recipe ----------------------------------------------------------------------
@torch.no_grad()
def val_loss_ours(model: GPT, cfg: TrainingConfig) -> float:
    """Mean loss over every seq_len window of the whole validation file, packed as training packs."""
    model.eval()
    stream = BatchStream(DocumentStream(lambda: open_local([str(DATA["val"])])), load_tokenizer(None),
                         cfg.seq_len, cfg.batch_size)
    total, count = 0.0, 0
    while (batch := stream.next_batch()) is not None:
        x, y = batch
        logits = model(x)
        total += F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
        count += y.numel()
    return total / count


@torch.no_grad()
def val_loss_ref(model: ref.GPT, data_dir: Path, c: ref.RecipeConfig) -> float:
    """The same yardstick for the reference: every block_size window of val.bin."""
    model.eval()
    data = torch.from_numpy(np.fromfile(data_dir / "val.bin", dtype=np.uint8).astype(np.int64))
    n = (len(data) - 1) // c.block_size
    xs, ys = data[: n * c.block_size].view(n, -1), data[1: n * c.block_size + 1].view(n, -1)
    total = 0.0
    for i in range(0, n, c.batch_size):
        _, loss = model(xs[i:i + c.batch_size], ys[i:i + c.batch_size])
        total += loss.item() * ys[i:i + c.batch_size].numel()
    return total / ys.numel()


def recipe_data(data_dir: Path) -> Path:
    """nanoGPT's prepare.py step for DATA: each split's documents joined, one token per byte."""
    texts = {split: "\n".join(row["text"] for row in open_local([str(path)])) for split, path in DATA.items()}
    return ref.write_bins(data_dir, texts["train"], texts["val"])


def cmd_shuffle(args) -> dict:
    """What the shuffled order costs: micro-batches of the nanogpt recipe (12 x 64) read from DATA's
    training file in the stream's order and shuffled, per batch and in all (window reads included),
    and the window's memory; a step of the recipe is one such batch."""
    tok = load_tokenizer(None)
    rows = []
    for window in (0, args.window):
        stream = BatchStream(DocumentStream(lambda: open_local([str(DATA["train"])]), epochs=0), tok, 64, 12,
                             window=window, seed=1337)
        stream.next_batch()  # the first window (or the first document) read
        t0 = time.perf_counter()
        for _ in range(args.batches):
            stream.next_batch()
        per = (time.perf_counter() - t0) / args.batches
        blocks = getattr(stream.blocks, "_tokens", None)
        rows.append({"order": "shuffled" if window else "sequential", "window": window, "us_per_batch": per * 1e6,
                     "window_mib": (blocks.nbytes + stream.blocks._doc.nbytes) / 2**20 if blocks is not None else 0.0})
    print(f"\n{args.batches} micro-batches of 12 x 64 tokens from {DATA['train']}, after the first\n")
    print("| order | window (tokens) | per micro-batch (us), window reads included | window memory (MiB) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['order']} | {r['window']:,} | {r['us_per_batch']:.0f} | {r['window_mib']:.1f} |")
    return {"rows": rows}


def cmd_nanogpt(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-nanogpt-"))
    data_dir = recipe_data(work / "data")
    rows = []
    for i, v in enumerate(rounds(args.variants.split(","), args.rounds)):
        run = work / f"{i}-{v}"
        waited = OtherLoad.wait_quiet(args.wait_quiet)
        load = OtherLoad()
        if v == "nanogpt":
            t = nanogpt_trial(args.steps, data_dir, run)
            full = val_loss_ref(t.info["model"], data_dir, t.info["recipe"])
            name = "nanoGPT recipe (nanogpt_reference.py)"
        elif v == "bare":
            cfg = make_config("nanogpt", args.steps, str(run))
            t = bare_trial(cfg)
            full = val_loss_ours(t.info["model"], cfg)
            name = "our model in a bare loop (no evaluation, no monitoring)"
        else:
            cfg = make_config("nanogpt", args.steps, str(run))
            t = trainer_trial(cfg, v, display=v != "nodisplay")
            full = val_loss_ours(t.info["model"], cfg)
            name = f"neurogen-tui --headless ({v})"
        at, val = t.info["evals"][-1] if t.info["evals"] else (None, float("nan"))
        t.info["others"] = load.share(t.info.get("viz_process_cpu_s", 0.0))
        row = {"run": name, "variant": v, "steps": t.steps, "seconds": t.seconds, "ms_per_step": t.ms_per_step,
               "median_step_ms": t.median_step_ms, "cpu_ms_per_step": t.cpu_ms_per_step, "val_loss": val, "val_at": at, "whole_val_loss": full,
               **{k: x for k, x in t.info.items() if k in ("samples", "dashboards", "viz_process_cpu_s", "others")}}
        rows.append(row)
        print(f"run {i + 1}: {name}: {t.ms_per_step:.1f} ms/step (median {t.median_step_ms:.1f}), "
              f"val {val:.4f} @ {at}, whole val file {full:.4f}; other processes {t.info['others']:.0%} "
              f"of the CPU, waited {waited:.0f} s for quiet", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.steps} steps (nanoGPT's loop runs {args.steps + 1}), 12 x 64 tokens per step, "
          f"{torch.get_num_threads()} threads\n")
    print("| run | steps | loop s | ms/step (wall, all included) | median step ms | CPU ms/step | "
          "val loss, own eval | val loss, whole val file | others' CPU share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['steps']} | {r['seconds']:.1f} | {r['ms_per_step']:.1f} | {r['median_step_ms']:.1f} | "
              f"{r['cpu_ms_per_step']:.1f} | {r['val_loss']:.4f} @ {r['val_at']} | {r['whole_val_loss']:.4f} | {r['others']:.0%} |")
    return {"steps": args.steps, "rows": rows}


def cmd_nanogpt_interleaved(args) -> dict:
    """The recipe and our trainer in one process, taking turns in blocks of steps (A B B A) through
    all their steps, so the machine's drift falls on both alike; each block is timed whole (the
    recipe's evaluations and checkpoint saves, our evaluations, samples, metrics, dashboards and
    progress bar). Then both models' validation loss, by their own evaluation and on the whole file."""
    work = Path(tempfile.mkdtemp(prefix="bench-nanogpt-il-"))
    data_dir = recipe_data(work / "data")
    try:
        OtherLoad.wait_quiet(args.wait_quiet)
        cfg = make_config("nanogpt", args.steps, str(work / "ours"))
        ours = SteppedTrainer(cfg, display=True)
        c = ref.RecipeConfig(out_dir=str(work / "out"), max_iters=args.steps, lr_decay_iters=args.steps)
        recipe = ref.RecipeResult(iterations=0, loop_seconds=0.0)
        logfile = open(work / "nanogpt.log", "w")
        loop = ref.iterations(c, data_dir, recipe, log=lambda line: print(line, file=logfile))
        next(loop)  # set up: model, optimizer
        times = {"nanogpt": [], "trainer": []}
        viz_cpu = {"nanogpt": 0.0, "trainer": 0.0}
        load = OtherLoad()
        pattern = ("nanogpt", "trainer", "trainer", "nanogpt")
        blocks = 0
        while ours.steps < args.steps or recipe.iterations <= args.steps:
            who = pattern[blocks % 4]
            blocks += 1
            viz0 = _cpu_seconds(ours.viz_pid) if ours.viz_pid else 0.0
            t0 = time.perf_counter()
            if who == "trainer" and ours.steps < args.steps:
                ours.run(min(args.block, args.steps - ours.steps))
                t1 = time.perf_counter()
                t1 = max(t1, settle(ours.viz_pid) or t1)
            elif who == "nanogpt" and recipe.iterations <= args.steps:
                for _ in range(args.block if recipe.iterations + args.block <= args.steps else args.steps + 1 - recipe.iterations):
                    next(loop)
                t1 = time.perf_counter()
            else:
                continue
            times[who].append(t1 - t0)
            if ours.viz_pid:
                viz_cpu[who] += _cpu_seconds(ours.viz_pid) - viz0
        others = load.share(sum(viz_cpu.values()))
        logfile.close()
        info = {"dashboards": ours.dashboards, "samples": ours.samples}
        model = ours.trainer.model
        ours_evals = [(e.step, e.val_loss) for e in ours.evals]
        ours.close()
        full = {"nanogpt": val_loss_ref(recipe.model, data_dir, c), "trainer": val_loss_ours(model, cfg)}
        own = {"nanogpt": recipe.evals[-1]["val"], "trainer": ours_evals[-1][1] if ours_evals else float("nan")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = {"nanogpt": recipe.iterations, "trainer": ours.steps}
    pairs = [n / t for n, t in zip(times["nanogpt"], times["trainer"])]
    q1, med, q3 = statistics.quantiles(pairs, n=4)
    ms = {v: sum(times[v]) / steps[v] * 1e3 for v in times}
    print(f"\n{args.steps} steps each (nanoGPT's loop runs {args.steps + 1}) in blocks of {args.block}, interleaved "
          f"A B B A, 12 x 64 tokens per step, {torch.get_num_threads()} threads; {info['dashboards']} dashboards, "
          f"{info['samples']} samples; other processes {others:.0%} of the CPU\n")
    print("| run | steps | ms/step (wall, all included) | val loss, own eval | val loss, whole val file | "
          "dashboard process CPU during its blocks (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {"nanogpt": "nanoGPT recipe (`nanogpt_reference.py`)", "trainer": "`neurogen-tui --headless`, same flags"}
    for v in ("nanogpt", "trainer"):
        print(f"| {names[v]} | {steps[v]} | {ms[v]:.1f} | {own[v]:.4f} | {full[v]:.4f} | {viz_cpu[v]:.1f} |")
    print(f"\n**neurogen-tui per-step speed / nanoGPT's = {ms['nanogpt'] / ms['trainer']:.3f}** "
          f"(block pairs: median {med:.3f}, quartiles {q1:.3f}-{q3:.3f}; above 1: neurogen-tui is faster)")
    return {"steps": steps, "times": times, "ms_per_step": ms, "per_pair": pairs, "val_own": own,
            "val_whole": full, "viz_cpu": viz_cpu, "others": others, **info}


# ---- profile: where the trainer's time goes ---------------------------------------------------
def _ms(fn, n: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def cmd_profile(args) -> dict:
    from rich.console import Console

    from neurogen_tui.cli.headless import HeadlessDisplay
    from neurogen_tui.run.recorder import MetricsRecorder
    from neurogen_tui.core.machine import rss_mb

    run_dir = tempfile.mkdtemp(prefix="bench-profile-")
    cfg = make_config(args.config, 10**6, run_dir)
    trainer = Trainer(cfg, EventBus())
    trainer.setup()
    for _ in range(20):
        metrics = trainer.train_step()
    model, opt = trainer.model, trainer.optimizer

    def bare_step():
        for _ in range(cfg.grad_accum_steps):
            x, y = trainer.batches.next_batch()
            logits = model(x)
            (F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)) / cfg.grad_accum_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    x, y = trainer._last_batch
    with torch.no_grad():
        logits = model(x)
    n = max(1, min(cfg.sample_tokens, cfg.seq_len // 2))
    prompt = torch.cat([x[0], y[0, -1:]])[:-n].unsqueeze(0)
    recorder = MetricsRecorder(Path(run_dir) / "viz")
    display = HeadlessDisplay(cfg, console=Console(file=io.StringIO(), force_terminal=True, width=120))
    display.task = display.progress.add_task("bench", total=None, loss="-", acc="-", tps="-")
    parts = build_run(make_config(args.config, 10**6, str(Path(run_dir) / "parts")), None)
    metrics.step = 51  # not a dashboard step: the per-step path only
    probes = {  # name: (function, calls per timing, runs every N steps)
        "bare step (forward, backward, clip, AdamW)": (bare_step, 1, 1),
        "Trainer.train_step": (trainer.train_step, 1, 1),
        f"text_sample ({n} tokens, KV cache), if every {cfg.sample_interval} steps": (trainer.text_sample, 1, cfg.sample_interval),
        f"  GPT.generate without the cache ({n} full forwards)": (lambda: uncached_generate(model, prompt, n), 1, cfg.sample_interval),
        "accuracy argmax, one micro-batch": (lambda: (logits.argmax(-1) == y).sum().item(), 20, 1 / cfg.grad_accum_steps),
        "rss_mb (/proc/self/statm)": (rss_mb, 20, 1),
        "metrics.jsonl line (dumps + flush)": (lambda: recorder(metrics), 20, 1),
        "headless display, one metrics event": (lambda: display(metrics), 20, 1),
        "bus.publish(metrics) to build_run's subscribers": (lambda: parts.bus.publish(metrics), 20, 1),
        f"progress bar redraw (rich, {display.progress.live.refresh_per_second:g} per second)": (
            lambda: display.progress.console.print(display.progress.get_renderable()), 20, None),
    }
    times: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(args.repeats):  # interleaved, so a noisy moment hits every probe alike
        for name, (fn, calls, _) in probes.items():
            model.train()
            times[name].append(_ms(fn, calls))
    times["evaluate (eval_iters batches)"] = [_ms(trainer.evaluate) for _ in range(3)]
    parts.close()
    every = {name: per for name, (_, _, per) in probes.items()} | {"evaluate (eval_iters batches)": cfg.eval_interval}
    times["dashboard draw (dashboard process, CPU)"] = [dashboard_cpu_ms(cfg, rows=500) for _ in range(2)]
    every["dashboard draw (dashboard process, CPU)"] = cfg.viz_interval
    recorder.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    bare = med["bare step (forward, backward, clip, AdamW)"]
    hz = display.progress.live.refresh_per_second
    every[f"progress bar redraw (rich, {hz:g} per second)"] = 1 / (hz * bare / 1e3)
    if cfg.viz_budget:  # VisualizationManager._charge, when every core is busy: a wait of cpu / budget
        draw = med["dashboard draw (dashboard process, CPU)"]
        name = f"dashboard draw as spaced by the {cfg.viz_budget:.0%} budget (every core busy)"
        med[name] = draw
        every[name] = max(cfg.viz_interval, -(-(draw / cfg.viz_budget / bare) // cfg.viz_interval) * cfg.viz_interval)
    if cfg.sample_budget:  # Schedule.sample_due: at multiples of sample_interval, once the allowance allows
        name = next(k for k in med if k.startswith("text_sample"))
        wait = med[name] / (cfg.sample_budget * med["Trainer.train_step"])
        med[f"text_sample as spaced by the {cfg.sample_budget:.0%} budget"] = med[name]
        every[f"text_sample as spaced by the {cfg.sample_budget:.0%} budget"] = max(
            cfg.sample_interval, -(-wait // cfg.sample_interval) * cfg.sample_interval)
    print(f"\nconfig {args.config}: {cfg.tokens_per_chunk} tokens/step, sample due every {cfg.sample_interval} "
          f"steps under a {cfg.sample_budget:.0%} time budget ({n} tokens), eval every {cfg.eval_interval} "
          f"({cfg.eval_iters} batches), dashboard every {cfg.viz_interval}\n")
    print("| piece | ms each (median) | every N steps | ms per step | % of a bare step |")
    print("|---|---:|---:|---:|---:|")
    for name, ms in med.items():
        per = every[name]
        print(f"| {name} | {ms:.3f} | {per:g} | {ms / per:.3f} | {ms / per / bare * 100:.2f}% |")
    if args.profile_steps:
        profile_run(args.config, args.profile_steps)
    return {"config": args.config, "median_ms": med, "every": every}


@torch.no_grad()
def uncached_generate(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """The greedy continuation as the seed computed it: the whole context again for every token."""
    for _ in range(n):
        idx = torch.cat([idx, model(idx[:, -model.cfg.block_size:])[:, -1, :].argmax(-1, keepdim=True)], dim=1)
    return idx


def dashboard_cpu_ms(cfg: TrainingConfig, rows: int) -> float:
    """CPU time of one dashboard as the dashboard process draws it, in a fresh process (so the
    first draw's matplotlib import is the one measured second time round, not twice)."""
    code = f"""
import time, tempfile
from neurogen_tui.viz.draw import DashboardWriter, DrawRequest
from neurogen_tui.core.events import TrainingMetrics
w = DashboardWriter(tempfile.mkdtemp())
for i in range(1, {rows} + 1):
    w.history.append(vars(TrainingMetrics(step=i, loss=3 / i ** 0.1, accuracy=0.3, tokens_per_sec=3e3,
        gpu_memory_mb=0, learning_rate=1e-3, timestamp=time.time(), rss_mb=500, step_time=0.1)))
w.samples.extend({{"step": s, "input": "text " * 9, "output": "abc", "target": "abd", "accuracy": 0.5}}
                 for s in range({cfg.display_samples}))
w.handle(DrawRequest({rows} // 2, periodic=True), lambda *a: None)  # imports matplotlib
t = time.process_time()
w.handle(DrawRequest({rows}, periodic=True), lambda *a: None)
print((time.process_time() - t) * 1e3)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def profile_run(config: str, steps: int) -> None:
    """cProfile of a whole default run on this thread: the top entries by cumulative time."""
    run_dir = tempfile.mkdtemp(prefix="bench-cprofile-")
    parts = build_run(make_config(config, steps, run_dir), None)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    parts.trainer.run()
    prof.disable()
    seconds = time.perf_counter() - t0
    parts.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(
        r"neurogen_tui|torch/(optim/adam|nn/utils/clip|_tensor)", 24)
    print(f"\ncProfile of a {steps}-step run ({seconds:.1f} s with setup and final checkpoint):\n")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads, for every loop")
    p.add_argument("--json", metavar="PATH", help="also write the raw results here")
    p.add_argument("--wait-quiet", type=float, default=300, metavar="S",
                   help="before each run, wait up to S seconds for other processes to leave the CPU idle")
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overhead", help="trainer vs bare loop, tokens/s")
    o.add_argument("--config", choices=("default", "nanogpt"), default="default")
    o.add_argument("--steps", type=int, default=250, help="steps per run (250: one evaluation, 5 dashboards, as in a long run)")
    o.add_argument("--rounds", type=int, default=4, help="runs of each variant, order alternating")
    o.add_argument("--variants", default="bare,trainer", help="comma list of bare, trainer, nodash; the first is the base")
    o.add_argument("--no-display", dest="display", action="store_false", help="leave out the headless progress bar")
    o.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 2 rounds")
    i = sub.add_parser("interleaved", help="trainer vs bare loop taking turns in blocks of steps, one process")
    i.add_argument("--config", choices=("default", "nanogpt"), default="default")
    i.add_argument("--block", type=int, default=25, help="steps per block")
    i.add_argument("--blocks", type=int, default=24, help="blocks of each loop (even)")
    i.add_argument("--no-display", dest="display", action="store_false", help="leave out the headless progress bar")
    i.add_argument("--no-settle", dest="settle", action="store_false",
                   help="do not wait, at the end of a trainer block, for the dashboard process to go idle")
    i.add_argument("--quick", action="store_true", help="smoke run: 4 blocks of 5 steps")
    n = sub.add_parser("nanogpt", help="our trainer vs nanoGPT's CPU recipe, 2000 steps each")
    n.add_argument("--steps", type=int, default=2000)
    n.add_argument("--rounds", type=int, default=1, help="runs of each variant, order alternating")
    n.add_argument("--variants", default="nanogpt,trainer", help="comma list of nanogpt, trainer, nodash")
    n.add_argument("--interleaved", action="store_true",
                   help="both in one process, taking turns in blocks of --block steps (drift falls on both alike)")
    n.add_argument("--block", type=int, default=25, help="with --interleaved: steps per block")
    n.add_argument("--data", metavar="DIR", help="train.jsonl.zst and validation.jsonl.zst to train on "
                                                 "(default: the bundled sample); e.g. ../shared/data/gutenberg")
    n.add_argument("--quick", action="store_true", help="smoke run: 200 steps")
    sh = sub.add_parser("shuffle", help="the shuffled order's cost per micro-batch, and its memory")
    sh.add_argument("--data", metavar="DIR", help="as for nanogpt")
    sh.add_argument("--batches", type=int, default=20000, help="micro-batches timed (20000: ~13 windows of the default)")
    sh.add_argument("--window", type=int, default=1 << 22, help="--shuffle-buffer, tokens")
    f = sub.add_parser("profile", help="per-step cost of each piece of monitoring, and a cProfile")
    f.add_argument("--config", choices=("default", "nanogpt"), default="default")
    f.add_argument("--repeats", type=int, default=15)
    f.add_argument("--profile-steps", type=int, default=100, help="cProfile a run this long (0: skip)")
    f.add_argument("--quick", action="store_true", help="smoke run: 3 repeats, 10-step cProfile")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if getattr(args, "data", None):
        DATA.update(train=Path(args.data) / "train.jsonl.zst", val=Path(args.data) / "validation.jsonl.zst")
    if getattr(args, "quick", False):
        args.steps, args.rounds, args.repeats, args.profile_steps = {"overhead": 20, "nanogpt": 200}.get(args.cmd), 2, 3, 10
        args.block, args.blocks = (5, 4) if args.cmd == "interleaved" else (25, 0)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} | {platform.machine()} | {os.cpu_count()} CPUs | torch "
          f"{torch.__version__} | {torch.get_num_threads()} threads | python {platform.python_version()} | "
          f"{commit} | load {os.getloadavg()[0]:.1f}", flush=True)
    if args.cmd == "nanogpt" and args.interleaved:
        args.cmd = "nanogpt-interleaved"
    result = {"overhead": cmd_overhead, "interleaved": cmd_interleaved, "nanogpt": cmd_nanogpt,
              "nanogpt-interleaved": cmd_nanogpt_interleaved, "profile": cmd_profile, "shuffle": cmd_shuffle}[args.cmd](args)
    print(f"# done {time.strftime('%H:%M')}, load {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
