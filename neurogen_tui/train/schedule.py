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


SAMPLE_FLOOR = 30.0  # seconds of training: the samples table gets a new row at least this often...
FLOOR_SHARE = 4  # ...where a sample costs at most this many times the budget over that time


class Schedule:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        # greedy generation is latency-bound (many tiny forward passes) and runs on the training
        # thread: samples keep to --sample-budget of the training time
        self.samples = Allowance(cfg.sample_budget)
        self.since_sample = 0.0  # seconds of training since the last sample
        self.sample_cost = 0.0  # what the last one took
        self.note = ""  # said once by the trainer: the budget spaces samples out past --sample-interval
        self._noted = False

    def trained(self, seconds: float) -> None:
        self.samples.earn(seconds)
        self.since_sample += seconds

    def sampled(self, seconds: float) -> None:
        """A text sample (or a prompt's answer) took `seconds` of the training thread."""
        self.samples.spend(seconds)
        self.sample_cost, self.since_sample = seconds, 0.0

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
        """The first step, then every sample_interval steps as far as the sample allowance goes,
        and at least every SAMPLE_FLOOR seconds of training where a sample is cheap enough that
        this costs at most FLOOR_SHARE times the budget (a slow CPU's table does not stand still;
        a GPU's samples are far cheaper than the floor, so there the budget alone decides)."""
        if step == 1:
            return True
        if step % self.cfg.sample_interval:
            return False
        if self.samples.ready():
            return True
        budget = self.cfg.sample_budget
        if self.since_sample >= SAMPLE_FLOOR and self.sample_cost <= FLOOR_SHARE * budget * SAMPLE_FLOOR:
            return True
        if not self._noted:
            self._noted = True
            every = self.sample_cost / budget if budget else 0.0
            self.note = (f"text samples: about one every {min(every, SAMPLE_FLOOR):.0f} s of training rather than "
                         f"every {self.cfg.sample_interval} steps: a sample takes {1000 * self.sample_cost:.0f} ms "
                         f"and they keep to --sample-budget {budget:g} of training time (--sample-budget 0 "
                         f"keeps --sample-interval whatever it costs)")
        return False
