"""neurogen-tui: a terminal training monitor and trainer for language models."""

__version__ = "0.1.0"
