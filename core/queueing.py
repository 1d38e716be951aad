"""The staged queue (SPEC 3): add, list, execute, purge, schedule.

Exactly-once is the database's job: a partial unique index allows one queued item per
kind + target + inputs, and an item becomes a run in the same transaction that flips its
status from `queued`, so two terminals executing the same items start each once. On
PostgreSQL the executing transaction locks the item's row before it looks at it, so the
second terminal waits, then finds it executed (it neither starts it again nor reports it
refused by the run the first one started).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import gates, identity, windows
from .definitions import masked
from .definitions.durations import parse_duration
from .errors import Invalid, NotFound, Refused, SluiceError
from .plan import method_plan, spec_from, workflow_plan
from .service import Service, create_run, iso, record_event
from .shapes import ItemView, Plan
from .store.db import Tx, dumps, loads, now


@dataclass
class Selector:
    all: bool = False
    workflows: bool = False
    methods: bool = False
    workflow: str | None = None
    method: str | None = None
    ids: list[int] = field(default_factory=list)

    @property
    def bulk(self) -> bool:
        """Selectors that sweep many items: these need --yes without a terminal."""
        return self.all or self.workflows or self.methods

    def given(self) -> bool:
        return bool(self.bulk or self.workflow or self.method or self.ids)

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = ["status = 'queued'"]
        params: list[Any] = []
        if self.workflows:
            where.append("kind = 'workflow'")
        if self.methods:
            where.append("kind = 'method'")
        if self.workflow:
            where.append("kind = 'workflow' AND target = ?")
            params.append(self.workflow)
        if self.method:
            if "." in self.method:
                where.append("kind = 'method' AND target = ?")
                params.append(self.method)
            else:
                where.append("kind = 'method' AND target LIKE ?")
                params.append("%." + self.method)
        if self.ids:
            where.append(f"id IN ({','.join('?' * len(self.ids))})")
            params.extend(self.ids)
        return " AND ".join(where), params

    def check(self, svc: Service) -> None:
        """A name the project does not define is a typo, not an empty selection (exit 4, SPEC 3).

        Names of items still queued count as known: a workflow deleted since can still be purged.
        """
        from .definitions import did_you_mean

        queued = {
            (r["kind"], r["target"])
            for r in svc.db.all("SELECT DISTINCT kind, target FROM queue_items WHERE status = 'queued'")
        }
        if self.workflow:
            known = set(svc.project.workflows) | {t for k, t in queued if k == "workflow"}
            if self.workflow not in known:
                raise NotFound(
                    f"no workflow '{self.workflow}'{did_you_mean(self.workflow, known)}; "
                    "'sluice workflow list' shows them"
                )
        if self.method:
            targets = {f"{m.name}.{meth}" for m in svc.project.models.values() for meth in m.methods} | {
                t for k, t in queued if k == "method"
            }
            names = targets | {t.partition(".")[2] for t in targets}
            if self.method not in names:
                raise NotFound(
                    f"no method '{self.method}'{did_you_mean(self.method, names)}; "
                    "give METHOD or MODEL.METHOD ('sluice method list' shows them)"
                )

    def describe(self) -> str:
        if self.all:
            return "--all"
        bits = (
            (["--workflows"] if self.workflows else [])
            + (["--methods"] if self.methods else [])
            + ([f"--workflow {self.workflow}"] if self.workflow else [])
            + ([f"--method {self.method}"] if self.method else [])
            + [f"#{i}" for i in self.ids]
        )
        return " ".join(bits)


# ---------------------------------------------------------------- times


MAX_AHEAD_S = 10 * 366 * 86400  # --at: at most ten years ahead
MAX_LIMIT = 100_000  # listings return at most this many rows


def parse_at(text: str, tz: str | None) -> float:
    """`2026-11-23T02:00` (ISO 8601), `02:00` (next occurrence), `+2h` / `+30m` (from now).

    A time in the past is refused (it would run at once without a word), and so is one more
    than ten years ahead (no date arithmetic or sleep may overflow on it).
    """
    usage = "use ISO 8601 (2026-11-23T02:00), HH:MM, or +2h / +30m"
    zone = ZoneInfo(tz) if tz else None
    s = text.strip()
    if not s:
        raise Invalid(f"--at is empty: {usage}")
    start = now()
    if s.startswith("+"):
        try:
            at_ts = start + parse_duration(s[1:])
        except ValueError:
            raise Invalid(f"--at '{text}': {usage}") from None
    else:
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", s)
        current = datetime.now(zone).astimezone(zone) if zone else datetime.now().astimezone()
        if m:
            hour, minute = int(m.group(1)), int(m.group(2))
            if hour > 23 or minute > 59:
                raise Invalid(f"--at '{text}' is not a time of day")
            at = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if at <= current:
                at += timedelta(days=1)
            return at.timestamp()
        try:
            at = datetime.fromisoformat(s)
        except ValueError:
            raise Invalid(f"--at '{text}': {usage}") from None
        try:
            if at.tzinfo is None:
                at = at.replace(tzinfo=zone) if zone else at.astimezone()
            at_ts = at.timestamp()
        except (ValueError, OverflowError, OSError):  # year 1 or 9999 in some zones
            at_ts = float("-inf") if at.year < 2000 else float("inf")
        if at_ts < start:
            raise Invalid(
                f"--at '{text}' is in the past ({at.isoformat(timespec='minutes')}); "
                "give a time to come, or use 'queue execute' to start it now"
            )
    if not at_ts <= start + MAX_AHEAD_S:  # also catches inf from a thousand-digit duration
        raise Invalid(f"--at '{text}' is more than ten years ahead")
    return at_ts


# ---------------------------------------------------------------- views


def item_view(row: dict[str, Any], specs: dict[str, Any] | None = None) -> ItemView:
    inputs = loads(row["inputs"], {})
    if specs is not None:
        inputs = masked(specs, inputs)
    return {
        "id": row["id"],
        "kind": row["kind"],
        "target": row["target"],
        "inputs": inputs,
        "status": row["status"],
        "queued_by": row["queued_by"],
        "queued_at": iso(row["queued_at"]),
        "not_before": iso(row["not_before"]),
        "note": row["note"],
        "run_id": row["run_id"],
    }


def _specs(svc: Service, kind: str, target: str) -> dict[str, Any]:
    if kind == "workflow":
        wf = svc.project.workflows.get(target)
        return wf.inputs if wf else {}
    m = svc.project.method(target)
    return m.inputs if m else {}


# ---------------------------------------------------------------- use cases


def add(
    svc: Service,
    kind: str,
    target: str,
    inputs: dict[str, Any],
    *,
    note: str | None = None,
    at: float | None = None,
    actor: str | None = None,
    pins: dict[str, str] | None = None,
) -> ItemView:
    """Stage one item; refused (exit 3) when the same kind + target + inputs is already queued."""
    actor = actor or identity.actor()
    if kind == "workflow":
        specs = svc.workflow(target).inputs
        if pins:
            from .materials import check_pins

            check_pins(workflow_plan(svc.project, svc.workflow(target)), pins)
    else:
        model, _, method = target.partition(".")
        specs = svc.method(model, method).inputs
    values = svc._validated(specs, inputs)
    canonical = dumps(values)
    key = inputs_key(canonical)
    shown = masked(specs, values)
    what = f"{kind} {target}" + (f" {_fmt_inputs(shown)}" if shown else "")
    with svc.db.write() as tx:
        # One statement decides: the partial unique index admits one queued item per invocation.
        # Inside the same transaction the item that won is visible, so there is no retry path
        # that could lose the note, the due time or the pins.
        row = tx.one(
            "INSERT INTO queue_items (kind, target, inputs, inputs_key, pins, status, queued_by, queued_at, "
            "not_before, note) VALUES (:kind, :target, :inputs, :key, :pins, 'queued', :actor, :at_now, :not_before, "
            ":note) ON CONFLICT (kind, target, inputs_key) WHERE status = 'queued' DO NOTHING RETURNING id",
            {
                "kind": kind,
                "target": target,
                "inputs": canonical,
                "key": key,
                "pins": dumps(pins or {}),
                "actor": actor,
                "at_now": now(),
                "not_before": at,
                "note": note,
            },
        )
        if row is None:
            existing = tx.one(
                "SELECT id, queued_by FROM queue_items WHERE kind = ? AND target = ? AND inputs_key = ? "
                "AND status = 'queued'",
                (kind, target, key),
            )
            raise Refused(
                f"already queued as item #{existing['id'] if existing else '?'} by "
                f"{existing['queued_by'] if existing else 'someone'} ({what}); vary the inputs to queue it again"
            )
        item_id = int(row["id"])
        if at is None:
            record_event(
                tx,
                "queue.queued",
                actor,
                f"queued #{item_id}: {what}",
                item_id=item_id,
                workflow=target if kind == "workflow" else None,
                details={"inputs": shown, "note": note},
            )
        else:
            record_event(
                tx,
                "queue.scheduled",
                actor,
                f"scheduled #{item_id} for {iso(at)}: {what}",
                item_id=item_id,
                workflow=target if kind == "workflow" else None,
                details={"inputs": shown, "note": note, "not_before": iso(at)},
            )
    if at is not None:
        svc.poke()
    return item_view(svc.db.one("SELECT * FROM queue_items WHERE id = ?", (item_id,)), specs)  # type: ignore[arg-type]


def inputs_key(canonical: str) -> str:
    """The fixed-size key of one invocation's inputs (an 8 KB input must index on PostgreSQL too)."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def _fmt_inputs(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def select(svc: Service, selector: Selector | None = None, *, limit: int | None = None) -> list[ItemView]:
    where, params = (selector or Selector(all=True)).sql()
    sql = f"SELECT * FROM queue_items WHERE {where} ORDER BY id"
    if limit is not None:
        if not 1 <= limit <= MAX_LIMIT:  # SQLite reads LIMIT -5 as "no limit"
            raise Invalid(f"--limit must be between 1 and {MAX_LIMIT:,}, not {limit}")
        sql += " LIMIT ?"
        params = [*params, limit]
    rows = svc.db.all(sql, params)
    return [item_view(r, _specs(svc, r["kind"], r["target"])) for r in rows]


