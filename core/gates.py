"""Whether a workflow may start a new run now: pause and lock (SPEC 5).

Checked inside the transaction that creates the run, so two starts at the same moment
cannot both pass a lock.
"""

from __future__ import annotations

from typing import Any

from .statuses import ACTIVE_RUN, sql_list
from .store.db import Tx
from .times import iso

INCOMPLETE = ACTIVE_RUN


def workflow_state(tx: Tx, workflow: str) -> dict[str, Any] | None:
    return tx.one("SELECT * FROM workflow_states WHERE workflow = ?", (workflow,))


def refusal(tx: Tx, workflow: str, lock: str) -> str | None:
    """The reason a new run of `workflow` must not start, or None."""
    state = workflow_state(tx, workflow)
    if state and state["paused"]:
        return (
            f"workflow {workflow} is paused by {state['paused_by']} at {iso(state['paused_at'])}: "
            f"{state['pause_reason']}"
        )
    if lock in ("until_complete", "until_success"):
        holder = lock_holder(tx, workflow, lock, state)
        if holder is not None:
            return f"workflow {workflow} is locked by run #{holder['id']} ({holder['status']}, lock: {lock})"
    return None


def lock_holder(
    tx: Tx, workflow: str, lock: str, state: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The run holding the workflow's lock: the earliest incomplete run, else (until_success) a failure."""
    if lock not in ("until_complete", "until_success"):
        return None
    row = tx.one(
        "SELECT id, status FROM runs WHERE kind = 'workflow' AND target = ? AND status IN "
        f"({sql_list(ACTIVE_RUN)}) ORDER BY id LIMIT 1",
        (workflow,),
    )
    if row is not None:
        return row
    if lock == "until_success":
        state = state if state is not None else workflow_state(tx, workflow)
        if state and state["lock_run_id"]:
            return tx.one("SELECT id, status FROM runs WHERE id = ?", (state["lock_run_id"],))
    return None


def after_run_finished(tx: Tx, run: dict[str, Any], status: str, lock: str) -> None:
    """until_success: a failed, rejected or cancelled run keeps the lock; a success clears it."""
    if run["kind"] != "workflow" or lock != "until_success":
        return
    ensure_state(tx, run["target"])
    if status == "succeeded":
        tx.execute("UPDATE workflow_states SET lock_run_id = NULL WHERE workflow = ?", (run["target"],))
    else:
        tx.execute(
            "UPDATE workflow_states SET lock_run_id = ? WHERE workflow = ?", (run["id"], run["target"])
        )


def ensure_state(tx: Tx, workflow: str) -> None:
    if workflow_state(tx, workflow) is None:
        tx.execute("INSERT INTO workflow_states (workflow, paused) VALUES (?, 0)", (workflow,))
