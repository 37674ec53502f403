"""Untrusted text (documents, model output) never reaches a terminal as control sequences or markup."""
import io

import pytest
from rich.console import Console

from neurogen_tui.train.config import TrainingConfig
from neurogen_tui.core.events import LogMessage, TextSample, TrainingMetrics
from neurogen_tui.cli.headless import HeadlessDisplay
from neurogen_tui.core.text import sanitize

HOSTILE = [
    "\x1b]0;pwned title\x07",          # OSC: set window title
    "\x1b[2J\x1b[H",                   # CSI: clear screen
    "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "\x1b]52;c;ZXZpbA==\x07",          # OSC 52: write the clipboard
    "\x1bP1$r\x1b\\",                  # DCS
    "\x9b2J",                          # 8-bit C1 CSI
    "nul\x00bel\x07bs\x08del\x7f",     # C0 controls and DEL
    "abc\u202edcba",                   # bidi override
    "zero\u200bwidth\u2066isolate\u2069",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_sanitize_leaves_no_control_or_bidi_character(text):
    safe = sanitize(text)
    assert all(ch.isprintable() for ch in safe), repr(safe)
    assert "\u202e" not in safe and "\x9b" not in safe and "\x1b" not in safe
    assert "\\x1b" in safe or "\\x" in safe or "\\u" in safe  # shown as visible escapes


def test_sanitize_keeps_ordinary_text_and_cuts_to_limit():
    assert sanitize("café 東京 [bold]x[/]") == "café 東京 [bold]x[/]"
    assert sanitize("line1\nline2\ttab") == "line1\\nline2\\ttab"
    cut = sanitize("a" * 100, limit=40)
    assert len(cut) == 40 and cut.endswith("…")
    assert len(sanitize("\x1b" * 10_000_000, limit=40)) == 40  # bounded work on huge input


def test_headless_output_shows_hostile_samples_literally():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200, color_system=None)
    cfg = TrainingConfig(viz_interval=1)
    display = HeadlessDisplay(cfg, console=console)
    evil = "".join(HOSTILE) + " [bold]markup[/bold] [/] [@click=app.quit]x[/] $x^2$"
    display(TextSample(step=1, input=evil, target=evil, output=evil, accuracy=0.5))
    display(LogMessage("warning", evil))
    display(TrainingMetrics(step=1, loss=2.0, accuracy=0.5, tokens_per_sec=10.0, gpu_memory_mb=0.0,
                            learning_rate=1e-3, timestamp=0.0))
    out = buf.getvalue()
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out and "\u202e" not in out
    assert "[bold]markup[/bold]" in out and "[/]" in out  # markup shown, not interpreted
    assert "\\x1b]0;pwned title\\x07" in out


def test_json_on_disk_keeps_text_exactly(tmp_path):
    from neurogen_tui.run.recorder import MetricsRecorder
    from neurogen_tui.run.files import read_jsonl

    rec = MetricsRecorder(tmp_path)
    evil = "".join(HOSTILE)
    rec(TextSample(step=1, input=evil, target="t", output=evil, accuracy=0.0))
    rec.close()
    rows, _ = read_jsonl(tmp_path / "samples.jsonl")
    assert rows[0]["input"] == evil and rows[0]["output"] == evil


def test_non_finite_numbers_are_written_as_null(tmp_path):
    import json

    from neurogen_tui.run.files import write_json
    from neurogen_tui.run.recorder import MetricsRecorder

    write_json(tmp_path / "x.json", {"loss": [1.0, float("nan"), float("inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"loss": [1.0, None, None]}
    rec = MetricsRecorder(tmp_path)
    rec(TrainingMetrics(step=1, loss=float("nan"), accuracy=0.0, tokens_per_sec=1.0, gpu_memory_mb=0.0,
                        learning_rate=1e-3, timestamp=0.0, grad_norm=float("inf"), skipped=True))
    rec.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert row["loss"] is None and row["grad_norm"] is None and row["skipped"] is True
