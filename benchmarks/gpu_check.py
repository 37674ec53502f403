"""The GPU check (issue #17): one script, one short call on a GPU machine, every CUDA path measured.

    python benchmarks/gpu_check.py --out DIR            # on the GPU box (DIR: $OUT when set)
    python benchmarks/gpu_check.py --dry-run --out DIR  # the same steps, tiny, on the CPU (tested in CI)

It writes `results.md` and `results.json` to DIR after every part, so a call cut short still
returns what it measured, and prints the Markdown at the end. The parts, in the order they run
(a part that would not fit in what is left of `--budget` seconds is recorded as skipped):

1. env: GPU name, memory, torch and CUDA versions; whether the MFU table knows the GPU.
2. model: the `base` preset (12 x 768, seq 1024; with the byte tokenizer 85M parameters, GPT-2
   124M less its 50257-token embedding), bf16 autocast, TF32, eager and `--compile`. Three loops
   take turns in blocks of steps in one process: the trainer exactly as `--headless` composes it
   (metrics, samples, evaluation, the dashboard process), a bare loop on the same GPU that never
   synchronises inside a block, and the same bare loop reading its loss with `.item()` every step.
   Gives tokens/s, MFU, CUDA peak memory, the trainer's ratio to the bare loop and the per-step
   sync's cost.
3. app: the real CLI in a pseudo-terminal (120x40, as tmux gives it) against `--headless`, the app
   with its trainer in a child process (the GPU default) and with `--in-process`, one run each in
   turns: tokens/s ratio, and keys answered (`?` pressed, until the help screen reaches the terminal).
4. nccl: `--nproc-per-node 1`, DDP and FSDP2: start, step, checkpoint, resume on the GPU.
5. tests: `pytest -m gpu` (tests/test_gpu.py: bf16 numerics, CUDA RNG in checkpoints, resume on
   the GPU, text samples on the GPU).
6. api: the logging API's `run.log()` inside a real loop on the GPU (the bare loop reading its loss
   every step, with and without the call, in turns), with what is left of the budget.

On the device machine of this project (Python 3.12, no textual/plotext/zstandard there), carry the
wheels in `.whl/` (see docs/distributed.md, "The GPU check") and run:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; \
        python3 benchmarks/gpu_check.py --out $OUT
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from neurogen_tui.train.batches import BatchStream  # noqa: E402
from neurogen_tui.cli.entry import build_parser  # noqa: E402
from neurogen_tui.train.config import TrainingConfig, apply_flags  # noqa: E402
from neurogen_tui.train.validate import validate  # noqa: E402
from neurogen_tui.train.data import DocumentStream, train_opener  # noqa: E402
from neurogen_tui.core.events import TrainingMetrics  # noqa: E402
from neurogen_tui.train.mfu import flops_per_token, peak_tflops  # noqa: E402
from neurogen_tui.train.model import GPT, GPTConfig  # noqa: E402
from neurogen_tui.train.device import autocast, prepare_device  # noqa: E402
from neurogen_tui.train.schedule import lr_at  # noqa: E402
from neurogen_tui.train.tokenizer import load_tokenizer  # noqa: E402

ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
HELP_MARK = b"neurogen-tui keys"  # the help screen's title (tui/widgets.py HelpScreen)


class Plan:
    """The sizes of one check: the real one on a GPU, or the dry run's tiny one on the CPU."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        if dry:
            self.model_flags = ["--model", "tiny", "--batch-size", "8", "--tokens-per-chunk", "1024"]
            self.block, self.blocks, self.compile = 3, 2, False  # inductor on a CPU needs a compiler and minutes
            self.app_seconds, self.app_warmup_s, self.keys = 2.0, 0.5, 1
        else:
            # 16 x 1024 tokens a micro-batch, two per step (32k tokens): an H200 at 40% MFU does a
            # step in ~50 ms, so a 20-step block is about a second.
            self.model_flags = ["--model", "base", "--batch-size", "16", "--tokens-per-chunk", str(2 * 16 * 1024)]
            self.block, self.blocks, self.compile = 20, 6, True
            self.app_seconds, self.app_warmup_s, self.keys = 30.0, 12.0, 5

    def config(self, run_dir: Path, steps: int, *extra: str) -> TrainingConfig:
        argv = [*self.model_flags, "--dataset", "sample", "--epochs", "0", "--device", self.device,
                "--max-chunks", str(steps), "--run-dir", str(run_dir), *extra]
        return validate(apply_flags(vars(build_parser().parse_args(argv))))

    def cli(self, run_dir: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "neurogen_tui", *self.model_flags, "--dataset", "sample", "--epochs", "0",
                "--device", self.device, "--run-dir", str(run_dir), *extra]


