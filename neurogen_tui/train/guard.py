"""The guard: a run that catches its own divergence.

After each optimizer step the guard compares the step with the recent ones: a non-finite loss or
gradient (the update is already skipped), a loss spike (the loss more than --guard-spike robust
deviations above the median of the last --guard-window steps: 1.4826 x MAD, at least 1% of the
median, so a flat series is not all spikes) and an exploding gradient norm (--guard-grad times
its recent median). Each trouble has an action (--guard-actions): warn, pause, or rollback.

A state is trusted only once a step *after* it was judged healthy: a step's loss is measured on
the weights before its own update, so the loss of step k+1 is what says whether the weights of
step k were sound. To roll back the guard keeps a last good copy of the training state in host
memory: the model and optimizer state and the live settings, copied to the CPU every
SNAPSHOT_EVERY steps and trusted once CONFIRM_STEPS further steps passed without trouble. A
setting changed live takes a copy first, trusted after one healthy step, so a destructive change
is undone by the rollback, and a second change right after a destructive one never copies the
wreck as "good" (its copy is still waiting for its step when the wreck shows). A checkpoint asks
the same question at once (`judge_state`): the state's loss on the last batch trained, which a
wrecked state cannot hide. Bounded cost: two copies of the
model and optimizer state in RAM (about 12 bytes a parameter each with AdamW: fp32 weights and two
moments), a device-to-host copy every SNAPSHOT_EVERY steps, and a verdict per step that is O(1)
(the window's median is recomputed every LEVEL_EVERY steps): benchmarks/bench_guard.py measures
0.08-0.37% of training time on a CPU.

A rollback restores weights, optimizer state and settings, multiplies the learning rate by
--guard-lr-factor, and reads on: the data that was being read is skipped, not trained again, and
the step counter goes on (metrics.jsonl never repeats a step). After --guard-max-rollbacks
rollbacks without CONFIRM_STEPS healthy steps between them, the guard pauses instead.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .flags import guard_actions

SNAPSHOT_EVERY = 50  # steps between copies of the training state
LEVEL_EVERY = 10  # steps between recomputing the recent median and deviation (they move slowly; a step costs O(1))
CONFIRM_STEPS = 10  # healthy steps after a copy before it is trusted
ACTION_LEVEL = {"warn": 1, "pause": 2, "rollback": 3}  # the job agrees on the strongest (parallel.agree)
LEVEL_ACTION = {v: k for k, v in ACTION_LEVEL.items()}


@dataclass(frozen=True)
class Trouble:
    kind: str  # nonfinite | spike | grad
    detail: str  # one line: what was seen (the step is said beside it)
    action: str  # warn | pause | rollback


def to_cpu(obj):
    """A deep copy of a state dict with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@dataclass
class Snapshot:
    step: int
    model: dict
    optimizer: dict
    settings: dict
    confirm: int = CONFIRM_STEPS  # healthy steps after it before it is trusted


