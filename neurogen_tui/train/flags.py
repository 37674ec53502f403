"""A config field's flag: its concern, help, check and parse, and the single-value checks.

Each check returns the flag's one-line error, or None, so a value set on the command line and the
same value set live (`ctl set`) are refused with the same words.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from ..core.parse import ConfigError, strict_float, strict_int
from ..notify.notice import mask_url

__all__ = ["ConfigError"]  # where train/ and cli/ take it from


TYPES: dict[str, Callable[[str], Any]] = {"int": strict_int, "float": strict_float, "str": str}


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---- single-value checks: each returns the error for the flag, or None ---------------------------
def positive(name: str, value) -> str | None:
    if value is not None and not (0 < value < math.inf):  # NaN and inf too (a live `set lr=nan`)
        return f"{option(name)} must be a positive number (got {value})"
    return None


def non_negative(name: str, value) -> str | None:
    if value is not None and not (0 <= value < math.inf):
        return f"{option(name)} must not be negative (got {value})"
    return None


def share(name: str, value) -> str | None:
    if not 0.0 <= value < 1.0:
        return f"{option(name)} must be in [0, 1) (got {value})"
    return None


def fraction(name: str, value) -> str | None:
    if not 0.0 < value <= 1.0:
        return f"{option(name)} must be in (0, 1] (got {value})"
    return None


def at_least(low: int) -> Callable[[str, Any], str | None]:
    def check(name: str, value) -> str | None:
        return None if value >= low else f"{option(name)} must be at least {low} (got {value})"

    return check


GUARD_TROUBLES = ("nonfinite", "spike", "grad")
GUARD_ACTIONS = ("warn", "pause", "rollback")


def guard_actions(text: str) -> dict[str, str]:
    """--guard-actions 'spike=pause,grad=warn' over the defaults; ValueError says what is wrong."""
    actions = {"nonfinite": "rollback", "spike": "rollback", "grad": "warn"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, action = part.partition("=")
        if kind not in GUARD_TROUBLES:
            raise ValueError(f"unknown trouble {kind!r} (one of {', '.join(GUARD_TROUBLES)})")
        if action not in GUARD_ACTIONS:
            raise ValueError(f"{kind}: unknown action {action!r} (one of {', '.join(GUARD_ACTIONS)})")
        actions[kind] = action
    return actions


def guard_actions_check(name: str, value: str) -> str | None:
    try:
        guard_actions(value)
    except ValueError as exc:
        return f"{option(name)}: {exc}"
    return None


def device_spec(name: str, value: str) -> str | None:
    if value in ("auto", "cpu", "mps") or value.startswith("cuda"):
        return None
    return f"{option(name)} must be auto, cpu, cuda[:N] or mps (got {value!r})"


def one_of(*choices: str) -> Callable[[str, Any], str | None]:
    said = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)

    def check(name: str, value) -> str | None:
        return None if value in choices else f"{option(name)} must be {said} (got {value!r})"

    check.choices = choices  # type: ignore[attr-defined]  # the flag offers them too
    return check


def webhook_urls(name: str, value) -> str | None:
    """--notify: http(s) URLs with a host; said masked (a webhook's URL is its secret)."""
    for url in value:
        try:
            parts = urlsplit(url)
            good = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            good = False
        if not good:
            return f"{option(name)} takes an http(s) URL (got {mask_url(url) if '://' in url else 'something else'})"
    return None


@dataclass(frozen=True)
class Flag:
    group: str
    help: str
    check: Callable[[str, Any], str | None] | None = None
    saved: bool = True  # kept in checkpoints; False for process flags
    default_text: str | None = None  # how --help states the default ("" says nothing; a switch never does)
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # the flag's argparse type, where the annotation's is not it


def flag(default, group: str, help: str, **kwargs):
    """A config field with its flag; a mutable default is not needed anywhere."""
    return field(default=default, metadata={"flag": Flag(group, help, **kwargs)})


def keep_count(text: str) -> int:
    """--keep-checkpoints / --keep-dashboards: a number, or `all` (0)."""
    if text == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {text!r}") from None
