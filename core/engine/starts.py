"""Starting a run that nobody asked for at the keyboard (a timer fire, an upstream success)."""

from __future__ import annotations

from typing import Any

from .. import gates, windows
from ..definitions import InputError, validate_inputs
from ..definitions.objects import Workflow
from ..errors import SluiceError
from ..plan import workflow_plan
from ..service import Service, create_run
from ..store.db import Tx


def start_unattended(svc: Service, tx: Tx, wf: Workflow, trigger: str) -> tuple[int | None, str | None]:
    """Create a run with default inputs, in the caller's transaction: (run id, None) or (None, why not)."""
    reason = gates.refusal(tx, wf.name, wf.lock)
    if reason is not None:
        return None, reason
    closed = windows.closure(svc.project, tx, "workflow", wf.name)
    if closed is not None:
        return None, closed.message
    try:
        values: dict[str, Any] = validate_inputs(wf.inputs, {})
    except InputError as e:
        return None, f"cannot start without inputs: {e}"
    try:
        return create_run(tx, workflow_plan(svc.project, wf), values, trigger=trigger, actor="sluice"), None
    except SluiceError as e:  # a material cannot be resolved (a git repository gone, no build yet)
        return None, str(e)
