"""A one-key confirmation: `y` does it, any other key (Escape too) leaves things as they are."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[bool]):
    """Asks one question; dismisses with True on `y`, False on any other key."""

    def __init__(self, question: str, consequence: str) -> None:
        super().__init__()
        self.question = question
        self.consequence = consequence

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(Text(self.question, style="bold"), id="confirm-question")
            yield Static(self.consequence, id="confirm-consequence")
            text = Text("y", style="bold reverse")
            text.append(" yes    ", style="")
            text.append("any other key", style="bold reverse")
            text.append(" no", style="")
            yield Static(text, id="confirm-keys")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        self.dismiss(event.key == "y")
