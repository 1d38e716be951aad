"""Timers (SPEC 5): cron specs that start runs, each fire recorded exactly once.

A fire is claimed by inserting its (workflow, fire time) row: the unique constraint makes
it once even with several engines. A fire that cannot start (paused, locked) is recorded as
skipped with the reason. Fires missed while no engine ran are dropped (`catch_up: none`) or
the latest one runs once (`catch_up: latest`).
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..definitions.objects import Workflow
from ..service import Service, iso, record_event
from ..store.db import IntegrityError, LostLease, StoreError, StoreUnavailable, now
from .starts import start_unattended

MAX_MISSED_SCAN = 100_000  # fires looked at when catching up (a seconds cron over a long downtime)


class TimerState:
    def __init__(self) -> None:
        self.started: float | None = None  # when this engine became the scheduler
        self.next: dict[str, float] = {}
        self.spec: dict[str, tuple[str, str | None]] = {}
        self.broken: dict[str, str] = {}  # timers that cannot compute a fire, skipped until they change


def _iter(cron: str, tz: str | None, after: float) -> Any:
    from croniter import croniter

    zone = ZoneInfo(tz) if tz else datetime.now().astimezone().tzinfo
    return croniter(cron, datetime.fromtimestamp(after, zone))


def following(cron: str, tz: str | None, after: float) -> float:
    return _iter(cron, tz, after).get_next(datetime).timestamp()


def fire_due(svc: Service, state: TimerState) -> list[int]:
    """Fire every timer whose time has come; returns the runs started."""
    t = now()
    if state.started is None:
        state.started = t
    svc.reload_if_changed()
    started: list[int] = []
    timed = {w.name: w for w in svc.project.workflows.values() if w.timer}
    for name in [n for n in state.spec if n not in timed]:
        state.next.pop(name, None)
        state.spec.pop(name, None)
        state.broken.pop(name, None)
    for name, wf in timed.items():
        assert wf.timer is not None
        spec = (wf.timer.cron, svc.project.timezone)
        if state.spec.get(name) != spec:
            state.spec[name] = spec
            state.broken.pop(name, None)
            state.next.pop(name, None)
        if name in state.broken:
            continue
        try:
            if name not in state.next:
                state.next[name] = _first(svc, wf, state, started)
            while state.next[name] <= t:
                run_id = _fire(svc, wf, state.next[name])
                if run_id:
                    started.append(run_id)
                state.next[name] = following(wf.timer.cron, svc.project.timezone, state.next[name])
        except (StoreUnavailable, LostLease):
            raise  # the store's trouble (or the lease's), not the timer's: the engine handles it
        except Exception as e:  # one broken timer must never stop the scheduler
            _broken(svc, state, wf, e)
    return started


def _broken(svc: Service, state: TimerState, wf: Workflow, error: Exception) -> None:
    """Skip this timer until its definition changes; say so once (engine log and an event)."""
    assert wf.timer is not None
    state.next.pop(wf.name, None)
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    state.broken[wf.name] = why
    message = f"{wf.name}: timer '{wf.timer.cron}' skipped: cannot compute its next fire ({why})"
    sys.stderr.write(f"sluice: {message}\n")
    try:
        with svc.db.write() as tx:
            record_event(
                tx, "timer.broken", "sluice", message, workflow=wf.name, details={"cron": wf.timer.cron}
            )
    except StoreError as e:
        sys.stderr.write(f"sluice: could not record that: {e}\n")


def next_fire_at(svc: Service, state: TimerState) -> float | None:
    return min(state.next.values()) if state.next else None


def _first(svc: Service, wf: Workflow, state: TimerState, started: list[int]) -> float:
    """The next fire to wait for; handles fires missed while no engine ran."""
    assert wf.timer is not None and state.started is not None
    cron, tz = wf.timer.cron, svc.project.timezone
    last = svc.db.scalar("SELECT MAX(fire_at) FROM timer_fires WHERE workflow = ?", (wf.name,))
    if last is None:
        return following(cron, tz, state.started)
    missed: list[float] = []
    it = _iter(cron, tz, last)
    for _ in range(MAX_MISSED_SCAN):
        f = it.get_next(datetime).timestamp()
        if f >= state.started:
            break
        missed.append(f)
    if missed:
        if wf.timer.catch_up == "latest":
            run_id = _fire(svc, wf, missed[-1], catch_up=len(missed))
            if run_id:
                started.append(run_id)
        else:
            with svc.db.write() as tx:
                record_event(
                    tx,
                    "timer.missed",
                    "sluice",
                    f"{wf.name}: {len(missed)} fire(s) missed while no engine ran, dropped (catch_up: none)",
                    workflow=wf.name,
                    details={"missed": len(missed), "first": iso(missed[0]), "last": iso(missed[-1])},
                )
    return following(cron, tz, max(last, state.started))


def _fire(svc: Service, wf: Workflow, fire_at: float, catch_up: int = 0) -> int | None:
    try:
        with svc.db.write() as tx:
            fire_id = tx.insert("timer_fires", {"workflow": wf.name, "fire_at": fire_at, "status": "started"})
            run_id, reason = start_unattended(svc, tx, wf, "timer")
            when = iso(fire_at)
            if run_id is None:
                tx.execute(
                    "UPDATE timer_fires SET status = 'skipped', reason = ? WHERE id = ?", (reason, fire_id)
                )
                record_event(
                    tx,
                    "timer.skipped",
                    "sluice",
                    f"{wf.name}: timer fire at {when} skipped: {reason}",
                    workflow=wf.name,
                    details={"fire_at": when, "reason": reason},
                )
                return None
            tx.execute("UPDATE timer_fires SET run_id = ? WHERE id = ?", (run_id, fire_id))
            extra = f" (catching up {catch_up} missed fire(s))" if catch_up else ""
            record_event(
                tx,
                "timer.fired",
                "sluice",
                f"{wf.name}: timer fire at {when} started run #{run_id}{extra}",
                workflow=wf.name,
                run_id=run_id,
                details={"fire_at": when},
            )
            return run_id
    except IntegrityError:
        return None  # another engine recorded this fire first
