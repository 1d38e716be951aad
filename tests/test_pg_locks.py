"""Rules that span rows hold with writers side by side (issue 11: no global write lock).

Several processes start the same use case at the same moment (a barrier, each with its own
connections): one item becomes one run, a locked workflow starts one run, a hold is released
once, the lease has one holder. On PostgreSQL, where writers no longer queue behind one lock,
the narrow locks are also shown to be narrow: a workflow's lock stops its own starts only,
and a concurrency group waits only for the runs being created at that moment.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Proj

RACERS = 6


def _child(barrier: Any, results: Any, root: str, i: int, use_case: Callable[..., Any], args: tuple) -> None:
    from core.errors import SluiceError
    from core.service import Service

    try:
        svc = Service.open(Path(root))
        svc.db.one("SELECT 1 AS x")  # connected before the start line: the race is the use case's
        barrier.wait(timeout=60)
        results.put((i, "ok", use_case(svc, i, *args)))
    except SluiceError as e:
        results.put((i, type(e).__name__, str(e)))
    except BaseException as e:  # reported to the test, never lost in a child
        results.put((i, "error", repr(e)))


def race(proj: Proj, use_case: Callable[..., Any], *args: Any, n: int = RACERS) -> list[tuple[str, Any]]:
    """Run use_case(svc, i, *args) in n processes released at once; their (outcome, value)s."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(barrier, results, str(proj.root), i, use_case, args))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    out = {i: (kind, value) for i, kind, value in got}
    for p in procs:
        p.join(timeout=60)
    assert not [v for v in out.values() if v[0] == "error"], out
    return [out[i] for i in range(n)]


# ---------------------------------------------------------------- the use cases each racer calls


def _execute(svc: Any, i: int, item_ids: list[int]) -> list[tuple[int | None, str | None, bool]]:
    from core import queueing

    return [(o.run_id, o.refused, o.gone) for o in queueing.execute(svc, item_ids, actor=f"racer{i}")]


def _run(svc: Any, i: int, workflow: str) -> int:
    return svc.run_workflow(workflow, {}, actor=f"racer{i}")


def _release(svc: Any, i: int, run_id: int) -> int:
    from core import holds

    holds.release(svc, "gate", run_id=run_id, actor=f"racer{i}")
    return run_id


def _lease(svc: Any, i: int) -> bool:
    from core.engine.main import Lease

    return Lease(svc.db, f"nowhere:{i}:racer").acquire()


LOCKED = 'name: {name}\nlock: until_complete\njobs: {{a: {{steps: [{{run: "true"}}]}}}}\n'


def test_the_same_items_executed_at_once_become_one_run_each(proj: Proj) -> None:
    """Each racer executes every item; a locked workflow's item is not reported refused by the run
    that another racer just started from it: the loser waits for the item's row and finds it gone."""
    for k in range(4):
        proj.write(f"workflows/w{k}.yaml", LOCKED.format(name=f"w{k}"))
        proj.ok("workflow", "queue", f"w{k}")
    svc = proj.service()
    ids = [r["id"] for r in svc.db.all("SELECT id FROM queue_items ORDER BY id")]
    outcomes = race(proj, _execute, ids)
    for pos, item_id in enumerate(ids):
        results = [value[pos] for kind, value in outcomes]
        started = [run_id for run_id, refused, gone in results if run_id is not None]
        assert len(started) == 1, (item_id, results)
        assert all(gone for run_id, refused, gone in results if run_id is None), (item_id, results)
    rows = svc.db.all("SELECT queue_item_id, COUNT(*) AS n FROM runs GROUP BY queue_item_id")
    assert sorted((r["queue_item_id"], r["n"]) for r in rows) == [(i, 1) for i in ids]
    kinds = [e["kind"] for e in svc.db.all("SELECT kind FROM events WHERE item_id IS NOT NULL")]
    assert kinds.count("queue.executed") == len(ids) and "queue.refused" not in kinds


def test_runs_of_a_locked_workflow_started_at_once_one_starts(proj: Proj) -> None:
    proj.write("workflows/w.yaml", LOCKED.format(name="w"))
    outcomes = race(proj, _run, "w")
    started = [value for kind, value in outcomes if kind == "ok"]
    refused = [value for kind, value in outcomes if kind == "Refused"]
    assert len(started) == 1 and len(refused) == RACERS - 1, outcomes
    assert all(f"locked by run #{started[0]}" in why for why in refused), refused
    assert proj.service().db.scalar("SELECT COUNT(*) FROM runs") == 1


