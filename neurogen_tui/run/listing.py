"""The runs under a directory, newest first, with their state: what `neurogen-tui ls` prints and
where `attach DIR` looks.

A run is a directory holding run.json (written by the trainer's process) or, for runs from before
run.json, training_viz/metrics.jsonl. The state comes from info.liveness(): running, paused
or stopping only if the trainer is really there; finished, stopped or failed as recorded; stale
for a run whose process went away without a clean exit. Names and errors come from other
people's directories, so they pass through sanitize() before reaching the terminal.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from ..core.text import sanitize
from .files import read_jsonl, tail_jsonl
from .history import row_value
from .info import liveness, read_config, read_run_info
from .layout import CHECKPOINT_DIR, LIVE_STATES, PREVIOUS_RUNS, TENSORBOARD_DIR, VIZ_DIR, RunLayout, RunState
from .tensorboard import is_tensorboard_dir
from .timeline import describe

SKIP_DIRS = {VIZ_DIR, CHECKPOINT_DIR, PREVIOUS_RUNS, "__pycache__", "node_modules"}
TAIL_BYTES = 64 * 1024


def is_our_run(path: Path) -> bool:
    """A run directory written by our trainer or the logging API."""
    layout = RunLayout(path)
    return layout.run_file.is_file() or layout.metrics.is_file()


def is_run_dir(path: Path) -> bool:
    """A run directory: ours, or a TensorBoard logdir (one run a directory of event files)."""
    return is_our_run(path) or is_tensorboard_dir(path)


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run directories at `root` and below it, at most `depth` levels down, hidden dirs skipped
    (and a run's own TensorBoard events and exports: they are that run, not another)."""
    found: list[Path] = []

    def walk(directory: Path, level: int) -> None:
        ours = is_our_run(directory)
        if ours or is_tensorboard_dir(directory):
            found.append(directory)
        if level >= depth:
            return
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in children:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir and not entry.name.startswith(".") and entry.name not in SKIP_DIRS and not (
                    ours and entry.name in (TENSORBOARD_DIR, "export")):
                walk(Path(entry.path), level + 1)

    walk(root, 0)
    return found


def last_metrics_row(path: Path) -> dict | None:
    """The newest complete, valid line of a metrics.jsonl, reading only its tail (8 KB, more where
    the lines are long)."""
    try:
        size = path.stat().st_size
        for tail in (8 * 1024, TAIL_BYTES):
            rows, _ = read_jsonl(path, max(0, size - tail))  # a line cut at the start is skipped
            row = next((r for r in reversed(rows) if isinstance(r.get("step"), int)), None)
            if row is not None or tail >= size:
                return row
    except OSError:
        return None
    return None


def summarize(run_dir: Path, root: Path, now: float | None = None, events: bool = True) -> dict:
    """One run's line for `ls` (and --json): name, state, step, loss, updated, note."""
    now = time.time() if now is None else now
    info = read_run_info(run_dir)
    metrics = RunLayout(run_dir).metrics
    row = last_metrics_row(metrics)
    try:
        mtime = metrics.stat().st_mtime
    except OSError:
        mtime = None
    rel = os.path.relpath(run_dir, root)
    config = read_config(run_dir)
    out = {"path": str(run_dir), "name": rel, "run_name": None, "state": RunState.UNKNOWN, "step": None, "loss": None,
           "total_steps": config.get("max_chunks"), "lr": config.get("lr"), "model": config.get("model"),
           "updated": mtime, "note": "", "last_event": last_event(run_dir) if events else None, "config": config}
    if row is not None:
        out["step"], out["loss"] = row.get("step"), row_value(row, "loss")
    if info is None and row is None and is_tensorboard_dir(run_dir):
        return tensorboard_summary(run_dir, out, now)
    if info is None:
        out["note"] = "no run.json (an older run, or not started by neurogen-tui)"
        return out
    out["run_name"] = info.get("run_name") if isinstance(info.get("run_name"), str) else None
    out["state"] = state = liveness(info, now)
    updated = info.get("updated_at")
    if isinstance(updated, (int, float)) and (mtime is None or updated > mtime):
        out["updated"] = updated
    if out["step"] is None and isinstance(info.get("step"), int):
        out["step"] = info["step"]
    if out["loss"] is None and isinstance(info.get("loss"), (int, float)):
        out["loss"] = info["loss"]
    if out["total_steps"] is None and isinstance(info.get("total_steps"), int):
        out["total_steps"] = info["total_steps"]
    out["note"] = _note(info, state)
    return out


def tensorboard_summary(run_dir: Path, out: dict, now: float) -> dict:
    """A TensorBoard logdir's line: growing (written in the last half minute) or idle."""
    try:
        mtime = max(e.stat().st_mtime for e in os.scandir(run_dir) if e.is_file())
    except (OSError, ValueError):
        mtime = None
    out.update(updated=mtime, note="TensorBoard logdir", kind="tensorboard",
               state=RunState.WATCHING if mtime and now - mtime < 30 else RunState.IDLE)
    return out


def last_event(run_dir: Path) -> str | None:
    """The newest line of the run's timeline (events.jsonl) other than a routine dashboard, said in
    a few words; None if it has none."""
    try:
        rows, _ = tail_jsonl(RunLayout(run_dir).events, 20)
    except OSError:
        return None
    rows = [r for r in rows if isinstance(r.get("kind"), str)]
    notable = [r for r in rows if r["kind"] != "dashboard"] or rows
    return describe(notable[-1]) if notable else None


def _note(info: dict, state: str) -> str:
    where = f"pid {info.get('pid')} on {info.get('host')}"
    if state == RunState.STALE:
        return f"{where} is gone without a clean exit; continue it with --resume latest"
    if state in LIVE_STATES:
        return where
    if state == RunState.FAILED:
        return str(info.get("error") or "")
    if state in (RunState.FINISHED, RunState.STOPPED):
        return str(info.get("reason") or "")
    return ""


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def format_table(runs: list[dict], now: float | None = None) -> list[str]:
    """`ls`'s table: the runs as given (newest first), a few of each one's settings, its last event."""
    now = time.time() if now is None else now
    rows = [("NAME", "STATE", "STEP", "LOSS", "LR", "MODEL", "UPDATED", "LAST EVENT", "NOTE")]
    for r in runs:
        name = r["name"]
        if r["run_name"] and r["run_name"] != Path(r["path"]).name:
            name += f" ({r['run_name']})"
        step = "-" if r["step"] is None else f"{r['step']:,}"
        if isinstance(r.get("total_steps"), int):
            step += f"/{r['total_steps']:,}"
        loss, lr = r["loss"], r.get("lr")
        rows.append((sanitize(name, 60), r["state"], step, f"{loss:.4f}" if _number(loss) else "-",
                     f"{lr:.3g}" if _number(lr) else "-", sanitize(str(r.get("model") or "-"), 12),
                     age(now - r["updated"]) if _number(r["updated"]) else "-",
                     sanitize(r.get("last_event") or "-", 60), sanitize(r["note"], 100)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def newest_run(root: Path) -> Path | None:
    """`root` itself if it is a run, else the run under it that is live and newest, else the
    newest of any state (what `attach DIR` opens)."""
    if is_run_dir(root):
        return root
    best = None
    for path in find_runs(root):
        info = read_run_info(path) or {}
        live = liveness(info) in LIVE_STATES if info else False
        updated = info.get("updated_at") if isinstance(info.get("updated_at"), (int, float)) else 0.0
        key = (live, updated)
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None
