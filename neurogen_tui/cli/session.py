"""One run composed: the log, the trainer with its writers, and the display it is shown on (the app
or the headless bar), or, on a rank other than 0, nothing but the trainer. (Choosing and locking
its directory, before it starts: prepare.py.)

The trainer publishes events; the recorder (metrics.jsonl), the dashboards (viz/writer.py), run.json and
the control server (control/server.py: RunService) and the display subscribe to them.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..control.server import RunService
from ..core.events import EventBus, LogMessage, RunFailed, RunNote
from ..core.text import sanitize
from ..notify.setup import Notifications
from ..run.info import RunDirWatch
from ..run.layout import EXIT_FAILED, EXIT_FORCED, EXIT_OK, RunState
from ..run.recorder import MetricsRecorder
from ..run.timeline import Timeline
from ..train.config import TrainingConfig
from ..train.env import env_rank
from ..train.flags import ConfigError
from ..train.trainer import Trainer
from ..tui.source import InProcessSource
from ..viz.formats import EventsFollower
from ..viz.writer import VisualizationManager
from ..run.lock import RunLock
from .prepare import NOTES
from .signals import HeadlessHangup, continue_app_after_hangup, install_stop_signals

log = logging.getLogger(__name__)


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
    notifications: Notifications | None = None  # notices to webhooks, commands and a watching app

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
        if self.notifications is not None:  # before the timeline closes: the last notices are in it
            self.notifications.close()
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
    trainer.notes = list(NOTES)
    service = RunService.start(cfg, trainer, bus, viz) if control else None
    parts = RunParts(trainer, bus, recorder, viz, service, tensorboard, timeline)
    parts.watch = RunDirWatch(cfg.run_dir, parts.run_dir_lost)
    parts.notifications = Notifications(
        bus, cfg.display_name, cfg.run_dir, step=lambda: trainer.step, paused=lambda: trainer.state == RunState.PAUSED,
        urls=cfg.notify, fmt=cfg.notify_format, commands=cfg.notify_cmd, interval=cfg.notify_interval,
        best_val=cfg.notify_best, stall_after=cfg.stall_after, disk_low_mb=cfg.disk_low_mb)
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
    source = InProcessSource(parts)
    app = MonitorApp(source, ui_budget=cfg.ui_budget, on_hangup=cfg.on_hangup, close_when_done=cfg.test)
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
    if app.detached and source.training is not None and source.training.is_alive():
        return go_on_headless(cfg, parts, source.training)
    result = app.run_state.result
    try:
        print(ended_line(cfg, getattr(result, "reason", None) or app.run_state.state, app.run_state.step))
        if code and hasattr(result, "error"):
            print(f"neurogen-tui: error: {sanitize(result.error, 500)}", file=sys.stderr)
    except OSError:  # the terminal is gone (SIGHUP): the files are what matters
        pass
    return int(code)


def go_on_headless(cfg: TrainingConfig, parts: RunParts, training) -> int:
    """x closed the app's screen: the run goes on in this process, said in one line, its progress
    in this terminal as a headless run shows it (or in the log, once the terminal is gone), until it
    ends or is stopped; `attach` opens the screen again from anywhere."""
    from .headless import HeadlessDisplay

    print(f"neurogen-tui: the screen is closed; the run goes on in this process (pid {os.getpid()}), "
          f"its log in {cfg.layout.log}; `neurogen-tui attach {cfg.run_dir}` brings the screen back; "
          f"Ctrl+C stops it with a final checkpoint", flush=True)
    display = HeadlessDisplay(cfg)
    parts.bus.subscribe(display)
    install_stop_signals(parts.trainer.request_stop, lambda msg: display.line(msg, "yellow"), hangup=False)
    HeadlessHangup(cfg.run_dir, display, parts.bus,
                   request_stop=parts.trainer.request_stop if cfg.on_hangup == "stop" else None).install()
    with display:
        display.join(parts.trainer.step, cfg.max_chunks)
        training.join()
    print(ended_line(cfg, parts.trainer.state, parts.trainer.step))
    return EXIT_FAILED if parts.trainer.state == RunState.FAILED else EXIT_OK


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