# ---- 1. environment ---------------------------------------------------------------------------------
def part_env(plan: Plan, work: Path) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        info.update(gpu=name, gpu_memory_gib=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    bf16=torch.cuda.is_bf16_supported(), sms=props.multi_processor_count,
                    mfu_peak_tflops=peak_tflops(name), nccl=".".join(map(str, torch.cuda.nccl.version())))
        from neurogen_tui.core.machine import GpuReadings

        readings = GpuReadings(0)  # what the trainer records each step (NVML)
        info.update(nvml=readings.latest(), nvml_note=readings.note)
        readings.close()
    else:
        info.update(gpu=None, mfu_peak_tflops=None)
    return info


# ---- 2. the model: trainer vs bare loop, eager and compiled ------------------------------------------
class BareLoop:
    """Nothing but training on the same GPU: the trainer's model class, seed, optimizer, LR schedule,
    clipping, autocast and batches; it synchronises only at the end of a block, unless `sync`."""

    def __init__(self, cfg: TrainingConfig):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.device = prepare_device(torch.device(cfg.device))
        tok = load_tokenizer(cfg.tokenizer)
        self.model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.seq_len, n_layer=cfg.n_layer,
                                   n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)).to(self.device)
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, self.device.type,
                                                        (cfg.beta1, cfg.beta2))
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        opener, _ = train_opener(cfg)
        self.batches = BatchStream(DocumentStream(opener, epochs=cfg.epochs), tok, cfg.seq_len, cfg.batch_size,
                                   window=cfg.shuffle_buffer, seed=cfg.seed)
        self.autocast = autocast(self.device)
        self.step = 0
        self.model.train()

    def run(self, n: int, sync: bool = False, log=None) -> None:
        cfg, accum = self.cfg, self.cfg.grad_accum_steps
        for _ in range(n):
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_chunks)
            for _ in range(accum):
                x, y = (t.to(self.device, non_blocking=True) for t in self.batches.next_batch())
                with self.autocast:
                    logits = self.forward(x)
                    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
                (loss / accum).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if sync or log is not None:
                value = loss.item()  # what a loop that logs every step does
                if log is not None:  # and the logging API's call, 8 scalars as bench_api.py logs them
                    log({"train/loss": value, "train/lr": self.optimizer.param_groups[0]["lr"], "train/step": self.step,
                         "train/tokens": self.step * cfg.tokens_per_chunk, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
                        step=self.step)
            self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def part_model(plan: Plan, work: Path, compiled: bool) -> dict:
    from bench_trainer import SteppedTrainer  # the trainer held at a step boundary between blocks

    total = (plan.blocks + 1) * plan.block + 1
    extra = ("--compile",) if compiled else ()
    trainer_cfg = plan.config(work / f"trainer-{'compile' if compiled else 'eager'}", total, *extra)
    trainer = SteppedTrainer(trainer_cfg, display=True)
    reported: list[float] = []  # the MFU the trainer itself puts in its metrics (the table's peak)
    trainer.parts.bus.subscribe(lambda e: reported.append(e.mfu) if isinstance(e, TrainingMetrics) and e.mfu else None)
    bare = BareLoop(plan.config(work / "bare", total, *extra))
    device = bare.device
    started = time.perf_counter()
    trainer.run(plan.block)  # untimed warm-up: compilation, first allocations, the dashboard import
    bare.run(plan.block)
    bare.run(plan.block, sync=True)
    warmup_s = time.perf_counter() - started
    runs = {"trainer": lambda: trainer.run(plan.block), "bare": lambda: bare.run(plan.block),
            "bare_item": lambda: bare.run(plan.block, sync=True)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, float | None] = {}
    names = list(runs)
    for b in range(plan.blocks):
        for name in names[b % 3:] + names[:b % 3]:  # rotate who goes first
            _reset_peak(device)
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks.get(name) or 0.0, _peak_mib(device) or 0.0) if device.type == "cuda" else None
    gpt = trainer.trainer.model
    fpt = flops_per_token(gpt.num_params(), trainer_cfg.n_layer, trainer_cfg.n_head,
                          trainer_cfg.n_embd // trainer_cfg.n_head, trainer_cfg.seq_len)
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    info = {"dashboards": trainer.dashboards, "samples": trainer.samples, "evals": len(trainer.evals)}
    trainer.close()
    tokens_per_block = plan.block * trainer_cfg.tokens_per_chunk
    rows = {}
    for name, secs in times.items():
        tps = tokens_per_block * len(secs) / sum(secs)
        rows[name] = {"tokens_per_sec": tps, "ms_per_step": sum(secs) / (len(secs) * plan.block) * 1e3,
                      "mfu": tps * fpt / (peak * 1e12) if peak else None, "peak_mib": peaks.get(name)}
    return {"compile": compiled, "params": gpt.num_params(), "flops_per_token": fpt,
            "tokens_per_step": trainer_cfg.tokens_per_chunk, "block": plan.block, "blocks": plan.blocks,
            "warmup_s": warmup_s, "loops": rows, "trainer_mfu_reported": statistics.median(reported) if reported else None,
            "trainer_vs_bare": rows["bare"]["ms_per_step"] / rows["trainer"]["ms_per_step"],
            "item_cost": rows["bare"]["ms_per_step"] / rows["bare_item"]["ms_per_step"], **info}


def part_api(plan: Plan, work: Path) -> dict:
    """The logging API inside a real loop on the GPU: the bare loop reading its loss every step,
    with and without `run.log()` of 8 scalars, blocks in turns (target: no measurable cost)."""
    import neurogen_tui as ngt

    total = (plan.blocks + 1) * plan.block * 2 + 1
    bare = BareLoop(plan.config(work / "api-bare", total))
    run = ngt.init(run_dir=work / "api-run", config={"lr": bare.cfg.lr})
    bare.run(plan.block, sync=True)
    bare.run(plan.block, log=run.log)  # warm-up of both
    times: dict[str, list[float]] = {"item": [], "logged": []}
    for b in range(plan.blocks):
        for name in (("item", "logged") if b % 2 == 0 else ("logged", "item")):
            t0 = time.perf_counter()
            bare.run(plan.block, sync=True, log=run.log if name == "logged" else None)
            times[name].append(time.perf_counter() - t0)
    run.finish()
    rows = len((work / "api-run" / "training_viz" / "metrics.jsonl").read_text().splitlines())
    tokens = plan.block * bare.cfg.tokens_per_chunk
    tps = {k: tokens * len(v) / sum(v) for k, v in times.items()}
    return {"tokens_per_sec": tps, "logged_vs_item": tps["logged"] / tps["item"], "rows_written": rows,
            "block": plan.block, "blocks": plan.blocks}


# ---- 3. the app in a terminal ----------------------------------------------------------------------------
def _metrics_rate(run_dir: Path, skip_s: float) -> tuple[float | None, int]:
    """Tokens/s of metrics.jsonl from `skip_s` seconds after its first row to its last: (rate, steps)."""
    path = run_dir / "training_viz" / "metrics.jsonl"
    rows = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    if len(rows) < 3:
        return None, len(rows)
    t_first = rows[0]["timestamp"]
    kept = [r for r in rows if r["timestamp"] >= t_first + skip_s] or rows[len(rows) // 2:]
    if len(kept) < 2 or kept[-1]["timestamp"] <= kept[0]["timestamp"]:
        return None, len(rows)
    return (kept[-1]["tokens_seen"] - kept[0]["tokens_seen"]) / (kept[-1]["timestamp"] - kept[0]["timestamp"]), len(kept)


class Terminal:
    """A process on a pseudo-terminal of a given size, its output drained (and kept, ANSI-stripped,
    for what a key brought) by a thread, as tmux would."""

    def __init__(self, cmd: list[str], cols: int = 120, rows: int = 40):
        import fcntl
        import pty
        import struct
        import termios

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its terminal
            os.environ["TERM"] = "xterm-256color"
            os.environ.pop("NO_COLOR", None)
            try:
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._lock = threading.Lock()
        self._seen = bytearray()
        self.bytes = 0
        self.closed = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                chunk = os.read(self.fd, 65536) if ready else b""
            except OSError:
                break
            if ready and not chunk:
                break
            if chunk:
                with self._lock:
                    self.bytes += len(chunk)
                    self._seen += chunk
                    del self._seen[:-200_000]
        self.closed = True

    def press(self, key: bytes, wait_for: bytes | None = None, timeout: float = 5.0) -> float | None:
        """Send a key; with `wait_for`, seconds until that text reached the terminal (None: never)."""
        with self._lock:
            self._seen.clear()
        t0 = time.perf_counter()
        os.write(self.fd, key)
        if wait_for is None:
            return None
        while time.perf_counter() - t0 < timeout:
            with self._lock:
                text = ANSI.sub(b"", bytes(self._seen))
            if wait_for in text:
                return time.perf_counter() - t0
            time.sleep(0.002)
        return None

    def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10)


def _wait_for_rows(run_dir: Path, seconds: float, limit: float, rows: int = 5) -> bool:
    """Wait until metrics.jsonl has rows spanning `seconds`, and at least `rows` of them (a busy
    machine's first steps are slow: a rate needs a few), False where `limit` passed first."""
    end = time.monotonic() + limit
    path = run_dir / "training_viz" / "metrics.jsonl"
    first = None
    while time.monotonic() < end:
        if first is None and path.exists() and path.stat().st_size:
            first = time.monotonic()
        if first is not None and time.monotonic() - first >= seconds and path.read_bytes().count(b"\n") >= rows:
            return True
        time.sleep(0.2)
    return False


def app_run(plan: Plan, work: Path, mode: str, index: int) -> dict:
    run_dir = work / f"app-{index}-{mode}"
    flags = {"headless": ["--headless"], "child": ["--no-in-process"], "in_process": ["--in-process"]}[mode]
    # periodic work at its defaults (samples, evaluation, dashboards); no checkpoint inside the run
    cmd = plan.cli(run_dir, *flags, "--max-chunks", "1000000", "--checkpoint-interval", "1000000")
    t0 = time.perf_counter()
    term = Terminal(cmd)
    result: dict = {"mode": mode}
    try:
        ok = _wait_for_rows(run_dir, plan.app_seconds, plan.app_seconds + 240)
        result["start_to_first_step_s"] = None
        if mode != "headless" and ok:
            latencies = []
            for _ in range(plan.keys):
                shown = term.press(b"?", HELP_MARK)
                latencies.append(shown)
                time.sleep(0.3)
                term.press(b"?")  # the help screen closes on its own key
                time.sleep(0.7)
            result["help_key_s"] = latencies
        if mode == "headless":
            os.kill(term.pid, signal.SIGINT)
        else:
            term.press(b"q")
        code = term.wait(120)
        if code is None:
            term.kill()
        result["exit"] = code
    except BaseException:
        term.kill()
        raise
    result["wall_s"] = time.perf_counter() - t0
    result["tokens_per_sec"], result["steps_measured"] = _metrics_rate(run_dir, plan.app_warmup_s)
    result["terminal_bytes"] = term.bytes
    return result


def part_app(plan: Plan, work: Path) -> dict:
    order = ["headless", "child", "in_process"] + ([] if plan.dry else ["headless"])
    if plan.dry:  # the same runs at once: a rehearsal's figures mean nothing, its minutes in CI do
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(order)) as pool:
            runs = list(pool.map(lambda im: app_run(plan, work, im[1], im[0]), enumerate(order)))
    else:  # in turns, one at a time: the GPU box's figures
        runs = [app_run(plan, work, mode, i) for i, mode in enumerate(order)]
    base = [r["tokens_per_sec"] for r in runs if r["mode"] == "headless" and r["tokens_per_sec"]]
    headless = statistics.mean(base) if base else None
    out = {"runs": runs, "headless_tokens_per_sec": headless}
    for r in runs:
        if r["mode"] != "headless" and headless and r["tokens_per_sec"]:
            out[f"{r['mode']}_ratio"] = r["tokens_per_sec"] / headless
    return out


