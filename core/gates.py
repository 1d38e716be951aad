"""Whether a workflow may start a new run now: pause and lock (SPEC 5).

Checked inside the transaction that creates the run, so two starts at the same moment
cannot both pass a lock: refusal() takes the workflow's lock (Tx.lock, PostgreSQL; SQLite
has one writer anyway) until that transaction ends, and so do pause, unpause and unlock, and
every write of the workflow's row in workflow_states.

Lock order (PostgreSQL), the same in every transaction so none waits for another in a ring:
the lease, then rows (a queue item, a job), then a workflow, then the run order, then a
concurrency group (core.engine.groups).
"""

from __future__ import annotations

from typing import Any

from .statuses import ACTIVE_RUN, sql_list
from .store.db import Database, Tx
from .times import iso

INCOMPLETE = ACTIVE_RUN
# Taken shared by every transaction that creates a workflow run, from before the run gets its
# id until it commits; core.engine.groups waits for the holders before it admits a run, so no
# run with a smaller id can still appear (run ids are the order of concurrency groups).
RUN_ORDER = "runs:order"


def workflow_key(workflow: str) -> str:
    return f"workflow:{workflow}"


def lock_workflow(tx: Tx, workflow: str) -> None:
    """Until this transaction ends, no other starts a run of `workflow`, pauses, unpauses or
    unlocks it, or records its lock holder."""
    tx.lock(workflow_key(workflow))


def workflow_state(tx: Tx, workflow: str) -> dict[str, Any] | None:
    return tx.one("SELECT * FROM workflow_states WHERE workflow = ?", (workflow,))


def refusal(tx: Tx, workflow: str, lock: str) -> str | None:
    """The reason a new run of `workflow` must not start, or None.

    Call it in the transaction that then creates the run (and before the run is inserted): it
    holds the workflow's lock, and the run order's, until that transaction ends."""
    lock_workflow(tx, workflow)
    tx.lock(RUN_ORDER, shared=True)
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
    tx: Tx | Database, workflow: str, lock: str, state: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The run holding the workflow's lock: the earliest incomplete run, else (until_success) a failure.

    One statement, so one snapshot: a run that finishes meanwhile is seen either still
    incomplete or finished with its failure recorded (both are written in one transaction),
    never neither. (`state` is accepted from callers that have it; it is not needed.)"""
    if lock not in ("until_complete", "until_success"):
        return None
    active = (
        "SELECT MIN(id) FROM runs WHERE kind = 'workflow' AND target = ? "
        f"AND status IN ({sql_list(ACTIVE_RUN)})"
    )
    if lock == "until_complete":
        return tx.one(f"SELECT id, status FROM runs WHERE id = ({active})", (workflow,))
    return tx.one(
        f"SELECT id, status FROM runs WHERE id = COALESCE(({active}), "
        "(SELECT lock_run_id FROM workflow_states WHERE workflow = ?))",
        (workflow, workflow),
    )


def after_run_finished(tx: Tx, run: dict[str, Any], status: str, lock: str) -> None:
    """until_success: a failed, rejected or cancelled run keeps the lock; a success clears it."""
    if run["kind"] != "workflow" or lock != "until_success":
        return
    lock_workflow(tx, run["target"])
    ensure_state(tx, run["target"])
    if status == "succeeded":
        tx.execute("UPDATE workflow_states SET lock_run_id = NULL WHERE workflow = ?", (run["target"],))
    else:
        tx.execute(
            "UPDATE workflow_states SET lock_run_id = ? WHERE workflow = ?", (run["id"], run["target"])
        )


def ensure_state(tx: Tx, workflow: str) -> None:
    """The workflow has its row (a second writer at the same moment finds it there, no error)."""
    tx.execute(
        "INSERT INTO workflow_states (workflow, paused) VALUES (?, 0) ON CONFLICT (workflow) DO NOTHING",
        (workflow,),
    )
