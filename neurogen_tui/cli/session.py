"""One run composed: the run dir's lock, the log, the trainer with its writers, and the display it
is shown on (the app or the headless bar), or, on a rank other than 0, nothing but the trainer.

The trainer publishes events; the recorder (metrics.jsonl), the dashboards (viz/writer.py), run.json and
the control server (control/server.py: RunService) and the display subscribe to them.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..control.server import RunService
from ..core.events import EventBus, LogMessage, RunFailed, RunNote
from ..core.text import sanitize
from ..run.info import RunDirWatch
from ..run.layout import EXIT_FAILED, EXIT_FORCED, EXIT_OK, RunLayout
from ..run.recorder import MetricsRecorder
from ..run.timeline import Timeline
from ..train.checkpoint import CheckpointError, check_world_size, list_checkpoints, resolve_resume
from ..train.config import TrainingConfig, apply_flags
from ..train.env import env_rank, holds_run_dir, job_world_size
from ..train.flags import ConfigError
from ..train.trainer import Trainer
from ..train.validate import validate
from ..tui.source import InProcessSource
from ..viz.formats import EventsFollower
from ..viz.writer import VisualizationManager
from .signals import HeadlessHangup, continue_app_after_hangup, install_stop_signals

log = logging.getLogger(__name__)


class RunLock:
    """An exclusive flock on <run-dir>/.neurogen-tui.lock for the life of the process: a second
    neurogen-tui writing the same run dir is refused, and a lock left by a dead process is no
    lock at all (the kernel drops it), so there is never a stale lock to clean up."""

    def __init__(self, run_dir: str | Path):
        path = RunLayout(run_dir).lock
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class NoLock:
    """What a rank that does not own the run dir holds: nothing."""

    def release(self) -> None:
        pass


def prepare_run(args: argparse.Namespace) -> tuple[TrainingConfig, tuple[str, dict] | None, RunLock | NoLock]:
    """Validated config, with --resume the checkpoint (path, state), and the run dir's lock.
    Raises ConfigError before touching the run dir when a flag is wrong."""
    layout = RunLayout(args.run_dir or ".")
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
    cfg = apply_flags(vars(args), base)
    cfg.run_dir = str(layout.root)
    if base is not None and cfg.min_lr > cfg.lr and args.min_lr is None and args.lr is None:
        # saved by a version that let two live changes cross: the run's own config never stops a resume
        w = (f"the checkpoint's config has --min-lr {cfg.min_lr:g} above --lr {cfg.lr:g}; "
             f"resuming with --min-lr {cfg.lr:g}")
        log.warning(w)
        print(f"neurogen-tui: warning: {w}")
        cfg.min_lr = cfg.lr
    validate(cfg)
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
            print(f"neurogen-tui: the previous run's files were moved to {archive_previous_run(cfg)}")
    except BaseException:
        lock.release()
        raise
    return cfg, resume, lock


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


# ---- logging ---------------------------------------------------------------------------------------
def setup_logging(cfg: TrainingConfig) -> Path:
    """Everything, tracebacks included, goes to <run-dir>/neurogen-tui.log; nothing to stdout."""
    path = cfg.layout.log
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_neurogen", False):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler._neurogen = True  # type: ignore[attr-defined]
    # a full disk must not print "--- Logging error ---" tracebacks over the app's screen; the
    # metrics writers say on screen and in the timeline when the disk refuses them
    handler.handleError = lambda record: None  # type: ignore[method-assign]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    quiet_third_party()
    return path


def setup_worker_logging(rank: int) -> None:
    """Ranks > 0 write nothing to the run dir: errors only, to stderr, marked with the rank."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    quiet_third_party()


def quiet_third_party() -> None:
    """datasets and huggingface_hub print retries and progress bars to stderr, which would tear
    the app's screen: send their records to our log file instead."""
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


# ---- the run's parts ---------------------------------------------------------------------------------
@dataclass
class RunParts:
    """A trainer and the consumers of its events, composed for one run."""

    trainer: Trainer
    bus: EventBus
    recorder: MetricsRecorder
    viz: VisualizationManager | None
    service: RunService | None = None  # run.json and the control socket
    tensorboard: EventsFollower | None = None  # --tensorboard: the process writing the events
    timeline: Timeline | None = None  # events.jsonl
    watch: RunDirWatch | None = None  # the run dir deleted under the run
    lock: RunLock | None = None  # the run dir taken again after it was deleted

    def run_dir_lost(self) -> None:
        """The run directory was deleted or replaced: stop at the next step boundary, with a final
        checkpoint where the directory can be taken again, never into one another trainer holds."""
        cfg, trainer = self.trainer.cfg, self.trainer
        try:
            self.lock = RunLock(cfg.run_dir)  # made again, and ours: the final checkpoint goes there
            then = "stopping with a final checkpoint in a new directory of that name"
        except (ConfigError, OSError) as exc:
            trainer.checkpointer.refused = f"the run directory was deleted and is not ours now ({exc})"
            then = "stopping without a final checkpoint (another process holds that directory now)"
            self.disown()
        text = f"the run directory {cfg.run_dir} was deleted or replaced while training: {then}"
        log.error(text)
        self.bus.publish(LogMessage("error", text))
        self.bus.publish(RunNote("run dir", {"text": text}))
        trainer.request_stop()

    def disown(self) -> None:
        """The run directory is another trainer's now: nothing more is written into it (no final
        dashboard, no run.json, no TensorBoard events)."""
        if self.viz is not None:
            self.viz.discard = True
        if self.service is not None:
            self.service.record.disowned = True
        if self.tensorboard is not None:
            self.tensorboard.proc.kill()

    def close(self) -> None:
        """Final dashboard and JSON exports, then close the append-only logs (and let the
        TensorBoard writer read their last lines); last, run.json records how the run ended and
        the control socket goes."""
        if self.watch is not None:
            self.watch.close()
        if self.viz is not None:
            self.viz.close()
        self.recorder.close()
        if self.timeline is not None:
            self.timeline.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.service is not None:
            self.service.close()


