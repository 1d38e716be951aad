"""Workflow materials with `trigger: true`: each success of W starts a run of the workflows
that list W as a material (trigger `upstream`), subject to pause and lock like any start."""

from __future__ import annotations

from typing import Any

from ..service import Service, record_event
from ..store.db import Tx
from .starts import start_unattended


def on_success(svc: Service | None, tx: Tx, run: dict[str, Any]) -> list[int]:
    if svc is None or run["kind"] != "workflow":
        return []
    svc.reload_if_changed()
    started = []
    for wf in svc.project.workflows.values():
        if not any(m.workflow == run["target"] and m.trigger for m in wf.materials.values()):
            continue
        run_id, reason = start_unattended(svc, tx, wf, "upstream")
        if run_id is not None:
            started.append(run_id)
            continue
        record_event(
            tx,
            "upstream.refused",
            "sluice",
            f"{wf.name} not started after run #{run['id']} of {run['target']} succeeded: {reason}",
            workflow=wf.name,
            details={"upstream_run_id": run["id"], "reason": reason},
        )
    return started
