"""Change windows and freezes (SPEC 13): when new runs may start.

A window opens at each fire of its cron (project timezone) and stays open for its duration;
a workflow (or a model's methods) with `window:` starts runs only while it is open. A freeze,
from sluice.yaml (`freezes:`, fixed times) or `sluice freeze` (now, until lifted or a time),
stops every new run except of the workflows it lists, as if everything were paused.

Checked inside the transaction that creates the run (closure()), which holds the run order's
lock shared; `sluice freeze` takes it exclusively before it commits, so a run whose creation
was under way commits first, and any run created after the freeze committed sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .definitions.objects import Project, Window
from .store.db import Database, Tx, loads, now
from .times import zone


@dataclass(frozen=True)
class WindowState:
    name: str
    open: bool
    closes_at: float | None  # while open
    next_open: float | None  # the next opening after this one (or after now, when closed)


def window_state(project: Project, name: str, at: float | None = None) -> WindowState:
    from croniter import croniter

    window = project.windows[name]
    t = at if at is not None else now()
    start = datetime.fromtimestamp(t, zone(project.timezone))
    last = croniter(window.cron, start).get_prev(datetime).timestamp()
    following = croniter(window.cron, start).get_next(datetime).timestamp()
    if last <= t < last + window.duration:
        return WindowState(name, True, last + window.duration, following)
    return WindowState(name, False, None, following)


def when(project: Project, t: float | None) -> str:
    """`Sat 2026-12-05 02:00 (Europe/London)`: a moment as the project's people read it."""
    if t is None:
        return "never"
    local = datetime.fromtimestamp(t, zone(project.timezone))
    tz = project.timezone or local.strftime("%Z")
    return f"{local.strftime('%a %Y-%m-%d %H:%M')} ({tz})"


def describe_window(project: Project, state: WindowState) -> str:
    if state.open:
        return f"window {state.name} open until {when(project, state.closes_at)}"
    return f"window {state.name} closed; opens {when(project, state.next_open)}"


@dataclass(frozen=True)
class Freeze:
    """A freeze in force: from sluice.yaml (id None) or `sluice freeze` (its row id)."""

    reason: str
    by: str | None
    until: float | None
    except_: tuple[str, ...]
    id: int | None = None

    def covers(self, kind: str, target: str) -> bool:
        return not (kind == "workflow" and target in self.except_)


def freezes_in_force(project: Project, reader: Database | Tx, at: float | None = None) -> list[Freeze]:
    t = at if at is not None else now()
    out = [
        Freeze(f.reason, "sluice.yaml", f.end, tuple(f.except_))
        for f in project.freezes
        if f.start <= t < f.end
    ]
    for row in reader.all(
        "SELECT * FROM freezes WHERE lifted_at IS NULL AND (until IS NULL OR until > ?) ORDER BY id", (t,)
    ):
        out.append(
            Freeze(row["reason"], row["set_by"], row["until"], tuple(loads(row["except_"], [])), row["id"])
        )
    return out


def describe_freeze(project: Project, f: Freeze) -> str:
    who = f" by {f.by.split('@')[0]}" if f.by and f.by != "sluice.yaml" else " (sluice.yaml)"
    until = f" until {when(project, f.until)}" if f.until is not None else " until lifted (sluice unfreeze)"
    return f"frozen{who}: {f.reason}{until}"


def next_change(project: Project, reader: Database | Tx, at: float | None = None) -> float | None:
    """The next moment a freeze begins or ends (the engine looks again then)."""
    t = at if at is not None else now()
    times = [x for f in project.freezes for x in (f.start, f.end) if x > t]
    row = reader.one(
        "SELECT MIN(until) AS u FROM freezes WHERE lifted_at IS NULL AND until IS NOT NULL AND until > ?",
        (t,),
    )
    if row and row["u"] is not None:
        times.append(float(row["u"]))
    return min(times) if times else None


@dataclass(frozen=True)
class Closure:
    """Why a new run may not start now: a freeze, or its window being closed (then `opens`)."""

    kind: str  # freeze | window
    message: str
    opens: float | None = None


