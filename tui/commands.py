"""The command palette (ctrl+p): go to a pane, and the queue's and runs' pane-wide actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from textual.command import Hit, Hits, Provider

from .panes import PANES

if TYPE_CHECKING:
    from .app import SluiceApp


class SluiceCommands(Provider):
    async def search(self, query: str) -> Hits:
        app = cast("SluiceApp", self.app)
        commands: list[tuple[str, Callable[[], Any], str]] = [
            (f"Go to {pid.title()}", lambda p=pid: app.action_show_pane(p), f"key {key}")
            for key, pid, _ in PANES
        ]
        if not app.read_only:
            commands += [
                ("Execute marked queue items", lambda: app.pane("queue").action_execute(), "queue: x"),
                ("Purge marked queue items", lambda: app.pane("queue").action_purge(), "queue: d"),
            ]
        commands.append(
            ("Toggle schedule / natural order", lambda: app.pane("runs").action_toggle_order(), "runs: o")
        )
        matcher = self.matcher(query)
        for title, callback, help_text in commands:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