def window(svc: Service, *, text: str | None = None, limit: int = 500) -> tuple[list[ItemView], int]:
    """The oldest `limit` queued items matching `text` (target, kind, note, user), and how many match."""
    where, params = "status = 'queued'", []
    if text:
        like = f"%{text}%"
        where += (
            " AND (target LIKE ? OR kind LIKE ? OR note LIKE ? OR queued_by LIKE ? OR CAST(id AS TEXT) = ?)"
        )
        # not the inputs: a filter that matched a secret value would tell what it is
        params = [like, like, like, like, text.lstrip("#")]
    total = int(svc.db.scalar(f"SELECT COUNT(*) FROM queue_items WHERE {where}", params) or 0)
    rows = svc.db.all(f"SELECT * FROM queue_items WHERE {where} ORDER BY id LIMIT ?", (*params, limit))
    return [item_view(r, _specs(svc, r["kind"], r["target"])) for r in rows], total


def check_ids(svc: Service, selector: Selector) -> None:
    """Explicit ids must exist and still be queued (exit 4 otherwise)."""
    for i in selector.ids:
        row = svc.db.one("SELECT id, status, run_id FROM queue_items WHERE id = ?", (i,))
        if row is None:
            raise NotFound(f"no queue item #{i}")
        if row["status"] != "queued":
            extra = f" as run #{row['run_id']}" if row["run_id"] else ""
            raise NotFound(f"queue item #{i} is no longer queued (it was {row['status']}{extra})")


