"""Checkpoints: atomic save, `weights_only=True` load, retention, and finding the latest readable one.

A checkpoint is one file, `checkpoint_step_XXXXXX.pt`, or for a sharded run (`--strategy fsdp`) a
directory `checkpoint_step_XXXXXX.dcp/` written by torch.distributed.checkpoint: every rank's
shards, DCP's `.metadata`, and `meta.pt` (step, data positions, config; everything but the model
and optimizer) from rank 0. Both appear under their final name only when complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
import shutil
import time
from pathlib import Path

import torch

from ..core.events import CheckpointSaved, CheckpointSkipped, RunNote
from ..core.text import first_line
from ..run.files import atomic_write
from ..run.layout import CHECKPOINT_NAME, SHARDED_META, checkpoint_name
from .config import SHAPE_FIELDS

log = logging.getLogger(__name__)


CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message is one line naming the file."""


class Checkpointer:
    """The trainer's checkpoints: what one holds, and writing it on every rank with one retry.

    A component with a small interface (torchtitan's shape): the trainer calls `save()` at a step
    boundary; how each strategy writes its part is the strategy's (parallel.py). A state the guard
    finds diverged is never written (live.Steering.state_verdict: it rolls back first where it
    can), and rotation never deletes the newest trusted checkpoint."""

    retry_delay = 5.0  # seconds before the one retry of a failed write

    def __init__(self, trainer, resumed_from: str | None = None) -> None:
        self.trainer = trainer
        self.last: str | None = None  # the newest checkpoint written by this run
        # the newest checkpoint known sound: the one this run resumed from, then each the guard trusted
        self.trusted: Path | None = Path(resumed_from) if resumed_from else None
        self._positions: list | None = None  # every rank's data position, for the checkpoint being written
        self.refused = ""  # why no checkpoint may be written any more (the run dir is another's now)

    def state(self) -> dict:
        t = self.trainer
        return {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(), **self.meta()}

    def meta(self) -> dict:
        """Everything a checkpoint holds besides the model and optimizer state."""
        t = self.trainer
        cfg, positions = t.cfg, self._positions or [t.batches.state()]
        return {
            "format": CHECKPOINT_FORMAT,
            "scheduler": {"kind": "warmup_cosine", "lr": cfg.lr, "min_lr": cfg.min_lr,
                          "warmup_steps": cfg.warmup_steps, "decay_steps": t.schedule.decay_steps},
            "step": t.step,
            "tokens_seen": t.tokens_seen,
            "data": positions[0],
            "data_ranks": positions,  # each rank's own place in its share of the data
            "world_size": t.par.world_size,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if t.device.type == "cuda" else []},
            "config": cfg.checkpoint_dict(),
            "model_config": dataclasses.asdict(t.model_config),
            "tokenizer": t.tokenizer.identity(),
        }

    def save(self) -> str | None:
        """Write a checkpoint (every rank its part); on an error on any rank (disk full,
        permissions) all retry once, then raise CheckpointError: the previous checkpoints are intact
        (atomic writes) and the run stops. None where the state looked diverged and was not saved."""
        t, par = self.trainer, self.trainer.par
        verdict = "refused" if self.refused else t.steer.state_verdict()
        if verdict in ("diverged", "refused"):
            why = self.refused or "the state looks diverged"
            reason = f"checkpoint at step {t.step} not written: {why}; the last trusted checkpoint is {self.trusted or 'none'}"
            if par.is_main:
                t._say(reason, "error")
                t.bus.publish(CheckpointSkipped(t.step, reason))
            return None
        self._positions = par.gather(t.batches.state())
        for attempt in (1, 2):
            written, error = None, ""
            try:
                written = par.write_checkpoint(t)
            except (OSError, RuntimeError) as exc:
                error = write_error(exc, t.cfg.checkpoint_dir)
            if not par.failed_anywhere(error):
                break
            par.abandon_checkpoint(t)
            error = error or "another rank could not write its part"
            if attempt == 2:
                raise CheckpointError(f"cannot write checkpoint at step {t.step}: {error}; training stopped, "
                                      f"last good checkpoint: {self.last or 'none'}")
            if par.is_main:
                t._say(f"checkpoint write failed ({error}); retrying in {self.retry_delay:.0f}s", "warning")
                t.bus.publish(RunNote("checkpoint failed", {"text": error, "step": t.step}))
            time.sleep(self.retry_delay) if par.world_size > 1 else t._stop.wait(self.retry_delay)
        self.last = str(par.finish_checkpoint(t, written))
        if verdict == "trusted":
            self.trusted = Path(self.last)
        if par.is_main:
            self.prune(Path(self.last))
            t.bus.publish(CheckpointSaved(t.step, self.last))
        return self.last

    def prune(self, newest: Path) -> None:
        """Keep the newest --keep-checkpoints, and the newest trusted one whatever its age."""
        keep = {newest} | ({self.trusted} if self.trusted is not None else set())
        prune_checkpoints(self.trainer.cfg.checkpoint_dir, self.trainer.cfg.keep_checkpoints, keep)


