"""The subcommands' flags: one parser each, so `--help`, the commands and the docs' test share them.

What each subcommand does is commands.py's; the training flags are built in entry.py.
"""
from __future__ import annotations

import argparse

from ..run.layout import RENDER_PNG
from ..train.config import flag_type
from ..train.flags import strict_float
from ..viz.formats import FORMATS

SUBCOMMANDS = ("render", "compare", "watch", "attach", "ls", "export", "ctl")


def render_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurogen-tui render",
                                     description="Draw the training dashboard from a run directory's files "
                                                 "(finished, crashed or still running).")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("-o", "--output", metavar="FILE", help=f"PNG to write (default: RUN_DIR/training_viz/{RENDER_PNG})")
    parser.add_argument("--samples", type=int, default=5, help="text samples in the table (default: 5)")
    parser.add_argument("--grid", action="store_true",
                        help="a grid of every logged metric instead of the seed's seven panels (the default for a "
                             "run without the seed's loss: a logging-API run with its own keys, a TensorBoard logdir)")
    parser.add_argument("--metrics", metavar="REGEX", help="the grid's metrics: those whose name matches (implies --grid)")
    return parser

def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurogen-tui compare",
                                     description="Overlay loss, accuracy, throughput and learning rate of "
                                                 "several runs in one PNG, labelled by run name. A directory "
                                                 "holding runs stands for all of them (the workspace's runs).")
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    parser.add_argument("--filter", metavar="QUERY", default="",
                        help="only the runs this filter keeps, as the workspace's f: 'lr>=1e-3 model=small -name:debug'")
    parser.add_argument("--group", metavar="KEY", default="",
                        help="runs that differ only in this config key (a seed) as one mean line with a min-max band")
    parser.add_argument("-o", "--output", metavar="FILE", default="compare.png",
                        help="PNG to write (default: compare.png)")
    parser.add_argument("--smoothing", type=_weight, default=0.6, metavar="W",
                        help="TensorBoard's debiased EMA weight for every run, 0 (raw) to 0.99 (default: 0.6, "
                             "the terminal charts' too)")
    return parser


def _weight(text: str) -> float:
    value = strict_float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (got {text})")
    return value


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
    p.add_argument("--wait", action="store_true", help="a RUN_DIR that does not exist yet is waited for")
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

def ls_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurogen-tui ls", description="List the runs under a directory.")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to look (default: .)")
    p.add_argument("--depth", type=int, default=3, help="directory levels to search below DIR (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per run, for scripts")
    return p

def export_parser() -> argparse.ArgumentParser:
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
    return p

CTL_ACTIONS = ("status", "pause", "resume", "checkpoint", "dashboard", "stop", "set", "prompt", "events")


def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neurogen-tui ctl", description="Steer a live run from a script or another terminal, over its control "
                                             "channel: pause, resume, checkpoint, dashboard, stop, or set live "
                                             "settings (applied at a step boundary on every rank); events prints its "
                                             "timeline (training_viz/events.jsonl).",
        epilog="examples: neurogen-tui ctl runs/a set lr=3e-4 eval_interval=100 · neurogen-tui ctl runs/a set "
               "lr_scale=0.5 · neurogen-tui ctl runs/a set eval=now · neurogen-tui ctl runs/a events")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("action", choices=CTL_ACTIONS, metavar="ACTION", help=" | ".join(CTL_ACTIONS))
    p.add_argument("settings", nargs="*", metavar="NAME=VALUE", help="for prompt: its text (options first: "
                   "temperature=0.8 top_k=40 tokens=100); for set: lr, lr_scale, min_lr, warmup_steps, "
                   "lr_decay_steps, weight_decay, grad_clip, eval_interval, sample_interval, viz_interval, "
                   "checkpoint_interval, eval=now")
    p.add_argument("--json", action="store_true", help="the reply (or each event) as JSON")
    return p


PARSERS = {"render": render_parser, "compare": compare_parser, "watch": watch_parser, "attach": attach_parser,
           "ls": ls_parser, "export": export_parser, "ctl": ctl_parser}
