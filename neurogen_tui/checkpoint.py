"""Checkpoints: atomic save, `weights_only=True` load, retention, and finding the latest readable one."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from .files import atomic_write

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message is one line naming the file."""


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"checkpoint_step_{step:06d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, directory: Path, step: int, keep: int = 0) -> Path:
    """Write `state` atomically as checkpoint_step_XXXXXX.pt; keep the newest `keep` (0: all)."""
    path = checkpoint_path(directory, step)
    atomic_write(path, lambda fh: torch.save(state, fh))
    if keep:
        for old in list_checkpoints(directory)[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
                log.info("removed old checkpoint %s (--keep-checkpoints %d)", old, keep)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True: tensors and plain containers only, so a crafted file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load checkpoint {path}: {first[:200]}") from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"cannot load checkpoint {path}: not a neurogen-tui checkpoint")
    return state


def resolve_resume(spec: str, checkpoint_dir: Path) -> tuple[Path, dict, list[str]]:
    """`latest` or a path to (path, state, warnings). `latest` falls back past unreadable files."""
    if spec != "latest":
        return Path(spec), load_checkpoint(spec), []
    candidates = list_checkpoints(checkpoint_dir)
    if not candidates:
        raise CheckpointError(f"--resume latest: no checkpoint_step_*.pt in {checkpoint_dir}")
    warnings: list[str] = []
    for path in reversed(candidates):
        try:
            return path, load_checkpoint(path), warnings
        except CheckpointError as exc:
            warnings.append(f"{exc}; trying an older checkpoint")
    raise CheckpointError(f"--resume latest: no readable checkpoint in {checkpoint_dir} "
                          f"({len(candidates)} file(s) failed to load)")
