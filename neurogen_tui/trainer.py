"""The training loop: steps, LR schedule, eval, samples, checkpoints, pause/stop. Publishes events.

The trainer knows nothing about terminals or files other than its checkpoints: everything it has to
say goes out as an event on its EventBus (see events.py), at the end of each step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
import time
import traceback

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .config import SHAPE_FIELDS, ConfigError, TrainingConfig
from .data import BatchStream, DataError, DocumentStream, collect_eval_batches, train_opener, val_opener
from .events import (CheckpointSaved, EvalResult, EventBus, LogMessage, RunFailed, RunFinished, RunStarted,
                     StateChanged, TextSample, TrainingMetrics)
from .mfu import MfuMeter, flops_per_token
from .model import GPT, GPTConfig
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1


def lr_at(step: int, lr: float, min_lr: float, warmup: int, decay_steps: int | None) -> float:
    """Linear warmup (large early updates on random weights diverge), then cosine decay to min_lr.
    Without a known number of steps the rate stays at `lr` after warmup."""
    if warmup and step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if not decay_steps or step >= decay_steps:
        return lr if not decay_steps else min_lr
    progress = (step - warmup) / max(1, decay_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def pick_device(spec: str) -> torch.device:
    if spec != "auto":
        if spec.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine")
        if spec == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: MPS is not available on this machine")
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def rss_mb() -> float:
    """Current resident memory of this process, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def check_resume_compatible(cfg: TrainingConfig, state: dict, tokenizer_identity: dict, world_size: int = 1) -> None:
    """Refuse a checkpoint whose model shape or tokenizer differs, saying exactly what differs, or
    one written by a different number of ranks (each rank's data position is saved on its own)."""
    saved_world = int(state.get("world_size", 1))
    if saved_world != world_size:
        raise ckpt.CheckpointError(
            f"cannot resume: the checkpoint was written by {saved_world} rank(s) and this run has {world_size}; "
            f"resume it with --nproc-per-node {saved_world} (torchrun: {saved_world} processes in all), "
            f"since each rank's place in the data is saved for that number of ranks")
    saved = state.get("config", {})
    diffs = [f"{name}: checkpoint {saved.get(name)!r}, now {getattr(cfg, name)!r}"
             for name in SHAPE_FIELDS if name != "tokenizer" and saved.get(name) != getattr(cfg, name)]
    saved_tok = state.get("tokenizer", {})
    if saved_tok and saved_tok != tokenizer_identity:
        diffs.append(f"tokenizer: checkpoint {saved_tok.get('kind')} (vocab {saved_tok.get('vocab_size')}), "
                     f"now {tokenizer_identity.get('kind')} (vocab {tokenizer_identity.get('vocab_size')})")
    if diffs:
        raise ckpt.CheckpointError("cannot resume: the checkpoint's model differs (" + "; ".join(diffs) + ")")


