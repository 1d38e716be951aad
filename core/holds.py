"""Holds (SPEC 4): release or reject a held job, checked against its approvers and fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import gates, identity, windows
from .definitions import InputError, masked, validate_inputs
from .definitions.objects import InputSpec
from .errors import Invalid, NotFound, Refused
from .plan import spec_from
from .service import Service, broke_glass, record_event
from .shapes import RunView
from .store.db import IntegrityError, dumps, loads, now


def held_jobs(
    svc: Service, job: str | None = None, *, run_id: int | None = None, workflow: str | None = None
) -> list[dict[str, Any]]:
    where: list[str] = ["j.status = 'held'"]
    params: list[Any] = []
    if job is not None:
        where.append("(j.name = ? OR j.base = ?)")
        params += [job, job]
    if run_id is not None:
        where.append("j.run_id = ?")
        params.append(run_id)
    if workflow is not None:
        where.append("r.target = ?")
        params.append(workflow)
    return svc.db.all(
        "SELECT j.*, r.target AS workflow, r.plan AS plan FROM jobs j JOIN runs r ON r.id = j.run_id "
        f"WHERE {' AND '.join(where)} ORDER BY j.run_id, j.position",
        params,
    )


def _candidate(svc: Service, job: str, run_id: int | None, workflow: str | None) -> dict[str, Any]:
    rows = held_jobs(svc, job, run_id=run_id, workflow=workflow)
    if not rows:
        where = f" in run #{run_id}" if run_id else (f" in workflow {workflow}" if workflow else "")
        held = held_jobs(svc, run_id=run_id, workflow=workflow)
        hint = ""
        if held:
            hint = "; held now: " + ", ".join(f"{h['name']} (run #{h['run_id']})" for h in held[:5])
        raise NotFound(f"no job '{job}' is on hold{where}{hint}")
    if len(rows) > 1:
        listing = ", ".join(f"run #{r['run_id']} ({r['workflow']})" for r in rows)
        raise Refused(f"'{job}' is on hold in {len(rows)} runs: {listing}; pass --run RUN")
    return rows[0]


def _hold(row: dict[str, Any]) -> dict[str, Any]:
    """The hold of a held job's row, from its run's plan."""
    return loads(row["plan"])["jobs"][row["base"]]["hold"] or {}


def _refusal(
    svc: Service, row: dict[str, Any], hold: dict[str, Any], actor: str, verb: str, *, glass: bool = False
) -> str:
    """Why ACTOR may not VERB the held job in ROW, or "" when they may (anyone may, without approvers).

    Releasing also asks four-eyes (the requester may not approve their own run) and, with
    several approvals needed, that this person has not approved it already; break glass
    (`glass`) passes over both, never over the approvers."""
    user = identity.actor_user(actor)
    approvers = hold.get("approvers") or []
    if approvers and not any(user == a or user in svc.project.groups.get(a, []) for a in approvers):
        return (
            f"{user} may not {verb} {row['name']} in run #{row['run_id']} "
            f"(approvers: {', '.join(approvers)}); nothing was changed"
        )
    if verb != "release" or glass:
        return ""
    if hold.get("four_eyes"):
        how = requested(svc, row["run_id"]).get(user)
        if how:
            return (
                f"{user} {how} run #{row['run_id']} and may not approve it (four_eyes): another approver "
                "must release it; nothing was changed"
            )
    if (hold.get("approvals") or 1) > 1:
        done = svc.db.one("SELECT at FROM approvals WHERE job_id = ? AND approver = ?", (row["id"], user))
        if done is not None:
            return (
                f"{user} already approved {row['name']} in run #{row['run_id']}: it needs another "
                "approver; nothing was changed"
            )
    return ""


def requested(svc: Service, run_id: int) -> dict[str, str]:
    """Who requested a run, and how: its creator, and for a run from the queue whoever queued the
    item and whoever executed it; for a run started by another's trigger job, that run's
    requesters too (four-eyes keeps all of them from approving it)."""
    out: dict[str, str] = {}
    seen: set[int] = set()
    how = ""
    current: int | None = run_id
    while current is not None and current not in seen:
        seen.add(current)
        run = svc.db.one("SELECT created_by, queue_item_id, parent_run_id FROM runs WHERE id = ?", (current,))
        if run is None:
            break
        if run["queue_item_id"] is not None:
            item = svc.db.one(
                "SELECT queued_by, closed_by FROM queue_items WHERE id = ?", (run["queue_item_id"],)
            )
            if item is not None:
                if item["closed_by"]:
                    out.setdefault(identity.actor_user(item["closed_by"]), f"executed the queue item of{how}")
                out.setdefault(identity.actor_user(item["queued_by"]), f"queued{how}")
        if run["created_by"] != "sluice":
            out.setdefault(identity.actor_user(run["created_by"]), f"started{how}")
        if run["parent_run_id"] is not None and not how:
            how = f" run #{run['parent_run_id']}, which started"
        current = run["parent_run_id"]
    return out


def _check_approver(svc: Service, row: dict[str, Any], actor: str, verb: str) -> dict[str, Any]:
    hold = _hold(row)
    refusal = _refusal(svc, row, hold, actor, verb)
    if refusal:
        raise Refused(refusal)
    return hold


@dataclass(frozen=True)
class ReleaseField:
    """One value a release asks for (a field of the hold), as a form or a prompt shows it."""

    name: str
    type: str
    description: str
    required: bool  # the release is refused without a value: required, and no default to fall back on
    secret: bool
    default: Any
    choices: tuple[str, ...]  # the allowed values (the field's enum), or () for any
    pattern: str | None


@dataclass(frozen=True)
class ReleaseForm:
    """What releasing a held job asks for, and whether the actor may: read before anyone types."""

    run_id: int
    job: str
    prompt: str
    fields: tuple[ReleaseField, ...]
    approvers: tuple[str, ...]  # users or groups; () when anyone may release
    may_release: bool
    refusal: str  # why the actor may not release ("" when they may): nothing was changed
    specs: dict[str, InputSpec] = field(repr=False, compare=False)

    def problem(self, given: dict[str, str]) -> tuple[str | None, str] | None:
        """The first field value the release would refuse, as (field name, one line), or None."""
        try:
            validate_inputs(self.specs, given, what="field")
        except InputError as e:
            return e.name, str(e)
        return None


def release_form(
    svc: Service,
    job: str,
    *,
    run_id: int | None = None,
    workflow: str | None = None,
    actor: str | None = None,
) -> ReleaseForm:
    """What releasing JOB asks for (prompt, fields, approvers), checked before anyone types: an actor
    who may not release learns it now (`may_release`, `refusal`), not after filling in the form.
    Raises NotFound or Refused when no single job of that name is on hold."""
    actor = actor or identity.actor()
    row = _candidate(svc, job, run_id, workflow)
    hold = _hold(row)
    refusal = _refusal(svc, row, hold, actor, "release")
    specs = {k: spec_from(v) for k, v in (hold.get("fields") or {}).items()}
    return ReleaseForm(
        run_id=row["run_id"],
        job=row["name"],
        prompt=hold.get("prompt") or "",
        fields=tuple(
            ReleaseField(
                name=name,
                type=s.type,
                description=s.description,
                required=bool(s.required) and s.default is None,
                secret=bool(s.secret),
                default=s.default,
                choices=tuple(map(str, s.enum or [])),
                pattern=s.pattern,
            )
            for name, s in specs.items()
        ),
        approvers=tuple(hold.get("approvers") or []),
        may_release=not refusal,
        refusal=refusal,
        specs=specs,
    )


def release(
    svc: Service,
    job: str,
    *,
    run_id: int | None = None,
    workflow: str | None = None,
    comment: str | None = None,
    fields: dict[str, str] | None = None,
    actor: str | None = None,
    break_glass: str | None = None,
) -> RunView:
    """Release a held job, or record one approval of several (`approvals: N`): the job runs when
    the N-th distinct approver releases it. `break_glass` (a reason, for sluice.yaml's
    break_glass group) passes over four-eyes and approvals, never over the approvers."""
    actor = actor or identity.actor()
    glass = windows.check_break_glass(svc.project, actor, break_glass) if break_glass is not None else None
    row = _candidate(svc, job, run_id, workflow)
    hold = _hold(row)
    refusal = _refusal(svc, row, hold, actor, "release", glass=glass is not None)
    if refusal:
        raise Refused(refusal)
    specs = {k: spec_from(v) for k, v in (hold.get("fields") or {}).items()}
    try:
        values = validate_inputs(specs, fields or {}, what="field")
    except InputError as e:
        raise Invalid(str(e)) from None
    user = identity.actor_user(actor)
    needed = int(hold.get("approvals") or 1)
    t = now()
    with svc.db.write() as tx:
        # two approvers at the same moment: the second waits here, then sees what the first did
        current = tx.one(f"SELECT status FROM jobs WHERE id = ?{tx.for_update}", (row["id"],))
        if current is None or current["status"] != "held":
            raise Refused(f"{row['name']} in run #{row['run_id']} is no longer on hold")
        what = f"{row['name']} in run #{row['run_id']}"
        released = True
        if needed > 1 and glass is None:
            try:
                with tx.savepoint():
                    tx.insert(
                        "approvals",
                        {
                            "job_id": row["id"],
                            "run_id": row["run_id"],
                            "approver": user,
                            "actor": actor,
                            "at": t,
                            "comment": comment,
                            "fields": dumps(values),
                        },
                    )
            except IntegrityError:  # the same person from two terminals at once
                raise Refused(f"{user} already approved {what}: it needs another approver") from None
            names = [
                r["approver"]
                for r in tx.all(
                    "SELECT approver FROM approvals WHERE job_id = ? ORDER BY at, id", (row["id"],)
                )
            ]
            tally = f"{len(names)} of {needed}: {', '.join(names)}"
            record_event(
                tx,
                "job.approved",
                actor,
                f"approved {what} ({tally})" + (f": {comment}" if comment else ""),
                run_id=row["run_id"],
                job_id=row["id"],
                workflow=row["workflow"],
                details={
                    "comment": comment,
                    "fields": masked(specs, values),
                    "approvals": names,
                    "needed": needed,
                },
            )
            released = len(names) >= needed
            if not released:  # stays held, saying how far it got
                prompt = hold.get("prompt") or "waiting for release"
                tx.execute("UPDATE jobs SET reason = ? WHERE id = ?", (f"{prompt} ({tally})", row["id"]))
        if released:
            # the run order's lock, shared: a freeze being set commits first, and is seen here
            tx.lock(gates.RUN_ORDER, shared=True)
            glassed = tx.one("SELECT break_glass FROM runs WHERE id = ?", (row["run_id"],))
            frozen = None
            if not (glassed and glassed["break_glass"]):  # a run started with break glass goes on
                frozen = next(
                    (
                        f
                        for f in windows.freezes_in_force(svc.project, tx, t)
                        if f.covers("workflow", row["workflow"])
                    ),
                    None,
                )
            gate, why = (
                ("freeze", windows.describe_freeze(svc.project, frozen))
                if frozen
                else (None, "waiting for an agent")
            )
            tx.execute(
                "UPDATE jobs SET status = 'waiting', gate = ?, reason = ?, released_by = ?, released_at = ?, "
                "comment = ?, fields = ? WHERE id = ? AND status = 'held'",
                (gate, why, actor, t, comment, dumps(values), row["id"]),
            )
            record_event(
                tx,
                "job.released",
                actor,
                f"released {what}" + (f": {comment}" if comment else ""),
                run_id=row["run_id"],
                job_id=row["id"],
                workflow=row["workflow"],
                details={"comment": comment, "fields": masked(specs, values)},
            )
            if glass is not None:
                passed = [
                    p
                    for p, on in (("four_eyes", hold.get("four_eyes")), (f"approvals: {needed}", needed > 1))
                    if on
                ]
                broke_glass(
                    tx, actor, glass, row["run_id"], ", ".join(passed) or "nothing to pass", job_id=row["id"]
                )
    svc.poke()
    return svc.run_view(row["run_id"])


def reject(
    svc: Service,
    job: str,
    *,
    reason: str,
    run_id: int | None = None,
    workflow: str | None = None,
    actor: str | None = None,
) -> RunView:
    actor = actor or identity.actor()
    if not reason or not reason.strip():
        raise Invalid("a reason is required to reject (--reason TEXT)")
    row = _candidate(svc, job, run_id, workflow)
    _check_approver(svc, row, actor, "reject")
    reject_job(svc, row, actor, reason)
    svc.poke()
    return svc.run_view(row["run_id"])


def reject_job(svc: Service, row: dict[str, Any], actor: str, reason: str) -> bool:
    user = identity.actor_user(actor)
    with svc.db.write() as tx:
        changed = tx.execute(
            "UPDATE jobs SET status = 'rejected', reason = ?, rejected_by = ?, rejected_at = ?, finished_at = ? "
            "WHERE id = ? AND status = 'held'",
            (f"rejected by {user}: {reason}", actor, now(), now(), row["id"]),
        )
        if not changed:
            if actor == "sluice":
                return False
            raise Refused(f"{row['name']} in run #{row['run_id']} is no longer on hold")
        kind = "job.timed_out" if actor == "sluice" else "job.rejected"
        record_event(
            tx,
            kind,
            actor,
            f"rejected {row['name']} in run #{row['run_id']}: {reason}",
            run_id=row["run_id"],
            job_id=row["id"],
            workflow=row.get("workflow"),
            details={"reason": reason},
        )
    return True


def expire(svc: Service, at: float | None = None) -> list[int]:
    """Reject holds whose timeout has passed (actor `sluice`, reason `timed out`); returns run ids."""
    rows = svc.db.all(
        "SELECT j.*, r.target AS workflow FROM jobs j JOIN runs r ON r.id = j.run_id "
        "WHERE j.status = 'held' AND j.hold_deadline IS NOT NULL AND j.hold_deadline <= ?",
        (at or now(),),
    )
    return [r["run_id"] for r in rows if reject_job(svc, r, "sluice", "timed out")]


def next_deadline(svc: Service) -> float | None:
    return svc.db.scalar(
        "SELECT MIN(hold_deadline) FROM jobs WHERE status = 'held' AND hold_deadline IS NOT NULL"
    )
