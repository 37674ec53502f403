"""Where a notice goes: a webhook (the JSON body Slack, Discord or ntfy accept, chosen from the URL
or --notify-format, or the notice itself as JSON for any other endpoint) or a command (the notice as
JSON on its standard input). `send` raises on a failure; the notifier retries and reports it."""
from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from ..core.text import sanitize
from .notice import Notice, mask_in, mask_url

TIMEOUT = 10.0  # seconds a webhook or a command may take before it counts as failed
NTFY_PRIORITY = {"info": 3, "warning": 4, "error": 5}
ICON = {"info": "ℹ️", "warning": "⚠️", "error": "🛑"}


class ChannelError(RuntimeError):
    """A notice not delivered: the message says why in one line (no secret in it)."""


def format_for(url: str, fmt: str = "auto") -> str:
    """The body shape for `url`: the one asked for, else told from the host."""
    if fmt != "auto":
        return fmt
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.endswith("hooks.slack.com"):
        return "slack"
    if host.endswith(("discord.com", "discordapp.com")) and "/webhooks/" in parts.path:
        return "discord"
    if host.startswith("ntfy.") or host.endswith("ntfy.sh"):
        return "ntfy"
    return "json"


def request_for(url: str, fmt: str, notice: Notice) -> tuple[str, dict]:
    """(the URL to post to, the JSON body) for a webhook of format `fmt`."""
    title, text = sanitize(notice.title, 250), sanitize(notice.text, 1500)
    if fmt == "slack":  # an incoming webhook: mrkdwn text
        return url, {"text": f"{ICON[notice.level]} *{title}*" + (f"\n{text}" if text else "")}
    if fmt == "discord":  # an execute-webhook: content up to 2000 characters
        return url, {"content": (f"{ICON[notice.level]} **{title}**" + (f"\n{text}" if text else ""))[:2000],
                     "username": "neurogen-tui"}
    if fmt == "ntfy":  # JSON publishing: posted to the server's root, the topic in the body
        parts = urlsplit(url)
        topic = parts.path.strip("/").split("/")[0]
        root = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
        return root, {"topic": topic, "title": title, "message": text or title,
                      "priority": NTFY_PRIORITY[notice.level], "tags": [notice.kind.replace("_", "-")]}
    return url, {"source": "neurogen-tui", **notice.to_dict()}


class Webhook:
    """POST the notice as JSON to `url` (the secret in it never shown: `name` is masked)."""

    def __init__(self, url: str, fmt: str = "auto", timeout: float = TIMEOUT) -> None:
        self.url, self.fmt, self.timeout = url, format_for(url, fmt), timeout
        self.name = f"{mask_url(url)} ({self.fmt})"

    def send(self, notice: Notice) -> None:
        target, body = request_for(self.url, self.fmt, notice)
        request = urllib.request.Request(target, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "neurogen-tui"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                reply.read(1024)
        except urllib.error.HTTPError as exc:
            raise ChannelError(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ChannelError(mask_in(f"{type(reason).__name__}: {reason}", [self.url])) from None


class Command:
    """Run `command` (through the shell, as typed) with the notice as JSON on its standard input."""

    def __init__(self, command: str, timeout: float = TIMEOUT) -> None:
        self.command, self.timeout = command, timeout
        self.name = f"command {sanitize(command.split()[0] if command.split() else command, 40)}"

    def send(self, notice: Notice) -> None:
        try:
            done = subprocess.run(self.command, shell=True, input=json.dumps(notice.to_dict()).encode(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ChannelError(f"did not end within {self.timeout:.0f} s") from None
        except OSError as exc:
            raise ChannelError(str(exc)) from None
        if done.returncode:
            last = (done.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ChannelError(f"exit status {done.returncode}" + (f": {sanitize(last[0], 200)}" if last[0] else ""))
