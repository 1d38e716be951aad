"""The scheduler: moves jobs through the DAG, finishes runs, dispatches ready jobs to agents.

Each tick looks only at active runs (independent of history, SPEC 12 P5) and re-evaluates
the runs that changed since the last tick.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .. import gates, holds, queueing
from ..agents.procs import same_process, signal_group
from ..agents.runner import JobRunner
from ..definitions.objects import Project
from ..service import ACTIVE_RUN, FINAL_JOB, Service, record_event
from ..store.db import Database, Tx, loads, now

FAILED = ("failed", "rejected")
# events written by other processes that change what a run should do next
EXTERNAL_EVENTS = ("run.created", "run.cancel_requested", "job.released", "job.rejected", "job.timed_out")


class Scheduler:
    def __init__(self, db: Database, project: Project, *, agent: str = "local", capacity: int | None = None,
                 wake: Any = None, service: Service | None = None):
        self.db = db
        self.service = service
        self.last_event_id = 0
        self.project = project
        self.root = project.root
        self.agent = agent
        self.capacity = capacity or project.capacity or os.cpu_count() or 1
        self.runners: dict[int, JobRunner] = {}
        self.lock = threading.Lock()
        self.dirty: set[int] = set()
        self.plans: dict[int, dict[str, Any]] = {}
        self.last_run_id = 0
        self.wake = wake or (lambda: None)
        self.draining = False

    # ------------------------------------------------------------ start-up

    def recover(self) -> int:
        """After a crash: jobs left `running` by this host's agent get a final status; none runs twice."""
        rows = self.db.all("SELECT * FROM jobs WHERE status = 'running' AND agent = ?", (self.agent,))
        for j in rows:
            if j["pid"] and same_process(j["pid"], j["proc_start"]):
                import signal

                signal_group(j["pid"], signal.SIGKILL)
            with self.db.write() as tx:
                changed = tx.execute(
                    "UPDATE jobs SET status = 'failed', reason = 'engine restarted', finished_at = ?, pid = NULL "
                    "WHERE id = ? AND status = 'running'", (now(), j["id"]))
                if changed:
                    record_event(tx, "job.failed", "sluice", f"{j['name']} failed: engine restarted",
                                 run_id=j["run_id"], job_id=j["id"])
        return len(rows)

    # ------------------------------------------------------------ the tick

    def tick(self) -> None:
        self._external_changes()
        if self.service is not None:
            for run_id in holds.expire(self.service):
                self.dirty.add(run_id)
            due = queueing.due(self.service)
            if due:
                self.service.reload_if_changed()
                queueing.execute(self.service, due, actor="sluice", trigger="schedule")
                self._external_changes()
        active = self.db.all(
            "SELECT id, status, cancel_requested FROM runs WHERE status IN ('pending', 'running', 'on_hold') "
            "ORDER BY id")
        with self.lock:
            dirty, self.dirty = self.dirty, set()
        for r in active:
            if r["id"] > self.last_run_id or r["id"] in dirty or r["cancel_requested"]:
                self.evaluate(r["id"])
        if active:
            self.last_run_id = max(self.last_run_id, active[-1]["id"])
        live = {r["id"] for r in active}
        for rid in [k for k in self.plans if k not in live]:
            del self.plans[rid]
        self.dispatch()

    def _external_changes(self) -> None:
        """Runs changed by other processes (a release, a reject, a cancel) are named in events."""
        top = self.db.scalar("SELECT MAX(id) FROM events") or 0
        if top > self.last_event_id:
            marks = ",".join("?" * len(EXTERNAL_EVENTS))
            for r in self.db.all(
                f"SELECT DISTINCT run_id FROM events WHERE id > ? AND id <= ? AND run_id IS NOT NULL "
                f"AND kind IN ({marks})", (self.last_event_id, top, *EXTERNAL_EVENTS)):
                self.dirty.add(r["run_id"])
            self.last_event_id = top

    def next_deadline(self) -> float | None:
        """The next moment something is due (a scheduled item, a hold timeout), as epoch seconds."""
        if self.service is None:
            return None
        times = [t for t in (queueing.next_due(self.service), holds.next_deadline(self.service)) if t is not None]
        return min(times) if times else None

    def mark_dirty(self, run_id: int) -> None:
        with self.lock:
            self.dirty.add(run_id)
        self.wake()

    def plan(self, run: dict[str, Any]) -> dict[str, Any]:
        p = self.plans.get(run["id"])
        if p is None:
            p = self.plans[run["id"]] = loads(run["plan"])
        return p

    def evaluate(self, run_id: int) -> None:
        with self.db.write() as tx:
            run = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
            if run is None or run["status"] not in ACTIVE_RUN:
                return
            plan = self.plan(run)
            jobs = tx.all("SELECT * FROM jobs WHERE run_id = ? ORDER BY position, id", (run_id,))
            if run["cancel_requested"]:
                self._cancel(tx, run, jobs)
            else:
                self._promote(tx, run, plan, jobs)
            self._settle(tx, run, jobs)

    def _cancel(self, tx: Tx, run: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        who = run["cancelled_by"] or "sluice"
        why = f"cancelled by {who.split('@')[0]}"
        for j in jobs:
            if j["status"] in ("pending", "waiting", "held"):
                tx.execute("UPDATE jobs SET status = 'cancelled', reason = ?, finished_at = ? WHERE id = ?",
                           (why, now(), j["id"]))
                j["status"], j["reason"] = "cancelled", why
            elif j["status"] == "running":
                runner = self.runners.get(j["id"])
                if runner is not None:
                    runner.cancel(why)

    def _promote(self, tx: Tx, run: dict[str, Any], plan: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        by_base: dict[str, list[dict[str, Any]]] = {}
        for j in jobs:
            by_base.setdefault(j["base"], []).append(j)
        failed_bases = {b for b, js in by_base.items() if any(j["status"] in FAILED for j in js)}
        for j in jobs:
            if j["status"] != "pending":
                continue
            spec = plan["jobs"][j["base"]]
            needs = spec["needs"]
            need_jobs = [n for b in needs for n in by_base.get(b, [])]
            if any(n["status"] not in FINAL_JOB for n in need_jobs):
                continue
            cond = spec["if"]
            upstream_failed = bool(_ancestors(plan, j["base"]) & failed_bases)
            if cond == "always":
                go, why = True, None
            elif cond == "failure":
                go, why = upstream_failed, "no earlier job failed (if: failure)"
            else:
                bad = [n["name"] for n in need_jobs if n["status"] != "succeeded"]
                go = not bad
                why = f"{', '.join(bad)} did not succeed" if bad else None
            if not go:
                tx.execute("UPDATE jobs SET status = 'skipped', reason = ?, finished_at = ? WHERE id = ?",
                           (why, now(), j["id"]))
                record_event(tx, "job.skipped", "sluice", f"{j['name']} skipped: {why}", run_id=run["id"],
                             job_id=j["id"])
                j["status"], j["reason"] = "skipped", why
                continue
            hold = spec.get("hold")
            if hold is not None and not j["released_by"]:
                deadline = now() + hold["timeout"] if hold.get("timeout") else None
                prompt = hold.get("prompt") or "waiting for release"
                tx.execute("UPDATE jobs SET status = 'held', reason = ?, hold_deadline = ? WHERE id = ?",
                           (prompt, deadline, j["id"]))
                record_event(tx, "job.held", "sluice", f"{j['name']} on hold: {prompt}", run_id=run["id"],
                             job_id=j["id"])
                j["status"], j["reason"] = "held", prompt
                continue
            paused = run["kind"] == "workflow" and bool((gates.workflow_state(tx, run["target"]) or {}).get("paused"))
            why = "paused" if paused else "waiting for an agent"
            tx.execute("UPDATE jobs SET status = 'waiting', reason = ? WHERE id = ?", (why, j["id"]))
            j["status"], j["reason"] = "waiting", why

    def _settle(self, tx: Tx, run: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        statuses = [j["status"] for j in jobs]
        if all(s in FINAL_JOB for s in statuses):
            if run["cancel_requested"] and "cancelled" in statuses:
                status = "cancelled"
            elif any(s in FAILED for s in statuses):
                status = "failed"
            elif "cancelled" in statuses:
                status = "cancelled"
            else:
                status = "succeeded"
            tx.execute("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", (status, now(), run["id"]))
            gates.after_run_finished(tx, run, status, self.plan(run).get("lock", "none"))
            record_event(tx, f"run.{status}", "sluice", f"run #{run['id']} of {run['target']} {status}",
                         run_id=run["id"], workflow=run["target"] if run["kind"] == "workflow" else None)
            return
        if "running" in statuses or "waiting" in statuses:
            status = "running"
        elif "held" in statuses:
            status = "on_hold"
        else:
            status = "pending" if run["started_at"] is None else "running"
        if status != run["status"]:
            tx.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run["id"]))

    # ------------------------------------------------------------ dispatch

    def free_slots(self) -> int:
        return 0 if self.draining else self.capacity - len(self.runners)

    def dispatch(self) -> None:
        free = self.free_slots()
        if free <= 0:
            return
        waiting = self.db.all(
            "SELECT j.*, r.cancel_requested FROM jobs j JOIN runs r ON r.id = j.run_id "
            "LEFT JOIN workflow_states ws ON r.kind = 'workflow' AND ws.workflow = r.target "
            "WHERE j.status = 'waiting' AND COALESCE(ws.paused, 0) = 0 "
            "ORDER BY j.run_id, j.position, j.id LIMIT ?", (free,))
        for j in waiting:
            if j["cancel_requested"]:
                continue
            t = now()
            with self.db.write() as tx:
                changed = tx.execute(
                    "UPDATE jobs SET status = 'running', agent = ?, attempt = attempt + 1, "
                    "claim_token = claim_token + 1, started_at = ?, finished_at = NULL, reason = NULL "
                    "WHERE id = ? AND status = 'waiting'", (self.agent, t, j["id"]))
                if not changed:
                    continue
                claimed = tx.one("SELECT * FROM jobs WHERE id = ?", (j["id"],))
                run = tx.one("SELECT * FROM runs WHERE id = ?", (j["run_id"],))
                assert claimed is not None and run is not None
                if run["started_at"] is None:
                    tx.execute("UPDATE runs SET started_at = ?, status = 'running' WHERE id = ?", (t, run["id"]))
                elif run["status"] != "running":
                    tx.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run["id"],))
                record_event(tx, "job.started", f"sluice@{self.agent}",
                             f"{claimed['name']} started on {self.agent}", run_id=run["id"], job_id=j["id"])
            runner = JobRunner(self.db, self.root, claimed, run, self.agent, self._done)
            self.runners[j["id"]] = runner
            runner.start()

    def _done(self, runner: JobRunner) -> None:
        with self.lock:
            self.runners.pop(runner.job["id"], None)
        self.mark_dirty(runner.run_row["id"])

    def cancel_all(self, reason: str) -> None:
        for runner in list(self.runners.values()):
            runner.cancel(reason)


def _ancestors(plan: dict[str, Any], base: str) -> set[str]:
    seen: set[str] = set()
    todo = list(plan["jobs"][base]["needs"])
    while todo:
        b = todo.pop()
        if b not in seen:
            seen.add(b)
            todo.extend(plan["jobs"][b]["needs"])
    return seen


