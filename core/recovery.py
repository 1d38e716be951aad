"""Recovery (SPEC 14): undo a purge, re-run a run (all of it, or what did not succeed)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from . import gates, identity, windows
from .errors import NotFound, Refused
from .queueing import _specs, item_view
from .service import Service, create_run, record_event
from .shapes import ItemView
from .statuses import FINAL_RUN
from .store.db import IntegrityError, Tx, loads, now
from .times import iso


def last_purged(svc: Service) -> list[ItemView]:
    """The items of the latest purge that are still purged (what `u` in the dashboard offers)."""
    rows = svc.db.all(
        "SELECT * FROM queue_items WHERE status = 'purged' AND closed_at = "
        "(SELECT MAX(closed_at) FROM queue_items WHERE status = 'purged') ORDER BY id"
    )
    return [item_view(r, _specs(svc, r["kind"], r["target"])) for r in rows]


@dataclass(frozen=True)
class Restored:
    item: ItemView
    due_passed: str | None = None  # a schedule whose time passed while purged: it came back unscheduled


def restore(svc: Service, ids: list[int], *, actor: str | None = None) -> list[Restored]:
    """Put purged items back in the queue, at their old place (queued order is id order).

    All or nothing: an item that is not purged, or whose invocation is queued again meanwhile,
    refuses the whole restore. A scheduled item whose time passed while it was purged comes
    back unscheduled: restoring must not start anything; it waits for `queue execute`."""
    actor = actor or identity.actor()
    t = now()
    restored = []
    woke = False
    with svc.db.write() as tx:
        for item_id in sorted(set(ids)):
            row = tx.one(f"SELECT * FROM queue_items WHERE id = ?{tx.for_update}", (item_id,))
            if row is None:
                raise NotFound(f"no queue item #{item_id}")
            if row["status"] != "purged":
                extra = f" as run #{row['run_id']}" if row["run_id"] else ""
                raise Refused(
                    f"queue item #{item_id} is {row['status']}{extra}, not purged: nothing to restore"
                )
            what = f"{row['kind']} {row['target']}"
            passed = row["not_before"] is not None and row["not_before"] <= t
            try:
                with tx.savepoint():  # on PostgreSQL a refused statement would spoil the transaction
                    tx.execute(
                        "UPDATE queue_items SET status = 'queued', closed_by = NULL, closed_at = NULL, "
                        "not_before = ? WHERE id = ? AND status = 'purged'",
                        (None if passed else row["not_before"], item_id),
                    )
            except IntegrityError:  # the same invocation is queued: the partial unique index says no
                raise Refused(_duplicate(tx, row, item_id)) from None
            note = f" (its time {iso(row['not_before'])} passed: execute it by hand)" if passed else ""
            record_event(
                tx,
                "queue.restored",
                actor,
                f"restored #{item_id}: {what}{note}",
                item_id=item_id,
                workflow=row["target"] if row["kind"] == "workflow" else None,
                details={
                    "purged_by": row["closed_by"],
                    "purged_at": iso(row["closed_at"]),
                    **({"due_passed": iso(row["not_before"])} if passed else {}),
                },
            )
            woke = woke or (row["not_before"] is not None and not passed)
            fresh = tx.one("SELECT * FROM queue_items WHERE id = ?", (item_id,))
            assert fresh is not None
            restored.append(
                Restored(
                    item_view(fresh, _specs(svc, row["kind"], row["target"])),
                    iso(row["not_before"]) if passed else None,
                )
            )
    if woke:
        svc.poke()  # a due time came back: the engine keeps the clock
    return restored


def _duplicate(tx: Tx, row: dict[str, Any], item_id: int) -> str:
    other = tx.one(
        "SELECT id, queued_by FROM queue_items WHERE kind = ? AND target = ? AND inputs_key = ? "
        "AND status = 'queued' AND id <> ?",
        (row["kind"], row["target"], row["inputs_key"], item_id),
    )
    which = f"item #{other['id']} by {other['queued_by']}" if other else "another item"
    return (
        f"cannot restore #{item_id}: the same {row['kind']} {row['target']} is queued again as {which}; "
        "purge that one first, or keep it"
    )


def rerun(svc: Service, run_id: int, *, failed: bool = False, actor: str | None = None) -> int:
    """A new run of the same target with the same inputs, plan and material revisions.

    With `failed`, the jobs that succeeded in `run_id` are carried over with their outputs and
    only the others run (a job with several copies runs again whole unless every copy
    succeeded). Pause and lock apply as to any start."""
    actor = actor or identity.actor()
    with svc.db.write() as tx:
        src = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if src is None:
            raise NotFound(f"no run #{run_id}")
        if src["status"] not in FINAL_RUN:
            raise Refused(
                f"run #{run_id} is still {src['status'].replace('_', ' ')}: wait for it to end, "
                f"or cancel it first (sluice run cancel {run_id})"
            )
        plan = loads(src["plan"], {})
        carry: dict[str, list[dict[str, Any]]] = {}
        if failed:
            if src["status"] == "succeeded":
                raise Refused(f"run #{run_id} succeeded: nothing to run again with --failed")
            by_base: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for j in tx.all("SELECT * FROM jobs WHERE run_id = ? ORDER BY position, id", (run_id,)):
                by_base[j["base"]].append(j)
            carry = {b: rows for b, rows in by_base.items() if all(j["status"] == "succeeded" for j in rows)}
            if set(carry) >= set(plan["jobs"]):
                raise Refused(f"every job of run #{run_id} succeeded: nothing to run again with --failed")
        if plan["kind"] == "workflow":
            wf = svc.project.workflows.get(plan["name"])
            reason = gates.refusal(tx, plan["name"], wf.lock if wf else plan.get("lock", "none"))
            if reason:
                raise Refused(reason)
        closed = windows.closure(svc.project, tx, plan["kind"], plan["name"])
        if closed is not None:
            raise Refused(closed.message)
        pins = {
            m["name"]: m["revision"]
            for m in tx.all("SELECT name, revision FROM materials WHERE run_id = ?", (run_id,))
        }
        new_id = create_run(
            tx,
            plan,
            loads(src["inputs"], {}),
            trigger="rerun",
            actor=actor,
            pins=pins,
            rerun_of=run_id,
            carry=carry,
        )
    svc.poke()
    return new_id
