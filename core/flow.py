"""Pause, unpause and unlock a workflow (SPEC 5); freeze and unfreeze everything (SPEC 13)."""

from __future__ import annotations

from typing import Any

from . import gates, identity, windows
from .errors import Invalid, NotFound, Refused
from .service import Service, iso, record_event
from .store.db import dumps, now


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


def freeze(
    svc: Service,
    reason: str,
    *,
    until: float | None = None,
    except_: list[str] | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Stop every new run now (except of the listed workflows) until `until` or `unfreeze`."""
    actor = actor or identity.actor()
    if not reason or not reason.strip():
        raise Invalid("a reason is required to freeze (--reason TEXT)")
    t = now()
    if until is not None and not t < until <= t + windows.MAX_FREEZE_S:
        raise Invalid("--until must be a time to come, at most a year ahead")
    spared = sorted(set(except_ or []))
    for name in spared:
        if name not in svc.project.workflows:
            from .definitions import did_you_mean

            raise NotFound(f"--except: no workflow '{name}'{did_you_mean(name, svc.project.workflows)}")
    with svc.db.write() as tx:
        # every run being created holds the run order shared: those under way commit first, and
        # every later one reads this freeze
        tx.lock(gates.RUN_ORDER)
        fid = tx.insert(
            "freezes",
            {"reason": reason, "set_by": actor, "set_at": t, "until": until, "except_": dumps(spared)},
        )
        made = windows.Freeze(reason, actor, until, tuple(spared), fid)
        windows.regate(tx, windows.freezes_in_force(svc.project, tx, t), svc.project)
        text = windows.describe_freeze(svc.project, made)
        record_event(
            tx,
            "freeze.set",
            actor,
            text + (f" (except {', '.join(spared)})" if spared else ""),
            details={
                "reason": reason,
                "until": windows.iso_or_none(until),
                "except": spared,
                "freeze_id": fid,
            },
        )
    svc.poke()
    return windows.freeze_view(svc.project, made)


def unfreeze(svc: Service, *, actor: str | None = None) -> list[dict[str, Any]]:
    """Lift every `sluice freeze` in force (sluice.yaml's freezes end when the file says)."""
    actor = actor or identity.actor()
    t = now()
    with svc.db.write() as tx:
        tx.lock(gates.RUN_ORDER)
        lifted = [f for f in windows.freezes_in_force(svc.project, tx, t) if f.id is not None]
        if not lifted:
            configured = [f for f in windows.freezes_in_force(svc.project, tx, t) if f.id is None]
            if configured:
                raise Refused(
                    f"the freeze in force comes from sluice.yaml ({configured[0].reason}, until "
                    f"{windows.when(svc.project, configured[0].until)}): change the file to end it"
                )
            raise Refused("nothing is frozen")
        tx.execute(
            f"UPDATE freezes SET lifted_by = ?, lifted_at = ? WHERE id IN ({','.join('?' * len(lifted))})",
            (actor, t, *[f.id for f in lifted]),
        )
        windows.regate(tx, windows.freezes_in_force(svc.project, tx, t), svc.project)
        for f in lifted:
            record_event(
                tx,
                "freeze.lifted",
                actor,
                f"freeze lifted: {f.reason} (set by {(f.by or '?').split('@')[0]})",
                details={"reason": f.reason, "freeze_id": f.id},
            )
    svc.poke()
    return [windows.freeze_view(svc.project, f) for f in lifted]
