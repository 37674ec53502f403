"""The subcommands other than training: render, compare, watch, attach, ls, export and ctl. Each
parses its flags (parsers.py) and returns an exit status; a usage error is one line and status 2,
before any file is written."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from ..control.protocol import MAX_LINE, ControlClient, ControlError, encode
from ..core.events import LogMessage, changes_text
from ..core.text import sanitize
from ..run.files import atomic_write, tail_jsonl
from ..run.info import liveness, read_run_info
from ..run.layout import EXIT_FAILED, EXIT_OK, EXIT_USAGE, LIVE_STATES, METRICS_FILE, RENDER_PNG, VIZ_DIR, RunState
from ..run.listing import find_runs, format_table, is_our_run, newest_run, summarize
from ..run.query import QueryError, group_label, groups, select
from ..run.reader import RunDirError, find_viz_dir, is_tensorboard_run, load_run, load_table, run_name
from ..run.timeline import describe, digest, read_events
from ..run.timeline import marks as timeline_marks
from ..train.prompts import MAX_PROMPT
from ..train.validate import tensorboard_missing
from ..tui.rundir import RunDirSource
from ..viz.compare import COMPARE_PANELS, GRID_MAX, compare_figure, grid_figure, logged_metrics
from ..viz.figure import DASHBOARD_COLUMNS, figure_png, render_png
from ..viz.formats import default_output, export_once, follow
from .parsers import attach_parser, compare_parser, ctl_parser, export_parser, ls_parser, render_parser, watch_parser


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"neurogen-tui: error: {sanitize(message)}", file=sys.stderr)
    return code


def run_subcommand(name: str, argv: list[str]) -> int:
    return {"render": main_render, "compare": main_compare, "watch": main_watch, "attach": main_attach,
            "ls": main_ls, "export": main_export, "ctl": main_ctl}[name](argv)


# ---- render, compare ---------------------------------------------------------------------------------
def _write_png(data: bytes, out: Path, what: str) -> int:
    try:
        atomic_write(out, data)
    except OSError as exc:
        return fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    print(f"neurogen-tui: wrote {out} ({what})")
    return EXIT_OK


def main_render(argv: list[str]) -> int:
    args = render_parser().parse_args(argv)
    try:
        pattern = re.compile(args.metrics, re.IGNORECASE) if args.metrics else None
    except re.error as exc:
        return fail(f"render: --metrics {args.metrics!r} is not a regular expression: {exc}")
    try:
        if args.grid or pattern or is_tensorboard_run(args.run_dir):
            return _render_grid(args, pattern)
        name, history, samples = load_run(args.run_dir)
    except RunDirError as exc:
        return fail(str(exc))
    if not np.isfinite(history.column("loss")).any():  # a run logging its own keys: they are what it has
        return _render_grid(args, pattern)
    out = Path(args.output) if args.output else find_viz_dir(args.run_dir) / RENDER_PNG
    png = render_png(history.slice(names=DASHBOARD_COLUMNS), samples, name, args.samples,
                     marks=timeline_marks(read_events(find_viz_dir(args.run_dir))))
    return _write_png(png, out, f"{len(history)} steps")


def _render_grid(args, pattern) -> int:
    """`render` as a grid of the run's logged metrics (those `pattern` matches), GRID_MAX at most."""
    name, table = load_table(args.run_dir)
    names = [n for n in logged_metrics(table.columns) if pattern is None or pattern.search(n)]
    if not names:
        return fail(f"render: no logged metric matches --metrics {args.metrics!r}" if pattern else
                    f"render: {args.run_dir} has steps but no metric with a value")
    left = names[GRID_MAX:]
    out = Path(args.output) if args.output else find_viz_dir(args.run_dir) / RENDER_PNG
    code = _write_png(figure_png(grid_figure(table.columns, name, names[:GRID_MAX])), out,
                      f"{len(table)} steps, {min(len(names), GRID_MAX)} metrics")
    if left and code == EXIT_OK:
        print(f"neurogen-tui: {len(left)} more metrics not drawn ({sanitize(', '.join(left[:5]), 120)}...): "
              "choose with --metrics REGEX")
    return code


