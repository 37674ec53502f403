"""The subcommands other than training: render, compare, watch, attach, ls and export. Each parses its own
flags and returns an exit status; a usage error is one line and status 2, before any file is
written."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import flag_type, tensorboard_missing
from .control import ControlError
from .dashboard import COMPARE_PANELS, DASHBOARD_COLUMNS, compare_figure, figure_png, render_png
from .events import LogMessage
from .files import atomic_write
from .formats import FORMATS, default_output, export_once, follow
from .layout import EXIT_FAILED, EXIT_OK, EXIT_USAGE, LIVE_STATES, METRICS_FILE, RENDER_PNG, VIZ_DIR, RunState
from .runfiles import RunDirError, find_viz_dir, load_run
from .runinfo import liveness, read_run_info
from .runlist import find_runs, format_table, newest_run, summarize
from .text import sanitize
from .tui.rundir import RunDirSource

SUBCOMMANDS = ("render", "compare", "watch", "attach", "ls", "export")


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"neurogen-tui: error: {sanitize(message)}", file=sys.stderr)
    return code


def run_subcommand(name: str, argv: list[str]) -> int:
    return {"render": main_render, "compare": main_compare, "watch": main_watch, "attach": main_attach,
            "ls": main_ls, "export": main_export}[name](argv)


# ---- render, compare ---------------------------------------------------------------------------------
def _write_png(data: bytes, out: Path, what: str) -> int:
    try:
        atomic_write(out, data)
    except OSError as exc:
        return fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    print(f"neurogen-tui: wrote {out} ({what})")
    return EXIT_OK


def main_render(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="neurogen-tui render",
                                     description="Draw the training dashboard from a run directory's files "
                                                 "(finished, crashed or still running).")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("-o", "--output", metavar="FILE", help=f"PNG to write (default: RUN_DIR/training_viz/{RENDER_PNG})")
    parser.add_argument("--samples", type=int, default=5, help="text samples in the table (default: 5)")
    args = parser.parse_args(argv)
    try:
        name, history, samples = load_run(args.run_dir)
    except RunDirError as exc:
        return fail(str(exc))
    out = Path(args.output) if args.output else find_viz_dir(args.run_dir) / RENDER_PNG
    png = render_png(history.slice(names=DASHBOARD_COLUMNS), samples, name, args.samples)
    return _write_png(png, out, f"{len(history)} steps")


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def main_compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="neurogen-tui compare",
                                     description="Overlay loss, accuracy, throughput and learning rate of "
                                                 "several runs in one PNG, labelled by run name.")
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    parser.add_argument("-o", "--output", metavar="FILE", default="compare.png",
                        help="PNG to write (default: compare.png)")
    args = parser.parse_args(argv)
    runs = []
    try:
        for run_dir in args.run_dirs:
            name, history, _ = load_run(run_dir)
            runs.append((name, history.slice(names=("steps",) + tuple(c for c, *_ in COMPARE_PANELS))))
    except RunDirError as exc:
        return fail(str(exc))
    runs = list(zip(unique_names([n for n, _ in runs]), [cols for _, cols in runs]))
    return _write_png(figure_png(compare_figure(runs)), Path(args.output), f"{len(runs)} runs")


# ---- watch, attach -----------------------------------------------------------------------------------
def _budget_flag(parser: argparse.ArgumentParser) -> None:
    """--ui-budget for the commands that open the screen over a run in another process."""
    parser.add_argument("--ui-budget", type=flag_type("ui_budget"), metavar="F",
                        help="when every core is busy training, the screen uses at most this share of the training "
                             "time (default: 0.01; 0: full rate whatever it costs)")


def watch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurogen-tui watch",
                                description="Follow a run directory's files on the training screen (read-only).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory (holds training_viz/ and checkpoints/)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the files")
    _budget_flag(p)
    return p


def attach_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurogen-tui attach",
                                description="Open the training screen on a live run, with its keys "
                                            "(pause, checkpoint, dashboard, stop).")
    p.add_argument("run_dir", nargs="?", default=".", metavar="RUN_DIR",
                   help="the run's directory, or a directory above it (default: ., or the newest run under it)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the run's files")
    _budget_flag(p)
    return p


def _show(source, ui_budget: float | None) -> int:
    from .tui.app import MonitorApp  # Textual, only for the commands that open the screen

    code = MonitorApp(source, ui_budget=ui_budget).run()
    return EXIT_FAILED if code is None else int(code)


def main_watch(argv: list[str]) -> int:
    args = watch_parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        print(f"neurogen-tui watch: error: {run_dir} is not a directory")
        return EXIT_USAGE
    if not run_dir.exists():
        print(f"neurogen-tui watch: {run_dir} does not exist yet; waiting for the run to start writing")
    return _show(RunDirSource(run_dir, poll=max(0.05, args.poll)), args.ui_budget)


def attach_source(run: Path, poll: float):
    """The run's live trainer through its control channel if it answers, else the files, read-only."""
    info = read_run_info(run)
    state = liveness(info) if info else RunState.UNKNOWN
    why = f"its state is {state}"
    if state in LIVE_STATES and info.get("socket"):
        source = RunDirSource(run, poll=poll, info=info)
        try:
            source.client.request("status", timeout=10.0)
            return source
        except ControlError as exc:
            why = str(exc)
    elif state in LIVE_STATES:
        why = "it was started without a control channel"
    source = RunDirSource(run, poll=poll)
    note = f"{run} cannot be controlled from here ({why}); showing it read-only, as `watch` does"
    source.put(LogMessage("warning", note))
    print(f"neurogen-tui: {sanitize(note)}", file=sys.stderr)
    return source


