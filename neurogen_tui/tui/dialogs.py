"""The cockpit's two dialogs: `g`, a prompt line the model continues at the next step boundary,
and `e`, the live settings (checked as the flags are, by the trainer's side, when sent)."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from ..train.config import LIVE_SETTINGS
from ..train.flags import option
from ..train.prompts import MAX_PROMPT


class PromptScreen(ModalScreen[str | None]):
    """One line: options first (temperature=0.8 top_k=40 tokens=100), then the text. Enter sends
    it, Esc closes."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Prompt the model as it is now (greedy; options first: temperature=0.8 top_k=40 "
                             "tokens=100). Enter sends, Esc cancels.", style="bold"))
            yield Input(placeholder="Once upon a time", max_length=MAX_PROMPT, id="prompt-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value if event.value.strip() else None)


def _shown(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


class SettingsScreen(ModalScreen[dict | None]):
    """Every live setting with its value now; Enter in any field sends those that changed, Esc
    closes without a change."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, current: dict) -> None:
        super().__init__()
        self.current = {k: _shown(current.get(k)) for k in LIVE_SETTINGS}

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Live settings, applied at the next step boundary on every rank. "
                             "Enter sends what changed, Esc cancels.", style="bold"))
            for name in LIVE_SETTINGS:
                with Horizontal(classes="setting"):
                    yield Label(option(name), classes="setting-name")
                    yield Input(value=self.current[name], placeholder="(not set)", id=f"set-{name}")
            yield Label("", id="dialog-problem")

    def changed(self) -> dict:
        out = {}
        for name in LIVE_SETTINGS:
            value = self.query_one(f"#set-{name}", Input).value.strip()
            if value != self.current[name]:
                out[name] = value
        return out

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Sends what changed ({}: nothing did, said by the app); a field left empty that had a
        value is not a value: the dialog stays, saying so."""
        changed = self.changed()
        cleared = [option(name) for name, value in changed.items() if not value]
        if cleared:
            self.query_one("#dialog-problem", Label).update(
                Text(f"{', '.join(cleared)}: give a value (a cleared field is not one); Esc cancels", style="bold red"))
            return
        self.dismiss(changed)
