"""Values people type, read strictly: one error type for what a person can fix, and numbers as
people write them (no `1_000`, no full-width digits), for flags, live settings and prompt options
alike, whichever writer's run they are for."""
from __future__ import annotations

import argparse
import re


class ConfigError(ValueError):
    """A problem the user can fix by changing a flag; shown as one line, exit status 2."""


class NotANumber(argparse.ArgumentTypeError, ValueError):
    """A flag's (or a live setting's, or a prompt option's) value that is not a plain number."""


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def strict_int(text: str) -> int:
    """A whole number as people write one: ASCII digits, no `1_000`, no full-width digits (Python's
    int() takes both)."""
    if not _INT.fullmatch(text.strip()):
        raise NotANumber(f"not a whole number: {text!r}")
    return int(text)


def strict_float(text: str) -> float:
    """A number as people write one (`3e-4`, `0.5`, `inf` for the checks to refuse by name)."""
    if not _FLOAT.fullmatch(text.strip()):
        raise NotANumber(f"not a number: {text!r}")
    return float(text)
