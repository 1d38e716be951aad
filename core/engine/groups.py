"""Concurrency groups (SPEC 5): slots shared across runs and workflows, entered in run order.

A run enters group G when its first job in G becomes ready and holds one slot until all of
its jobs in G have finished or been skipped. A run may not enter while an earlier-created
run that still has unfinished jobs in G has not entered: that keeps the creation order.

On PostgreSQL, writers run side by side: an admission takes the group's lock (one decision
at a time per group), and first waits for the runs being created right now (gates.RUN_ORDER):
one of them may have a smaller id than the run let in, and must be seen before it is passed.
"""

from __future__ import annotations

from ..gates import RUN_ORDER
from ..service import record_event
from ..statuses import ACTIVE_RUN, FINAL_JOB, sql_list
from ..store.db import Tx, now


def admit(tx: Tx, run_id: int, group: str, slots: int) -> int | None:
    """Let the run into the group (or find it already in); else return the run it waits behind."""
    if tx.one("SELECT 1 AS x FROM group_slots WHERE group_name = ? AND run_id = ?", (group, run_id)):
        return None
    tx.wait_for(RUN_ORDER)  # every run created before this one is committed (or gone) now
    tx.lock(f"group:{group}")
    earlier = tx.one(
        "SELECT MIN(j.run_id) AS run_id FROM jobs j JOIN runs r ON r.id = j.run_id "
        f"WHERE j.group_name = ? AND j.run_id < ? AND j.status NOT IN ({sql_list(FINAL_JOB)}) "
        f"AND r.status IN ({sql_list(ACTIVE_RUN)}) "
        "AND NOT EXISTS (SELECT 1 FROM group_slots s WHERE s.group_name = j.group_name AND s.run_id = j.run_id)",
        (group, run_id),
    )
    if earlier and earlier["run_id"] is not None:
        return int(earlier["run_id"])
    holders = tx.all("SELECT run_id FROM group_slots WHERE group_name = ? ORDER BY run_id", (group,))
    if len(holders) >= slots:
        return int(holders[0]["run_id"])
    tx.execute(
        "INSERT INTO group_slots (group_name, run_id, entered_at) VALUES (?, ?, ?)", (group, run_id, now())
    )
    record_event(
        tx,
        "group.entered",
        "sluice",
        f"run #{run_id} entered group {group}",
        run_id=run_id,
        details={"group": group},
    )
    return None


def release_finished(tx: Tx, run_id: int) -> bool:
    """Give back the slots of groups in which this run has no unfinished job left."""
    released = False
    for slot in tx.all("SELECT group_name FROM group_slots WHERE run_id = ?", (run_id,)):
        left = tx.one(
            f"SELECT 1 AS x FROM jobs WHERE run_id = ? AND group_name = ? AND status NOT IN ({sql_list(FINAL_JOB)}) "
            "LIMIT 1",
            (run_id, slot["group_name"]),
        )
        if left is None:
            _leave(tx, run_id, slot["group_name"])
            released = True
    return released


def release_all(tx: Tx, run_id: int) -> None:
    for slot in tx.all("SELECT group_name FROM group_slots WHERE run_id = ?", (run_id,)):
        _leave(tx, run_id, slot["group_name"])


def _leave(tx: Tx, run_id: int, group: str) -> None:
    tx.execute("DELETE FROM group_slots WHERE group_name = ? AND run_id = ?", (group, run_id))
    record_event(
        tx,
        "group.left",
        "sluice",
        f"run #{run_id} left group {group}",
        run_id=run_id,
        details={"group": group},
    )
