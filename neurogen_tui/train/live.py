"""What changes a live run at a step boundary: settings a person asks for (`ctl RUN set lr=3e-4`,
the app's settings dialog), prompts the model answers as it is now (`g`, `ctl RUN prompt`, the
pinned --prompt texts), and what the guard does about trouble (guard.py).

Requests arrive on any thread and wait here; the trainer calls `at_boundary` with the requests
the whole job agreed on, so every rank changes the same settings, and rolls back to the same copy,
at the same step (the settings travel from rank 0). A change is an event (SettingChanged) and a
log line, lands in metrics.jsonl (the learning rate) and in checkpoints (the config), so a
resumed run keeps it.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import OrderedDict

from ..core.events import GuardFired, SettingChanged, TextSample, changes_text
from .config import LIVE_SETTINGS, check_min_lr
from .evaluation import prompt_answer
from .flags import ConfigError
from .guard import ACTION_LEVEL, LEVEL_ACTION, SNAPSHOT_EVERY, Guard, Trouble, to_cpu
from .prompts import pinned_prompts


class Steering:
    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.guard = Guard(trainer.cfg) if trainer.cfg.guard == "on" else None
        self._lock = threading.Lock()
        self._changes: list[tuple[int, dict, str]] = []
        self._prompts: list[tuple[int, str, dict]] = []  # (ticket, text, options) from a person
        self.answers: OrderedDict[int, TextSample | str] = OrderedDict()  # by ticket (a str: why not answered)
        self.pinned = pinned_prompts(trainer.cfg)
        self._pinned_owed = False  # the pinned prompts were due and the samples' allowance was spent
        self._pinned_step = 0
        self._pinned_said = False  # the allowance held the pinned prompts back, and the log said so
        self._tickets = itertools.count(1)
        self.trouble: Trouble | None = None  # what this rank saw after the last step
        self._observed: int | None = None  # the step the guard has looked at and the job not yet settled
        self.eval_now = False
        self._warned: dict[str, int] = {}  # trouble kind -> the step it was last warned of
        self._judging = False  # acting on a checkpoint's look at the state (state_verdict), not on a step

    # ---- from any thread ----------------------------------------------------------------------
    def request(self, changes: dict, source: str = "ctl") -> int:
        """Settings (already checked: config.live_changes) for the next boundary; returns the
        ticket its SettingChanged event will carry."""
        ticket = next(self._tickets)
        with self._lock:
            self._changes.append((ticket, dict(changes), source))
        return ticket

    def request_prompt(self, text: str, options: dict) -> int:
        """A prompt (config.prompt_line's text and options) for the next boundary; returns the
        ticket its answer is kept under in `answers`."""
        ticket = next(self._tickets)
        with self._lock:
            self._prompts.append((ticket, text, dict(options)))
        return ticket

    @property
    def change_waiting(self) -> bool:
        return bool(self._changes or self._prompts)

    @property
    def guard_level(self) -> int:
        return ACTION_LEVEL[self.trouble.action] if self.trouble is not None else 0

    def settings(self) -> dict:
        cfg = self.trainer.cfg
        return {k: getattr(cfg, k) for k in LIVE_SETTINGS}

    # ---- on the trainer's thread ------------------------------------------------------------------
    def after_step(self, step: int, loss: float, grad_norm: float) -> None:
        if self.guard is not None:
            self.trouble = self.guard.observe(step, loss, grad_norm)
            self._observed = step

    def at_boundary(self, requests) -> None:
        """The agreed requests: the guard's verdict on the last step (every step), then any
        settings rank 0 holds."""
        t, g = self.trainer, self.guard
        if g is not None and self._observed is not None:
            g.settle(t.step, requests.guard >= ACTION_LEVEL["pause"])  # a warning alone leaves the copies be
            self._observed = None
            if requests.guard:
                self._act(LEVEL_ACTION[requests.guard])
            elif g.snapshot_due(t.step) and not t.par.sharded:  # a sharded run pauses instead of rolling back
                g.take(t.step, t.model, t.optimizer, self.settings())
            self.trouble = None
        if requests.change:
            with self._lock:
                mine = (self._changes, self._prompts)
                self._changes, self._prompts = [], []
            changes, prompts = t.par.share(mine)
            for ticket, change, source in changes:
                self._apply(ticket, change, source)
            for ticket, text, options in prompts:
                self._answer(ticket, text, options)
        if self.pinned and t.step and t.step != self._pinned_step and (
                t.step % t.cfg.prompt_interval == 0 or self._pinned_owed):
            self._pinned_step = t.step  # once a step, however often the boundary is asked (a pause asks every 0.1 s)
            # generation keeps to the samples' share; a sharded model answers on every rank (its
            # parameters are gathered), so there the step alone decides: every rank the same
            self._pinned_owed = not t.par.sharded and not t.schedule.samples.ready()
            if self._pinned_owed and not self._pinned_said:
                self._pinned_said = True
                t._say(f"pinned prompts: answered when the samples' allowance (--sample-budget "
                       f"{t.cfg.sample_budget:g}) covers them, not every {t.cfg.prompt_interval} steps "
                       "(--sample-budget 0 keeps --prompt-interval whatever it costs)")
            if not self._pinned_owed:
                for text in self.pinned:
                    self._answer(0, text, {"temperature": 0.0, "top_k": None, "tokens": t.cfg.prompt_tokens})

    def _answer(self, ticket: int, text: str, options: dict) -> None:
        """The model as it is now continues `text` (where this rank samples: rank 0, or every rank of
        a sharded model); the answer goes out as a TextSample of kind "prompt"."""
        t = self.trainer
        if not t.par.evaluates:
            return
        started = time.perf_counter()
        try:
            sample = prompt_answer(t.model, t.tokenizer, text, options["tokens"], t.step, t.device, t.autocast,
                                   t.par.whole_model(t.model), options["temperature"], options["top_k"],
                                   seed=t.cfg.seed + t.step)
        except (RuntimeError, ValueError) as exc:  # a prompt must never end the run
            if t.par.is_main:
                t._say(f"prompt not answered: {type(exc).__name__}: {str(exc)[:120]}", "warning")
                if ticket:
                    self.answers[ticket] = f"not answered: {type(exc).__name__}: {str(exc)[:120]}"
            return
        finally:
            t.schedule.sampled(time.perf_counter() - started)
        if not t.par.is_main:
            return
        if ticket:
            self.answers[ticket] = sample
            while len(self.answers) > 100:  # nobody waited for the oldest
                self.answers.popitem(last=False)
        t.bus.publish(sample)

    def _apply(self, ticket: int, changes: dict, source: str) -> None:
        t, g, cfg = self.trainer, self.guard, self.trainer.cfg
        try:  # each request was checked against the config of its time: check it against this one
            check_min_lr(dataclasses.replace(cfg, **{k: v for k, v in changes.items() if k != "eval"}))
        except ConfigError as exc:
            t.bus.publish(SettingChanged(t.step, {}, source, ticket, refused=str(exc)))
            if t.par.is_main:
                t._say(f"not set at step {t.step} ({source}): {exc}", "warning")
            return
        changes = {k: v for k, v in changes.items() if k == "eval" or getattr(cfg, k) != v}  # the same value: no change
        if not changes:
            t.bus.publish(SettingChanged(t.step, {}, source, ticket))
            return
        if g is not None and g.healthy and not t.par.sharded:
            # the state before a change is what a rollback restores, once the next step (its loss is
            # measured on these weights) was healthy: a wreck left by a change just before never is.
            # One copy a boundary, taken before its first change: a second change at the same
            # boundary must not copy the first one's settings as the ones to go back to
            if g.pending is not None and g.pending.step == t.step:
                g.pending.confirm = min(g.pending.confirm, 1)
            else:
                g.take(t.step, t.model, t.optimizer, self.settings(), confirm=1)
        done = {}
        for name, value in changes.items():
            if name == "eval":
                self.eval_now = True
                done["eval"] = ["", "now"]
                continue
            old = getattr(cfg, name)
            setattr(cfg, name, value)
            done[name] = [old, value]
            if name == "weight_decay":  # the decayed group (the first: model.configure_optimizer); norms stay at 0
                t.optimizer.param_groups[0]["weight_decay"] = value
        t.bus.publish(SettingChanged(t.step, done, source, ticket))
        if t.par.is_main:
            t._say(f"set at step {t.step} ({source}): {changes_text(done)}")

    def state_verdict(self) -> str:
        """Before a checkpoint: are the weights as they are now sound? "trusted", "unjudged" (no
        guard, or its window is still filling), or "diverged" (the guard acted: a rollback
        restores the last good copy, and then the state is trusted). Every rank runs the probe (a
        sharded forward is collective); rank 0's verdict is every rank's."""
        t, g = self.trainer, self.guard
        if g is None:
            return "unjudged"
        loss = t.probe_loss()
        verdict = t.par.share(g.judge_state(loss) if loss is not None else False)
        if verdict is None or verdict is False:
            return "trusted" if verdict is None else "unjudged"
        self.trouble, self._judging = verdict, True
        try:
            done = self._act(verdict.action)
        finally:
            self.trouble, self._judging = None, False
        return "trusted" if done == "rollback" else "diverged"

    def _act(self, action: str) -> str:
        """The guard's action on the trouble seen; returns what it did (a rollback can turn into a
        pause or a warning)."""
        t, g, cfg = self.trainer, self.guard, self.trainer.cfg
        trouble = self.trouble or Trouble("elsewhere", "another rank saw trouble", action)
        outcome = ""
        if action == "rollback":
            if t.par.sharded:
                action, outcome = "pause", "paused: rolling back a sharded (FSDP) run is not supported yet"
            elif g.good is None:
                action, outcome = "warn", "no good copy of the state yet (the first one comes after "\
                                          f"step {t.step // SNAPSHOT_EVERY * SNAPSHOT_EVERY + SNAPSHOT_EVERY}); going on"
            elif not g.can_roll_back():
                action, outcome = "pause", (f"paused: {g.rollbacks} rollbacks in a row did not help "
                                            f"(--guard-max-rollbacks {cfg.guard_max_rollbacks})")
            else:
                outcome = self._roll_back()
        if action == "pause":
            outcome = outcome or "paused: resume with p or `neurogen-tui ctl RUN_DIR resume`"
            if t.par.is_main:  # rank 0's pause reaches the others through the agreement; resume too
                t.pause()
        elif action == "warn":
            outcome = outcome or "going on (warn)"
            # a checkpoint's look at a state already warned of (as any kind) is the same trouble
            last = max(self._warned.values(), default=None) if self._judging else self._warned.get(trouble.kind)
            if last is not None and t.step - last < cfg.guard_window:
                return action  # a trouble that goes on is said once a window, not at every step
            self._warned[trouble.kind] = t.step
        t.bus.publish(GuardFired(t.step, trouble.kind, trouble.detail, action, outcome))
        if t.par.is_main:
            t._say(f"guard at step {t.step}: {trouble.detail}: {outcome}", "warning" if action == "warn" else "error")
        return action

    def _roll_back(self) -> str:
        """Weights, optimizer state and settings of the last good copy; the learning rate lowered
        once more for each rollback in a row; the data read on."""
        t, g, cfg = self.trainer, self.guard, self.trainer.cfg
        snap = g.good
        # a copy: on the CPU, the optimizer would otherwise share (and update) the snapshot's tensors
        t.par.restore_weights(t, {"model": snap.model, "optimizer": to_cpu(snap.optimizer)})
        g.rolled_back()
        before = self.settings()
        for name, value in snap.settings.items():
            setattr(cfg, name, value)
        cfg.lr_scale = snap.settings["lr_scale"] * cfg.guard_lr_factor ** g.rollbacks
        after = self.settings()
        changed = {k: [before[k], after[k]] for k in LIVE_SETTINGS if before[k] != after[k]}
        if changed:
            t.bus.publish(SettingChanged(t.step, changed, "guard"))
        t.bad_steps = 0
        return (f"rolled back to step {snap.step}'s weights and settings, learning rate x"
                f"{cfg.lr_scale / snap.settings['lr_scale']:.3g} (now {t.schedule.lr(t.step):.2e})")