class Trainer:
    def __init__(self, cfg: TrainingConfig, bus: EventBus | None = None,
                 resume: tuple[str, dict] | None = None):
        self.cfg = cfg
        self.bus = bus or EventBus()
        self._resume = resume
        self.state = "created"
        self.step = 0
        self.tokens_seen = 0
        self.bad_steps = 0
        self.last_checkpoint: str | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._checkpoint_now = threading.Event()
        self._sample_cost = 0.0
        self._train_time_since_sample = 0.0
        # data parallel (distributed.DistributedTrainer): this rank's share of the stream, and the
        # DDP wrapper whose gradient all-reduce runs on the last micro-step only
        self.data_rank, self.data_world = 0, 1

    # ---- control, safe from any thread ------------------------------------------------------
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def toggle_pause(self) -> None:
        self.resume() if self.paused else self.pause()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        self._running.set()

    def request_checkpoint(self) -> None:
        self._checkpoint_now.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # ---- setup ----------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.bus.publish(StateChanged(state))

    def _say(self, text: str, level: str = "info") -> None:
        {"warning": log.warning, "error": log.error}.get(level, log.info)(text)
        self.bus.publish(LogMessage(level, text))

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.cuda.reset_peak_memory_stats(self.device)
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        state = None
        if self._resume:
            _, state = self._resume
            check_resume_compatible(cfg, state, self.tokenizer.identity(), self.data_world)
        self.model_config = GPTConfig(
            vocab_size=self.tokenizer.vocab_size, block_size=cfg.seq_len, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout,
            # a checkpoint from before `model_config` was saved has LayerNorm biases
            bias=bool(state.get("model_config", {"bias": True}).get("bias", False)) if state else False)
        self.model = self._prepare_model(GPT(self.model_config).to(self.device))
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, self.device.type)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        head_dim = cfg.n_embd // cfg.n_head
        self.mfu = MfuMeter(self.device.type, self._device_name(), cfg.peak_tflops,
                            flops_per_token(self.model.num_params(), cfg.n_layer, cfg.n_head, head_dim, cfg.seq_len),
                            devices=self.data_world)
        self._setup_data(state)
        if state is not None:
            self._restore(state)

    def _prepare_model(self, model: GPT) -> GPT:
        """The model the optimizer will hold (the sharded trainer shards it here)."""
        return model

    def _setup_data(self, state: dict | None) -> None:
        cfg = self.cfg
        opener, remote = train_opener(cfg)
        val = val_opener(cfg)
        self.eval_batches, used = collect_eval_batches(val or opener, self.tokenizer, cfg)
        self._holdout = 0 if val else used
        if not self.eval_batches:
            self._say("validation: not enough text for one evaluation batch; evaluation is off", "warning")
        self.batches = self.train_batches((state or {}).get("data", {}), opener, remote,
                                          self.data_rank, self.data_world)

    def train_batches(self, data_state: dict, opener, remote: bool, rank: int = 0, world_size: int = 1) -> BatchStream:
        """The training batches of one rank's share of the stream, from a saved position."""
        cfg = self.cfg
        docs = DocumentStream(opener, start=int(data_state.get("index", 0)), epoch=int(data_state.get("epoch", 0)),
                              epochs=cfg.epochs, first=self._holdout, remote=remote, stop_event=self._stop,
                              on_warning=lambda m: self._say(m, "warning"), rank=rank, world_size=world_size,
                              by_shard=data_state.get("by_shard", False) if data_state else None)  # old: by document
        leftover = data_state.get("leftover")
        return BatchStream(docs, self.tokenizer, cfg.seq_len, cfg.batch_size,
                           leftover.numpy() if leftover is not None else None)

    def _restore(self, state: dict) -> None:
        self._restore_weights(state)
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _restore_weights(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def checkpoint_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), **self.checkpoint_meta()}

    def checkpoint_meta(self) -> dict:
        """Everything a checkpoint holds besides the model and optimizer state."""
        cfg = self.cfg
        return {
            "format": CHECKPOINT_FORMAT,
            "scheduler": {"kind": "warmup_cosine", "lr": cfg.lr, "min_lr": cfg.min_lr,
                          "warmup_steps": cfg.warmup_steps, "decay_steps": self.decay_steps},
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "data": self.batches.state(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "config": cfg.to_dict(),
            "model_config": dataclasses.asdict(self.model_config),
            "tokenizer": self.tokenizer.identity(),
        }

    @property
    def decay_steps(self) -> int | None:
        return self.cfg.lr_decay_steps or self.cfg.max_chunks

    def save_checkpoint(self, retry_delay: float = 5.0) -> str:
        """Write a checkpoint; on an OS error (disk full, permissions) retry once, then raise
        CheckpointError: the previous checkpoints are intact (atomic writes) and the run stops."""
        state = self.checkpoint_state()
        for attempt in (1, 2):
            try:
                path = ckpt.save_checkpoint(state, self.cfg.checkpoint_dir, self.step,
                                            keep=self.cfg.keep_checkpoints)
                break
            except OSError as exc:
                if attempt == 2:
                    raise ckpt.CheckpointError(
                        f"cannot write checkpoint at step {self.step}: {exc}; training stopped, "
                        f"last good checkpoint: {self.last_checkpoint or 'none'}") from exc
                self._say(f"checkpoint write failed ({exc}); retrying in {retry_delay:.0f}s", "warning")
                self._stop.wait(retry_delay)
        self.last_checkpoint = str(path)
        self.bus.publish(CheckpointSaved(self.step, str(path)))
        return str(path)

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> RunFinished | RunFailed:
        """Set up, train until done or stopped, write the final checkpoint. Never raises."""
        try:
            self.setup()
            self.bus.publish(RunStarted(
                config=self.cfg.to_dict(), device=str(self.device), device_name=self._device_name(),
                n_params=self.model.num_params(), start_step=self.step, total_steps=self.cfg.max_chunks,
                resumed_from=self._resume[0] if self._resume else None))
            if self.mfu.note:
                self._say(self.mfu.note, "warning")
            self._set_state("running")
            reason = self._loop()
            self._set_state("stopping")
            if self.step and (self.last_checkpoint is None or ckpt.checkpoint_step(self.last_checkpoint) != self.step):
                self.save_checkpoint()
            result: RunFinished | RunFailed = RunFinished(self.step, reason, self.tokens_seen, self.last_checkpoint)
            log.info("run finished (%s) at step %d", reason, self.step)  # `watch` reads this line
            self._set_state("finished")
        except Exception as exc:
            result = self._fail(exc)
        self.bus.publish(result)
        return result

    def _fail(self, exc: Exception) -> RunFailed:
        log.error("training failed at step %d", self.step, exc_info=True)
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (DataError, ConfigError, ckpt.CheckpointError)) else str(exc)
        if isinstance(exc, DataError) and getattr(self, "batches", None) is not None and self.step:
            with contextlib.suppress(Exception):  # the model is intact at a step boundary: keep it
                self.save_checkpoint()
        self._set_state("failed")
        return RunFailed(self.step, message, traceback.format_exc())

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return self.device.type

    def _loop(self) -> str:
        cfg = self.cfg
        while True:
            self._wait_if_paused()
            if self._stop.is_set():
                return "stopped"
            if cfg.max_chunks is not None and self.step >= cfg.max_chunks:
                return "completed"
            metrics = self.train_step()
            if metrics is None:
                return "data exhausted"
            step = self.step
            self.publish_step(metrics)
            if step % cfg.checkpoint_interval == 0 or self._checkpoint_now.is_set():
                self._checkpoint_now.clear()
                self.save_checkpoint()
            if self.bad_steps >= cfg.max_bad_steps:
                self._say(f"stopping: {self.bad_steps} steps in a row had a non-finite loss", "error")
                return "too many bad steps"

    def publish_step(self, metrics: TrainingMetrics) -> None:
        """After a step: evaluate when due (its loss rides on the step's metrics), publish the
        metrics, then a text sample when due."""
        cfg, step = self.cfg, metrics.step
        if self.eval_batches and (step % cfg.eval_interval == 0 or step == cfg.max_chunks):
            result = self.evaluate()
            if result is not None:
                metrics.val_loss = result.val_loss
                self.bus.publish(result)
        self.bus.publish(metrics)
        if self._sample_due(step):
            started = time.perf_counter()
            self.bus.publish(self.text_sample())
            self._sample_cost = time.perf_counter() - started
            self._train_time_since_sample = 0.0

    def _sample_due(self, step: int) -> bool:
        """Every sample_interval steps, but never so often that greedy generation costs more than
        sample_budget of the training time (it is latency-bound: many tiny forward passes)."""
        if step == 1:
            return True
        if step % self.cfg.sample_interval:
            return False
        budget = self.cfg.sample_budget
        return not budget or self._train_time_since_sample * budget >= self._sample_cost

    def _wait_if_paused(self) -> None:
        if self._running.is_set():
            return
        self._set_state("paused")
        while not self._running.wait(0.1):
            if self._checkpoint_now.is_set():
                self._checkpoint_now.clear()
                self.save_checkpoint()
        if not self._stop.is_set():
            self._set_state("running")

    def train_step(self) -> TrainingMetrics | None:
        """One optimizer step over tokens_per_chunk tokens; None when the data ran out."""
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, self.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        accum = self.accum_steps
        for micro in range(accum):
            batch = self.batches.next_batch()
            if batch is None:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self._last_batch = batch
            x, y = (t.to(self.device, non_blocking=True) for t in batch)
            self._set_grad_sync(micro == accum - 1)
            with self.autocast:
                logits = self.forward(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            (loss / accum).backward()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(dim=-1) == y).sum()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # .item() synchronises with the GPU: taken once per optimizer step, never per micro-batch
        loss_value = (loss_sum / accum).item()
        if hasattr(grad_norm, "full_tensor"):  # sharded parameters: the norm is a DTensor
            grad_norm = grad_norm.full_tensor()
        norm_value = grad_norm.item()
        skipped = not (math.isfinite(loss_value) and math.isfinite(norm_value))
        if skipped:
            self.bad_steps += 1
            self._say(f"step {self.step + 1}: non-finite loss or gradient, update skipped "
                      f"({self.bad_steps} in a row)", "warning")
        else:
            self.bad_steps = 0
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = accum * cfg.tokens_per_micro_batch
        self.step += 1
        self.tokens_seen += tokens
        accuracy = correct.item() / tokens
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        self._train_time_since_sample += dt
        gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else 0.0
        return TrainingMetrics(step=self.step, loss=loss_value, accuracy=accuracy, tokens_per_sec=tokens / dt,
                               gpu_memory_mb=gpu_mb, learning_rate=lr, timestamp=time.time(),
                               grad_norm=norm_value, tokens_seen=self.tokens_seen, rss_mb=rss_mb(),
                               step_time=dt, skipped=skipped, mfu=self.mfu(tokens / dt))

    @property
    def accum_steps(self) -> int:
        return self.cfg.grad_accum_steps

    def _set_grad_sync(self, last_micro_step: bool) -> None:
        """Data parallel: gradients are all-reduced once per step, in the last backward."""

    def _evaluation_interrupted(self) -> bool:
        """A stop request does not wait for a long evaluation (a sharded run finishes it: every
        rank must make the same collective calls)."""
        return self._stop.is_set()

    def _whole_model(self):
        """A context in which the model's parameters are whole (sharded runs gather them)."""
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> EvalResult | None:
        self.model.eval()
        losses, correct, count = [], 0, 0
        for x, y in self.eval_batches:
            if self._evaluation_interrupted():
                return None
            x, y = x.to(self.device), y.to(self.device)
            with self.autocast:
                logits = self.forward(x)
                losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).float())
            correct += (logits.argmax(-1) == y).sum()
            count += y.numel()
        val_loss = torch.stack(losses).mean().item()
        return EvalResult(self.step, val_loss, float(correct) / count)

    @torch.no_grad()
    def text_sample(self) -> TextSample:
        """The model's greedy continuation of a training block, next to the real continuation."""
        self.model.eval()
        x, y = self._last_batch
        seq = torch.cat([x[0], y[0, -1:]])
        n = max(1, min(self.cfg.sample_tokens, self.cfg.seq_len // 2))
        prompt, target = seq[:-n], seq[-n:]
        with self.autocast, self._whole_model():
            out = self.model.generate(prompt.unsqueeze(0).to(self.device), n)[0, -n:].cpu()
        decode = self.tokenizer.decode
        return TextSample(step=self.step, input=decode(prompt.tolist()), target=decode(target.tolist()),
                          output=decode(out.tolist()), accuracy=float((out == target).float().mean()))