class Guard:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.actions = guard_actions(cfg.guard_actions)
        self.losses: deque[float] = deque(maxlen=cfg.guard_window)
        self.norms: deque[float] = deque(maxlen=cfg.guard_window)
        self.good: Snapshot | None = None
        self.pending: Snapshot | None = None
        self.healthy = 0  # steps in a row without trouble
        self.rollbacks = 0  # rollbacks since the last CONFIRM_STEPS healthy steps
        self.snapshot_seconds = 0.0  # host time spent copying, in all
        self.snapshots = 0
        self._level: tuple[float, float, float] | None = None  # (loss median, its scale, gradient norm median)
        self._level_age = 0

    # ---- watching ------------------------------------------------------------------------------
    def observe(self, step: int, loss: float, grad_norm: float) -> Trouble | None:
        """This rank's view of a step: the trouble seen, with its action, or None. A healthy step
        joins the recent window; what the snapshots do waits for the job's verdict (settle)."""
        trouble = self._judge(step, loss, grad_norm)
        if trouble is None or (trouble.action == "warn" and trouble.kind != "nonfinite"):
            # a warned step still moves the level: a lasting change becomes the new normal
            self.losses.append(loss)
            self.norms.append(grad_norm)
        return trouble

    def settle(self, step: int, trouble_anywhere: bool) -> None:
        """The job's verdict on a step (every rank the same, so every rank keeps the same copies)."""
        if trouble_anywhere:
            self.healthy = 0
            self.pending = None  # taken too close to the trouble to be trusted
            return
        self.healthy += 1
        if self.healthy >= CONFIRM_STEPS:
            self.rollbacks = 0
        if self.pending is not None and step - self.pending.step >= self.pending.confirm:
            self.good, self.pending = self.pending, None  # every step since it was taken was healthy

    def _judge(self, step: int, loss: float, grad_norm: float) -> Trouble | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return Trouble("nonfinite", "non-finite loss or gradient norm", self.actions["nonfinite"])
        enough = len(self.losses) >= max(10, self.losses.maxlen // 2)
        if not enough:
            return None
        median, scale, norm_median = self._recent_level()
        score = (loss - median) / scale
        if score > self.cfg.guard_spike:
            return Trouble("spike", f"loss {loss:.4g} against a recent {median:.4g} "
                                    f"(score {score:.1f} > {self.cfg.guard_spike:g})", self.actions["spike"])
        if norm_median > 0 and grad_norm > self.cfg.guard_grad * norm_median:
            return Trouble("grad", f"gradient norm {grad_norm:.3g}, {grad_norm / norm_median:.0f}x "
                                   f"its recent {norm_median:.3g}", self.actions["grad"])
        return None

    def judge_state(self, loss: float) -> Trouble | None | bool:
        """The current weights judged by their loss on a batch (the last one trained, so the loss
        is if anything low): a Trouble where they look diverged (non-finite, or twice the spike
        score), None where they look sound, False where the guard cannot tell yet (its window
        is still filling). Nothing joins the window: this is not a training step."""
        if not math.isfinite(loss):
            return Trouble("nonfinite", f"the state's loss on the last batch is {loss}", self.actions["nonfinite"])
        if len(self.losses) < max(10, self.losses.maxlen // 2):
            return False
        median, scale, _ = self._recent_level()
        score = (loss - median) / scale
        if score > 2 * self.cfg.guard_spike:
            return Trouble("spike", f"the state's loss on the last batch is {loss:.4g} against a recent "
                                    f"{median:.4g} (score {score:.1f})", self.actions["spike"])
        return None

    def _recent_level(self) -> tuple[float, float, float]:
        """The window's loss median, its robust scale and the gradient norm's median, recomputed
        every LEVEL_EVERY steps."""
        if self._level is None or self._level_age >= LEVEL_EVERY:
            recent = np.fromiter(self.losses, dtype=np.float64)
            median = float(np.median(recent))
            scale = max(1.4826 * float(np.median(np.abs(recent - median))), 0.01 * abs(median), 1e-12)
            self._level = (median, scale, float(np.median(np.fromiter(self.norms, dtype=np.float64))))
            self._level_age = 0
        self._level_age += 1
        return self._level

    # ---- the last good state ---------------------------------------------------------------------
    def snapshot_due(self, step: int) -> bool:
        return step % SNAPSHOT_EVERY == 0 and self.healthy >= 1

    def take(self, step: int, model, optimizer, settings: dict, confirm: int = CONFIRM_STEPS) -> None:
        """Copy the training state to host memory, pending until `confirm` healthy steps after it."""
        started = time.perf_counter()
        self.pending = Snapshot(step, to_cpu(model.state_dict()), to_cpu(optimizer.state_dict()), dict(settings),
                                confirm)
        self.snapshot_seconds += time.perf_counter() - started
        self.snapshots += 1

    def can_roll_back(self) -> bool:
        return self.good is not None and self.rollbacks < self.cfg.guard_max_rollbacks

    def rolled_back(self) -> None:
        self.rollbacks += 1
