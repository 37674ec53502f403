"""Prompts for the model as it trains: the line a person types after `g` (or gives to
`ctl RUN prompt`), options first, and the pinned prompts of --prompt / --prompts FILE."""
from __future__ import annotations

from pathlib import Path

from .config import TrainingConfig
from .flags import ConfigError, strict_float, strict_int

MAX_PROMPT = 2000  # characters of one prompt


def pinned_prompts(cfg: TrainingConfig) -> list[str]:
    """--prompt texts, then --prompts FILE's non-empty lines (OSError where it cannot be read)."""
    texts = [str(p) for p in cfg.prompt]
    if cfg.prompts:
        texts += [line.strip() for line in Path(cfg.prompts).read_text(encoding="utf-8", errors="replace").splitlines()]
    return [t[:MAX_PROMPT] for t in texts if t.strip()]


PROMPT_OPTIONS = {"temperature": strict_float, "t": strict_float, "top_k": strict_int, "k": strict_int,
                  "tokens": strict_int, "n": strict_int}


def prompt_line(line: str, default_tokens: int = 64) -> tuple[str, dict]:
    """A prompt as typed after `g` or given to `ctl prompt`: options first, then the text, e.g.
    `temperature=0.8 top_k=40 Once upon a time` (greedy without them). Returns (text, options:
    temperature, top_k, tokens); ConfigError with one line for a bad option or an empty text."""
    words = line.strip().split(" ")
    options = {"temperature": 0.0, "top_k": None, "tokens": default_tokens}
    while words and "=" in words[0] and words[0].split("=", 1)[0] in PROMPT_OPTIONS:
        name, value = words.pop(0).split("=", 1)
        key = {"t": "temperature", "k": "top_k", "n": "tokens"}.get(name, name)
        try:
            parsed = PROMPT_OPTIONS[name](value)
        except ValueError:
            raise ConfigError(f"prompt: {key} must be a {'number' if key == 'temperature' else 'whole number'} "
                              f"(got {value!r})") from None
        if key == "temperature" and not (parsed == 0 or 1e-3 <= parsed <= 1e6):
            raise ConfigError(f"prompt: temperature must be 0 (greedy) or 0.001 to 1e6 (got {value})")
        if key != "temperature" and not 1 <= parsed <= 1_000_000:
            raise ConfigError(f"prompt: {key} must be a whole number from 1 to 1000000 (got {value})")
        options[key] = parsed
    text = " ".join(words).strip()
    if not text:
        raise ConfigError("prompt: no text to continue (options go first: temperature=0.8 top_k=40 Once upon a time)")
    return text[:MAX_PROMPT], options
