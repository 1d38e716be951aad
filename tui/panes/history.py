"""The History pane: every state change, newest first, live; the same events as `sluice history`."""

from __future__ import annotations

from typing import Any

from core.identity import actor_user
from core.shapes import EventView

from ..screens.run import short
from .base import WINDOW, Pane, Window


class HistoryPane(Pane):
    title = "History"
    columns = [
        ("id", "#"),
        ("time", "Time"),
        ("who", "Who"),
        ("event", "Event"),
        ("what", "What"),
    ]

    def fetch(self) -> Window[EventView]:
        rows, total = self.sluice.svc.history_window(text=self.filter_text or None, limit=WINDOW)
        return Window(rows, total)

    def show(self, data: Window[EventView]) -> None:
        events = data.rows
        self.data = {str(e["id"]): dict(e) for e in events}
        self.table.apply([(str(e["id"]), self._cells(e)) for e in events])
        self.set_count(len(events), data.total)

    def detail(self, row: dict[str, Any]) -> str:
        return f"{row['kind']} by {actor_user(row['actor'])}: {row['message']}"

    @staticmethod
    def _cells(e: EventView) -> tuple[Any, ...]:
        return (
            str(e["id"]),
            short(e["at"]),
            actor_user(e["actor"]),
            e["kind"],
            e["message"],
        )
