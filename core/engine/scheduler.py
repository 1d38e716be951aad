"""The scheduler: moves jobs through the DAG, finishes runs, dispatches ready jobs to agents.

Each tick looks only at active runs (independent of history, SPEC 12 P5) and re-evaluates
the runs that changed since the last tick.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import gates, holds, identity, queueing, windows
from ..agents.agent import Agent, agent_rows, agent_timeout, describe_wait, matches, poke_agents
from ..agents.procs import kill_jobs, processes_of_jobs, same_process, signal_group, store_id
from ..agents.runner import JobRunner, _ancestors
from ..definitions.objects import Project
from ..service import Service, record_event
from ..statuses import ACTIVE_RUN, FAILED_JOB, FINAL_JOB, NOT_STARTED_JOB, sql_list
from ..store.db import Database, Fence, LostLease, Row, Tx, loads, now
from . import groups, timers, triggers, upstream

FAILED = FAILED_JOB
LOST_KILL_WAIT = 5.0  # seconds to wait for a lost agent's job processes to be gone after SIGKILL
SMALL_RUN = 20  # jobs: a run this small has its statuses read in one statement when settled
EVALUATE_BATCH = 100  # runs looked at per write transaction: short enough not to stall other writers
# events written by other processes that change what a run should do next
EXTERNAL_EVENTS = (
    "run.created",
    "run.cancel_requested",
    "job.released",
    "job.rejected",
    "job.timed_out",
    # results reported by agents in other processes (our own agents tell us directly)
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.retry",
)
# events after which the next deadline (due item, hold timeout) must be recomputed
DEADLINE_EVENTS = (
    "queue.scheduled",
    "queue.executed",
    "queue.purged",
    "job.held",
    "job.released",
    "job.rejected",
    "job.timed_out",
    "run.cancel_requested",
    "queue.deferred",
    "queue.restored",
)
# events after which the freezes in force may differ
FREEZE_EVENTS = ("freeze.set", "freeze.lifted")


# events after which a refused scheduled item may start now
UNBLOCK_EVENTS = (
    "workflow.unpaused",
    "workflow.unlocked",
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "freeze.lifted",
)
# events after which the words on waiting jobs ("paused", "no enabled agent in prod") may be out of date
REASON_EVENTS = (
    "workflow.paused",
    "workflow.unpaused",
    "agent.registered",
    "agent.enabled",
    "agent.disabled",
    "agent.lost",
)
FENCE_QUERY = "SELECT holder, token FROM leases WHERE name = 'scheduler'"  # read by every engine write
REASON_REFRESH = 5.0  # seconds: the words on waiting jobs are checked at least this often


def _marks(items: tuple[str, ...]) -> str:
    return ",".join("?" * len(items))


class Scheduler:
    def __init__(
        self,
        db: Database,
        project: Project,
        *,
        wake: Any = None,
        service: Service | None = None,
        lease: Any = None,
    ):
        self.db = db
        self.lease = lease
        self.service = service
        self.last_event_id = 0
        self.project = project
        self.root = project.root
        # the agents this engine runs in its own process (sluice.yaml's, or one `local`)
        specs = list(project.agents.values())
        # on PostgreSQL an engine on another host may take over and retry our jobs: cut off, our agents
        # stop them; on SQLite every engine is on this host and kills a lost agent's processes itself
        fence_own = db.dialect == "postgresql"
        self.agents = [
            Agent(
                db,
                self.root,
                a.name,
                environments=a.environments,
                resources=a.resources,
                capacity=a.capacity or project.capacity,
                on_done=self.mark_dirty,
                self_fence=fence_own,
                log_limit=project.log_limit,
            )
            for a in specs
        ] or [
            Agent(
                db,
                self.root,
                "local",
                capacity=project.capacity,
                on_done=self.mark_dirty,
                self_fence=fence_own,
                log_limit=project.log_limit,
            )
        ]
        self.lock = threading.Lock()
        self.dirty: set[int] = set()
        self.plans: dict[int, dict[str, Any]] = {}
        self.started = False
        self.timer_state = timers.TimerState()
        self.refused_due: set[int] = set()  # scheduled items refused (paused, locked) until something changes
        self._deadline: float | None = None  # cached next deadline; None = recompute
        self.wake = wake or (lambda: None)
        self.draining = False
        self.store_ok_since: float | None = None  # set by the engine when the store came back after an outage
        self.cursor: Any = None  # where we stand in the events; set at the first tick
        self.new_waiting = False  # jobs became ready since the last dispatch: wake the agents
        self._waits: dict[str, list[int]] = {}  # jobs made ready, by reason, not written yet
        self._paused: dict[str, bool] = {}  # workflows' pause, read once per look at a run
        self.reasons_stale = True  # the waiting jobs' reasons need a look (agents or pauses changed)
        self.reasons_at = 0.0
        self.agents_seen: Any = None  # the agents as last described to waiting jobs
        self.agent_cache: list[dict[str, Any]] | None = None  # agent rows read in this tick
        self.agent_stop = threading.Event()
        # the freezes in force as last applied to waiting jobs; None: look again (an event, a time)
        self.freezes: list[windows.Freeze] | None = None
        self.applied_freezes: tuple[windows.Freeze, ...] = ()
        self.freeze_change: float | None = None  # when a freeze begins or ends next
        self.freezes_of: Any = None  # the definitions the cached freezes were read from

    # ------------------------------------------------------------ start-up

    def recover(self) -> int:
        """After a crash: jobs left `running` by this host's agent get a final status; none runs twice."""
        names = [a.name for a in self.agents]
        rows = self.db.all(
            f"SELECT * FROM jobs WHERE status = 'running' AND agent IN ({_marks(tuple(names))})", names
        )
        import signal

        # stop what the dead engine left running: by recorded pid, and by the job id every step carries
        # in its environment (a crash between the spawn and the pid's write leaves no pid in the store)
        for pgid in processes_of_jobs({j["id"] for j in rows}, set(names), store_id(self.db.url)):
            signal_group(pgid, signal.SIGKILL)
        for j in rows:
            if j["pid"] and same_process(j["pid"], j["proc_start"]):
                signal_group(j["pid"], signal.SIGKILL)
            with self.db.write() as tx:
                changed = tx.execute(
                    "UPDATE jobs SET status = 'failed', reason = 'engine restarted', finished_at = ?, pid = NULL "
                    "WHERE id = ? AND status = 'running'",
                    (now(), j["id"]),
                )
                if changed:
                    record_event(
                        tx,
                        "job.failed",
                        "sluice",
                        f"{j['name']} failed: engine restarted",
                        run_id=j["run_id"],
                        job_id=j["id"],
                    )
        return len(rows)

    # ------------------------------------------------------------ the tick

    def tick(self) -> None:
        if not self.started:
            # first tick: every active run is looked at once; later only what changed
            self.started = True
            self.cursor = self.db.event_cursor()
            for r in self.db.all(f"SELECT id FROM runs WHERE status IN ({sql_list(ACTIVE_RUN)})"):
                self.dirty.add(r["id"])
        self.agent_cache = None
        self._external_changes()
        if self.service is not None and self._deadline_due():
            for run_id in holds.expire(self.service):
                self.dirty.add(run_id)
            due = queueing.due(self.service, skip=self.refused_due)
            if due:
                self.service.reload_if_changed()
                for o in queueing.execute(self.service, due, actor="sluice", trigger="schedule"):
                    if o.refused:  # paused or locked: stays queued; tried again when that changes
                        self.refused_due.add(o.item["id"])
                self._external_changes()
            self._deadline = None  # recompute
        if self.service is not None:
            fired = timers.fire_due(self.service, self.timer_state)
            if fired:
                self.dirty.update(fired)

        self.apply_freezes()
        self.recheck_groups()
        with self.lock:
            dirty, self.dirty = self.dirty, set()
        ordered = sorted(dirty)
        for i in range(0, len(ordered), EVALUATE_BATCH):
            self.evaluate(*ordered[i : i + EVALUATE_BATCH])
        self.dispatch()

    def _external_changes(self) -> None:
        """Runs changed by other processes (created, released, rejected, cancelled) are named in events."""
        ours = tuple(f"sluice@{a.name}" for a in self.agents)
        kinds = tuple(
            sorted({*EXTERNAL_EVENTS, *DEADLINE_EVENTS, *UNBLOCK_EVENTS, *REASON_EVENTS, *FREEZE_EVENTS})
        )
        rows, self.cursor = self.db.events_since(
            self.cursor, f"kind IN ({_marks(kinds)})", kinds, columns="run_id, kind, actor"
        )
        for r in rows:
            kind = r["kind"]
            if kind in EXTERNAL_EVENTS and r["run_id"] is not None and r["actor"] not in ours:
                self.dirty.add(r["run_id"])
            if kind in DEADLINE_EVENTS:
                self._deadline = None
            if kind in UNBLOCK_EVENTS and self.refused_due:
                self.refused_due.clear()  # a pause or a lock may have lifted: try the refused items again
                self._deadline = None
            if kind in REASON_EVENTS:
                self.reasons_stale = True
            if kind == "job.retry":
                self.new_waiting = True
            if kind in FREEZE_EVENTS:
                self.freezes = None

    @property
    def definitions(self) -> Any:
        """The project as last loaded (the service reloads it when its files change)."""
        return self.service.project if self.service is not None else self.project

    def frozen(self) -> list[windows.Freeze]:
        """The freezes in force (cached until a freeze event, the moment one begins or ends, or
        sluice.yaml being loaded again)."""
        project = self.definitions
        if (
            self.freezes is None
            or project is not self.freezes_of
            or (self.freeze_change is not None and self.freeze_change <= now())
        ):
            self.freezes = windows.freezes_in_force(project, self.db)
            self.freeze_change = windows.next_change(project, self.db)
            self.freezes_of = project
        return self.freezes

    def apply_freezes(self) -> None:
        """Ready jobs of runs in flight wait while a freeze covers them; they go on when it ends.
        While frozen, each tick gates what became ready or was retried since the last one."""
        current = tuple(self.frozen())
        if current == self.applied_freezes:
            if current:
                with self.db.write() as tx:
                    windows.regate(tx, list(current), self.definitions, lift=False)
            return
        with self.db.write() as tx:
            windows.regate(tx, list(current), self.definitions)
        # jobs let go (here, or by `sluice unfreeze` in its own transaction) are pending again
        for r in self.db.all(f"SELECT id FROM runs WHERE status IN ({sql_list(ACTIVE_RUN)})"):
            self.dirty.add(r["id"])
        if len(current) < len(self.applied_freezes) or not current:
            self.refused_due.clear()  # a freeze ended: the refused scheduled items may start now
            self._deadline = None
        self.applied_freezes = current
        self.new_waiting = True
        self.reasons_stale = True

    def _deadline_due(self) -> bool:
        deadline = self.next_deadline()
        return deadline is not None and deadline <= now()

    def next_deadline(self) -> float | None:
        """The next moment something is due (a scheduled item, a hold timeout, a timer fire)."""
        if self.service is None:
            return None
        if self._deadline is None:  # cached: recomputed after events that move it
            times = [
                t
                for t in (
                    queueing.next_due(self.service, skip=self.refused_due),
                    holds.next_deadline(self.service),
                )
                if t is not None
            ]
            self._deadline = min(times) if times else float("inf")
        fire = timers.next_fire_at(self.service, self.timer_state)
        best = min(self._deadline, fire if fire is not None else float("inf"))
        if self.freeze_change is not None:
            best = min(best, self.freeze_change)
        return None if best == float("inf") else best

    def mark_dirty(self, run_id: int) -> None:
        with self.lock:
            self.dirty.add(run_id)
        self.wake()

    def plan(self, run: dict[str, Any]) -> dict[str, Any]:
        p = self.plans.get(run["id"])
        if p is None:
            p = self.plans[run["id"]] = loads(run["plan"])
        return p

    def evaluate(self, *run_ids: int) -> None:
        """Promote the runs' ready jobs and settle their status, in one short transaction.

        Reads the pending jobs and probes statuses by index, so a run with a 1,000-way fan-out
        costs about the same to look at as a small one.
        """
        with self.db.write() as tx:
            marks = ",".join("?" * len(run_ids))
            rows = {r["id"]: r for r in tx.all(f"SELECT * FROM runs WHERE id IN ({marks})", run_ids)}
            for run_id in run_ids:
                run = rows.get(run_id)
                if run is None or run["status"] not in ACTIVE_RUN:
                    self.plans.pop(run_id, None)
                    continue
                plan = self.plan(run)
                if run["cancel_requested"]:
                    self._cancel(tx, run)
                else:
                    self._paused = {}
                    try:
                        self._promote(tx, run, plan)
                    except BaseException:
                        self._waits = {}  # the transaction is undone: nothing to write
                        raise
                    self._flush_waits(tx)
                self._settle(tx, run)

    def fence(self) -> Fence:
        """The check every write of this engine makes first (Database.fence)."""
        return Fence(FENCE_QUERY, self.check_fence)

    def check_fence(self, row: Row | None) -> None:
        """Fencing: write only while we hold the lease with our token (`row`: the lease as read by
        FENCE_QUERY in the write transaction). An engine that stalled past its lease (and was
        replaced) must not move anything on."""
        if self.lease is None:
            return
        if row is None or row["holder"] != self.lease.holder or row["token"] != self.lease.token:
            raise LostLease("another engine holds the scheduler lease")

    def _counts(self, tx: Tx, run_id: int) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for r in tx.all(
            "SELECT base, status, COUNT(*) AS n FROM jobs WHERE run_id = ? GROUP BY base, status", (run_id,)
        ):
            counts.setdefault(r["base"], {})[r["status"]] = r["n"]
        return counts

    def _cancel(self, tx: Tx, run: dict[str, Any]) -> None:
        who = run["cancelled_by"] or "sluice"
        why = f"cancelled by {who.split('@')[0]}"
        for child in tx.all(
            "SELECT child_run_id FROM jobs WHERE run_id = ? AND status = 'waiting' AND gate = 'trigger'",
            (run["id"],),
        ):
            tx.execute(
                "UPDATE runs SET cancel_requested = 1, cancelled_by = ? WHERE id = ? AND status IN "
                f"({sql_list(ACTIVE_RUN)})",
                (who, child["child_run_id"]),
            )
            self.dirty.add(child["child_run_id"])
        tx.execute(
            "UPDATE jobs SET status = 'cancelled', reason = ?, finished_at = ? "
            f"WHERE run_id = ? AND status IN ({sql_list(NOT_STARTED_JOB)})",
            (why, now(), run["id"]),
        )
        for j in tx.all("SELECT id FROM jobs WHERE run_id = ? AND status = 'running'", (run["id"],)):
            runner = self.runner(j["id"])
            if runner is not None:
                runner.cancel(why)

    def _promote(self, tx: Tx, run: dict[str, Any], plan: dict[str, Any]) -> None:
        pending = tx.all(
            "SELECT * FROM jobs WHERE run_id = ? AND status = 'pending' ORDER BY position, id", (run["id"],)
        )
        if not pending:
            return
        counts = self._counts(tx, run["id"])

        def final(base: str) -> bool:
            return all(st in FINAL_JOB for st in counts.get(base, {}))

        def bump(base: str, old: str, new: str) -> None:
            c = counts.setdefault(base, {})
            c[old] -= 1
            if not c[old]:
                del c[old]
            c[new] = c.get(new, 0) + 1

        changed = True
        while changed:  # a skip can make a later job decidable in the same pass
            changed = False
            for j in pending:
                if j["status"] != "pending":
                    continue
                spec = plan["jobs"][j["base"]]
                needs = spec["needs"]
                if not all(final(b) for b in needs):
                    continue
                cond = spec["if"]
                failed_bases = {b for b, c in counts.items() if any(st in FAILED for st in c)}
                if cond == "always":
                    go, why = True, None
                elif cond == "failure":
                    go, why = (
                        bool(_ancestors(plan, j["base"]) & failed_bases),
                        "no earlier job failed (if: failure)",
                    )
                else:
                    bad = [b for b in needs if set(counts.get(b, {})) - {"succeeded"}]
                    go = not bad
                    why = f"{', '.join(bad)} did not succeed" if bad else None
                changed = True
                if not go:
                    tx.execute(
                        "UPDATE jobs SET status = 'skipped', reason = ?, finished_at = ? WHERE id = ?",
                        (why, now(), j["id"]),
                    )
                    record_event(
                        tx,
                        "job.skipped",
                        "sluice",
                        f"{j['name']} skipped: {why}",
                        run_id=run["id"],
                        job_id=j["id"],
                    )
                    bump(j["base"], "pending", "skipped")
                    j["status"] = "skipped"
                    continue
                hold = spec.get("hold")
                if hold is not None and not j["released_by"]:
                    deadline = now() + hold["timeout"] if hold.get("timeout") else None
                    prompt = hold.get("prompt") or "waiting for release"
                    tx.execute(
                        "UPDATE jobs SET status = 'held', reason = ?, hold_deadline = ? WHERE id = ?",
                        (prompt, deadline, j["id"]),
                    )
                    record_event(
                        tx,
                        "job.held",
                        "sluice",
                        f"{j['name']} on hold: {prompt}",
                        run_id=run["id"],
                        job_id=j["id"],
                    )
                    bump(j["base"], "pending", "held")
                    j["status"] = "held"
                    if deadline is not None:
                        self._deadline = None
                    continue
                new_status = self._ready(tx, run, plan, j, spec)
                bump(j["base"], "pending", new_status)
                j["status"] = new_status

    # ------------------------------------------------------------ a job becomes ready

    def _ready(
        self, tx: Tx, run: dict[str, Any], plan: dict[str, Any], j: dict[str, Any], spec: dict[str, Any]
    ) -> str:
        """Move a ready job on: behind its concurrency group, into a child run, or to the agents."""
        group = spec.get("group")
        if group or spec.get("trigger") or spec.get("run_on_all_agents"):
            self._flush_waits(tx)  # what reads the jobs table sees the jobs made ready before
        if group:
            blocker = groups.admit(tx, run["id"], group, spec.get("concurrency") or 1)
            if blocker is not None:
                tx.execute(
                    "UPDATE jobs SET status = 'waiting', gate = 'group', reason = ? WHERE id = ?",
                    (f"waiting: group {group} (behind run #{blocker})", j["id"]),
                )
                return "waiting"
        return self._go(tx, run, plan, j, spec)

    def _go(
        self, tx: Tx, run: dict[str, Any], plan: dict[str, Any], j: dict[str, Any], spec: dict[str, Any]
    ) -> str:
        frozen = None
        if not run.get("break_glass"):  # a run started with break glass is not held back
            frozen = next((f for f in self.frozen() if f.covers(run["kind"], run["target"])), None)
        if frozen is not None:  # before a trigger starts a child run (refused while frozen) or a fan-out
            tx.execute(
                "UPDATE jobs SET status = 'waiting', gate = 'freeze', reason = ? WHERE id = ?",
                (windows.describe_freeze(self.definitions, frozen), j["id"]),
            )
            return "waiting"
        if spec.get("run_on_all_agents") and j["copy_key"] is None:
            return self._fan_out_to_agents(tx, run, plan, j, spec)
        if spec.get("trigger"):
            status, child = triggers.start_child(self.service, tx, run, plan, j, spec)
            if child is not None:
                self.dirty.add(child)
                self.wake()
            return status
        target = run["target"]
        paused = self._paused.get(target)
        if paused is None:  # read once per look at a run: a 2,000-way fan-out asks once, not 2,000 times
            paused = self._paused[target] = run["kind"] == "workflow" and bool(
                (gates.workflow_state(tx, target) or {}).get("paused")
            )
        if paused:
            why = "paused"
        else:
            rows = self._agent_rows(tx)
            pool = [a for a in rows if a["name"] == j["copy_key"]] if spec.get("run_on_all_agents") else rows
            why = describe_wait(pool, plan, spec)
            self.new_waiting = True
        self._waits.setdefault(why, []).append(j["id"])  # written by _flush_waits, one UPDATE a reason
        return "waiting"

    def _flush_waits(self, tx: Tx) -> None:
        """The jobs made ready since the last flush, now `waiting` for an agent: one UPDATE per
        reason (and per 500 jobs), not one per job; a 2,000-way fan-out reached its agents
        0.65 s after its run was created on PostgreSQL, one UPDATE at a time."""
        waits, self._waits = self._waits, {}
        for why, ids in waits.items():
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                tx.execute(
                    f"UPDATE jobs SET status = 'waiting', gate = NULL, reason = ? WHERE id IN ({','.join('?' * len(part))})",
                    (why, *part),
                )

    def _agent_rows(self, tx: Tx | None = None) -> list[dict[str, Any]]:
        """The agents, read once per tick."""
        if self.agent_cache is None:
            self.agent_cache = agent_rows(tx or self.db)
        return self.agent_cache

    def _fan_out_to_agents(
        self, tx: Tx, run: dict[str, Any], plan: dict[str, Any], j: dict[str, Any], spec: dict[str, Any]
    ) -> str:
        """run_on_all_agents: one copy per matching enabled agent, decided now; none matching fails."""
        rows = [
            dict(a, environments=loads(a["environments"], []), resources=loads(a["resources"], []))
            for a in tx.all("SELECT * FROM agents WHERE enabled = 1 AND lost = 0 ORDER BY name")
        ]
        chosen = [a["name"] for a in rows if matches(a, plan, spec)]
        if not chosen:
            why = describe_wait(rows, plan, spec) + " (run_on_all_agents)"
            tx.execute(
                "UPDATE jobs SET status = 'failed', reason = ?, finished_at = ? WHERE id = ?",
                (why, now(), j["id"]),
            )
            record_event(
                tx, "job.failed", "sluice", f"{j['name']} failed: {why}", run_id=run["id"], job_id=j["id"]
            )
            return "failed"
        first, rest = chosen[0], chosen[1:]
        tx.execute(
            "UPDATE jobs SET name = ?, copy_key = ?, only_agent = ? WHERE id = ?",
            (f"{j['base']}[{first}]", first, first, j["id"]),
        )
        for name in rest:
            tx.insert(
                "jobs",
                {
                    "run_id": run["id"],
                    "name": f"{j['base']}[{name}]",
                    "base": j["base"],
                    "position": j["position"],
                    "copy_key": name,
                    "only_agent": name,
                    "resources": j.get("resources"),
                    "status": "pending",
                    "attempt": 0,
                    "outputs": "{}",
                    "claim_token": 0,
                    "group_name": j["group_name"],
                },
            )
        for copy in tx.all(
            "SELECT * FROM jobs WHERE run_id = ? AND base = ? AND status = 'pending'", (run["id"], j["base"])
        ):
            self._go(tx, run, plan, copy, spec)
        j["copy_key"] = first
        return "waiting"

    def recheck_groups(self) -> None:
        """Jobs waiting behind a concurrency group: let in those whose turn has come, in run order."""
        gated = self.db.all(
            "SELECT id FROM jobs WHERE status = 'waiting' AND gate = 'group' ORDER BY run_id, position"
        )
        if not gated:
            return
        with self.db.write() as tx:
            for g in gated:
                j = tx.one(
                    "SELECT * FROM jobs WHERE id = ? AND status = 'waiting' AND gate = 'group'", (g["id"],)
                )
                if j is None:
                    continue
                run = tx.one("SELECT * FROM runs WHERE id = ?", (j["run_id"],))
                assert run is not None
                plan = self.plan(run)
                spec = plan["jobs"][j["base"]]
                blocker = groups.admit(tx, run["id"], j["group_name"], spec.get("concurrency") or 1)
                if blocker is None:
                    self._paused = {}
                    self._go(tx, run, plan, j, spec)
                    self._flush_waits(tx)  # the next admit counts this one in
                    self.dirty.add(run["id"])
                else:
                    why = f"waiting: group {j['group_name']} (behind run #{blocker})"
                    if why != j["reason"]:
                        tx.execute("UPDATE jobs SET reason = ? WHERE id = ?", (why, j["id"]))

    def _settle(self, tx: Tx, run: dict[str, Any]) -> None:
        plan = self.plan(run)
        grouped = any(spec.get("group") for spec in plan["jobs"].values())  # else no slot to give back
        if grouped:
            groups.release_finished(tx, run["id"])
        present: set[str] | None = None
        if sum(spec.get("parallelism") or 1 for spec in plan["jobs"].values()) <= SMALL_RUN:
            # a small run: its statuses in one statement
            present = {
                r["status"] for r in tx.all("SELECT DISTINCT status FROM jobs WHERE run_id = ?", (run["id"],))
            }

        # cheap probes on (run_id, status): a wide fan-out must not be counted on every completion
        def has(*statuses: str) -> bool:
            if present is not None:
                return bool(present & set(statuses))
            return (
                tx.one(
                    f"SELECT 1 AS x FROM jobs WHERE run_id = ? AND status IN ({_marks(statuses)}) LIMIT 1",
                    (run["id"], *statuses),
                )
                is not None
            )

        if has("running", "waiting"):
            status = "running"
        elif has("held"):
            status = "on_hold"
        elif has("pending"):
            status = "pending" if run["started_at"] is None else "running"
        else:
            statuses = present
            if statuses is None:
                statuses = {
                    r["status"]
                    for r in tx.all("SELECT DISTINCT status FROM jobs WHERE run_id = ?", (run["id"],))
                }
            if run["cancel_requested"] and "cancelled" in statuses:
                status = "cancelled"
            elif statuses & set(FAILED):
                status = "failed"
            elif "cancelled" in statuses:
                status = "cancelled"
            else:
                status = "succeeded"
            tx.execute("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", (status, now(), run["id"]))
            gates.after_run_finished(tx, run, status, self.plan(run).get("lock", "none"))
            record_event(
                tx,
                f"run.{status}",
                "sluice",
                f"run #{run['id']} of {run['target']} {status}",
                run_id=run["id"],
                workflow=run["target"] if run["kind"] == "workflow" else None,
            )
            if grouped:
                groups.release_all(tx, run["id"])
            if status == "succeeded":
                downstream = upstream.on_success(self.service, tx, run)
                if downstream:
                    self.dirty.update(downstream)
                    self.wake()
            parent = triggers.child_finished(tx, run, status)
            if parent is not None:
                self.dirty.add(parent)
                self.wake()
            self.plans.pop(run["id"], None)
            return
        if status != run["status"]:
            tx.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run["id"]))

    # ------------------------------------------------------------ dispatch

    @property
    def busy(self) -> bool:
        return any(a.runners for a in self.agents)

    @property
    def draining(self) -> bool:
        return all(a.draining for a in self.agents)

    @draining.setter
    def draining(self, value: bool) -> None:
        for a in self.agents:
            a.draining = value

    def runner(self, job_id: int) -> JobRunner | None:
        for a in self.agents:
            r = a.runners.get(job_id)
            if r is not None:
                return r
        return None

    def start_agents(self) -> None:
        """Each of our agents claims and reports in its own thread, woken by dispatch() and by its jobs."""
        for agent in self.agents:
            threading.Thread(
                target=agent.loop, args=(self.agent_stop, self.plan), name=f"agent-{agent.name}", daemon=True
            ).start()

    def stop_agents(self) -> None:
        self.agent_stop.set()
        for agent in self.agents:
            agent.kick.set()

    def dispatch(self) -> None:
        """Jobs became ready: our own agents are woken to claim them, others (other processes, hosts)
        are poked. The words on waiting jobs are rewritten only when what they say may have changed
        (agents, pauses), not per job per tick."""
        if self.new_waiting:
            self.new_waiting = False
            for agent in self.agents:
                agent.kick.set()
            mine = {a.name for a in self.agents}
            others = [
                a["name"]
                for a in self._agent_rows()
                if a["name"] not in mine and a["enabled"] and not a["lost"]
            ]
            if others:
                poke_agents(self.db, others)
        t = now()
        if not self.reasons_stale and t - self.reasons_at < REASON_REFRESH:
            return
        rows = self._agent_rows()
        seen = [(a["name"], a["enabled"], a["lost"], a["environments"], a["resources"]) for a in rows]
        if seen == self.agents_seen and not self.reasons_stale:
            self.reasons_at = t
            return
        self._describe_waiting(rows)
        self.agents_seen, self.reasons_stale, self.reasons_at = seen, False, t

    def _describe_waiting(self, rows: list[dict[str, Any]]) -> None:
        """Say why the waiting jobs wait, one statement per kind of job (environment, resources, pin)."""
        paused = (
            "EXISTS (SELECT 1 FROM workflow_states ws WHERE r.kind = 'workflow' AND ws.workflow = r.target "
            "AND ws.paused = 1)"
        )
        kinds = self.db.all(
            "SELECT DISTINCT r.environment, j.resources, j.only_agent, "
            f"CASE WHEN {paused} THEN 1 ELSE 0 END AS paused FROM jobs j JOIN runs r ON r.id = j.run_id "
            "WHERE j.status = 'waiting' AND j.gate IS NULL"
        )
        if not kinds:
            return
        with self.db.write() as tx:
            for k in kinds:
                if k["paused"]:
                    why = "paused"
                else:
                    pool = [a for a in rows if a["name"] == k["only_agent"]] if k["only_agent"] else rows
                    spec = {"resources": loads(k["resources"], [])}
                    why = describe_wait(pool, {"environment": k["environment"]}, spec)
                tx.execute(
                    "UPDATE jobs SET reason = ? WHERE status = 'waiting' AND gate IS NULL "
                    "AND COALESCE(reason, '') <> ? AND COALESCE(reason, '') NOT LIKE 'retry %' "
                    "AND COALESCE(resources, '') = ? AND COALESCE(only_agent, '') = ? "
                    f"AND run_id IN (SELECT r.id FROM runs r WHERE COALESCE(r.environment, '') = ? "
                    f"AND {'' if k['paused'] else 'NOT '}{paused})",
                    (why, why, k["resources"] or "", k["only_agent"] or "", k["environment"] or ""),
                )

    def check_agents(self) -> None:
        """Agents whose heartbeat stopped are lost; their jobs fail with `agent lost` (retry applies),
        but only once their processes cannot run on beside a retry (SPEC 9): on this host the engine
        kills them and waits until they are gone; elsewhere it waits until the agent, cut off that
        long, must have killed them itself (twice its timeout after its last heartbeat)."""
        t = now()
        timeout = agent_timeout()
        if self.store_ok_since is not None and t - self.store_ok_since < timeout:
            return  # we could not write a moment ago either: give the agents time to beat first
        limit = t - timeout
        for a in self.db.all("SELECT name FROM agents WHERE lost = 0 AND heartbeat_at < ?", (limit,)):
            with self.db.write() as tx:
                if not tx.execute(
                    "UPDATE agents SET lost = 1 WHERE name = ? AND lost = 0 AND heartbeat_at < ?",
                    (a["name"], limit),
                ):
                    continue
                record_event(
                    tx,
                    "agent.lost",
                    "sluice",
                    f"agent {a['name']} lost: no heartbeat for {timeout:.0f}s",
                )
        lost = self.db.all(
            "SELECT j.id, j.agent, j.pid, j.proc_start, j.claim_token, a.host, a.heartbeat_at FROM jobs j "
            "JOIN agents a ON a.name = j.agent WHERE j.status = 'running' AND a.lost = 1 ORDER BY j.id"
        )
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for j in lost:
            by_agent.setdefault(j["agent"], []).append(j)
        here = identity.host()
        for name, jobs in by_agent.items():
            gone = False
            if jobs[0]["host"] == here:
                gone = kill_jobs(
                    {j["id"] for j in jobs},
                    {name},
                    store_id(self.db.url),
                    [(j["pid"], j["proc_start"]) for j in jobs if j["pid"]],
                    wait=LOST_KILL_WAIT,
                )
            if not gone and jobs[0]["heartbeat_at"] > t - 2 * timeout:
                self._note_waiting(jobs, name)
                continue  # not known to be gone yet: the retry waits
            self._give_up(name, jobs)

    def _note_waiting(self, jobs: list[dict[str, Any]], agent: str) -> None:
        why = f"agent {agent} lost: waiting until its processes have stopped"
        with self.db.write() as tx:
            for j in jobs:
                tx.execute(
                    "UPDATE jobs SET reason = ? WHERE id = ? AND status = 'running' AND claim_token = ? "
                    "AND (reason IS NULL OR reason <> ?)",
                    (why, j["id"], j["claim_token"], why),
                )

    def _give_up(self, agent: str, lost: list[dict[str, Any]]) -> None:
        """The lost agent's job processes are gone (or must be): fail or retry its jobs."""
        with self.db.write() as tx:
            for old in lost:
                j = tx.one(
                    "SELECT * FROM jobs WHERE id = ? AND status = 'running' AND claim_token = ?"
                    + tx.for_update,
                    (old["id"], old["claim_token"]),
                )
                if j is None:
                    continue  # the agent came back and reported it meanwhile
                run = tx.one("SELECT * FROM runs WHERE id = ?", (j["run_id"],))
                assert run is not None
                retry = self.plan(run)["jobs"][j["base"]].get("retry") or {}
                if retry and j["attempt"] <= int(retry.get("limit") or 0) and not retry.get("exit_codes"):
                    tx.execute(
                        "UPDATE jobs SET status = 'waiting', agent = NULL, pid = NULL, reason = ? "
                        "WHERE id = ? AND status = 'running' AND claim_token = ?",
                        (
                            f"retry {j['attempt']} of {retry['limit']} after agent lost",
                            j["id"],
                            j["claim_token"],
                        ),
                    )
                    record_event(
                        tx,
                        "job.retry",
                        "sluice",
                        f"{j['name']}: agent {agent} lost; retrying",
                        run_id=j["run_id"],
                        job_id=j["id"],
                    )
                else:
                    tx.execute(
                        "UPDATE jobs SET status = 'failed', reason = 'agent lost', finished_at = ?, "
                        "pid = NULL WHERE id = ? AND status = 'running' AND claim_token = ?",
                        (now(), j["id"], j["claim_token"]),
                    )
                    record_event(
                        tx,
                        "job.failed",
                        "sluice",
                        f"{j['name']} failed: agent {agent} lost",
                        run_id=j["run_id"],
                        job_id=j["id"],
                    )
                self.dirty.add(j["run_id"])

    def cancel_all(self, reason: str) -> None:
        for a in self.agents:
            for runner in list(a.runners.values()):
                runner.cancel(reason)
