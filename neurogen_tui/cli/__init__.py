"""The processes: the command line, its subcommands, the trainer's children, one run composed."""


def main(argv: list[str] | None = None) -> int:
    """The `neurogen-tui` command (kept here for the console script `neurogen_tui.cli:main`)."""
    from .entry import main as run

    return run(argv)