def closure(
    project: Project, tx: Tx | Database, kind: str, target: str, at: float | None = None
) -> Closure | None:
    """A freeze in force over `target`, else its window closed, else None. In a transaction that
    creates a run, call it after gates.refusal (which holds the run order's lock shared); alone
    (a method), take the lock here."""
    if isinstance(tx, Tx):
        from .gates import RUN_ORDER

        tx.lock(RUN_ORDER, shared=True)
    for f in freezes_in_force(project, tx, at):
        if f.covers(kind, target):
            return Closure("freeze", f"{target}: {describe_freeze(project, f)}")
    name = window_of(project, kind, target)
    if name is None or name not in project.windows:
        return None
    state = window_state(project, name, at)
    if state.open:
        return None
    return Closure(
        "window",
        f"{target} runs only in window {name}; it opens {when(project, state.next_open)}",
        state.next_open,
    )


def window_of(project: Project, kind: str, target: str) -> str | None:
    if kind == "workflow":
        wf = project.workflows.get(target)
        return wf.window if wf else None
    method = project.method(target)
    return method.window if method else None


def windows_view(project: Project, at: float | None = None) -> list[dict[str, Any]]:
    """Each window: its cron, duration, whether it is open, until when, and its next opening."""
    from .times import iso

    out = []
    for name, w in sorted(project.windows.items()):
        s = window_state(project, name, at)
        out.append(
            {
                "name": name,
                "cron": w.cron,
                "duration": w.duration,
                "open": s.open,
                "closes_at": iso(s.closes_at),
                "next_open": iso(s.next_open),
                "text": describe_window(project, s),
            }
        )
    return out


MAX_FREEZE_S = 366 * 86400  # sluice freeze --until: at most a year ahead


# ---------------------------------------------------------------- in-flight runs while frozen


def regate(tx: Tx, freezes: list[Freeze], project: Project, *, lift: bool = True) -> int:
    """Ready jobs of runs in flight wait while a freeze covers their run (gate `freeze`) and go on
    when none does: their gate is recomputed from the freezes in force, in one transaction, so no
    agent claims one in between. `lift=False` only gates (the engine's look at each tick while
    frozen: jobs that became ready or were retried since). A run started with break glass is
    never held back. Returns how many jobs changed."""
    from .statuses import ACTIVE_RUN, sql_list

    changed = 0
    if lift:
        # back to pending: the engine takes each through its way again (agents, a trigger's child
        # run, a fan-out), as when it first became ready; it looks at every active run on a change
        changed = tx.execute(
            "UPDATE jobs SET status = 'pending', gate = NULL, reason = NULL WHERE status = 'waiting' AND gate = 'freeze'"
        )
    for f in freezes:
        keep = list(f.except_)
        spared = (
            f" AND NOT (r.kind = 'workflow' AND r.target IN ({','.join('?' * len(keep))}))" if keep else ""
        )
        changed += tx.execute(
            "UPDATE jobs SET gate = 'freeze', reason = ? WHERE status = 'waiting' AND gate IS NULL AND run_id IN "
            f"(SELECT r.id FROM runs r WHERE r.status IN ({sql_list(ACTIVE_RUN)}) AND r.break_glass IS NULL{spared})",
            (describe_freeze(project, f), *keep),
        )
    return changed


def freeze_view(project: Project, f: Freeze) -> dict[str, Any]:
    return {
        "id": f.id,
        "reason": f.reason,
        "by": f.by,
        "until": iso_or_none(f.until),
        "except": list(f.except_),
        "source": "sluice.yaml" if f.id is None else "sluice freeze",
        "text": describe_freeze(project, f),
    }


def iso_or_none(t: float | None) -> str | None:
    from .times import iso

    return iso(t)


# ---------------------------------------------------------------- break glass


def check_break_glass(project: Project, actor: str, reason: str | None) -> str:
    """The reason, when `actor` may break glass; else refused (exit 3), saying why."""
    from . import identity
    from .errors import Invalid, Refused

    if not reason or not reason.strip():
        raise Invalid("--break-glass needs --reason TEXT: why this cannot wait")
    if project.break_glass is None:
        raise Refused("--break-glass is not set up here: sluice.yaml names no break_glass group")
    user = identity.actor_user(actor)
    if user not in project.groups.get(project.break_glass, []):
        raise Refused(f"{user} may not break glass (only group {project.break_glass}); nothing was changed")
    return reason.strip()


__all__ = ["Closure", "Freeze", "Window", "WindowState", "closure", "freezes_in_force", "window_state"]
