"""The Agents pane: grouped by environment; enabled and disabled from here."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding

from ..screens.base import styled_status
from ..screens.run import short
from .base import Pane, Window


class AgentsPane(Pane):
    title = "Agents"
    columns = [
        ("name", "Agent"),
        ("env", "Environment"),
        ("state", "State"),
        ("jobs", "Jobs"),
        ("resources", "Resources"),
        ("capacity", "Cap"),
        ("host", "Host"),
        ("beat", "Heartbeat"),
    ]
    BINDINGS = [
        Binding("e", "enable", "Enable", id="agents.enable"),
        Binding("d", "disable", "Disable", id="agents.disable"),
    ]
    DESTRUCTIVE = {"enable", "disable"}

    def fetch(self) -> Window[dict[str, Any]]:
        agents = self.sluice.svc.list_agents()
        if self.filter_text:
            agents = [
                a
                for a in agents
                if self.filter_text
                in " ".join([a["name"], a["host"], a["state"], *a["environments"], *a["resources"]])
            ]
        return Window(agents, len(agents))  # all agents are shown: the total is what the filter left

    def show(self, data: Window[dict[str, Any]]) -> None:
        # grouped by environment: sort by the first environment ("-" for none), then name
        agents = sorted(data.rows, key=lambda a: ((a["environments"] or ["-"])[0], a["name"]))
        self.data = {a["name"]: a for a in agents}
        self.table.apply(
            [
                (
                    a["name"],
                    (
                        a["name"],
                        ", ".join(a["environments"]) or "-",
                        styled_status(a["state"]),
                        ", ".join(a["jobs"]),
                        ", ".join(a["resources"]),
                        str(a["capacity"]),
                        a["host"],
                        short(a["heartbeat_at"])[6:],
                    ),
                )
                for a in agents
            ]
        )
        self.set_count(len(agents), len(agents))

    def detail(self, row: dict[str, Any]) -> str:
        bits = [f"{row['name']} {row['state']}" + (f" with {', '.join(row['jobs'])}" if row["jobs"] else "")]
        if row["resources"]:
            bits.append("resources: " + ", ".join(row["resources"]))
        bits.append(f"on {row['host']}, last heartbeat {short(row['heartbeat_at'])}")
        return " · ".join(bits)

    def action_enable(self) -> None:
        self._set(True)

    def action_disable(self) -> None:
        self._set(False)

    def _set(self, enabled: bool) -> None:
        agent = self.current()
        if agent is not None:
            name = agent["name"]
            self.sluice.act(
                lambda: self.sluice.svc.set_agent_enabled(name, enabled),
                f"{'enabled' if enabled else 'disabled'} agent {name}",
            )
