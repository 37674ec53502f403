"""The command line: flags built from the config's own declarations (train/config.py), then the road a
run takes (this process, its children, or a subcommand). Holds no logic of its own."""
from __future__ import annotations

import argparse
import difflib
import sys

from ..core.version import __version__
from ..train.config import GROUPS, TrainingConfig, fields
from ..train.flags import TYPES, ConfigError, Flag, option
from .commands import fail, run_subcommand
from .parsers import SUBCOMMANDS

def _help(f, spec: Flag) -> str:
    text = spec.help
    if spec.default_text != "" and f.type != "bool":
        default = spec.default_text or (f"{f.default:g}" if isinstance(f.default, float) else f.default)
        text += f" (default: {default})"
    return text.replace("%", "%%")  # argparse formats help with %


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neurogen-tui",
        usage=f"neurogen-tui [options]\n       neurogen-tui {{{','.join(SUBCOMMANDS)}}} ...",
        description="Train a GPT-style model on SlimPajama and watch it learn in the terminal.",
        epilog=f"Other commands: neurogen-tui {{{','.join(SUBCOMMANDS)}}} --help",
        argument_default=None)
    p.add_argument("--version", action="version", version=f"neurogen-tui {__version__}")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for f, spec in fields():
        kwargs: dict = {"help": _help(f, spec), "default": None}  # None: not given, the config's value stands
        if f.type == "bool":
            kwargs["action"] = "store_true"
        elif f.type == "bool | None":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type == "tuple":  # repeatable: --prompt A --prompt B
            kwargs["action"] = "append"
        else:
            kwargs["type"] = spec.parse or TYPES[f.type.split(" | ")[0]]
            kwargs["choices"] = getattr(spec.check, "choices", None)
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
        groups[spec.group].add_argument(option(f.name), **kwargs)
    return p


def trains_in_process(cfg: TrainingConfig) -> bool:
    """Whether the app keeps the trainer on a thread of its own process. Measured on a 2-core CPU
    box: beside a trainer whose torch threads fill every core, a separate screen process slowed it
    more (its CPU delays one thread and the others wait at each op's barrier) than sharing the GIL
    did; on a GPU the trainer is one Python thread launching kernels, and a screen holding its GIL
    would stall them, so there it is a child."""
    if cfg.in_process is not None:
        return cfg.in_process
    from ..train.device import pick_device

    try:
        return pick_device(cfg.device).type == "cpu"
    except ConfigError:  # the trainer says so, in one line, on the in-process road
        return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    if argv and not argv[0].startswith("-"):  # training takes flags only: a word first is a command mistyped
        close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1, cutoff=0.6)
        return fail(f"unknown command {argv[0]!r}" + (f"; did you mean `neurogen-tui {close[0]}`?" if close else
                    f" (commands: {', '.join(SUBCOMMANDS)}; training takes --flags only)"))
    args = build_parser().parse_args(argv)
    # torch is imported from here on, not for --help or the subcommands
    from ..train.env import under_launcher
    from .launch import launch
    from .prepare import prepare_run
    from .session import start

    try:
        cfg, resume, lock = prepare_run(args)
    except (ConfigError, OSError) as exc:
        return fail(str(exc))
    if not args.run_dir:  # the children (ranks, or the trainer under the app) train the run chosen here
        argv = [*argv, "--run-dir", cfg.run_dir]
    try:
        headless = bool(args.headless) or not sys.stdout.isatty()
        if not under_launcher() and (cfg.nproc_per_node > 1 or not (headless or trains_in_process(cfg))):
            return launch(argv, cfg, headless)  # the trainer (N ranks through torchrun, or one) as children
        return start(cfg, resume, headless)
    finally:
        lock.release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
