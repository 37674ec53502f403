"""A notice (one thing worth telling), its kinds, and the masking of the secrets in webhook URLs.

A webhook's URL is its password (Slack's and Discord's carry a token in the path, ntfy's topic is
the key to its messages), so a URL is never shown or written whole: `mask_url` keeps the scheme and
the host, and nothing after them.
"""
from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

# What is worth telling (docs/notifications.md). "alert": a loop's own run.alert(); "summary": what
# the rate limit held back of one kind, said when its interval is over.
KINDS = ("finished", "failed", "guard", "nonfinite", "stall", "checkpoint", "disk", "best_val", "alert")
LEVELS = ("info", "warning", "error")
WEBHOOK_FORMATS = ("auto", "slack", "discord", "ntfy", "json")  # a webhook's body (channels.format_for; --notify-format)
NEWS = ("stall", "disk", "alert", "best_val")  # kinds a screen or log has no other line for (the rest: the end, the guard...)
NEVER_HELD = ("finished", "failed", "stall")  # once a run, or spaced by --stall-after: never rate-limited


@dataclass
class Notice:
    kind: str  # one of KINDS
    title: str  # one line: "lr3e-3: finished at step 2,000"
    text: str = ""  # a few lines: what happened, where the files are
    level: str = "info"  # info | warning | error
    run: str = ""  # the run's name
    run_dir: str = ""
    step: int | None = None
    time: float = field(default_factory=time.time)
    held: int = 0  # notices of this kind the rate limit held back and this one sums up (-1: held back itself)
    host: str = field(default_factory=socket.gethostname)  # the machine the run is on
    wait: float | None = None  # seconds before another of its key goes out (None: --notify-interval)

    @property
    def key(self) -> str:
        """What the rate limit counts by: the kind, and for a loop's alert its title too (as wandb's
        alert(wait_duration=) does), so two different alerts are never held back for each other."""
        return f"alert:{self.title}" if self.kind == "alert" else self.kind

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["wait"]
        return out


def level_of(text: str | None) -> str:
    """A level as wandb's and trackio's alert() take it (AlertLevel.WARN, "ERROR", "info")."""
    word = str(getattr(text, "value", text) or "info").lower()
    return {"warn": "warning", "warning": "warning", "error": "error", "fatal": "error"}.get(word, "info")


def mask_url(url: str) -> str:
    """`https://hooks.slack.com/services/T0/B0/XyZ` as `https://hooks.slack.com/***`: the scheme and
    host (no user or password), never the path or the query, which carry the secret."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    return f"{parts.scheme}://{host}{port}/***"


def mask_in(text: str, urls) -> str:
    """`text` with each of `urls` (and what follows its host) masked, for an error message that
    quotes the URL it failed on."""
    out = str(text)
    for url in urls:
        if url and url in out:
            out = out.replace(url, mask_url(url))
        try:
            tail = urlsplit(url).path.lstrip("/")
        except ValueError:
            continue
        if len(tail) >= 4 and tail in out:
            out = out.replace(tail, "***")
    return out


def terminal_alert(title: str, text: str = "", tmux: bool = False) -> str:
    """The bytes that make a terminal tell its user: the bell, OSC 9 (iTerm2, Windows Terminal,
    kitty, WezTerm) and OSC 777 (foot, Ghostty, urxvt, VTE); inside tmux the OSCs are wrapped to
    pass through (tmux's `allow-passthrough on`), the bell passes by itself. The text is made inert
    (no control character, no `;` where it would end a field)."""
    def inert(value: str, limit: int) -> str:
        return "".join(c if c.isprintable() else " " for c in str(value))[:limit]

    title, text = inert(title, 120), inert(text, 240)
    oscs = f"\x1b]9;{title}{': ' + text if text else ''}\x07\x1b]777;notify;{title.replace(';', ',')};{text}\x07"
    if tmux:
        oscs = "\x1bPtmux;" + oscs.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return "\a" + oscs
