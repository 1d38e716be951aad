"""Triggers between workflows (SPEC 6): a job starts a child run and (by default) waits for it.

The waiting job holds no agent: it sits in `waiting` behind the `trigger` gate until the
child finishes, then succeeds if and only if the child did, with the child's job outputs
as its own (`<job>.<key>`).
"""

from __future__ import annotations

from typing import Any

from .. import gates, windows
from ..agents.runner import job_context
from ..definitions import InputError, validate_inputs
from ..definitions.expressions import substitute
from ..errors import SluiceError
from ..plan import workflow_plan
from ..service import Service, create_run, record_event
from ..store.db import Tx, dumps, loads, now


def start_child(
    svc: Service | None,
    tx: Tx,
    run: dict[str, Any],
    plan: dict[str, Any],
    job: dict[str, Any],
    spec: dict[str, Any],
) -> tuple[str, int | None]:
    """Returns the job's new status and the child run id (None when no child was created).

    One child per job, ever: the job's row is locked first and must still be ready (pending,
    or waiting behind its group), so a second look at the same job starts nothing."""
    row = tx.one(f"SELECT status, gate FROM jobs WHERE id = ?{tx.for_update}", (job["id"],))
    if row is None or not (
        row["status"] == "pending" or (row["status"] == "waiting" and row["gate"] == "group")
    ):
        return (row["status"] if row else "cancelled"), None
    trig = spec["trigger"]
    target = trig["workflow"]
    if svc is None:
        return _fail(tx, run, job, "triggers need the engine's service"), None
    svc.reload_if_changed()
    wf = svc.project.workflows.get(target)
    if wf is None:
        return _fail(tx, run, job, f"workflow {target} no longer exists"), None
    ctx = job_context(svc.db, run, plan, job["base"])
    given = {k: substitute(v, ctx) for k, v in (trig.get("inputs") or {}).items()}
    try:
        values = validate_inputs(wf.inputs, given)
    except InputError as e:
        return _fail(tx, run, job, f"cannot start {target}: {e}"), None
    refusal = gates.refusal(tx, wf.name, wf.lock)
    if refusal is None:
        closed = windows.closure(svc.project, tx, "workflow", wf.name)
        refusal = closed.message if closed else None
    if refusal:
        return _fail(tx, run, job, f"{target} refused the run: {refusal}"), None
    try:
        child = create_run(
            tx,
            workflow_plan(svc.project, wf),
            values,
            trigger="trigger",
            actor="sluice",
            parent_run_id=run["id"],
            parent_job_id=job["id"],
        )
    except SluiceError as e:  # a material cannot be resolved: nothing was created
        return _fail(tx, run, job, f"cannot start {target}: {e.message}"), None
    t = now()
    if trig.get("wait", True):
        tx.execute(
            "UPDATE jobs SET status = 'waiting', gate = 'trigger', child_run_id = ?, started_at = ?, "
            "reason = ? WHERE id = ?",
            (child, t, f"waiting for run #{child} of {target}", job["id"]),
        )
        record_event(
            tx,
            "job.triggered",
            "sluice",
            f"{job['name']} started run #{child} of {target} and waits",
            run_id=run["id"],
            job_id=job["id"],
            details={"child_run_id": child},
        )
        return "waiting", child
    tx.execute(
        "UPDATE jobs SET status = 'succeeded', gate = NULL, child_run_id = ?, started_at = ?, finished_at = ?, "
        "reason = ? WHERE id = ?",
        (child, t, t, f"started run #{child} of {target}", job["id"]),
    )
    record_event(
        tx,
        "job.succeeded",
        "sluice",
        f"{job['name']} started run #{child} of {target}",
        run_id=run["id"],
        job_id=job["id"],
        details={"child_run_id": child},
    )
    return "succeeded", child


def child_finished(tx: Tx, child: dict[str, Any], status: str) -> int | None:
    """Finish the parent's waiting job from its child's result; returns the parent run id."""
    if not child["parent_job_id"]:
        return None
    outputs: dict[str, str] = {}
    for j in tx.all("SELECT base, outputs FROM jobs WHERE run_id = ? ORDER BY position, id", (child["id"],)):
        for k, v in loads(j["outputs"], {}).items():
            outputs[f"{j['base']}.{k}"] = v
    ok = status == "succeeded"
    reason = None if ok else f"run #{child['id']} of {child['target']} {status}"
    changed = tx.execute(
        "UPDATE jobs SET status = ?, reason = ?, outputs = ?, finished_at = ?, gate = NULL "
        "WHERE id = ? AND status = 'waiting' AND gate = 'trigger'",
        ("succeeded" if ok else "failed", reason, dumps(outputs), now(), child["parent_job_id"]),
    )
    if not changed:
        return None
    parent = tx.one("SELECT run_id, name FROM jobs WHERE id = ?", (child["parent_job_id"],))
    assert parent is not None
    record_event(
        tx,
        "job.succeeded" if ok else "job.failed",
        "sluice",
        f"{parent['name']} {'succeeded' if ok else 'failed'}: run #{child['id']} {status}",
        run_id=parent["run_id"],
        job_id=child["parent_job_id"],
    )
    return int(parent["run_id"])


def _fail(tx: Tx, run: dict[str, Any], job: dict[str, Any], reason: str) -> str:
    tx.execute(
        "UPDATE jobs SET status = 'failed', gate = NULL, reason = ?, finished_at = ? WHERE id = ?",
        (reason, now(), job["id"]),
    )
    record_event(
        tx, "job.failed", "sluice", f"{job['name']} failed: {reason}", run_id=run["id"], job_id=job["id"]
    )
    return "failed"