class _Unstartable(Exception):
    pass


@dataclass
class Outcome:
    item: ItemView
    run_id: int | None = None
    refused: str | None = None  # paused, locked or frozen: the item stays queued
    deferred: str | None = None  # outside its window: due when the window opens (accepted)
    gone: bool = False  # executed or purged by someone else meanwhile


# items per write transaction: fewer commits, and the engine starts on the first batch
EXECUTE_BATCH = 50


def execute(
    svc: Service, ids: list[int], *, actor: str | None = None, trigger: str = "queue"
) -> list[Outcome]:
    """Start each item (in queued order) as exactly one run; paused or locked items stay queued.

    Items are started EXECUTE_BATCH to a transaction, each inside a savepoint: an item that
    cannot start is undone alone (and stays queued, saying why), and the engine is woken
    after each batch, so it starts on the first runs while the next are being created."""
    actor = actor or identity.actor()
    outcomes: list[Outcome] = []
    ordered = sorted(ids)
    for i in range(0, len(ordered), EXECUTE_BATCH):
        batch: list[Outcome] = []
        chunk = ordered[i : i + EXECUTE_BATCH]
        with svc.db.write() as tx:
            if svc.db.dialect == "postgresql":
                # the house's lock order for the whole batch up front, rows then workflows (each
                # sorted), so two batches over the same items or workflows never wait in a circle
                marks = ",".join("?" * len(chunk))
                rows = tx.all(
                    f"SELECT id, kind, target FROM queue_items WHERE id IN ({marks}) ORDER BY id FOR UPDATE",
                    chunk,
                )
                tx.lock(*{gates.workflow_key(r["target"]) for r in rows if r["kind"] == "workflow"})
            for item_id in chunk:
                try:
                    with tx.savepoint():
                        batch.append(_execute_one(svc, tx, item_id, actor, trigger))
                except _Unstartable as e:  # undone: the item stays queued
                    row = tx.one("SELECT * FROM queue_items WHERE id = ?", (item_id,))
                    assert row is not None
                    record_event(
                        tx,
                        "queue.refused",
                        actor,
                        f"#{item_id} stays queued: {e}",
                        item_id=item_id,
                        details={"reason": str(e)},
                    )
                    batch.append(
                        Outcome(item_view(row, _specs(svc, row["kind"], row["target"])), refused=str(e))
                    )
        outcomes.extend(batch)
        if any(o.run_id for o in batch):
            svc.poke()
    return outcomes


