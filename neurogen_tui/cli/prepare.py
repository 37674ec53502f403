"""Before a run: its flags read over its checkpoint's recipe, its directory chosen (runs/<name> by
default) and locked, and what is worth saying about it before it starts."""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from ..run.layout import CHECKPOINT_DIR, RUNS_HOME, RunLayout
from ..run.listing import newest_run
from ..run.lock import NoLock, RunLock
from ..train.checkpoint import CheckpointError, check_world_size, list_checkpoints, resolve_resume
from ..train.config import TrainingConfig, apply_flags, warmup_note
from ..train.env import NOTIFY_ENV, holds_run_dir, job_world_size, under_launcher
from ..train.flags import ConfigError
from ..train.validate import validate

log = logging.getLogger(__name__)


NOTES: list[str] = []  # said before the run starts, and again on its screen and in its log once it has one


def say_before_the_run(text: str, now: bool = False) -> None:
    """A note the run's display says when it starts (the app's log pane, the headless lines, the
    log); `now`, also printed here at once (a child trainer, which says the others itself, would
    not know of it)."""
    NOTES.append(text)
    log.warning(text)
    if now:
        print(f"neurogen-tui: {text}")


def take_handed_notify(cfg: TrainingConfig) -> TrainingConfig:
    """A launcher's --notify URLs and --notify-cmd commands, handed over in the environment (kept
    off this child's command line, where `ps` shows it: launch.without_secrets)."""
    handed = os.environ.pop(NOTIFY_ENV, "")
    if handed:
        secrets = json.loads(handed)
        cfg.notify = cfg.notify or tuple(secrets.get("notify", ()))
        cfg.notify_cmd = cfg.notify_cmd or tuple(secrets.get("notify_cmd", ()))
    return cfg


def prepare_run(args: argparse.Namespace) -> tuple[TrainingConfig, tuple[str, dict] | None, RunLock | NoLock]:
    """Validated config, with --resume the checkpoint (path, state), and the run dir's lock.
    Raises ConfigError before touching the run dir when a flag is wrong."""
    NOTES.clear()
    layout = RunLayout(args.run_dir or resumed_run_dir(args.resume) or ".")
    resume = base = None
    if args.resume:
        try:
            path, state, warnings = resolve_resume(args.resume, layout.checkpoints)
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from None
        for w in warnings:
            log.warning(w)
            print(f"neurogen-tui: warning: {w}")
        base = TrainingConfig.from_checkpoint(state.get("config", {}))
        resume = (str(path), state)
    cfg = take_handed_notify(apply_flags(vars(args), base))
    cfg.run_dir = str(layout.root) if args.run_dir or resume else new_run_dir(cfg)
    if base is not None and cfg.min_lr > cfg.lr and args.min_lr is None and args.lr is None:
        # saved by a version that let two live changes cross: the run's own config never stops a resume
        say_before_the_run(f"the checkpoint's config has --min-lr {cfg.min_lr:g} above --lr {cfg.lr:g}; "
                           f"resuming with --min-lr {cfg.lr:g}")
        cfg.min_lr = cfg.lr
    validate(cfg)
    if args.warmup_steps is not None and (note := warmup_note(cfg)):
        say_before_the_run(note)
    if cfg.strategy == "fsdp" and job_world_size(cfg) < 2:
        raise ConfigError("--strategy fsdp shards the model across ranks: add --nproc-per-node N (N > 1), "
                          "or start the ranks with torchrun")
    if resume is not None:
        try:
            check_world_size(resume[1], job_world_size(cfg), cfg.strategy)
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from None
    if not holds_run_dir():  # a rank > 0, or a rank whose launcher holds the lock and archived
        return cfg, resume, NoLock()
    lock = RunLock(cfg.run_dir)
    try:
        existing = _existing_run(cfg) if resume is None else ""
        if existing:
            if not (cfg.overwrite or cfg.test):
                raise ConfigError(f"{cfg.run_dir} already holds a run ({existing}); continue it with "
                                  f"--resume latest, start over with --overwrite, or pick another --run-dir")
            say_before_the_run(f"the previous run's files in {cfg.run_dir} were moved to {archive_previous_run(cfg)}",
                               now=True)
    except BaseException:
        lock.release()
        raise
    return cfg, resume, lock


def new_run_dir(cfg: TrainingConfig) -> str:
    """Where a run goes without --run-dir: a directory of its own under runs/, named for when it
    started and what it trains (as wandb and trackio name theirs), so runs never share or litter
    the current directory. Under torchrun every rank must agree: the job's id names it."""
    if under_launcher():
        job = os.environ.get("TORCHELASTIC_RUN_ID", "")
        if not job or job == "none":
            raise ConfigError("under torchrun, give every rank the same --run-dir")
        return str(Path(RUNS_HOME) / f"torchrun-{job}")
    stem = Path(RUNS_HOME) / f"{time.strftime('%Y%m%d-%H%M%S')}-{'test' if cfg.test else cfg.model}"
    path, n = stem, 1
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return str(path)


def resumed_run_dir(spec: str | None) -> str | None:
    """The run `--resume` continues when no --run-dir is given: `latest`, the newest run under
    runs/; a checkpoint's path, the run it lies in."""
    if not spec:
        return None
    if spec != "latest":
        path = Path(spec)
        return str(path.parent.parent) if path.parent.name == CHECKPOINT_DIR else None
    newest = newest_run(Path(RUNS_HOME)) if Path(RUNS_HOME).is_dir() else None
    if newest is None:
        raise ConfigError(f"--resume latest: no run under {RUNS_HOME}/ to continue; give its --run-dir")
    return str(newest)


def archive_previous_run(cfg: TrainingConfig) -> Path:
    """--overwrite never deletes: the old training_viz/, checkpoints/ and log move aside."""
    layout = cfg.layout
    dest = layout.previous_runs / time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
    dest.mkdir(parents=True)
    for path in (layout.viz, layout.checkpoints, layout.log, layout.tensorboard):
        if path.exists():
            path.rename(dest / path.name)
    return dest


def _existing_run(cfg: TrainingConfig) -> str:
    ckpts = list_checkpoints(cfg.checkpoint_dir)
    if ckpts:
        return f"{len(ckpts)} checkpoint(s), newest {ckpts[-1].name}"
    metrics = cfg.layout.metrics
    if metrics.exists() and metrics.stat().st_size:
        return f"{metrics} is not empty"
    return ""
