"""Untrusted text (dataset documents, model output) made inert for terminals and renderers.

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
