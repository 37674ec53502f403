"""Subcommands other than training: each lives in its own module and returns an exit status."""
from __future__ import annotations


def run_subcommand(name: str, argv: list[str]) -> int:
    if name == "render":
        from .render import main_render

        return main_render(argv)
    if name == "compare":
        from .render import main_compare

        return main_compare(argv)
    if name == "watch":
        from .tui.watch import main_watch

        return main_watch(argv)
    if name in ("attach", "ls"):
        from .control import main_attach, main_ls

        return main_attach(argv) if name == "attach" else main_ls(argv)
    raise ValueError(f"unknown subcommand {name}")
