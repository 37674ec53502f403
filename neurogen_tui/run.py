"""Composing a run: config from flags (and a checkpoint), logging, the writers, and the display."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError, list_checkpoints, resolve_resume
from .config import ConfigError, TrainingConfig, validate
from .events import EventBus
from .recorder import METRICS_FILE, MetricsRecorder
from .distributed import check_world_size, holds_run_dir, job_world_size, make_trainer
from .trainer import Trainer
from .viz import VisualizationManager

log = logging.getLogger(__name__)
LOG_FILE = "neurogen-tui.log"


class RunLock:
    """An exclusive flock on <run-dir>/.neurogen-tui.lock for the life of the process: a second
    neurogen-tui writing the same run dir is refused, and a lock left by a dead process is no
    lock at all (the kernel drops it), so there is never a stale lock to clean up."""

    def __init__(self, run_dir: str | Path):
        import fcntl
        import os

        path = Path(run_dir) / ".neurogen-tui.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise ConfigError(f"{run_dir} is in use by a running neurogen-tui (pid {holder}); "
                              f"watch it with `neurogen-tui attach {run_dir}` or pick another --run-dir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        import os

        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def prepare_run(args: argparse.Namespace) -> tuple[TrainingConfig, tuple[str, dict] | None, RunLock]:
    """Validated config, with --resume the checkpoint (path, state), and the run dir's lock.
    Raises ConfigError before touching the run dir when a flag is wrong."""
    from .cli import config_from_args

    run_dir = Path(args.run_dir or ".")
    resume = None
    base = None
    if args.resume:
        try:
            path, state, warnings = resolve_resume(args.resume, run_dir / "checkpoints")
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from None
        for w in warnings:
            log.warning(w)
            print(f"neurogen-tui: warning: {w}")
        base = TrainingConfig.from_dict(state.get("config", {}))
        base.run_dir = str(run_dir)
        resume = (str(path), state)
    cfg = config_from_args(args, base)
    validate(cfg)
    if cfg.strategy == "fsdp" and job_world_size(cfg) < 2:
        raise ConfigError("--strategy fsdp shards the model across ranks: add --nproc-per-node N (N > 1), "
                          "or start the ranks with torchrun")
    if resume is not None:
        check_world_size(resume[1], job_world_size(cfg), cfg.strategy)
    if not holds_run_dir():  # a rank > 0, or a rank whose launcher holds the lock and archived
        return cfg, resume, NoLock()
    lock = RunLock(cfg.run_dir)
    try:
        existing = _existing_run(cfg) if resume is None else ""
        if existing:
            if not (args.overwrite or cfg.test):
                raise ConfigError(f"{cfg.run_dir} already holds a run ({existing}); continue it with "
                                  f"--resume latest, start over with --overwrite, or pick another --run-dir")
            moved = archive_previous_run(cfg)
            print(f"neurogen-tui: the previous run's files were moved to {moved}")
    except BaseException:
        lock.release()
        raise
    return cfg, resume, lock


class NoLock:
    """What a rank that does not own the run dir holds: nothing."""

    def release(self) -> None:
        pass


def archive_previous_run(cfg: TrainingConfig) -> Path:
    """--overwrite never deletes: the old training_viz/, checkpoints/ and log move aside."""
    import time

    dest = Path(cfg.run_dir) / "previous_runs" / time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
    dest.mkdir(parents=True)
    for path in (cfg.viz_dir, cfg.checkpoint_dir, Path(cfg.run_dir) / LOG_FILE):
        if path.exists():
            path.rename(dest / path.name)
    return dest


def _existing_run(cfg: TrainingConfig) -> str:
    ckpts = list_checkpoints(cfg.checkpoint_dir)
    if ckpts:
        return f"{len(ckpts)} checkpoint(s), newest {ckpts[-1].name}"
    metrics = cfg.viz_dir / METRICS_FILE
    if metrics.exists() and metrics.stat().st_size:
        return f"{metrics} is not empty"
    return ""


def setup_logging(cfg: TrainingConfig) -> Path:
    """Everything, tracebacks included, goes to <run-dir>/neurogen-tui.log; nothing to stdout."""
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    path = Path(cfg.run_dir) / LOG_FILE
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_neurogen", False):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler._neurogen = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    quiet_third_party()
    return path


def quiet_third_party() -> None:
    """datasets and huggingface_hub print retries and progress bars to stderr, which would tear
    the app's screen: send their records to our log file instead."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("datasets", "huggingface_hub", "fsspec", "urllib3", "filelock"):
        lib_log = logging.getLogger(name)
        for h in list(lib_log.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lib_log.removeHandler(h)
        lib_log.propagate = True
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_warning()
    except Exception:  # pragma: no cover - older datasets
        pass


@dataclass
class RunParts:
    """A trainer and the consumers of its events, composed for one run."""

    trainer: Trainer
    bus: EventBus
    recorder: MetricsRecorder
    viz: VisualizationManager | None
    service: object | None = None  # control.RunService: run.json and the control socket

    def close(self) -> None:
        """Final dashboard and JSON exports, then close the append-only logs; last, run.json
        records how the run ended and the control socket goes."""
        if self.viz is not None:
            self.viz.close()
        self.recorder.close()
        if self.service is not None:
            self.service.close()


def build_trainer(cfg: TrainingConfig, resume: tuple[str, dict] | None, control: bool = True) -> RunParts:
    """The trainer with the files writers subscribed to its events, and (control=True) run.json
    and the control socket that `attach` and `ls` use."""
    bus = EventBus()
    resume_step = int(resume[1]["step"]) if resume else None
    recorder = MetricsRecorder(cfg.viz_dir, resume_step=resume_step)
    bus.subscribe(recorder)
    viz = VisualizationManager.for_run(cfg, resume_step=resume_step)
    bus.subscribe(viz)
    trainer = make_trainer(cfg, bus, resume)
    service = None
    if control:
        from .control import RunService

        service = RunService.start(cfg, trainer, bus, viz)
    return RunParts(trainer, bus, recorder, viz, service)


def start(cfg: TrainingConfig, resume: tuple[str, dict] | None, headless: bool) -> int:
    from .distributed import env_rank, run_worker

    if env_rank() > 0:  # a data-parallel rank other than 0: no files, no display
        return run_worker(cfg, resume)
    setup_logging(cfg)
    log.info("starting run in %s (resume=%s)", Path(cfg.run_dir).resolve(), resume[0] if resume else None)
    if not headless:
        from .tui.app import run_app  # Textual is imported only when there is a screen to draw on

        return run_app(cfg, resume)
    from .headless import run_headless

    return run_headless(cfg, resume)