# ---- 4. one-rank NCCL -----------------------------------------------------------------------------------
# The CLI trains a one-rank job in its own process (Single, no process group), so the check drives
# the data-parallel strategies itself: one rank, NCCL on the GPU (gloo in the dry run), the
# trainer's own DDP wrapping / FSDP2 sharding and checkpoints (torch.distributed.checkpoint for
# FSDP), each phase a fresh process as torchrun would start it.
def one_rank(strategy: str, run_dir: str, device: str, steps: int, resume: bool) -> None:
    """(a subprocess) One phase of a one-rank job; prints what it saw as one JSON line."""
    from neurogen_tui.train.checkpoint import resolve_resume
    from neurogen_tui.core.events import EventBus, RunFinished
    from neurogen_tui.train.parallel import DataParallel, Sharded
    from neurogen_tui.train.trainer import Trainer

    cfg = Plan(device == "cpu").config(Path(run_dir), steps, "--model", "tiny", "--tokens-per-chunk", "1024",
                                       "--strategy", strategy, "--checkpoint-interval", "3", "--eval-interval", "3")
    state = None
    if resume:
        path, loaded, _ = resolve_resume("latest", cfg.checkpoint_dir)
        state = (str(path), loaded)
    bus, seen = EventBus(), {"losses": {}, "evals": 0}
    bus.subscribe(lambda e: seen["losses"].__setitem__(e.step, e.loss) if isinstance(e, TrainingMetrics) else None)
    trainer = Trainer(cfg, bus, state, parallel=Sharded() if strategy == "fsdp" else DataParallel())
    result = trainer.run()
    print(json.dumps({"result": type(result).__name__, "step": result.step, "backend": trainer.par.backend,
                      "device": str(trainer.device), "losses": seen["losses"],
                      "message": getattr(result, "message", ""),
                      "checkpoint": getattr(result, "checkpoint", None),
                      "cuda_rng_saved": bool(trainer.checkpointer.meta()["rng"]["cuda"]) if result.step else None,
                      "ok": isinstance(result, RunFinished)}))


