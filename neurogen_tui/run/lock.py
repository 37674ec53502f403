"""The run directory's lock: one writer a directory, and no stale lock to clean up."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..core.parse import ConfigError
from .layout import RunLayout


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
