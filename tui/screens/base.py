"""Shared pieces of the dashboard's screens and panes."""

from __future__ import annotations

from rich.text import Text

from ..glyphs import TONE, status_text

STYLE = {"good": "green", "bad": "bold red", "warn": "bold yellow", "busy": "cyan", "dim": "dim"}


def styled_status(status: str) -> Text:
    """Glyph and word (readable without colour); the colour only adds to it."""
    return Text(status_text(status), style=STYLE.get(TONE.get(status, ""), ""))


class ReadOnlyAware:
    """In --read-only mode the actions listed in DESTRUCTIVE do not exist: no key, no footer entry."""

    DESTRUCTIVE: set[str] = set()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.DESTRUCTIVE and getattr(self.app, "read_only", False):  # type: ignore[attr-defined]
            return False
        return True