def _one_rank_job(plan: Plan, work: Path, strategy: str) -> dict:
    import socket

    run_dir = work / f"one-rank-{strategy}"
    entry: dict = {}
    for phase, steps in (("start", 6), ("resume", 9)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, __file__, "--one-rank", strategy, str(run_dir), plan.device, str(steps)]
        if phase == "resume":
            cmd.append("--resume")
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        said = [x for x in done.stdout.splitlines() if x.startswith("{")]
        entry[phase] = {"exit": done.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                        **(json.loads(said[-1]) if said else {"ok": False, "message": done.stderr.strip()[-300:]})}
    losses = {**entry["start"].get("losses", {}), **entry["resume"].get("losses", {})}
    entry["steps"] = sorted(map(int, losses))
    entry["ok"] = (entry["start"].get("ok") and entry["resume"].get("ok") and entry["steps"] == list(range(1, 10))
                   and all(map(_finite, losses.values())))
    return entry


def part_nccl(plan: Plan, work: Path) -> dict:
    """DDP and FSDP2 side by side (two one-rank jobs, each its own process group and port)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        jobs = {strategy: pool.submit(_one_rank_job, plan, work, strategy) for strategy in ("ddp", "fsdp")}
        return {strategy: job.result() for strategy, job in jobs.items()}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x and abs(x) != float("inf")


# ---- 5. the GPU tests ---------------------------------------------------------------------------------------
def part_tests(plan: Plan, work: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_gpu.py")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=400)
    lines = done.stdout.strip().splitlines()
    return {"exit": done.returncode, "summary": lines[-1] if lines else "", "failures": [
        line for line in lines if line.startswith(("FAILED", "ERROR"))][:10]}


# ---- the report ---------------------------------------------------------------------------------------------
def _f(x, spec: str = ",.0f", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def markdown(results: dict) -> str:
    env = results.get("env", {})
    lines = [f"# GPU check ({'dry run on the CPU' if results['dry_run'] else 'GPU'}), {results['started']}", "",
             f"{env.get('gpu') or 'no GPU'}; {env.get('gpu_memory_gib', '-')} GiB; torch {env.get('torch')}, "
             f"CUDA {env.get('cuda')}, NCCL {env.get('nccl', '-')}, Python {env.get('python')}, {env.get('cpus')} CPUs; "
             f"MFU table peak: {_f(env.get('mfu_peak_tflops'), '.1f', 'not in the table')} TFLOP/s", ""]
    models = [results[k] for k in ("model_eager", "model_compile") if isinstance(results.get(k), dict) and "loops" in results[k]]
    if models:
        lines += ["| model | loop | tokens/s | ms/step | MFU | CUDA peak (MiB) |", "|---|---|---:|---:|---:|---:|"]
        for m in models:
            for name, row in m["loops"].items():
                lines.append(f"| {'compile' if m['compile'] else 'eager'} | {name} | {_f(row['tokens_per_sec'])} | "
                             f"{row['ms_per_step']:.1f} | {_pct(row['mfu'])} | {_f(row['peak_mib'])} |")
        lines.append("")
        for m in models:
            lines.append(f"- {'compile' if m['compile'] else 'eager'}: **trainer / bare = {m['trainer_vs_bare']:.3f}**, "
                         f"per-step `.item()` costs the bare loop {1 - m['item_cost']:+.1%}; {m['params']:,} parameters, "
                         f"{m['tokens_per_step']:,} tokens a step, {m['blocks']} blocks of {m['block']} steps each; "
                         f"warm-up {m['warmup_s']:.0f} s; the trainer's own MFU {_pct(m['trainer_mfu_reported'])}; "
                         f"{m['samples']} samples, {m['evals']} evaluations, {m['dashboards']} dashboards")
        lines.append("")
    app = results.get("app")
    if isinstance(app, dict) and "runs" in app:
        lines += ["| run (in turns) | tokens/s | ratio to headless | `?` to help on screen (ms) | exit |", "|---|---:|---:|---|---:|"]
        for r in app["runs"]:
            keys = r.get("help_key_s")
            shown = ", ".join("lost" if k is None else f"{k * 1e3:.0f}" for k in keys) if keys else "-"
            ratio = app.get(f"{r['mode']}_ratio") if r["mode"] != "headless" else None
            lines.append(f"| {r['mode']} | {_f(r['tokens_per_sec'])} | {_f(ratio, '.3f', '-')} | {shown} | {r['exit']} |")
        lines.append("")
    nccl = results.get("nccl")
    if isinstance(nccl, dict) and "ddp" in nccl:
        for strategy, e in ((k, nccl[k]) for k in ("ddp", "fsdp") if k in nccl):
            st, re_ = e["start"], e["resume"]
            lines.append(f"- one rank, {strategy} ({st.get('backend') or '?'} on {st.get('device') or '?'}): "
                         f"{'ok' if e['ok'] else 'FAILED'}: steps {'-'.join(map(str, e['steps'][::max(1, len(e['steps']) - 1)])) or 'none'}, "
                         f"checkpoint {Path(str(st.get('checkpoint'))).name} then resumed to "
                         f"{Path(str(re_.get('checkpoint'))).name}, CUDA RNG saved: {st.get('cuda_rng_saved')}"
                         f"{'; ' + (st.get('message') or '') + ' ' + (re_.get('message') or '') if not e['ok'] else ''}")
        lines.append("")
    api = results.get("api")
    if isinstance(api, dict) and "tokens_per_sec" in api:
        tps = api["tokens_per_sec"]
        lines += [f"- the logging API in a real loop: **with run.log() / without = {api['logged_vs_item']:.3f}** "
                  f"({_f(tps['logged'])} vs {_f(tps['item'])} tokens/s, both reading the loss every step; "
                  f"{api['blocks']} blocks of {api['block']} steps each in turns; {api['rows_written']} rows written)", ""]
    tests = results.get("tests")
    if isinstance(tests, dict) and "summary" in tests:
        lines += [f"- `pytest -m gpu`: {tests['summary']} (exit {tests['exit']})", *[f"  - {x}" for x in tests["failures"]], ""]
    for key, value in results.items():
        if isinstance(value, dict) and "error" in value and len(value) <= 2:
            lines.append(f"- {key}: **{value['error']}**")
    lines.append(f"\nTotal {results.get('seconds', 0):.0f} s.")
    return "\n".join(lines) + "\n"


PARTS = ("env", "model_eager", "model_compile", "app", "nccl", "tests", "api")
# what each part may take on the GPU (seconds): a part starts only when that much of --budget is left
NEEDS = {"env": 5, "model_eager": 60, "model_compile": 150, "api": 40, "app": 200, "nccl": 90, "tests": 90}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="folder for results.md/json ($OUT)")
    p.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU")
    p.add_argument("--budget", type=float, default=460.0, help="seconds in all; parts that would not fit are skipped")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--one-rank", nargs=4, metavar=("STRATEGY", "RUN_DIR", "DEVICE", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one_rank:
        strategy, run_dir, device, steps = args.one_rank
        one_rank(strategy, run_dir, device, int(steps), args.resume)
        return 0
    parts = [x for x in args.parts.split(",") if x]
    if unknown := sorted(set(parts) - set(PARTS)):
        p.error(f"--parts: unknown {', '.join(unknown)}")
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run to rehearse on the CPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(args.dry_run)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # the CLI runs below import this checkout, installed or not
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    started = time.perf_counter()
    results: dict = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv[1:]}
    runs = {"env": part_env, "model_eager": lambda pl, w: part_model(pl, w, False),
            "model_compile": lambda pl, w: part_model(pl, w, True), "api": part_api, "app": part_app, "nccl": part_nccl, "tests": part_tests}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in parts:
            if name == "model_compile" and not plan.compile:
                results[name] = {"error": "skipped in the dry run (inductor on a CPU takes minutes)"}
                continue
            left = args.budget - (time.perf_counter() - started)
            need = NEEDS[name] * (0.1 if plan.dry else 1.0)
            if left < need:
                results[name] = {"error": f"skipped: {left:.0f} s left of --budget, it needs about {need:.0f}"}
                continue
            t0 = time.perf_counter()
            print(f"gpu_check: {name} ...", flush=True)
            try:
                work = Path(tmp) / name
                work.mkdir()
                results[name] = runs[name](plan, work)
            except Exception as exc:  # one part failing must not lose the others' figures
                last = str(exc).strip().splitlines()[-1:] or [""]
                results[name] = {"error": f"{type(exc).__name__}: {last[0]}"}
            if isinstance(results[name], dict):
                results[name]["part_s"] = round(time.perf_counter() - t0, 1)
            results["seconds"] = time.perf_counter() - started
            (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
            (out / "results.md").write_text(markdown(results))
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