def build_run(cfg: TrainingConfig, resume: tuple[str, dict] | None, control: bool = True) -> RunParts:
    """The trainer with the files writers subscribed to its events, and (control=True) run.json
    and the control socket that `attach` and `ls` use."""
    bus = EventBus()
    resume_step = int(resume[1]["step"]) if resume else None

    def storage(text: str, level: str) -> None:  # a file the disk refused, and when it is written again
        bus.publish(LogMessage(level, text))
        bus.publish(RunNote("storage", {"text": text}))

    recorder = MetricsRecorder(cfg.viz_dir, resume_step=resume_step, say=storage)
    bus.subscribe(recorder)
    tensorboard = EventsFollower.start(cfg.run_dir, recorder.metrics.size, resume_step) if cfg.tensorboard else None
    timeline = Timeline(cfg.viz_dir, resumed=resume is not None, say=lambda text, level: log.warning(text))
    bus.subscribe(timeline)
    viz = VisualizationManager.for_run(cfg, resume_step=resume_step)
    bus.subscribe(viz)
    if viz is not None:
        viz.add_listener(timeline.on_viz)
    trainer = Trainer(cfg, bus, resume)
    service = RunService.start(cfg, trainer, bus, viz) if control else None
    parts = RunParts(trainer, bus, recorder, viz, service, tensorboard, timeline)
    parts.watch = RunDirWatch(cfg.run_dir, parts.run_dir_lost)
    return parts


# ---- the three ways a training process runs --------------------------------------------------------
def start(cfg: TrainingConfig, resume: tuple[str, dict] | None, headless: bool) -> int:
    """Train in this process: a rank other than 0 quietly, else with the app or the headless bar."""
    if env_rank() > 0:
        return run_worker(cfg, resume)
    setup_logging(cfg)
    log.info("starting run in %s (resume=%s)", Path(cfg.run_dir).resolve(), resume[0] if resume else None)
    return run_headless(cfg, resume) if headless else run_app(cfg, resume)


def run_headless(cfg: TrainingConfig, resume) -> int:
    from .headless import HeadlessDisplay  # rich, only where there is a console to draw on

    parts = build_run(cfg, resume)
    trainer = parts.trainer
    display = HeadlessDisplay(cfg)
    parts.bus.subscribe(display)
    install_stop_signals(trainer.request_stop, lambda msg: display.line(msg, "yellow"), hangup=False)
    # SIGHUP, the terminal gone: output to the log, and training goes on (or stops: --on-hangup stop)
    HeadlessHangup(cfg.run_dir, display, parts.bus,
                   request_stop=trainer.request_stop if cfg.on_hangup == "stop" else None).install()
    started = time.time()
    with display:
        result = trainer.run()
        parts.close()
    print(f"files: {cfg.viz_dir}  checkpoints: {cfg.checkpoint_dir}  log: {cfg.layout.log} "
          f"({time.time() - started:.0f}s)")
    if isinstance(result, RunFailed):
        print(f"neurogen-tui: error: {sanitize(result.error, 500)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_app(cfg: TrainingConfig, resume) -> int:
    """Train on a thread of this process with the app on this terminal; 0 when finished or
    stopped, 1 when failed."""
    from ..tui.app import MonitorApp  # Textual is imported only when there is a screen to draw on

    parts = build_run(cfg, resume)
    app = MonitorApp(InProcessSource(parts),
                     ui_budget=cfg.ui_budget, on_hangup=cfg.on_hangup)
    def after_hangup(redirect: bool) -> None:
        parts.bus.publish(RunNote("hangup", {"then": "continue"}))
        continue_app_after_hangup(cfg.run_dir, redirect)

    app.after_hangup = after_hangup
    code = app.run()
    if code is None:  # the app ended by an internal error (its traceback is printed)
        code = EXIT_FAILED
    if app.forced:  # the trainer thread may never return: leave without it
        print(f"neurogen-tui: left without waiting for the trainer at step {app.run_state.step}; "
              f"the last checkpoint in {cfg.checkpoint_dir} is the last good state", file=sys.stderr)
        sys.stdout.flush()
        os._exit(EXIT_FORCED)
    result = app.run_state.result
    try:
        print(ended_line(cfg, getattr(result, "reason", None) or app.run_state.state, app.run_state.step))
        if code and hasattr(result, "error"):
            print(f"neurogen-tui: error: {sanitize(result.error, 500)}", file=sys.stderr)
    except OSError:  # the terminal is gone (SIGHUP): the files are what matters
        pass
    return int(code)


def ended_line(cfg: TrainingConfig, what: str, step: int) -> str:
    """What the terminal that started a run is told when its screen closes: how, and where the files are."""
    return f"neurogen-tui: {what} at step {step}; files: {cfg.viz_dir}  checkpoints: {cfg.checkpoint_dir}  log: {cfg.layout.log}"


def run_worker(cfg: TrainingConfig, resume) -> int:
    """A rank other than 0: the trainer with no subscribers but an error line on stderr."""
    rank = env_rank()
    setup_worker_logging(rank)
    trainer = Trainer(cfg, EventBus(), resume)
    install_stop_signals(trainer.request_stop, lambda _msg: None)  # stop with the others, at a boundary
    result = trainer.run()
    if isinstance(result, RunFailed):
        print(f"neurogen-tui: error: [rank {rank}] {result.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
