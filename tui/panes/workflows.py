"""The Workflows pane: state, last run, next timer fire; start a run, pause, unpause, unlock."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.binding import Binding

from core import flow
from core.identity import actor_user

from ..screens.base import styled_status
from ..screens.modals import FormScreen
from ..screens.run import short
from ..widgets.live_table import LiveTable
from .base import Pane, Window


class WorkflowsPane(Pane):
    title = "Workflows"
    columns = [
        ("name", "Workflow"),
        ("state", "State"),
        ("last", "Last run"),
        ("timer", "Next fire"),
        ("description", "Description"),
    ]
    BINDINGS = [
        Binding("s,enter", "start", "Start run", id="workflows.start"),
        Binding("p", "pause", "Pause", id="workflows.pause"),
        Binding("u", "unpause", "Unpause", id="workflows.unpause"),
        Binding("U", "unlock", "Unlock", show=False, id="workflows.unlock"),
    ]
    DESTRUCTIVE = {"start", "pause", "unpause", "unlock"}

    def fetch(self) -> Window[dict[str, Any]]:
        rows = self.sluice.svc.workflow_states()
        if self.filter_text:
            rows = [w for w in rows if self.filter_text in w["name"] + " " + (w["description"] or "")]
        return Window(rows, len(rows))  # all workflows are shown: the total is what the filter left

    def show(self, data: Window[dict[str, Any]]) -> None:
        rows = data.rows
        self.data = {w["name"]: w for w in rows}
        out = []
        for w in rows:
            if w["paused"]:
                state = Text(
                    f"‖ paused: {w['pause_reason']} ({actor_user(w['paused_by'] or '')})", style="bold yellow"
                )
            elif w["locked_by_run"]:
                state = Text(f"⊘ locked by #{w['locked_by_run']}", style="yellow")
            elif w.get("window") and not w["window"]["open"]:
                window = w["window"]
                state = Text(f"◷ {window['name']}: opens {short(window['next_open'])}", style="yellow")
            elif w.get("window"):
                state = Text(f"○ ready, {w['window']['name']} open until {short(w['window']['closes_at'])}")
            else:
                state = Text("○ ready")
            last = (
                Text.assemble(f"#{w['last_run']['id']} ", styled_status(w["last_run"]["status"]))
                if w["last_run"]
                else ""
            )
            out.append((w["name"], (w["name"], state, last, short(w["next_fire"]), w["description"] or "")))
        self.table.apply(out)
        self.set_count(len(rows), len(rows))

    def detail(self, row: dict[str, Any]) -> str:
        bits = [row["name"]]
        if row["paused"]:
            bits.append(f"paused by {actor_user(row['paused_by'] or '')}: {row['pause_reason']}")
        if row["locked_by_run"]:
            bits.append(f"locked by run #{row['locked_by_run']}")
        if row["description"]:
            bits.append(row["description"])
        return " · ".join(bits)

    @on(LiveTable.RowSelected)
    def _selected(self, event: LiveTable.RowSelected) -> None:
        event.stop()
        self.action_start()

    def _workflow(self) -> str | None:
        w = self.current()
        return w["name"] if w else None

    def action_start(self) -> None:
        name = self._workflow()
        if name:
            self._start(name)

    def _start(self, workflow: str) -> None:
        svc = self.sluice.svc
        wf = svc.workflow(workflow)
        fields = [
            {
                "name": n,
                "label": n + (f" ({s.description})" if s.description else ""),
                "required": s.required and s.default is None,
                "value": "" if s.secret or s.default is None else s.default,
                "placeholder": "|".join(map(str, s.enum)) if s.enum else (s.pattern or s.type),
                "secret": s.secret,
            }
            for n, s in wf.inputs.items()
        ]

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            given = {k: v for k, v in values.items() if v != ""}
            self.sluice.act(
                lambda: svc.run_workflow(workflow, given),
                lambda run_id: f"started run #{run_id} of {workflow}",
            )

        self.app.push_screen(
            FormScreen(f"Start a run of {workflow}", fields, "Start", starts_work=True), done
        )

    def action_pause(self) -> None:
        name = self._workflow()
        if name:
            self.pause(name)

    def pause(self, name: str) -> None:
        """Ask for the reason, then pause NAME (also from the command palette)."""

        def done(values: dict[str, str] | None) -> None:
            if values:
                self.sluice.act(lambda: flow.pause(self.sluice.svc, name, values["reason"]), f"paused {name}")

        self.app.push_screen(
            FormScreen(
                f"Pause {name}",
                [{"name": "reason", "label": "Reason (shown to anyone refused)", "required": True}],
                "Pause",
            ),
            done,
        )

    def action_unpause(self) -> None:
        name = self._workflow()
        if name:
            self.unpause(name)

    def unpause(self, name: str) -> None:
        self.sluice.act(lambda: flow.unpause(self.sluice.svc, name), f"unpaused {name}")

    def start(self, name: str) -> None:
        """The start form of NAME (also from the command palette)."""
        self._start(name)

    def action_unlock(self) -> None:
        name = self._workflow()
        if name:
            self.sluice.act(lambda: flow.unlock(self.sluice.svc, name), f"unlocked {name}")
