"""The command palette (ctrl+p, or `:`): every action by name, with what it acts on.

`release swap 12`, `run 14`, `pause db-migration`: the palette's fuzzy matcher finds the
command among those that exist now (the held jobs, the runs asked for by number, the
workflows), and each opens the same dialog as its key would, with the same confirmation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from textual.command import Hit, Hits, Provider

from core import holds

from .panes import PANES, WorkflowsPane

if TYPE_CHECKING:
    from .app import SluiceApp

Command = tuple[str, Callable[[], Any], str]


class SluiceCommands(Provider):
    async def search(self, query: str) -> Hits:
        app = cast("SluiceApp", self.app)
        matcher = self.matcher(query)
        for title, callback, help_text in self.commands(app, query):
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)

    def commands(self, app: SluiceApp, query: str) -> list[Command]:
        from .screens.run import LogScreen, RunScreen

        out: list[Command] = [
            (f"Go to {pid.title()}", lambda p=pid: app.action_show_pane(p), f"key {key}")
            for key, pid, _ in PANES
        ]
        for n in sorted({int(x) for x in re.findall(r"\d+", query)})[:5]:  # `run 14`
            out.append((f"Open run #{n}", lambda n=n: app.push_screen(RunScreen(n)), "runs: enter"))
            out.append((f"Logs of run #{n}", lambda n=n: app.push_screen(LogScreen(n, None)), "runs: l"))
        out.append(
            ("Toggle schedule / natural order", lambda: app.pane("runs").action_toggle_order(), "runs: o")
        )
        if app.read_only:
            return out
        out += [
            ("Execute marked queue items", lambda: app.pane("queue").action_execute(), "queue: x"),
            ("Purge marked queue items", lambda: app.pane("queue").action_purge(), "queue: d"),
            ("Undo the last purge", lambda: app.pane("queue").action_restore(), "queue: u"),
        ]
        for h in holds.held_jobs(app.svc)[:50]:  # `release swap 12`
            run_id, job = h["run_id"], h["name"]
            out.append(
                (
                    f"Release {job} {run_id}",
                    lambda r=run_id, j=job: app.release_flow(r, j),
                    f"run #{run_id}: r",
                )
            )
            out.append(
                (f"Reject {job} {run_id}", lambda r=run_id, j=job: app.reject_flow(r, j), f"run #{run_id}: R")
            )
        workflows = cast(WorkflowsPane, app.pane("workflows"))
        for name in sorted(app.svc.project.workflows):  # `pause db-migration`
            out.append((f"Start {name}", lambda n=name: workflows.start(n), "workflows: s"))
            out.append((f"Pause {name}", lambda n=name: workflows.pause(n), "workflows: p"))
            out.append((f"Unpause {name}", lambda n=name: workflows.unpause(n), "workflows: u"))
        return out
