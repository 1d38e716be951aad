"""The tamper-evident history: every event chained to the one sealed before it (SPEC 14).

An event's hash is sha256(the previous event's hash + the event's canonical JSON), the first
event's previous hash being the empty string. Events are written by every engine, agent and
CLI side by side; the engine seals them shortly after (seal_pending), in commit order: on
SQLite ids come in commit order (one writer at a time); on PostgreSQL a pass takes only the
events of transactions older than every transaction still running (pg_snapshot_xmin), so an
event that commits late with a smaller id is sealed after the ones that committed before it,
never skipped. `seq` is the position in the chain, `hash` the link.

Anyone holding an export (JSON lines, export()) can recompute the links without sluice:

    hash = sha256(previous hash + json.dumps({id, at, actor, kind, run_id, job_id, item_id,
                  workflow, message, details}, sort_keys=True, separators=(",", ":")))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import NotFound, Refused
from .store.db import Database, Row

GENESIS = ""  # the "previous hash" of the first event
SEAL_BATCH = 2000  # events sealed per write transaction: short, so writers barely wait
READ_BATCH = 5000  # events read at a time by verify and export: bounded memory
FIELDS = ("id", "at", "actor", "kind", "run_id", "job_id", "item_id", "workflow", "message", "details")
_COLUMNS = ", ".join(FIELDS)


def canonical(event: Mapping[str, Any]) -> str:
    """The event as the chain sees it: its fields as stored, details as JSON, keys sorted."""
    obj = {k: event[k] for k in FIELDS}
    details = obj["details"]
    if isinstance(details, str):
        try:
            obj["details"] = json.loads(details)
        except ValueError:  # not JSON (edited by hand): hashed as the text it is
            pass
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def link(previous: str, event: Mapping[str, Any]) -> str:
    return hashlib.sha256((previous + canonical(event)).encode()).hexdigest()


def seal_pending(db: Database, batch: int = SEAL_BATCH) -> int:
    """Chain the events not sealed yet, oldest commit first; returns how many were sealed.

    Any process may call it; one at a time seals (a narrow lock on PostgreSQL, the one writer
    on SQLite), each continuing from the head it finds."""
    stable = ""
    if db.dialect == "postgresql":
        stable = " AND (tx IS NULL OR tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"
    total = 0
    while True:
        with db.write(fenced=False) as tx:
            tx.lock("history:seal")
            head = tx.one("SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM events WHERE seq IS NULL{stable} ORDER BY id LIMIT ?", (batch,)
            )
            if not rows:
                return total
            seq, previous = (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)
            links = []
            for row in rows:
                seq += 1
                previous = link(previous, row)
                links.append({"seq": seq, "hash": previous, "id": row["id"]})
            tx.executemany("UPDATE events SET seq = :seq, hash = :hash WHERE id = :id", links)
        total += len(rows)
        if len(rows) < batch:
            return total


@dataclass(frozen=True)
class Verdict:
    """What `history verify` found. `problem` is None when the chain is intact, else one of
    changed | inserted | removed, about the event `broken_at` (the first one that is wrong)."""

    events: int  # sealed events checked
    head: str | None  # the last link: keep a copy elsewhere to prove later that nothing before it changed
    head_id: int | None
    unsealed: int  # written but not sealed yet (the engine seals them within a second or so)
    problem: str | None = None
    broken_at: int | None = None
    message: str = ""

    @property
    def intact(self) -> bool:
        return self.problem is None


def sealed(db: Database, after_seq: int = 0) -> Iterator[Row]:
    """The sealed events in chain order from position `after_seq` on, a page at a time."""
    while True:
        rows = db.all(
            f"SELECT {_COLUMNS}, seq, hash FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, READ_BATCH),
        )
        yield from rows
        if len(rows) < READ_BATCH:
            return
        after_seq = int(rows[-1]["seq"])


def verify(db: Database) -> Verdict:
    """Walk the chain from its first event; stop at the first one that is not where or what it
    was when sealed."""
    unsealed = int(db.scalar("SELECT COUNT(*) FROM events WHERE seq IS NULL") or 0)
    previous, before, last_seq, last_id, count = GENESIS, GENESIS, 0, None, 0
    rows = sealed(db)
    for row in rows:
        seq = int(row["seq"])
        if seq != last_seq + 1:
            gone = seq - last_seq - 1
            where = f"between #{last_id} and #{row['id']}" if last_id is not None else f"before #{row['id']}"
            what = "1 event was" if gone == 1 else f"{gone:,} events were"
            return _broken(
                count, previous, last_id, unsealed, "removed", row["id"], f"{what} removed {where}"
            )
        if link(previous, row) != row["hash"]:
            # which one is wrong: this event, or one put in before it (with a link made to fit)?
            after = next(rows, None)
            if last_id is not None and link(before, row) == row["hash"]:
                problem, at = "inserted", last_id
            elif after is not None and link(previous, after) == after["hash"]:
                problem, at = "inserted", row["id"]
            else:
                problem, at = "changed", row["id"]
            message = (
                f"event #{at} was inserted into the sealed history"
                if problem == "inserted"
                else f"event #{at} ({row['kind']}) was changed after it was sealed"
            )
            return _broken(count, previous, last_id, unsealed, problem, at, message)
        before, previous, last_seq, last_id, count = previous, row["hash"], seq, row["id"], count + 1
    if db.dialect == "sqlite" and last_id is not None:
        # one writer at a time and sealing in id order: an event still unsealed below the head was
        # not written by sluice
        stray = db.scalar("SELECT MIN(id) FROM events WHERE seq IS NULL AND id < ?", (last_id,))
        if stray is not None:
            return _broken(
                count, previous, last_id, unsealed, "inserted", stray,
                f"event #{stray} was inserted into the sealed history",
            )  # fmt: skip
    return Verdict(count, previous or None, last_id, unsealed)


def _broken(
    count: int, head: str, head_id: int | None, unsealed: int, problem: str, at: int, message: str
) -> Verdict:
    return Verdict(count, head or None, head_id, unsealed, problem, at, message)


def export(db: Database, since: int | None = None) -> Iterator[dict[str, Any]]:
    """The sealed events as the chain sees them, with `seq` and `hash`, in chain order; with
    `since` (an event id), only those sealed after it."""
    after = 0
    if since is not None:
        row = db.one("SELECT seq FROM events WHERE id = ?", (since,))
        if row is None:
            raise NotFound(f"no event #{since}")
        if row["seq"] is None:
            raise Refused(f"event #{since} is not sealed yet; try again in a moment")
        after = int(row["seq"])
    for row in sealed(db, after):
        event = json.loads(canonical(row))
        event["seq"], event["hash"] = row["seq"], row["hash"]
        yield event
