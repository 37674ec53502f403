"""Prompts for the model as it trains: the line a person types after `g` (or gives to
`ctl RUN prompt`), options first, and the pinned prompts of --prompt / --prompts FILE."""
from __future__ import annotations

import math
from pathlib import Path

from .config import TrainingConfig
from .flags import ConfigError

MAX_PROMPT = 2000  # characters of one prompt


def pinned_prompts(cfg: TrainingConfig) -> list[str]:
    """--prompt texts, then --prompts FILE's non-empty lines (OSError where it cannot be read)."""
    texts = [str(p) for p in cfg.prompt]
    if cfg.prompts:
        texts += [line.strip() for line in Path(cfg.prompts).read_text(encoding="utf-8", errors="replace").splitlines()]
    return [t[:MAX_PROMPT] for t in texts if t.strip()]


PROMPT_OPTIONS = {"temperature": float, "t": float, "top_k": int, "k": int, "tokens": int, "n": int}


def prompt_line(line: str, default_tokens: int = 64) -> tuple[str, dict]:
    """A prompt as typed after `g` or given to `ctl prompt`: options first, then the text, e.g.
    `temperature=0.8 top_k=40 Once upon a time` (greedy without them). Returns (text, options:
    temperature, top_k, tokens); ConfigError with one line for a bad option or an empty text."""
    words = line.strip().split(" ")
    options = {"temperature": 0.0, "top_k": None, "tokens": default_tokens}
    while words and "=" in words[0] and words[0].split("=", 1)[0] in PROMPT_OPTIONS:
        name, value = words.pop(0).split("=", 1)
        try:
            parsed = PROMPT_OPTIONS[name](value)
        except ValueError:
            raise ConfigError(f"prompt: {name} must be a number (got {value!r})") from None
        key = {"t": "temperature", "k": "top_k", "n": "tokens"}.get(name, name)
        if not math.isfinite(parsed) or (key == "temperature" and 0 < parsed < 1e-3) or parsed > 1e6:
            raise ConfigError(f"prompt: {key} must be a finite number (0, or 0.001 to 1e6 for a temperature; got {value})")
        if parsed < 0 or (key != "temperature" and parsed < 1):
            raise ConfigError(f"prompt: {key} must be {'>= 0' if key == 'temperature' else 'at least 1'} (got {value})")
        options[key] = parsed
    text = " ".join(words).strip()
    if not text:
        raise ConfigError("prompt: no text to continue (options go first: temperature=0.8 top_k=40 Once upon a time)")
    return text[:MAX_PROMPT], options