def compare_runs(paths: list[str], query: str) -> list[dict]:
    """The runs `compare` is given: each path a run, or a directory of runs standing for all of
    them, as ls's summaries (name, config), those `query` keeps, in the order given."""
    now, out = time.time(), []
    for given in paths:
        path = Path(given)
        if is_workspace(path):
            out += [summarize(p, path, now, events=False) for p in find_runs(path)]
        else:
            out.append({**summarize(path, path.parent, now, events=False), "name": run_name(path)})
    return select(out, query) if query else out


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def main_compare(argv: list[str]) -> int:
    args = compare_parser().parse_args(argv)
    try:
        chosen = compare_runs(args.run_dirs, args.filter)
    except QueryError as exc:
        return fail(f"compare: --filter: {exc}")
    if not chosen:
        return fail(f"compare: no run matches --filter {args.filter!r}" if args.filter else "compare: no runs found")
    names = ("steps", "val_loss") + tuple(c for c, *_ in COMPARE_PANELS)
    try:
        for run in chosen:
            run["columns"] = load_run(run["path"])[1].slice(names=names)
    except RunDirError as exc:
        return fail(str(exc))
    labels = unique_names([r["name"] for r in chosen])
    runs = [(label, r["columns"]) for label, r in zip(labels, chosen)]
    grouped = None
    if args.group:
        grouped = [(group_label(values), [r["columns"] for r in members])
                   for values, members in groups(chosen, args.group).items()]
    fig = compare_figure(runs, smoothing=args.smoothing, groups=grouped)
    what = f"{len(runs)} runs" + (f" in {len(grouped)} groups by {args.group}" if grouped else "")
    return _write_png(figure_png(fig), Path(args.output), what)


# ---- watch, attach -----------------------------------------------------------------------------------
def _show(source, ui_budget: float | None, back: bool = False):
    """One run's screen; with `back`, Esc leaves it for the workspace it was opened from ("back")."""
    from ..tui.app import MonitorApp  # Textual, only for the commands that open the screen

    app = MonitorApp(source, ui_budget=ui_budget, back=back)
    code = app.run()
    if app.went_back:
        return "back"
    return EXIT_FAILED if code is None else int(code)


def is_workspace(root: Path) -> bool:
    """A directory holding runs (more than one, or one below it), not a run of ours itself: the
    workspace. A TensorBoard logdir opens there too (the single-run screen reads our files)."""
    return root.is_dir() and not is_our_run(root) and bool(find_runs(root))


def workspace(root: Path, control: bool, poll: float, ui_budget: float | None) -> int:
    """The runs workspace; Enter opens one run as its own screen, Esc comes back."""
    from ..tui.workspace import WorkspaceApp

    state = None  # the runs, their selection and lines, kept while one run is open
    while True:
        app = WorkspaceApp(root, control=control, ws=state)
        result = app.run()
        state = app.ws
        if not (isinstance(result, tuple) and result[0] == "open"):
            return EXIT_OK
        source = attach_source(result[1], poll) if control else RunDirSource(result[1], poll=poll)
        if _show(source, ui_budget, back=True) != "back":
            return EXIT_OK


def main_watch(argv: list[str]) -> int:
    args = watch_parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        return fail(f"watch: {run_dir} is not a directory")
    if not run_dir.exists():
        if not args.wait:
            return fail(f"watch: {run_dir}: no such directory (--wait waits for a run to start writing there)")
        print(f"neurogen-tui: {run_dir} does not exist yet; waiting for the run to start writing")
    if is_workspace(run_dir):
        return workspace(run_dir, False, max(0.05, args.poll), args.ui_budget)
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
        except ControlError as exc:
            why = str(exc)
        else:
            for line in attach_digest(run):
                source.put(LogMessage("info", line))
            return source
    elif state in LIVE_STATES:
        why = "it was started without a control channel"
    source = RunDirSource(run, poll=poll)
    note = f"{run} cannot be controlled from here ({why}); showing it read-only, as `watch` does"
    source.put(LogMessage("warning", note))
    print(f"neurogen-tui: {sanitize(note)}", file=sys.stderr)
    return source


def attach_digest(run: Path) -> list[str]:
    """What happened since the last viewer left, from the timeline and the metrics' tail."""
    viz = find_viz_dir(run)
    metrics, _ = tail_jsonl(viz / METRICS_FILE, 5000)
    return digest(read_events(viz), metrics)


def find_run(run_dir: str) -> Path | int:
    """The newest run in or below `run_dir`, or the usage error's exit status (said in one line)."""
    root = Path(run_dir)
    if not root.is_dir():
        return fail(f"{root} is not a directory")
    run = newest_run(root)
    if run is None:
        return fail(f"no run in {root} or below it (no run.json or training_viz/metrics.jsonl)")
    return run


def main_attach(argv: list[str]) -> int:
    args = attach_parser().parse_args(argv)
    if is_workspace(Path(args.run_dir)) and len(find_runs(Path(args.run_dir))) > 1:
        return workspace(Path(args.run_dir), True, max(0.05, args.poll), args.ui_budget)
    run = find_run(args.run_dir)
    if isinstance(run, int):
        return run
    return _show(attach_source(run, max(0.05, args.poll)), args.ui_budget)