def _execute_one(svc: Service, tx: Tx, item_id: int, actor: str, trigger: str) -> Outcome:
    row = tx.one(f"SELECT * FROM queue_items WHERE id = ?{tx.for_update}", (item_id,))
    assert row is not None
    view = item_view(row, _specs(svc, row["kind"], row["target"]))
    if row["status"] != "queued":
        return Outcome(view, gone=True)
    plan, reason = _plan_for(svc, tx, row)
    if reason is not None:
        record_event(
            tx,
            "queue.refused",
            actor,
            f"#{item_id} stays queued: {reason}",
            item_id=item_id,
            workflow=row["target"] if row["kind"] == "workflow" else None,
            details={"reason": reason},
        )
        return Outcome(view, refused=reason)
    assert plan is not None
    closed = windows.closure(svc.project, tx, row["kind"], row["target"])
    if closed is not None and closed.kind == "window" and closed.opens is not None:
        # not a failure: the item waits for its window, and the engine starts it when it opens
        tx.execute("UPDATE queue_items SET not_before = ? WHERE id = ?", (closed.opens, item_id))
        why = f"waits for window {windows.window_of(svc.project, row['kind'], row['target'])}, opens {windows.when(svc.project, closed.opens)}"
        record_event(
            tx,
            "queue.deferred",
            actor,
            f"#{item_id} {why}",
            item_id=item_id,
            workflow=row["target"] if row["kind"] == "workflow" else None,
            details={"reason": closed.message, "not_before": iso(closed.opens)},
        )
        view["not_before"] = iso(closed.opens)
        return Outcome(view, deferred=why)
    if closed is not None:
        record_event(
            tx,
            "queue.refused",
            actor,
            f"#{item_id} stays queued: {closed.message}",
            item_id=item_id,
            workflow=row["target"] if row["kind"] == "workflow" else None,
            details={"reason": closed.message},
        )
        return Outcome(view, refused=closed.message)
    changed = tx.execute(
        "UPDATE queue_items SET status = 'executed', closed_by = ?, closed_at = ? "
        "WHERE id = ? AND status = 'queued'",
        (actor, now(), item_id),
    )
    if not changed:
        return Outcome(view, gone=True)
    try:
        run_id = create_run(
            tx,
            plan,
            loads(row["inputs"], {}),
            trigger=trigger,
            actor=actor,
            queue_item_id=item_id,
            pins=loads(row["pins"], {}),
        )
    except SluiceError as e:  # a material is gone or not built yet: say so, keep it queued
        raise _Unstartable(str(e)) from None
    tx.execute("UPDATE queue_items SET run_id = ? WHERE id = ?", (run_id, item_id))
    record_event(
        tx,
        "queue.executed",
        actor,
        f"executed #{item_id} as run #{run_id}",
        item_id=item_id,
        run_id=run_id,
        workflow=row["target"] if row["kind"] == "workflow" else None,
    )
    view["status"], view["run_id"] = "executed", run_id
    return Outcome(view, run_id=run_id)


