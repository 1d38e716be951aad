"""The Runs pane: newest first (or in natural order), held jobs released or rejected from here."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on
from textual.binding import Binding

from core.identity import actor_user

from ..screens.base import styled_status
from ..screens.run import LogScreen, RunScreen, short
from ..texts import why_text
from ..widgets.live_table import LiveTable
from .base import WINDOW, Pane, Window


class RunsPane(Pane):
    title = "Runs"
    columns = [
        ("id", "Run"),
        ("status", "Status"),
        ("target", "Target"),
        ("why", "Why"),
        ("trigger", "Trigger"),
        ("by", "By"),
        ("created", "Created"),
    ]
    BINDINGS = [
        Binding("enter", "open", "Open", id="runs.open"),
        Binding("r", "release", "Release", id="runs.release"),
        Binding("R", "reject", "Reject", id="runs.reject"),
        Binding("c", "cancel_run", "Cancel", id="runs.cancel"),
        Binding("l", "logs", "Logs", id="runs.logs"),
        # in the help, not the footer: the footer's 80 columns go to the keys used at 2 am
        Binding("o", "toggle_order", "Order", show=False, id="runs.order"),
    ]
    DESTRUCTIVE = {"release", "reject", "cancel_run"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.order = "schedule"

    def fetch(self) -> Window[dict[str, Any]]:
        runs, total = self.sluice.svc.runs_window(
            text=self.filter_text or None, order=self.order, limit=WINDOW
        )
        return Window(runs, total)

    def show(self, data: Window[dict[str, Any]]) -> None:
        runs = data.rows
        self.data = {str(r["id"]): r for r in runs}
        rows = []
        t = time.time()
        for r in runs:
            text = why_text(r.get("why"), t)
            held = Text(text, style="bold yellow") if r["held"] else text
            rows.append(
                (
                    str(r["id"]),
                    (
                        f"#{r['id']}",
                        styled_status(r["status"]),
                        r["target"],
                        held,
                        r["trigger"],
                        actor_user(r["created_by"]),
                        short(r["created_at"]),
                    ),
                )
            )
        self.table.apply(rows)
        self.set_count(len(runs), data.total, f" · {self.order} order")

    def detail(self, row: dict[str, Any]) -> str:
        bits = [f"#{row['id']} {row['target']} {row['status'].replace('_', ' ')}"]
        why = why_text(row.get("why"), time.time())
        if why:
            bits.append(why)
        bits.append(f"{row['trigger']} by {actor_user(row['created_by'])}")
        return " · ".join(bits)

    @on(LiveTable.RowSelected)
    def _selected(self, event: LiveTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def _run_id(self) -> int | None:
        run = self.current()
        return run["id"] if run else None

    def action_open(self) -> None:
        run_id = self._run_id()
        if run_id is not None:
            self.app.push_screen(RunScreen(run_id))

    def action_logs(self) -> None:
        run_id = self._run_id()
        if run_id is not None:
            self.app.push_screen(LogScreen(run_id, None))

    def _held(self) -> tuple[int, str] | None:
        run = self.current()
        if run is None:
            return None
        if len(run["held"]) != 1:
            self.notify("no single held job here: open the run (enter) to choose", severity="warning")
            return None
        return run["id"], run["held"][0]

    def action_release(self) -> None:
        held = self._held()
        if held:
            self.sluice.release_flow(*held)

    def action_reject(self) -> None:
        held = self._held()
        if held:
            self.sluice.reject_flow(*held)

    def action_cancel_run(self) -> None:
        run_id = self._run_id()
        if run_id is not None:
            self.sluice.cancel_flow([run_id])

    def action_toggle_order(self) -> None:
        self.order = "natural" if self.order == "schedule" else "schedule"
        self.sluice.kick()
