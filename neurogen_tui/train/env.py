"""torchrun's environment: this process's rank, the job's size, and who holds the run dir.

No torch here: the command line asks these before it decides whether torch is needed at all.
"""
from __future__ import annotations

import os

LOCK_HELD_ENV = "NEUROGEN_TUI_LOCK_HELD"  # set by the launcher, which holds the run dir's lock
NOTIFY_ENV = "NEUROGEN_TUI_NOTIFY"  # a launcher's --notify URLs and commands, handed to its child out of sight of `ps`


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", 0))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def under_launcher() -> bool:
    """True inside a process that torchrun started (it must not launch ranks of its own)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "WORLD_SIZE" in os.environ


def holds_run_dir() -> bool:
    """Whether this process takes the run dir's lock and may archive a previous run: rank 0,
    unless the launcher that started it already holds the lock."""
    return env_rank() == 0 and LOCK_HELD_ENV not in os.environ


def job_world_size(cfg) -> int:
    """Ranks in the job this process belongs to or is about to launch."""
    return env_world_size() if under_launcher() else cfg.nproc_per_node