def _plan_for(svc: Service, tx: Tx, row: dict[str, Any]) -> tuple[Plan | None, str | None]:
    if row["kind"] == "workflow":
        wf = svc.project.workflows.get(row["target"])
        if wf is None:
            return None, f"workflow {row['target']} no longer exists"
        reason = gates.refusal(tx, wf.name, wf.lock)
        return (None, reason) if reason else (workflow_plan(svc.project, wf), None)
    method = svc.project.method(row["target"])
    if method is None:
        return None, f"method {row['target']} no longer exists"
    return method_plan(method), None


def purge(svc: Service, ids: list[int], *, actor: str | None = None) -> list[ItemView]:
    """Remove items from the queue without running anything; they stay in history."""
    actor = actor or identity.actor()
    purged = []
    t = now()  # one time for the whole purge: `queue restore` in the dashboard offers it back as one
    with svc.db.write() as tx:
        for item_id in sorted(ids):
            changed = tx.execute(
                "UPDATE queue_items SET status = 'purged', closed_by = ?, closed_at = ? "
                "WHERE id = ? AND status = 'queued'",
                (actor, t, item_id),
            )
            if not changed:
                continue
            row = tx.one("SELECT * FROM queue_items WHERE id = ?", (item_id,))
            assert row is not None
            record_event(
                tx,
                "queue.purged",
                actor,
                f"purged #{item_id}: {row['kind']} {row['target']}",
                item_id=item_id,
                workflow=row["target"] if row["kind"] == "workflow" else None,
            )
            purged.append(item_view(row, _specs(svc, row["kind"], row["target"])))
    return purged


def due(svc: Service, at: float | None = None, *, skip: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Scheduled items whose time has come (minus `skip`: items already refused, waiting for a change)."""
    return [
        r["id"]
        for r in svc.db.all(
            "SELECT id FROM queue_items WHERE status = 'queued' AND not_before IS NOT NULL AND not_before <= ? "
            "ORDER BY id",
            (at or now(),),
        )
        if r["id"] not in skip
    ]


def next_due(svc: Service, *, skip: set[int] | frozenset[int] = frozenset()) -> float | None:
    rows = svc.db.all(
        "SELECT id, not_before FROM queue_items WHERE status = 'queued' AND not_before IS NOT NULL "
        "ORDER BY not_before LIMIT ?",
        (len(skip) + 1,),
    )
    return next((r["not_before"] for r in rows if r["id"] not in skip), None)


__all__ = [
    "Outcome",
    "Selector",
    "add",
    "check_ids",
    "due",
    "execute",
    "next_due",
    "parse_at",
    "purge",
    "select",
    "spec_from",
]