def main_attach(argv: list[str]) -> int:
    args = attach_parser().parse_args(argv)
    root = Path(args.run_dir)
    if not root.is_dir():
        return fail(f"{root} is not a directory")
    run = newest_run(root)
    if run is None:
        return fail(f"no run in {root} or below it (no run.json or training_viz/metrics.jsonl)")
    return _show(attach_source(run, max(0.05, args.poll)), args.ui_budget)


# ---- ls ----------------------------------------------------------------------------------------------
def main_ls(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="neurogen-tui ls", description="List the runs under a directory.")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to look (default: .)")
    p.add_argument("--depth", type=int, default=3, help="directory levels to search below DIR (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per run, for scripts")
    args = p.parse_args(argv)
    root = Path(args.dir)
    if not root.is_dir():
        return fail(f"{root} is not a directory")
    now = time.time()
    runs = sorted((summarize(path, root, now) for path in find_runs(root, max(0, args.depth))),
                  key=lambda r: r["updated"] or 0, reverse=True)
    if args.json:
        for r in runs:
            print(json.dumps(r, ensure_ascii=True))
        return EXIT_OK
    print("\n".join(format_table(runs, now)) if runs else f"no runs under {sanitize(str(root))}")
    return EXIT_OK


# ---- export ------------------------------------------------------------------------------------------------
def main_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="neurogen-tui export",
                                description="Write a run's metrics (and text samples) in a format other tools read: "
                                            "TensorBoard event files (TensorBoard, tbtui, Aim, trackio, wandb sync), "
                                            "CSV or Parquet. Works on a finished, crashed or live run.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="a directory for tensorboard (default: RUN_DIR/export/tensorboard), a file for csv and parquet "
                        "(default: RUN_DIR/training_viz/metrics.csv|parquet; the samples go beside it as "
                        "metrics_samples.csv|parquet)")
    p.add_argument("--follow", action="store_true",
                   help="tensorboard: keep appending as the run grows, until it ends (Ctrl+C stops)")
    p.add_argument("--from-offset", type=int, help=argparse.SUPPRESS)  # --tensorboard's follower: from here on
    p.add_argument("--purge-step", type=int, help=argparse.SUPPRESS)
    p.add_argument("--until-stdin-closes", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    try:
        viz = find_viz_dir(run)
    except RunDirError as exc:
        return fail(str(exc))
    root = viz.parent if viz.name == VIZ_DIR else run
    if args.follow and args.format != "tensorboard":
        return fail("--follow goes with --format tensorboard")
    if args.format == "tensorboard" and (missing := tensorboard_missing()):
        return fail(missing)
    out = Path(args.output) if args.output else default_output(root, args.format)
    if args.format == "tensorboard" and not args.follow and out.is_dir() and any(out.glob("events.out.tfevents.*")):
        return fail(f"{out} already holds TensorBoard event files; give -o another directory or remove them")
    if not args.follow and not (viz / METRICS_FILE).exists():
        return fail(f"{run}: no {VIZ_DIR}/{METRICS_FILE} to export")
    started = time.perf_counter()
    try:
        if args.follow:
            rows = follow(root, out, args.from_offset, args.until_stdin_closes, args.purge_step)
            samples = None
        else:
            rows, samples = export_once(root, args.format, out)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        return fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    if not args.until_stdin_closes:
        what = f"{rows} steps" + ("" if samples is None else f", {samples} samples")
        print(f"neurogen-tui: wrote {sanitize(str(out))} ({what}, {time.perf_counter() - started:.1f} s)")
    return EXIT_OK
