"""neurogen-tui: a terminal training monitor and trainer for language models.

Also a logging API for any training loop, shaped like wandb's (`import neurogen_tui as wandb`
works for the common subset), whose runs `neurogen-tui watch`, `attach`, `ls`, `ctl`, `render`,
`compare` and `export` open like our trainer's, and which `attach` and `ctl` can steer:

    import neurogen_tui as ngt
    run = ngt.init(project="sweep", config={"lr": 3e-4})
    run.log({"train/loss": loss})
    run.finish()

This module stays light (no torch, textual, matplotlib or datasets): the API loads what it needs
when `init()` is called. It is also where the API is composed with the control server (a floor
above it: docs/development.md).
"""
from __future__ import annotations

from .core.version import __version__  # noqa: F401 (the package's version)

__all__ = ["__version__", "init", "log", "log_text", "finish", "alert"]
SUPPORTED = ("init", "log", "finish", "config", "summary", "Run", "log_text", "run", "alert")
_current = None  # the run init() made last, for the module-level log/finish/config


NOTIFY_KEYS = ("notify", "notify_cmd", "notify_format", "notify_interval", "stall_after", "disk_low_mb")


def init(run_dir=None, project=None, name=None, config=None, resume=None, total_steps=None, all_ranks=False,
         notify=None, notify_cmd=None, notify_format="auto", notify_interval=300.0, stall_after=None,
         disk_low_mb=1024.0, **unsupported):
    """Start a run (see neurogen_tui.api.run.Run). Under torchrun only rank 0 writes one unless
    `all_ranks` (then each rank writes `<name>-rank<N>`); the other ranks get a run that does nothing.
    `notify` (a webhook URL or a list of them) and `notify_cmd` (shell commands) are told when the
    run ends, fails, stalls (no log() for `stall_after` seconds) or calls run.alert(), as the
    trainer's --notify flags are (docs/notifications.md)."""
    global _current
    if unsupported:
        raise TypeError(f"neurogen_tui.init() takes run_dir, project, name, config, resume, total_steps, all_ranks, "
                        f"{', '.join(NOTIFY_KEYS)}; not {', '.join(sorted(unsupported))}")
    import os

    from .api.run import NoRun, Run
    from .control.server import RunService  # the composition: the API's run served on the control socket

    rank = int(os.environ.get("RANK", "0") or 0)
    if rank and not all_ranks:
        _current = NoRun(config)
    else:
        if rank:
            name = f"{name or 'run'}-rank{rank}"
        listed = (lambda v: [v] if isinstance(v, str) else list(v or ()))
        _current = Run(run_dir, project, name, config, resume, total_steps,
                       serve=lambda *a: RunService.serve(*a, writer="logging API"),
                       notify=dict(urls=listed(notify), commands=listed(notify_cmd), fmt=notify_format,
                                   interval=float(notify_interval), stall_after=stall_after,
                                   disk_low_mb=float(disk_low_mb)))
    return _current


def log(data, step=None, commit=None):
    """`run.log` on the current run (a warning, not an error, before init())."""
    if _current is None:
        from .api.writer import warn

        warn("neurogen_tui.log() before neurogen_tui.init(): nothing is written")
        return
    _current.log(data, step, commit)


def log_text(input, output, target=None, step=None):
    if _current is not None:
        _current.log_text(input, output, target, step)


def finish(exit_code=0):
    if _current is not None:
        _current.finish(exit_code)


def alert(title, text="", level="INFO", wait_duration=None):
    """`run.alert` on the current run: tell the researcher (its --notify channels, its timeline)."""
    if _current is not None and hasattr(_current, "alert"):
        _current.alert(title, text, level, wait_duration)


def __getattr__(name):
    if name in ("config", "summary"):  # the current run's, or an empty one before init()
        if _current is not None:
            return getattr(_current, name)
        return {}
    if name == "run":
        return _current
    if name == "Run":
        from .api.run import Run

        return Run
    raise AttributeError(f"neurogen_tui has no {name!r}: as a drop-in for wandb it supports "
                         f"{', '.join(SUPPORTED)} (run.should_stop, run.on_checkpoint, run.on_set, run.on_prompt "
                         f"and run.steer_optimizer steer the run)")
