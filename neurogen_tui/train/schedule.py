"""When things happen in a run: the learning rate at each step, and when evaluation, a text sample
and a checkpoint are due, each decided here once. The rules read the config as it is at each
step, so a setting changed during the run takes effect at the next step."""
from __future__ import annotations

import math

from ..core.allowance import Allowance


def lr_at(step: int, lr: float, min_lr: float, warmup: int, decay_steps: int | None) -> float:
    """Linear warmup (large early updates on random weights diverge), then cosine decay to min_lr.
    Without a known number of steps the rate stays at `lr` after warmup."""
    if warmup and step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if not decay_steps or step >= decay_steps:
        return lr if not decay_steps else min_lr
    progress = (step - warmup) / max(1, decay_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


class Schedule:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        # greedy generation is latency-bound (many tiny forward passes) and runs on the training
        # thread: samples keep to --sample-budget of the training time
        self.samples = Allowance(cfg.sample_budget)

    @property
    def decay_steps(self) -> int | None:
        return self.cfg.lr_decay_steps or self.cfg.max_chunks

    def lr(self, step: int) -> float:
        cfg = self.cfg
        return lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, self.decay_steps) * getattr(cfg, "lr_scale", 1.0)

    def eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_interval == 0 or step == self.cfg.max_chunks

    def checkpoint_due(self, step: int) -> bool:
        return step % self.cfg.checkpoint_interval == 0

    def sample_due(self, step: int) -> bool:
        """The first step, then every sample_interval steps as far as the sample allowance goes."""
        return step == 1 or (step % self.cfg.sample_interval == 0 and self.samples.ready())
