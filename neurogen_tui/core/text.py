"""Text for terminals: untrusted text (dataset documents, model output) made inert, and short numbers.

One function, used before any widget, console or PNG table sees the text: every C0/C1 control,
DEL and bidi/invisible formatting character becomes a visible escape like `\\x1b` or `\\u202e`,
so no escape sequence (CSI, OSC, DCS, 8-bit C1) can reach the terminal. On disk text stays as is.
"""
from __future__ import annotations

import re

# C0 controls (but not plain space), DEL, C1 controls, and Unicode format characters that reorder
# or hide text: bidi embeddings/overrides/isolates, zero-width marks, BOM, line/paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: str, limit: int | None = None) -> str:
    """A single printable line: controls shown as escapes, optionally cut to `limit` characters."""
    if not isinstance(text, str):
        text = str(text)
    if limit is not None and len(text) > limit * 4:
        text = text[: limit * 4]  # bound the work for huge documents before escaping
    safe = _UNSAFE.sub(_escape, text)
    if limit is not None and len(safe) > limit:
        safe = safe[: max(0, limit - 1)] + "…"
    return safe


def tail(text: str, limit: int) -> str:
    """The last `limit` visible characters of untrusted text, made safe (the end of a prompt leads
    into what follows it)."""
    safe = sanitize(text[-limit * 4:])
    return safe if len(safe) <= limit else "…" + safe[-(limit - 1):]


def format_count(n: float) -> str:
    """A count for a narrow column: 950, 35.5k, 1.2M, 3.4G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def format_duration(seconds: float | None) -> str:
    """12:34, or 1:02:03 past an hour; --:-- when unknown."""
    if seconds is None:
        return "--:--"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