def write_error(exc: BaseException, directory: Path) -> str:
    """Why a checkpoint could not be written, in one line a person reads: torch's writer reports a
    full disk as `[enforce fail at inline_container.cc:...] unexpected pos`, so the OSError under
    it (or, failing that, the disk's free space) says what happened."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    text = first_line(exc)
    if "inline_container" in text or "file write failed" in text:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(directory).free < 64 * 2**20:
                return f"No space left on device ({shutil.disk_usage(directory).free // 2**20} MiB free)"
        return f"the checkpoint file could not be written ({text})"
    return text


def checkpoint_path(directory: Path, step: int, sharded: bool = False) -> Path:
    return Path(directory) / checkpoint_name(step, sharded)


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a checkpoint's name, or None for another name."""
    m = CHECKPOINT_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def remove_checkpoint(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, directory: Path, step: int) -> Path:
    """Write `state` atomically as checkpoint_step_XXXXXX.pt."""
    path = checkpoint_path(directory, step)
    atomic_write(path, lambda fh: torch.save(state, fh))
    return path


def prune_checkpoints(directory: Path, keep: int, spare: set[Path]) -> None:
    """Keep the newest `keep` checkpoints (0: all), and every one in `spare`."""
    if keep:
        for old in list_checkpoints(directory)[:-keep]:
            if old not in spare:
                remove_checkpoint(old)
                log.info("removed old checkpoint %s (--keep-checkpoints %d)", old, keep)


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True: tensors and plain containers only, so a crafted file cannot run code."""
    path = Path(path)
    if path.is_dir():
        return load_sharded_meta(path)
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


# ---- whether a checkpoint fits this run -------------------------------------------------------------
def check_world_size(state: dict, world_size: int, strategy: str = "ddp") -> None:
    """Refuse, before anything starts, a checkpoint written by another number of ranks, or by the
    other strategy (a sharded directory and a single file hold the model differently)."""
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        raise CheckpointError(f"cannot resume: the checkpoint was written by {saved} rank(s) and this run would have "
                          f"{world_size}; resume it with --nproc-per-node {saved} ({saved} processes in all under torchrun)")
    sharded = bool(state.get("sharded_dir"))
    if sharded and strategy != "fsdp":
        raise CheckpointError(f"cannot resume: {state['sharded_dir']} is a sharded checkpoint of a --strategy fsdp run; "
                          f"resume it with --strategy fsdp --nproc-per-node {saved}")
    if not sharded and strategy == "fsdp" and world_size > 1:
        raise CheckpointError("cannot resume with --strategy fsdp from a single-file checkpoint (written by one process "
                          "or --strategy ddp); resume it with --strategy ddp")


def check_resume_compatible(cfg, state: dict, tokenizer_identity: dict) -> None:
    """Refuse a checkpoint whose model shape or tokenizer differs, saying exactly what differs."""
    saved = state.get("config", {})
    diffs = [f"{name}: checkpoint {saved.get(name)!r}, now {getattr(cfg, name)!r}"
             for name in SHAPE_FIELDS if name != "tokenizer" and saved.get(name) != getattr(cfg, name)]
    saved_tok = state.get("tokenizer", {})
    if saved_tok and saved_tok != tokenizer_identity:
        diffs.append(f"tokenizer: checkpoint {saved_tok.get('kind')} (vocab {saved_tok.get('vocab_size')}), "
                     f"now {tokenizer_identity.get('kind')} (vocab {tokenizer_identity.get('vocab_size')})")
    if diffs:
        raise CheckpointError("cannot resume: the checkpoint's model differs (" + "; ".join(diffs) + ")")


def rank_position(state: dict, rank: int) -> dict:
    """One rank's place in the data (checkpoints from before `data_ranks` hold one, as `data`)."""
    return state.get("data_ranks", [state.get("data", {})])[rank]


# ---- sharded checkpoints (torch.distributed.checkpoint) ---------------------------------------------
# DCP reads its `.metadata` with plain pickle, which runs code named in the file. Before DCP sees a
# directory, its metadata is read once with an unpickler that only knows DCP's own record types and
# a few torch values; anything else (os.system, builtins.eval, ...) is refused.
_DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem",
                "torch.distributed.checkpoint.planner")
_DCP_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in _DCP_MODULES and not name.startswith("__"):
            obj = super().find_class(module, name)
            if isinstance(obj, type) or name == "_MEM_FORMAT_ENCODING":
                return obj
        elif (module, name) in _DCP_GLOBALS:
            return super().find_class(module, name)
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def check_sharded_metadata(directory: Path) -> None:
    try:
        with open(Path(directory) / ".metadata", "rb") as fh:
            _MetadataUnpickler(fh).load()
    except FileNotFoundError:
        raise CheckpointError(f"cannot load checkpoint {directory}: no .metadata (an incomplete sharded checkpoint)") from None
    except Exception as exc:
        raise CheckpointError(f"cannot load checkpoint {directory}: unsafe or corrupt .metadata ({exc})") from None


def load_sharded_meta(directory: Path) -> dict:
    """A sharded checkpoint's state without the model and optimizer (each rank loads its own
    shards of those through DCP): `model` is None and `sharded_dir` names the directory."""
    check_sharded_metadata(directory)
    state = load_checkpoint(directory / SHARDED_META)
    state["sharded_dir"] = str(directory)
    return state
