"""How the charts are drawn, as the user set it with the keys, kept from one use of the app to
the next in a small per-user file ($XDG_CONFIG_HOME/neurogen-tui/charts.json, ~/.config by
default; NEUROGEN_TUI_CONFIG_DIR overrides it).

Smoothing, the X axis and the window apply to every chart (as in TensorBoard); the log Y axis to
the chart it was set on. A file that cannot be read or holds something else is ignored with one
warning (the defaults apply and the file is left as it is until a key changes a setting); a file
that cannot be written costs only the memory of the settings, never the run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..run.files import atomic_write
from .series import X_AXES

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight
MAX_SMOOTHING = 0.99
SMOOTHING_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, MAX_SMOOTHING)  # s / S step through these
WINDOWS = (None, 10_000, 1_000, 100)  # z: the whole run, then the last N steps (the seed's "recent performance")
X_NAMES = {"step": "step", "tokens": "tokens", "time": "wall time"}
FILE_NAME = "charts.json"


def config_dir() -> Path:
    """The per-user config directory: XDG's rule (an absolute $XDG_CONFIG_HOME, else ~/.config)."""
    if own := os.environ.get("NEUROGEN_TUI_CONFIG_DIR"):
        return Path(own)
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "neurogen-tui"


def window_name(window: int | None, short: bool = False) -> str:
    """"whole run", "last 10k steps"; short: "all", "last 10k"."""
    if window is None:
        return "all" if short else "whole run"
    count = f"{window // 1000}k" if window >= 1000 and window % 1000 == 0 else str(window)
    return f"last {count}" if short else f"last {count} steps"


@dataclass(frozen=True)
class ChartSettings:
    smoothing: float = DEFAULT_SMOOTHING
    x: str = "step"
    window: int | None = None
    log_y: tuple[tuple[str, bool], ...] = field(default=())  # (chart column, on) where the user changed it

    def is_log(self, column: str, default: bool) -> bool:
        return dict(self.log_y).get(column, default)

    def toggle_log(self, column: str, default: bool) -> ChartSettings:
        log_y = dict(self.log_y)
        log_y[column] = not self.is_log(column, default)
        return replace(self, log_y=tuple(sorted(log_y.items())))

    def smoother(self, up: bool) -> ChartSettings:
        """The next level of smoothing up (s) or down (S); a value between levels (an edited file)
        moves to the nearest level in that direction."""
        if up:
            level = next((v for v in SMOOTHING_LEVELS if v > self.smoothing + 1e-9), SMOOTHING_LEVELS[-1])
        else:
            level = next((v for v in reversed(SMOOTHING_LEVELS) if v < self.smoothing - 1e-9), 0.0)
        return replace(self, smoothing=level)

    def next_x(self) -> ChartSettings:
        return replace(self, x=X_AXES[(X_AXES.index(self.x) + 1) % len(X_AXES)])

    def next_window(self) -> ChartSettings:
        return replace(self, window=WINDOWS[(WINDOWS.index(self.window) + 1) % len(WINDOWS)])

    def summary(self) -> str:
        """For the header: the weight always; the X axis and window where they are not the default."""
        parts = [f"ema {self.smoothing:.2f}" if self.smoothing else "ema off"]
        if self.x != "step":
            parts.append(f"x {X_NAMES[self.x]}")
        if self.window is not None:
            parts.append(window_name(self.window, short=True))
        return " · ".join(parts)

    def to_json(self) -> dict:
        return {"smoothing": self.smoothing, "x": self.x, "window": self.window, "log_y": dict(self.log_y)}

    @classmethod
    def from_json(cls, data) -> ChartSettings:
        """Settings from the file's object; ValueError names the first thing that is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        base = cls()
        smoothing = data.get("smoothing", base.smoothing)
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= MAX_SMOOTHING:
            raise ValueError(f"smoothing must be a number from 0 to {MAX_SMOOTHING}, not {smoothing!r}")
        x = data.get("x", base.x)
        if x not in X_AXES:
            raise ValueError(f"x must be one of {', '.join(X_AXES)}, not {x!r}")
        window = data.get("window", base.window)
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(str(w) for w in WINDOWS)}, not {window!r}")
        log_y = data.get("log_y", {})
        if not isinstance(log_y, dict) or not all(isinstance(k, str) and isinstance(v, bool) for k, v in log_y.items()):
            raise ValueError("log_y must map chart names to true or false")
        return cls(float(smoothing), x, window, tuple(sorted(log_y.items())))


def load(directory: Path | None = None) -> tuple[ChartSettings, str | None]:
    """The saved settings, or the defaults and a one-line warning saying why the file was not used
    (None: no file, or it was read)."""
    path = (directory or config_dir()) / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ChartSettings(), None
    except (OSError, UnicodeDecodeError) as exc:
        return ChartSettings(), f"chart settings {path} not read ({type(exc).__name__}); using the defaults"
    try:
        return ChartSettings.from_json(json.loads(text)), None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        return ChartSettings(), f"chart settings {path} ignored ({reason}); using the defaults"


def save(settings: ChartSettings, directory: Path | None = None) -> str | None:
    """Write the settings (atomically); a one-line warning where that failed."""
    path = (directory or config_dir()) / FILE_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(settings.to_json(), indent=1) + "\n").encode())
    except OSError as exc:
        return f"chart settings not saved to {path} ({exc.strerror or type(exc).__name__})"
    return None