# ---- ls ----------------------------------------------------------------------------------------------
def main_ls(argv: list[str]) -> int:
    args = ls_parser().parse_args(argv)
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
    args = export_parser().parse_args(argv)
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
    if not args.follow and not (viz / METRICS_FILE).is_file():
        return fail(f"{run}: no {VIZ_DIR}/{METRICS_FILE} file to export")
    started = time.perf_counter()
    try:
        if args.follow:
            if not args.until_stdin_closes:  # a person at a terminal: say where, and that it goes on
                print(f"neurogen-tui: following {sanitize(str(root))}: TensorBoard events go to {sanitize(str(out))} "
                      f"as the run grows, until it ends (Ctrl+C stops)", flush=True)
            rows = follow(root, out, args.from_offset, args.until_stdin_closes, args.purge_step)
            samples = None
        else:
            rows, samples = export_once(root, args.format, out)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:  # reading the run, or writing the export: say which
        where = Path(exc.filename) if exc.filename else out
        verb = "write" if where == out or out in where.parents else "read"
        return fail(f"cannot {verb} {where}: {exc.strerror or exc}", EXIT_FAILED)
    if not args.until_stdin_closes:
        what = f"{rows} steps" + ("" if samples is None else f", {samples} samples")
        print(f"neurogen-tui: wrote {sanitize(str(out))} ({what}, {time.perf_counter() - started:.1f} s)")
    return EXIT_OK


# ---- ctl ---------------------------------------------------------------------------------------------------
def main_ctl(argv: list[str]) -> int:
    args = ctl_parser().parse_args(argv)
    run = find_run(args.run_dir)
    if isinstance(run, int):
        return run
    prompt_text = ""
    if args.action == "prompt":
        if not args.settings:
            return fail('prompt: give the text, e.g. ctl RUN prompt "Once upon a time" (options first: temperature=0.8)')
        prompt_text, args.settings = " ".join(args.settings), []
    if args.action not in ("set", "prompt") and args.settings:
        return fail(f"ctl {args.action} takes no NAME=VALUE (only set does)")
    if args.action == "events":
        for event in read_events(find_viz_dir(run)):
            print(json.dumps(event, ensure_ascii=True) if args.json else sanitize(describe(event), 500))
        return EXIT_OK
    settings = {}
    for item in args.settings:
        name, eq, value = item.partition("=")
        if not eq or not name:
            return fail(f"set: expected NAME=VALUE, got {item!r}")
        if name.replace("-", "_") in {n.replace("-", "_") for n in settings}:
            return fail(f"set: {name} is given twice; give each setting once")
        settings[name] = value
    if args.action == "set" and not settings:
        return fail("set: give at least one NAME=VALUE, e.g. lr=3e-4")
    info = read_run_info(run)
    if not info or liveness(info) not in LIVE_STATES or not info.get("socket"):
        state = liveness(info) if info else RunState.UNKNOWN
        return fail(f"{run} is not a live run with a control channel (its state is {state})", EXIT_FAILED)
    cmd = {"dashboard": "draw"}.get(args.action, args.action)
    fields = {"settings": settings} if cmd == "set" else {"text": prompt_text} if cmd == "prompt" else {}
    if len(encode({"id": 0, "cmd": cmd, **fields})) > MAX_LINE:
        return fail(f"{args.action}: the request is over {MAX_LINE // 1024} KiB, the most the control channel "
                    f"takes (a prompt is cut at {MAX_PROMPT} characters anyway)")
    try:
        reply = ControlClient(info["socket"]).request(cmd, **fields)
    except ControlError as exc:
        return fail(str(exc), EXIT_FAILED)
    if args.json:
        print(json.dumps(reply, ensure_ascii=True))
    if not reply.get("ok"):
        error = str(reply.get("error", "refused"))
        said = error if error.startswith(f"{args.action}:") else f"{args.action}: {error}"
        return fail(said, EXIT_USAGE if reply.get("usage") else EXIT_FAILED)
    if not args.json:
        print(f"neurogen-tui: {sanitize(ctl_said(args.action, reply), 500)}")
    return EXIT_OK


def ctl_said(action: str, reply: dict) -> str:
    """A ctl reply as one line."""
    if reply.get("pending"):
        return f"{action}: {reply.get('message', 'requested')}"
    if action == "set":
        changes = reply.get("changes") or {}
        return f"set at step {reply.get('step')}: {changes_text(changes) if changes else 'nothing changed (already so)'}"
    if action == "prompt" and "output" in reply:
        return f"answered at step {reply.get('step')}: {reply.get('prompt')} → {reply['output']}"
    if action in ("checkpoint", "dashboard") and reply.get("path"):
        return f"{action}: {reply['path']}"
    shown = {**reply, "loss": f"{reply['loss']:.4f}"} if isinstance(reply.get("loss"), float) else reply
    fields = [f"{k} {shown[k]}" for k in ("state", "step", "loss", "message") if shown.get(k) is not None]
    return f"{action}: " + ", ".join(fields)
