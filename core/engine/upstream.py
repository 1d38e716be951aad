"""Workflow materials with `trigger: true`: each success of W starts a run of the workflows
that list W as a material (trigger `upstream`), subject to pause and lock like any start."""

from __future__ import annotations

from typing import Any

from .. import gates
from ..definitions import InputError, validate_inputs
from ..errors import Invalid
from ..plan import workflow_plan
from ..service import Service, create_run, record_event
from ..store.db import Tx


def on_success(svc: Service | None, tx: Tx, run: dict[str, Any]) -> list[int]:
    if svc is None or run["kind"] != "workflow":
        return []
    svc.reload_if_changed()
    started = []
    for wf in svc.project.workflows.values():
        if not any(m.workflow == run["target"] and m.trigger for m in wf.materials.values()):
            continue
        reason = gates.refusal(tx, wf.name, wf.lock)
        values: dict[str, Any] = {}
        if reason is None:
            try:
                values = validate_inputs(wf.inputs, {})
            except InputError as e:
                reason = f"cannot start without inputs: {e}"
        if reason is None:
            try:
                started.append(create_run(tx, workflow_plan(svc.project, wf), values, trigger="upstream",
                                          actor="sluice"))
                continue
            except Invalid as e:
                reason = str(e)
        record_event(tx, "upstream.refused", "sluice",
                     f"{wf.name} not started after run #{run['id']} of {run['target']} succeeded: {reason}",
                     workflow=wf.name, details={"upstream_run_id": run["id"], "reason": reason})
    return started
