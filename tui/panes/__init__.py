"""The dashboard's five panes, one module each, on the shared Pane (base.py)."""

from __future__ import annotations

from .agents import AgentsPane
from .base import WINDOW, Pane, Window
from .history import HistoryPane
from .queue import QueuePane
from .runs import RunsPane
from .workflows import WorkflowsPane

# (key, id, class): the order of the top bar, of 1-4 and of tab
PANES: list[tuple[str, str, type[Pane]]] = [
    ("1", "queue", QueuePane),
    ("2", "runs", RunsPane),
    ("3", "agents", AgentsPane),
    ("4", "workflows", WorkflowsPane),
    ("5", "history", HistoryPane),
]

__all__ = [
    "PANES",
    "WINDOW",
    "AgentsPane",
    "HistoryPane",
    "Pane",
    "QueuePane",
    "RunsPane",
    "Window",
    "WorkflowsPane",
]
