"""The training loop, written once: steps, evaluation, samples, checkpoints, pause and stop.

The trainer knows nothing about terminals or files other than its checkpoints: everything it has to
say goes out as an event on its EventBus (core/events.py). How it runs on one process or on the ranks of
a torchrun job is its strategy's business (parallel.py); when evaluation, samples and checkpoints
are due is the schedule's (schedule.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import traceback

import torch
import torch.nn.functional as F

from ..core.events import (EvalResult, EventBus, LogMessage, RunFailed, RunFinished, RunStarted, StateChanged,
                           TextSample, TrainingMetrics)
from ..core.machine import GpuReadings, ProcessCpu, rss_mb
from ..run.layout import END_LOGGER, EndReason, RunState
from . import checkpoint as ckpt
from .batches import BatchStream, StepBatches
from .config import ConfigError, TrainingConfig
from .data import DataError, DocumentStream, collect_eval_batches, short_data_note, train_opener, val_opener
from .device import accumulation, autocast, device_name
from .evaluation import block_sample, validation
from .live import Steering
from .mfu import MfuMeter, flops_per_token
from .model import GPT, GPTConfig
from .parallel import Requests, Single, strategy_for
from .schedule import Schedule
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)
end_log = logging.getLogger(END_LOGGER)  # how the run ended: viewers learn it from run.json, not from here
OWN_ERRORS = (DataError, ConfigError, ckpt.CheckpointError)  # their messages are meant for the user as they are


class Trainer:
    def __init__(self, cfg: TrainingConfig, bus: EventBus | None = None,
                 resume: tuple[str, dict] | None = None, parallel: Single | None = None):
        self.cfg = cfg
        self.bus = bus or EventBus()
        self.par = parallel or strategy_for(cfg)
        self.schedule = Schedule(cfg)
        self._resume = resume
        self.state = RunState.CREATED
        self.step = 0
        self.tokens_seen = 0
        self.bad_steps = 0
        self.checkpointer = ckpt.Checkpointer(self, resume[0] if resume else None)  # what one holds, writing it
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._checkpoint_now = threading.Event()
        self._sample_now = False
        self._checkpoint_owed = False  # a periodic checkpoint due at the next boundary
        self._cpu = ProcessCpu()
        self.notes: list[str] = []  # what the command line found before the run (a warmup that outlasts it, a move)
        self.steer = Steering(self)  # live settings and the guard (live.py)

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

    def request_prompt(self, text: str, options: dict) -> int:
        """A prompt the model answers at the next step boundary (config.prompt_line's result);
        returns the ticket its answer is kept under (steer.answers)."""
        return self.steer.request_prompt(text, options)

    def request_changes(self, changes: dict, source: str = "ctl") -> int:
        """Live settings (checked by config.live_changes) for the next step boundary; returns the
        ticket of the SettingChanged event that says they took effect."""
        return self.steer.request(changes, source)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # ---- setup ----------------------------------------------------------------------------------
    def _set_state(self, state: RunState) -> None:
        if state != self.state:
            self.state = state
            self.bus.publish(StateChanged(state))

    def _say(self, text: str, level: str = "info") -> None:
        {"warning": log.warning, "error": log.error}.get(level, log.info)(text)
        self.bus.publish(LogMessage(level, text))

    def setup(self) -> None:
        cfg, par = self.cfg, self.par
        torch.manual_seed(cfg.seed)
        self.device = par.start(cfg.device)
        self.autocast = autocast(self.device)
        self.gpus = GpuReadings.for_device(self.device)  # NVML, on a thread of its own; None off CUDA
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        state = self._resume[1] if self._resume else None
        if state is not None:
            ckpt.check_world_size(state, par.world_size, cfg.strategy)
            ckpt.check_resume_compatible(cfg, state, self.tokenizer.identity())
        self.model_config = GPTConfig(
            vocab_size=self.tokenizer.vocab_size, block_size=cfg.seq_len, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout,
            # a checkpoint from before `model_config` was saved has LayerNorm biases
            bias=bool(state.get("model_config", {"bias": True}).get("bias", False)) if state else False)
        self.model = par.prepare(GPT(self.model_config).to(self.device), self._say)
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, self.device.type,
                                                        (cfg.beta1, cfg.beta2))
        self.forward, self._eval_forward = par.forwards(self.model, cfg.compile)
        self.accum_steps, note = accumulation(cfg.tokens_per_chunk, cfg.tokens_per_micro_batch, par.world_size)
        if note and par.is_main:
            self._say(note, "warning")
        head_dim = cfg.n_embd // cfg.n_head
        self.mfu = MfuMeter(self.device.type, device_name(self.device), cfg.peak_tflops,
                            flops_per_token(self.model.num_params(), cfg.n_layer, cfg.n_head, head_dim, cfg.seq_len),
                            devices=par.world_size)
        self._setup_data(state)
        self.batches = StepBatches(self.batches)
        if state is None and par.is_main and (note := short_data_note(
                cfg, self.tokenizer, self.accum_steps * cfg.tokens_per_micro_batch * par.world_size)):
            self._say(note, "warning")
        if state is not None:
            self._restore(state)

    def _setup_data(self, state: dict | None) -> None:
        cfg, par = self.cfg, self.par
        opener, remote = train_opener(cfg)
        val = val_opener(cfg)
        self.eval_batches, used = collect_eval_batches(val or opener, self.tokenizer, cfg)
        self._holdout = 0 if val else used
        if not self.eval_batches:
            self._say("validation: not enough text for one evaluation batch; evaluation is off", "warning")
        position = ckpt.rank_position(state, par.rank) if state else {}
        self.batches = self.train_batches(position, opener, remote, par.rank, par.world_size)
        if par.world_size > 1 and par.is_main:
            self._say(self.batches.docs.split_note())

    def train_batches(self, data_state: dict, opener, remote: bool, rank: int = 0, world_size: int = 1) -> BatchStream:
        """The training batches of one rank's share of the stream, from a saved position. A run
        shuffles as its checkpoint was written: a checkpoint from before shuffling, or of a run
        with --shuffle-buffer 0, goes on in the stream's order."""
        cfg = self.cfg
        docs = DocumentStream(opener, start=int(data_state.get("index", 0)), epoch=int(data_state.get("epoch", 0)),
                              epochs=cfg.epochs, first=self._holdout, remote=remote, stop_event=self._stop,
                              on_warning=lambda m: self._say(m, "warning"), rank=rank, world_size=world_size,
                              by_shard=data_state.get("by_shard", False) if data_state else None)  # old: by document
        window = data_state["shuffle"]["tokens"] if "shuffle" in data_state else 0 if data_state else cfg.shuffle_buffer
        leftover = data_state.get("leftover")
        return BatchStream(docs, self.tokenizer, cfg.seq_len, cfg.batch_size,
                           leftover.numpy() if leftover is not None else None, window=window, seed=cfg.seed,
                           rank=rank, state=data_state)

    def _restore(self, state: dict) -> None:
        self.par.restore_weights(self, state)
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])

    # ---- checkpoints ----------------------------------------------------------------------------
    @property
    def last_checkpoint(self) -> str | None:
        return self.checkpointer.last

    def save_checkpoint(self) -> str | None:
        return self.checkpointer.save()

    # ---- the run --------------------------------------------------------------------------------
    def run(self) -> RunFinished | RunFailed:
        """Set up, train until done or stopped, write the final checkpoint. Never raises."""
        try:
            self.setup()
            self.bus.publish(RunStarted(
                device=str(self.device), device_name=self.par.describe(device_name(self.device)),
                n_params=self.model.num_params(), start_step=self.step, total_steps=self.cfg.max_chunks,
                resumed_from=self._resume[0] if self._resume else None))
            for note in (*self.notes, self.mfu.note, self.gpus.note if self.gpus and self.par.is_main else ""):
                if note:
                    self._say(note, "warning")
            self._set_state(RunState.RUNNING)
            reason = self._loop()
            self._set_state(RunState.STOPPING)
            if self.step and (self.last_checkpoint is None or ckpt.checkpoint_step(self.last_checkpoint) != self.step):
                self.save_checkpoint()
            result: RunFinished | RunFailed = RunFinished(self.step, reason, self.tokens_seen, self.last_checkpoint)
            end_log.info("run finished (%s) at step %d", reason, self.step)
            self._set_state(RunState.FINISHED)
        except Exception as exc:
            result = self._fail(exc)
        finally:
            if getattr(self, "gpus", None):  # set in setup
                self.gpus.close()
            self.par.close(finished=self.state == RunState.FINISHED)
        self.bus.publish(result)
        return result

    def _fail(self, exc: Exception) -> RunFailed:
        par = self.par
        end_log.error("training failed at step %d%s", self.step, f" (rank {par.rank})" if par.world_size > 1 else "",
                      exc_info=True)
        message = par.failure(exc, self.step) or (str(exc) if isinstance(exc, OWN_ERRORS) else f"{type(exc).__name__}: {exc}")
        if isinstance(exc, DataError) and par.world_size == 1 and getattr(self, "batches", None) is not None and self.step:
            with contextlib.suppress(Exception):  # the model is intact at a step boundary: keep it
                self.save_checkpoint()
        self._set_state(RunState.FAILED)
        return RunFailed(self.step, message, traceback.format_exc())

    def _requests(self, no_data: bool = False) -> Requests:
        requests = self.par.agree(Requests(self._stop.is_set(), self.paused, self._checkpoint_now.is_set(), no_data,
                                           self.steer.change_waiting, self.steer.guard_level))
        self.steer.at_boundary(requests)  # the guard's verdict on the last step, then live settings
        return requests

    def _loop(self) -> str:
        """One optimizer step per turn; at each boundary the requests every rank agreed on."""
        cfg = self.cfg
        while True:
            if cfg.max_chunks is not None and self.step >= cfg.max_chunks:
                self._requests()  # the guard's verdict on the last step (every rank), before the final checkpoint
                return EndReason.COMPLETED
            requests = self._requests(no_data=not self.batches.fill(self.accum_steps))
            # a periodic checkpoint waits for this boundary: the guard has judged the step by now,
            # so a diverged step is rolled back before it is saved (and old good ones pruned)
            owed, self._checkpoint_owed = self._checkpoint_owed, False
            if any(requests) or owed:
                self.batches.give_back()  # the step did not happen: its batches stay unread
                if requests.stop:
                    self.request_stop()
                    return EndReason.STOPPED
                if requests.checkpoint:
                    self._checkpoint_now.clear()
                if requests.checkpoint or owed:
                    self.save_checkpoint()
                if requests.no_data:
                    return EndReason.DATA_EXHAUSTED
                if requests.pause:
                    self._paused()
                continue
            metrics = self.train_step()
            if metrics is not None:
                self.steer.after_step(metrics.step, metrics.loss, metrics.grad_norm)
            if self.par.evaluates:
                self.publish_step(metrics)
            self._checkpoint_owed = self.schedule.checkpoint_due(self.step)
            if self.bad_steps >= cfg.max_bad_steps:
                self._say(f"stopping: {self.bad_steps} steps in a row had a non-finite loss", "error")
                return EndReason.BAD_STEPS

    def _paused(self) -> None:
        """Wait at the step boundary, agreeing every 0.1 s, so resume, stop and a checkpoint
        request reach every rank."""
        self._set_state(RunState.PAUSED)
        while True:
            if self.paused:
                self._running.wait(0.1)
            else:
                time.sleep(0.01)  # ranks > 0 (never paused themselves): the agreement waits for rank 0
            requests = self._requests()
            if requests.stop:
                self.request_stop()
                return
            if requests.checkpoint:
                self._checkpoint_now.clear()
                self.save_checkpoint()
            if not requests.pause:
                break
        self._set_state(RunState.RUNNING)

    def publish_step(self, metrics: TrainingMetrics) -> None:
        """After a step: evaluate when due (its loss rides on the step's metrics), publish the
        metrics, then a text sample when due."""
        if self.eval_batches and (self.schedule.eval_due(metrics.step) or self.steer.eval_now):
            self.steer.eval_now = False
            result = self.evaluate()
            if result is not None:
                metrics.val_loss = result.val_loss
                self.bus.publish(result)
        self.bus.publish(metrics)
        if self._sample_now:
            started = time.perf_counter()
            self.bus.publish(self.text_sample())
            self.schedule.sampled(time.perf_counter() - started)

    # ---- one step ---------------------------------------------------------------------------------
    def train_step(self) -> TrainingMetrics | None:
        """One optimizer step over tokens_per_chunk tokens; None when the data ran out."""
        cfg, par = self.cfg, self.par
        t0 = time.perf_counter()
        read_ahead = self.batches.take_seconds()  # the step's batches, read at the boundary before it
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        summed = self._accumulate()
        if summed is None:
            return None
        loss_sum, correct = summed
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # .item() synchronises with the GPU: taken once per optimizer step, never per micro-batch
        loss_value = (loss_sum / self.accum_steps).item()
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
        tokens = self.accum_steps * cfg.tokens_per_micro_batch  # this rank's
        self.step += 1
        self.tokens_seen += tokens * par.world_size
        accuracy = correct.item() / tokens
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0 + read_ahead  # tokens/s counts the wait for data too
        self.schedule.trained(dt)
        gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else 0.0
        metrics = TrainingMetrics(step=self.step, loss=loss_value, accuracy=accuracy, tokens_per_sec=tokens / dt,
                                  gpu_memory_mb=gpu_mb, learning_rate=lr, timestamp=time.time(),
                                  grad_norm=norm_value, tokens_seen=self.tokens_seen, rss_mb=rss_mb(),
                                  step_time=dt, skipped=skipped, mfu=self.mfu(tokens / dt), cpu_util=self._cpu(),
                                  data_time=read_ahead + self.batches.take_seconds(),
                                  **(self.gpus.latest() if self.gpus else {}))
        self._sample_now = par.job_metrics(self, metrics, par.is_main and self.schedule.sample_due(self.step))
        if self.schedule.note:
            self._say(self.schedule.note)
            self.schedule.note = ""
        return metrics

    def _accumulate(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Forward and backward over the step's micro-batches: (summed loss, correct predictions),
        both still on the device; None when the data ran out."""
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
            self.par.grad_sync(self.model, micro == accum - 1)
            with self.autocast:
                logits = self.forward(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            (loss / accum).backward()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(dim=-1) == y).sum()
        return loss_sum, correct

    def probe_loss(self) -> float | None:
        """The current weights' loss on the last micro-batch trained: the guard's look at a state
        before it is saved (a wrecked one cannot hide it). None before the first step."""
        if getattr(self, "_last_batch", None) is None:
            return None
        self.model.eval()
        return validation(self._eval_forward, [self._last_batch], self.device, self.autocast, lambda: False)[0]

    def evaluate(self) -> EvalResult | None:
        self.model.eval()
        found = validation(self._eval_forward, self.eval_batches, self.device, self.autocast,
                           lambda: self.par.interruptible and self._stop.is_set())
        return None if found is None else EvalResult(self.step, *found)

    def text_sample(self) -> TextSample:
        """The model's greedy continuation of a training block, next to the real continuation."""
        self.model.eval()
        n = max(1, min(self.cfg.sample_tokens, self.cfg.seq_len // 2))
        return block_sample(self.model, self.tokenizer, self._last_batch, n, self.step, self.device, self.autocast,
                            self.par.whole_model(self.model))
