"""Pause, unpause and unlock a workflow (SPEC 5)."""

from __future__ import annotations

from typing import Any

from . import gates, identity
from .errors import Invalid, Refused
from .service import Service, iso, record_event
from .store.db import now


def state(svc: Service, workflow: str) -> dict[str, Any]:
    """Pause and lock state of a workflow, as shown everywhere the workflow is."""
    wf = svc.workflow(workflow)
    with svc.db.write() as tx:  # a consistent read of both tables
        st = gates.workflow_state(tx, wf.name) or {}
        holder = gates.lock_holder(tx, wf.name, wf.lock, st or None)
    return {
        "paused": bool(st.get("paused")),
        "paused_by": st.get("paused_by"),
        "paused_at": iso(st.get("paused_at")),
        "pause_reason": st.get("pause_reason"),
        "locked_by_run": holder["id"] if holder else None,
    }


def pause(svc: Service, workflow: str, reason: str, actor: str | None = None) -> dict[str, Any]:
    actor = actor or identity.actor()
    wf = svc.workflow(workflow)
    if not reason or not reason.strip():
        raise Invalid("a reason is required to pause (--reason TEXT)")
    with svc.db.write() as tx:
        gates.lock_workflow(tx, wf.name)  # two pauses at once: the second finds it paused
        gates.ensure_state(tx, wf.name)
        st = gates.workflow_state(tx, wf.name)
        if st and st["paused"]:
            raise Refused(f"workflow {wf.name} is already paused by {st['paused_by']}: {st['pause_reason']}")
        tx.execute(
            "UPDATE workflow_states SET paused = 1, paused_by = ?, paused_at = ?, pause_reason = ? "
            "WHERE workflow = ?",
            (actor, now(), reason, wf.name),
        )
        record_event(
            tx,
            "workflow.paused",
            actor,
            f"paused {wf.name}: {reason}",
            workflow=wf.name,
            details={"reason": reason},
        )
    return state(svc, wf.name)


def unpause(svc: Service, workflow: str, actor: str | None = None) -> dict[str, Any]:
    actor = actor or identity.actor()
    wf = svc.workflow(workflow)
    with svc.db.write() as tx:
        gates.lock_workflow(tx, wf.name)
        st = gates.workflow_state(tx, wf.name)
        if not st or not st["paused"]:
            raise Refused(f"workflow {wf.name} is not paused")
        tx.execute(
            "UPDATE workflow_states SET paused = 0, paused_by = NULL, paused_at = NULL, pause_reason = NULL "
            "WHERE workflow = ?",
            (wf.name,),
        )
        record_event(tx, "workflow.unpaused", actor, f"unpaused {wf.name}", workflow=wf.name)
    svc.poke()
    return state(svc, wf.name)


def unlock(svc: Service, workflow: str, actor: str | None = None) -> dict[str, Any]:
    actor = actor or identity.actor()
    wf = svc.workflow(workflow)
    if wf.lock != "until_success":
        raise Refused(
            f"workflow {wf.name} has lock: {wf.lock}; only until_success locks are unlocked by hand"
        )
    with svc.db.write() as tx:
        gates.lock_workflow(tx, wf.name)  # no run of it starts or records its end meanwhile
        st = gates.workflow_state(tx, wf.name)
        holder = gates.lock_holder(tx, wf.name, wf.lock, st)
        if holder is None:
            raise Refused(f"workflow {wf.name} is not locked")
        running = tx.one(
            "SELECT name FROM jobs WHERE run_id = ? AND status = 'running' LIMIT 1", (holder["id"],)
        )
        if running or holder["status"] in gates.INCOMPLETE:
            raise Refused(
                f"run #{holder['id']} of {wf.name} is still {holder['status']}; "
                "it holds the lock until it finishes"
            )
        tx.execute("UPDATE workflow_states SET lock_run_id = NULL WHERE workflow = ?", (wf.name,))
        record_event(
            tx,
            "workflow.unlocked",
            actor,
            f"unlocked {wf.name} (was held by run #{holder['id']})",
            workflow=wf.name,
            run_id=None,
            details={"run_id": holder["id"]},
        )
    svc.poke()
    return state(svc, wf.name)