def test_a_hold_released_at_once_is_released_once(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {gate: {hold: true, steps: [{run: "true"}]}}\n')
    proj.ok("workflow", "run", "w")  # returns once the run is on hold
    outcomes = race(proj, _release, 1)
    assert [kind for kind, _ in outcomes].count("ok") == 1, outcomes
    # the others were too late: refused ("no longer on hold") or found nothing on hold any more
    assert {kind for kind, _ in outcomes} <= {"ok", "Refused", "NotFound"}, outcomes
    svc = proj.service()
    assert svc.db.scalar("SELECT COUNT(*) FROM events WHERE kind = 'job.released'") == 1


def test_the_lease_taken_at_once_has_one_holder(proj: Proj) -> None:
    outcomes = race(proj, _lease)
    assert [value for kind, value in outcomes].count(True) == 1, outcomes
    row = proj.service().db.one("SELECT holder, token FROM leases")
    assert row is not None and row["token"] == 1
    winner = next(i for i, (kind, value) in enumerate(outcomes) if value is True)
    assert row["holder"] == f"nowhere:{winner}:racer"


# ---------------------------------------------------------------- PostgreSQL: the locks are narrow


def _waiting_for_advisory_locks(svc: Any) -> int:
    return int(svc.db.scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))


def test_a_workflows_lock_stops_its_own_starts_only(proj: Proj, backend: str) -> None:
    """While one transaction checks workflow a's lock, a start of a waits and a start of b goes on:
    writers no longer queue behind one lock for the whole database."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time by design (BEGIN IMMEDIATE)")
    from core import gates

    for name in ("a", "b"):
        proj.write(f"workflows/{name}.yaml", LOCKED.format(name=name))
    svc = proj.service()
    with svc.db.write() as tx:
        assert gates.refusal(tx, "a", "until_complete") is None  # holds a's lock until the commit
        a = proj.popen("workflow", "run", "a", "--detach")
        proj.wait_for(lambda: _waiting_for_advisory_locks(svc) >= 1, what="the start of a to wait")
        assert proj.sluice("workflow", "run", "b", "--detach").code == 0  # b is not held up
        assert a.poll() is None
    assert a.wait(timeout=60) == 0
    assert sorted(r["target"] for r in svc.db.all("SELECT target FROM runs")) == ["a", "b"]


def test_group_admission_waits_for_runs_being_created(proj: Proj, backend: str) -> None:
    """A run being created holds the run order (shared) until it commits; admission into a group
    waits for it, since that run may have a smaller id than the one let in."""
    if backend != "postgresql":
        pytest.skip("SQLite commits runs in id order (one writer at a time)")
    from core import gates
    from core.engine import groups

    proj.write("workflows/w.yaml", LOCKED.format(name="w"))
    svc = proj.service()
    admitted: list[int | None] = []

    def admit() -> None:
        from core.service import Service

        other = Service.open(proj.root)
        with other.db.write() as tx:
            admitted.append(groups.admit(tx, 999, "g", 1))

    with svc.db.write() as tx:
        gates.refusal(tx, "w", "none")  # what a run's creation takes before the run gets its id
        t = threading.Thread(target=admit)
        t.start()
        proj.wait_for(lambda: _waiting_for_advisory_locks(svc) >= 1, what="admission to wait")
        assert admitted == []
    t.join(timeout=60)
    assert admitted == [None]  # let in once the creation was over
    # and the barrier was only waited for, not kept: a creation now does not wait for anything
    with svc.db.write() as tx:
        assert gates.refusal(tx, "w", "none") is None


def test_an_engine_taking_the_lease_over_waits_for_the_old_ones_writes(proj: Proj, backend: str) -> None:
    """A write of the engine whose lease ran out, under way when another engine takes the lease,
    ends before the new engine starts: it never commits behind the new scheduler's back."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time by design (BEGIN IMMEDIATE)")
    from core.engine.main import Lease
    from core.service import Service
    from core.store.db import Fence

    svc = proj.service()
    with svc.db.write() as tx:
        tx.execute("INSERT INTO leases (name, holder, token, expires_at) VALUES ('scheduler', 'old', 1, 0)")
    took: list[bool] = []

    def take_over() -> None:
        took.append(Lease(Service.open(proj.root).db, "new").acquire())

    svc.db.fence = Fence("SELECT 1 AS one", lambda row: None)  # as an engine's writes: each is fenced
    with svc.db.write():
        t = threading.Thread(target=take_over)
        t.start()
        proj.wait_for(lambda: _waiting_for_advisory_locks(svc) >= 1, what="the takeover to wait")
        assert took == []
    t.join(timeout=60)
    assert took == [True]
    assert svc.db.one("SELECT holder, token FROM leases") == {"holder": "new", "token": 2}
