"""The use cases both faces call: the CLI and the dashboard hold no SQL or rules of their own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import chain, gates, identity, wake, windows
from .definitions import DefinitionError, InputError, load_project, masked, validate_inputs
from .definitions.inputs import SECRET_MASK
from .definitions.loader import did_you_mean
from .definitions.objects import InputSpec, Method, Project, Workflow
from .errors import Invalid, NotFound, Refused
from .plan import method_plan, secret_names, spec_from, workflow_plan
from .shapes import EventView, JobView, Plan, RunView
from .statuses import FINAL_JOB, FINAL_RUN
from .store.db import Database, Tx, dumps, loads, now, resolve_url
from .times import agent_timeout, beat_interval, iso, lease_seconds, next_fire


def record_event(
    tx: Tx,
    kind: str,
    actor: str,
    message: str = "",
    *,
    run_id: int | None = None,
    job_id: int | None = None,
    item_id: int | None = None,
    workflow: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    record_events(
        tx,
        [
            {
                "actor": actor,
                "kind": kind,
                "message": message,
                "run_id": run_id,
                "job_id": job_id,
                "item_id": item_id,
                "workflow": workflow,
                "details": details,
            }
        ],
    )


def engine_state(lease: Mapping[str, Any] | None, t: float) -> dict[str, Any]:
    """The engine as the dashboard's header says it, from the scheduler lease (the engine's
    heartbeat: it renews the lease every `beat_interval()`, to `lease_seconds()` ahead).

    `state` is one of: `up`; `late` (the last beat is older than one interval and a missed one,
    but the lease still runs); `down` (the lease ran out: the engine died or cannot reach the
    store); `stopped` (the engine gave the lease up as it stopped); `never` (no engine ever took
    it). `beat_age`: seconds since the last beat, when that is known. The lease stores only when
    it expires, so the beat is that less the lease's length (the same SLUICE_LEASE_SECONDS the
    engine reads)."""
    if lease is None:
        return {"state": "never", "up": False, "holder": None, "host": None, "beat_age": None}
    holder = lease["holder"]
    out: dict[str, Any] = {"holder": holder, "host": holder.split(":")[0] or None}
    if lease["expires_at"] <= 0:  # Lease.release: a clean stop
        return {**out, "state": "stopped", "up": False, "beat_age": None}
    age = max(0.0, t - (lease["expires_at"] - lease_seconds()))
    if lease["expires_at"] <= t:
        state = "down"
    elif age > 2 * beat_interval():  # one beat missed, and the next one overdue
        state = "late"
    else:
        state = "up"
    return {**out, "state": state, "up": state != "down", "beat_age": age}


def record_events(tx: Tx, events: list[dict[str, Any]]) -> None:
    """Several events in one round trip: each a dict of record_event's arguments."""
    t = now()
    tx.insert_many(
        "events",
        [
            {
                "at": t,
                "actor": e["actor"],
                "kind": e["kind"],
                "run_id": e.get("run_id"),
                "job_id": e.get("job_id"),
                "item_id": e.get("item_id"),
                "workflow": e.get("workflow"),
                "message": e.get("message", ""),
                "details": dumps(e.get("details") or {}),
            }
            for e in events
        ],
    )


def create_run(
    tx: Tx,
    plan: Plan,
    inputs: dict[str, Any],
    *,
    trigger: str,
    actor: str,
    parent_run_id: int | None = None,
    parent_job_id: int | None = None,
    queue_item_id: int | None = None,
    pins: dict[str, str] | None = None,
    rerun_of: int | None = None,
    carry: Mapping[str, list[dict[str, Any]]] | None = None,
) -> int:
    """Insert a run, its materials and its jobs (pending) in the caller's transaction.

    `carry` (run rerun --failed): for a job's name, the rows of the run `rerun_of` whose
    results this run takes over: those jobs start out succeeded, with their outputs."""
    from .materials import resolve

    t = now()
    mats = resolve(tx, plan, pins)  # raises Invalid (nothing created) for an unknown pinned revision
    stamps = [m["timestamp"] for m in mats if m["timestamp"] is not None]
    run_id = tx.insert(
        "runs",
        {
            "kind": plan["kind"],
            "target": plan["name"],
            "status": "pending",
            "trigger": trigger,
            "created_by": actor,
            "created_at": t,
            "inputs": dumps(inputs),
            "plan": dumps(plan),
            "parent_run_id": parent_run_id,
            "parent_job_id": parent_job_id,
            "queue_item_id": queue_item_id,
            "cancel_requested": 0,
            "natural_at": min(stamps) if stamps else t,
            "environment": plan.get("environment"),
            "rerun_of": rerun_of,
        },
    )
    for m in mats:
        tx.insert("materials", {"run_id": run_id, **m})
    rows = []
    carried = []
    for name, job in plan["jobs"].items():
        if carry and name in carry:
            carried += [_carried(run_id, old, rerun_of, t) for old in carry[name]]
            continue
        n = job.get("parallelism") or 1
        resources = sorted(job.get("resources") or [])
        for i in range(n):
            rows.append(
                {
                    "run_id": run_id,
                    "name": f"{name}[{i}]" if n > 1 else name,
                    "base": name,
                    "position": job["position"],
                    "copy_key": str(i) if n > 1 else None,
                    "status": "pending",
                    "attempt": 0,
                    "outputs": "{}",
                    "claim_token": 0,
                    "group_name": job.get("group"),
                    "resources": dumps(resources) if resources else None,
                }
            )
    tx.insert_many("jobs", rows)
    tx.insert_many("jobs", carried)
    shown = masked({k: spec_from(v) for k, v in plan["inputs"].items()}, inputs)
    record_event(
        tx,
        "run.created",
        actor,
        f"run #{run_id} of {plan['name']} created ({trigger})",
        run_id=run_id,
        workflow=plan["name"] if plan["kind"] == "workflow" else None,
        details={
            "trigger": trigger,
            "inputs": shown,
            **({"materials": {m["name"]: m["revision"] for m in mats}} if mats else {}),
            **({"rerun_of": rerun_of} if rerun_of else {}),
            **({"carried_over": sorted(carry)} if carry else {}),
        },
    )
    return run_id


def broke_glass(
    tx: Tx, actor: str, reason: str, run_id: int, bypassed: str, job_id: int | None = None
) -> None:
    """An override in an emergency: marked on the run (or the job) and recorded as `break_glass`."""
    if job_id is None:
        tx.execute("UPDATE runs SET break_glass = ? WHERE id = ?", (reason, run_id))
    else:
        tx.execute("UPDATE jobs SET break_glass = ? WHERE id = ?", (reason, job_id))
    record_event(
        tx,
        "break_glass",
        actor,
        f"break glass on run #{run_id}: {reason} (overrode: {bypassed})",
        run_id=run_id,
        job_id=job_id,
        details={"reason": reason, "overrode": bypassed},
    )


def _carried(run_id: int, old: dict[str, Any], rerun_of: int | None, t: float) -> dict[str, Any]:
    """A job of the repeated run that succeeded, taken over as it ended (outputs, release)."""
    keep = ("name", "base", "position", "copy_key", "only_agent", "resources", "group_name", "agent")
    return {
        **{k: old[k] for k in keep},
        "run_id": run_id,
        "status": "succeeded",
        "reason": f"carried over from run #{rerun_of}",
        "exit_code": old["exit_code"],
        "outputs": old["outputs"],
        "released_by": old["released_by"],
        "released_at": old["released_at"],
        "comment": old["comment"],
        "fields": old["fields"],
        "attempt": 0,
        "claim_token": 0,
        "finished_at": t,
    }


@dataclass
class Service:
    project: Project
    db: Database

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: Path | None = None) -> Service:
        """Load and validate the project, open its database at the current schema."""
        project = load_project(root)
        identity.trust_sluice_user(project.trust_sluice_user)  # SLUICE_USER counts only where trusted
        db = Database(resolve_url(project.database, project.root), notifier=wake.poke)
        db.ensure_schema()
        return cls(project, db)

    def reload_if_changed(self) -> None:
        """Reload the definitions when a YAML file changed (the engine runs for days)."""
        stamp = _definitions_stamp(self.project.root)
        if stamp != getattr(self, "_stamp", None):
            try:
                self.project = load_project(self.project.root)
            except DefinitionError:
                return  # keep the last good definitions; `sluice validate` tells the user
            self._stamp = stamp

    @property
    def url(self) -> str:
        return self.db.url

    def poke(self) -> None:
        self.db.notify()

    # ------------------------------------------------------------ definitions

    def workflow(self, name: str) -> Workflow:
        wf = self.project.workflows.get(name)
        if wf is None:
            raise NotFound(f"no workflow '{name}'{did_you_mean(name, self.project.workflows)}")
        return wf

    def method(self, model: str, method: str) -> Method:
        m = self.project.models.get(model)
        if m is None:
            raise NotFound(f"no model '{model}'{did_you_mean(model, self.project.models)}")
        meth = m.methods.get(method)
        if meth is None:
            raise NotFound(f"model {model} has no method '{method}'{did_you_mean(method, m.methods)}")
        return meth

    def list_workflows(self) -> list[dict[str, Any]]:
        last = {
            r["target"]: r
            for r in self.db.all(
                "SELECT r.target, r.id, r.status, r.created_at FROM runs r JOIN "
                "(SELECT target, MAX(id) AS id FROM runs WHERE kind = 'workflow' GROUP BY target) m ON m.id = r.id"
            )
        }
        out = []
        for wf in self.project.workflows.values():
            lr = last.get(wf.name)
            out.append(
                {
                    "name": wf.name,
                    "description": wf.description,
                    "environment": wf.environment,
                    "lock": wf.lock,
                    "timer": wf.timer.cron if wf.timer else None,
                    "jobs": list(wf.jobs),
                    "inputs": {k: _input_view(v) for k, v in wf.inputs.items()},
                    "last_run": {"id": lr["id"], "status": lr["status"]} if lr else None,
                }
            )
        return out

    def list_methods(self) -> list[dict[str, Any]]:
        return [
            {
                "model": m.name,
                "method": meth.name,
                "target": meth.target,
                "description": meth.description,
                "inputs": {k: _input_view(v) for k, v in meth.inputs.items()},
            }
            for m in self.project.models.values()
            for meth in m.methods.values()
        ]

    # ------------------------------------------------------------ starting runs

    def _validated(self, specs: Mapping[str, InputSpec], given: dict[str, Any]) -> dict[str, Any]:
        try:
            return validate_inputs(specs, given)
        except InputError as e:
            raise Invalid(str(e)) from None

    def run_workflow(
        self,
        name: str,
        inputs: dict[str, Any],
        *,
        trigger: str = "manual",
        actor: str | None = None,
        pins: dict[str, str] | None = None,
        break_glass: str | None = None,
    ) -> int:
        """Start a run now. `break_glass` (a reason) overrides a closed window or a freeze, for the
        members of sluice.yaml's break_glass group; each use is recorded."""
        from .materials import check_pins

        actor = actor or identity.actor()
        wf = self.workflow(name)
        values = self._validated(wf.inputs, inputs)
        plan = workflow_plan(self.project, wf)
        check_pins(plan, pins or {})
        glass = (
            windows.check_break_glass(self.project, actor, break_glass) if break_glass is not None else None
        )
        with self.db.write() as tx:
            reason = gates.refusal(tx, wf.name, wf.lock)
            if reason:
                raise Refused(reason)
            closed = windows.closure(self.project, tx, "workflow", wf.name)
            if closed is not None and glass is None:
                raise Refused(closed.message)
            run_id = create_run(tx, plan, values, trigger=trigger, actor=actor, pins=pins)
            if closed is not None and glass is not None:
                broke_glass(tx, actor, glass, run_id, closed.message)
        self.poke()
        return run_id

    def run_method(
        self,
        model: str,
        method: str,
        inputs: dict[str, Any],
        *,
        trigger: str = "manual",
        actor: str | None = None,
        break_glass: str | None = None,
    ) -> int:
        actor = actor or identity.actor()
        meth = self.method(model, method)
        values = self._validated(meth.inputs, inputs)
        glass = (
            windows.check_break_glass(self.project, actor, break_glass) if break_glass is not None else None
        )
        with self.db.write() as tx:
            closed = windows.closure(self.project, tx, "method", meth.target)
            if closed is not None and glass is None:
                raise Refused(closed.message)
            run_id = create_run(tx, method_plan(meth), values, trigger=trigger, actor=actor)
            if closed is not None and glass is not None:
                broke_glass(tx, actor, glass, run_id, closed.message)
        self.poke()
        return run_id

    def cancel_run(self, run_id: int, actor: str | None = None) -> RunView:
        actor = actor or identity.actor()
        with self.db.write() as tx:
            # locked while we decide: a run that ends meanwhile is refused as ended, not cancelled
            run = tx.one(f"SELECT id, status, target FROM runs WHERE id = ?{tx.for_update}", (run_id,))
            if run is None:
                raise NotFound(f"no run #{run_id}")
            if run["status"] in FINAL_RUN:
                raise Refused(f"run #{run_id} already {run['status']}")
            tx.execute("UPDATE runs SET cancel_requested = 1, cancelled_by = ? WHERE id = ?", (actor, run_id))
            record_event(
                tx, "run.cancel_requested", actor, f"cancel of run #{run_id} requested", run_id=run_id
            )
        self.poke()
        return self.run_view(run_id)

    # ------------------------------------------------------------ reading

    def run_row(self, run_id: int) -> dict[str, Any]:
        run = self.db.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if run is None:
            raise NotFound(f"no run #{run_id}")
        return run

    def run_view(self, run_id: int) -> RunView:
        run = self.run_row(run_id)
        jobs = self.db.all("SELECT * FROM jobs WHERE run_id = ? ORDER BY position, id", (run_id,))
        mats = self.db.all(
            "SELECT name, revision, timestamp FROM materials WHERE run_id = ? ORDER BY name", (run_id,)
        )
        return run_view(run, jobs, mats, approvals_of(self.db, [run_id]))

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        order: str = "schedule",
        limit: int = 50,
    ) -> list[RunView]:
        where, params = [], []
        if workflow:
            where.append("target = ?")
            params.append(workflow)
        if status:
            where.append("status = ?")
            params.append(status)
        _check_limit(limit)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        key = "natural_at DESC, id DESC" if order == "natural" else "id DESC"
        runs = self.db.all(f"SELECT * FROM runs {clause} ORDER BY {key} LIMIT ?", (*params, limit))
        if not runs:
            return []
        ids = [r["id"] for r in runs]
        marks = ",".join("?" * len(ids))
        jobs: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for j in self.db.all(f"SELECT * FROM jobs WHERE run_id IN ({marks}) ORDER BY position, id", ids):
            jobs[j["run_id"]].append(j)
        mats: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for m in self.db.all(f"SELECT * FROM materials WHERE run_id IN ({marks}) ORDER BY name", ids):
            mats[m["run_id"]].append(m)
        approvals = approvals_of(self.db, ids)
        return [run_view(r, jobs[r["id"]], mats[r["id"]], approvals) for r in runs]

    def runs_window(
        self,
        *,
        text: str | None = None,
        order: str = "schedule",
        limit: int = 500,
        workflow: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest `limit` runs matching `text` (target, trigger, user or status), and how many match."""
        where, params = [], []
        if text:
            where.append(
                "(target LIKE ? OR status LIKE ? OR trigger LIKE ? OR created_by LIKE ? OR CAST(id AS TEXT) = ?)"
            )
            like = f"%{text}%"
            params += [like, like, like, like, text.lstrip("#")]
        if workflow:
            where.append("target = ?")
            params.append(workflow)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        total = int(self.db.scalar(f"SELECT COUNT(*) FROM runs {clause}", params) or 0)
        key = "natural_at DESC, id DESC" if order == "natural" else "id DESC"
        runs = self.db.all(
            f"SELECT id, kind, target, status, trigger, created_by, created_at, finished_at "
            f"FROM runs {clause} ORDER BY {key} LIMIT ?",
            (*params, limit),
        )
        if runs:
            ids = [r["id"] for r in runs]
            held: dict[int, list[str]] = {}
            marks = ",".join("?" * len(ids))
            for j in self.db.all(
                f"SELECT run_id, name FROM jobs WHERE run_id IN ({marks}) AND status = 'held'", ids
            ):
                held.setdefault(j["run_id"], []).append(j["name"])
            whys = self._whys([r["id"] for r in runs if r["status"] not in FINAL_RUN])
            for r in runs:
                r["held"] = held.get(r["id"], [])
                r["why"] = whys.get(r["id"])
                r["created_at"], r["finished_at"] = iso(r["created_at"]), iso(r["finished_at"])
        return runs, total

    def _whys(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        """What each active run waits for, from its first held or waiting job: a hold (approvers,
        approvals so far, since when, until when) or the waiting job's reason (an agent, a group,
        a pause, a freeze)."""
        if not run_ids:
            return {}
        marks = _marks(run_ids)
        out: dict[int, dict[str, Any]] = {}
        held: list[dict[str, Any]] = []
        for j in self.db.all(
            f"SELECT id, run_id, name, base, status, reason, hold_deadline FROM jobs WHERE run_id IN ({marks}) "
            "AND status IN ('held', 'waiting') ORDER BY run_id, CASE status WHEN 'held' THEN 0 ELSE 1 END, position, id",
            run_ids,
        ):
            if j["run_id"] in out:
                continue
            out[j["run_id"]] = {"kind": j["status"], "job": j["name"], "reason": j["reason"]}
            if j["status"] == "held":
                held.append(j)
        details = self._holds(held)
        for j in held:
            out[j["run_id"]].update(details[j["id"]])
        return out

    def held_whys(self, run_id: int) -> dict[str, dict[str, Any]]:
        """Each held job of the run (by name) and what it waits for, as a run's why says it for its
        first held job: approvers, approvals so far, since when, until when (the run view)."""
        held = self.db.all(
            "SELECT id, run_id, name, base, status, reason, hold_deadline FROM jobs "
            "WHERE run_id = ? AND status = 'held' ORDER BY position, id",
            (run_id,),
        )
        details = self._holds(held)
        return {
            j["name"]: {"kind": "held", "job": j["name"], "reason": j["reason"], **details[j["id"]]}
            for j in held
        }

    def _holds(self, held: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """For held jobs (rows with id, run_id, base, hold_deadline): who may release each, how many
        must, who approved so far, four-eyes, held since and until (by job id)."""
        if not held:
            return {}
        ids = sorted({j["run_id"] for j in held})
        plans = {
            r["id"]: loads(r["plan"], {})
            for r in self.db.all(f"SELECT id, plan FROM runs WHERE id IN ({_marks(ids)})", ids)
        }
        since = {
            e["job_id"]: e["at"]
            for e in self.db.all(
                f"SELECT job_id, MAX(at) AS at FROM events WHERE run_id IN ({_marks(ids)}) AND kind = 'job.held' "
                "GROUP BY job_id",
                ids,
            )
        }
        approvals = approvals_of(self.db, ids)
        out: dict[int, dict[str, Any]] = {}
        for j in held:
            hold = (plans.get(j["run_id"], {}).get("jobs", {}).get(j["base"]) or {}).get("hold") or {}
            out[j["id"]] = {
                "approvers": list(hold.get("approvers") or []),
                "needed": int(hold.get("approvals") or 1),
                "approved_by": [a["by"] for a in approvals.get(j["id"], [])],
                "four_eyes": bool(hold.get("four_eyes")),
                "since": iso(since.get(j["id"])),
                "deadline": iso(j["hold_deadline"]),
            }
        return out

    def list_agents(self) -> list[dict[str, Any]]:
        """Agents with their state: idle, busy (with what), disabled, lost, offline (not heard from
        for longer than the agent timeout, and not marked lost: its engine is down)."""
        rows = self.db.all("SELECT * FROM agents ORDER BY name")
        busy: dict[str, list[str]] = {}
        for j in self.db.all("SELECT j.agent, j.name, j.run_id FROM jobs j WHERE j.status = 'running'"):
            busy.setdefault(j["agent"], []).append(f"#{j['run_id']} {j['name']}")
        out = []
        silent = now() - agent_timeout()
        for a in rows:
            jobs = busy.get(a["name"], [])
            state = "lost" if a["lost"] else "disabled" if not a["enabled"] else "busy" if jobs else "idle"
            if state in ("idle", "busy") and (a["heartbeat_at"] or 0) < silent:
                # nobody has marked it lost (its engine is down too), but it has not been heard from
                state = "offline"
            out.append(
                {
                    "name": a["name"],
                    "host": a["host"],
                    "environments": loads(a["environments"], []),
                    "resources": loads(a["resources"], []),
                    "capacity": a["capacity"],
                    "state": state,
                    "enabled": bool(a["enabled"]),
                    "jobs": jobs,
                    "heartbeat_at": iso(a["heartbeat_at"]),
                }
            )
        return out

    def set_agent_enabled(self, name: str, enabled: bool, actor: str | None = None) -> dict[str, Any]:
        actor = actor or identity.actor()
        with self.db.write() as tx:
            row = tx.one(f"SELECT * FROM agents WHERE name = ?{tx.for_update}", (name,))
            if row is None:
                names = [r["name"] for r in tx.all("SELECT name FROM agents")]
                raise NotFound(f"no agent '{name}'{did_you_mean(name, names)}")
            if bool(row["enabled"]) == enabled:
                raise Refused(f"agent {name} is already {'enabled' if enabled else 'disabled'}")
            tx.execute("UPDATE agents SET enabled = ? WHERE name = ?", (1 if enabled else 0, name))
            verb = "enabled" if enabled else "disabled"
            record_event(tx, f"agent.{verb}", actor, f"{verb} agent {name}")
        self.poke()
        return next(a for a in self.list_agents() if a["name"] == name)

    def workflow_states(self) -> list[dict[str, Any]]:
        """Every workflow with its pause, lock holder, next timer fire and last run."""
        from . import gates

        states = {r["workflow"]: r for r in self.db.all("SELECT * FROM workflow_states")}
        windows_by_name = {w["name"]: w for w in windows.windows_view(self.project)}
        out = []
        with self.db.write() as tx:  # consistent with the lock check that gates runs
            for w in self.list_workflows():
                wf = self.project.workflows[w["name"]]
                st = states.get(wf.name) or {}
                holder = gates.lock_holder(tx, wf.name, wf.lock, st or None)
                out.append(
                    {
                        **w,
                        "paused": bool(st.get("paused")),
                        "paused_by": st.get("paused_by"),
                        "pause_reason": st.get("pause_reason"),
                        "locked_by_run": holder["id"] if holder else None,
                        "next_fire": iso(next_fire(wf.timer.cron, self.project.timezone))
                        if wf.timer
                        else None,
                        "window": windows_by_name.get(wf.window) if wf.window else None,
                    }
                )
        return out

    def job_rows(self, run_id: int) -> list[dict[str, Any]]:
        return self.db.all("SELECT * FROM jobs WHERE run_id = ? ORDER BY position, id", (run_id,))

    def log_chunks(
        self, run_id: int, *, job: str | None = None, after: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        self.run_row(run_id)
        if job is not None:
            rows = self.db.all(
                "SELECT id FROM jobs WHERE run_id = ? AND (name = ? OR base = ?)", (run_id, job, job)
            )
            if not rows:
                names = [j["name"] for j in self.job_rows(run_id)]
                raise NotFound(f"run #{run_id} has no job '{job}'{did_you_mean(job, names)}")
            ids = [r["id"] for r in rows]
            marks = ",".join("?" * len(ids))
            return self.db.all(
                "SELECT l.id, l.job_id, j.name AS job, l.stream, l.data, l.at FROM log_chunks l "
                f"JOIN jobs j ON j.id = l.job_id WHERE l.job_id IN ({marks}) AND l.id > ? ORDER BY l.id LIMIT ?",
                (*ids, after, limit),
            )
        return self.db.all(
            "SELECT l.id, l.job_id, j.name AS job, l.stream, l.data, l.at FROM log_chunks l "
            "JOIN jobs j ON j.id = l.job_id WHERE l.run_id = ? AND l.id > ? ORDER BY l.id LIMIT ?",
            (run_id, after, limit),
        )

    def history(
        self, limit: int = 50, *, run_id: int | None = None, kind: str | None = None
    ) -> list[EventView]:
        _check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self.db.all(f"SELECT * FROM events {clause}ORDER BY id DESC LIMIT ?", (*params, limit))
        return [event_view(r) for r in rows]

    def history_window(self, *, text: str | None = None, limit: int = 500) -> tuple[list[EventView], int]:
        """The newest `limit` events matching `text` (kind, actor, workflow, message, #run), and how
        many match: the dashboard's History pane."""
        where, params = "", []
        if text:
            like = f"%{text}%"
            where = (
                "WHERE (kind LIKE ? OR actor LIKE ? OR workflow LIKE ? OR message LIKE ? "
                "OR CAST(run_id AS TEXT) = ?)"
            )
            params = [like, like, like, like, text.lstrip("#")]
        total = int(self.db.scalar(f"SELECT COUNT(*) FROM events {where}", params) or 0)
        rows = self.db.all(f"SELECT * FROM events {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [event_view(r) for r in rows], total

    def overview(self) -> dict[str, Any]:
        """What the dashboard's header says: the engine up or down, how much waits on people or
        agents, what failed today, what is paused or frozen."""
        t = now()
        lease = self.db.one("SELECT holder, expires_at FROM leases WHERE name = 'scheduler'")
        counts = {
            r["status"]: int(r["n"])
            for r in self.db.all(
                "SELECT status, COUNT(*) AS n FROM jobs WHERE status IN ('held', 'waiting') GROUP BY status"
            )
        }
        failed = int(
            self.db.scalar(
                "SELECT COUNT(*) FROM runs WHERE status = 'failed' AND finished_at > ?", (t - 86400,)
            )
            or 0
        )
        paused = int(self.db.scalar("SELECT COUNT(*) FROM workflow_states WHERE paused = 1") or 0)
        return {
            "engine": engine_state(lease, t),
            "held": counts.get("held", 0),
            "waiting": counts.get("waiting", 0),
            "failed_today": failed,
            "paused": paused,
            "frozen": [
                windows.describe_freeze(self.project, f)
                for f in windows.freezes_in_force(self.project, self.db)
            ],
        }

    def verify_history(self) -> chain.Verdict:
        """Check the chained history from its first event (SPEC 14)."""
        return chain.verify(self.db)

    def export_history(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """The sealed events with their links, in chain order (after event `since`)."""
        return chain.export(self.db, since)

    def follow(
        self, run_id: int, *, poll: float = 0.1, stop_on_hold: bool = True
    ) -> Iterator[tuple[str, Any]]:
        """Yield ("log", chunk) and ("job", job_row) changes until the run finishes (or waits on a hold).

        Ends with ("run", run_view). Events come in the order they happened: a job's start
        (a "running" row, even for a job that started and ended between two polls) before its
        output, its end after it, and the starts and ends of other jobs interleaved by the
        times the store recorded. Output is read after the job rows, so a job seen ended has
        all its output read; output written after the job rows were read, or by a job whose
        start is not known yet, waits for the next poll.

        Each poll reads what changed since the last one, not the whole run (_JobWatch): the run
        row, the jobs named by the events committed since, and about once a second the reasons
        that change without an event. Output is read per job by `seq` (each job's chunks are
        written in order by one writer, a retry continuing the count), from the jobs running or
        just changed, so a chunk that commits late with a smaller id is never passed over.
        """
        import heapq
        import time

        watch = _JobWatch(self.db, run_id)
        last_seq: dict[int, int] = {}  # job id -> the last seq of its output read
        postponed: dict[int, dict[str, Any]] = {}  # rows whose start or end came after the cutoff
        seen: dict[int, tuple[str, str | None]] = {}
        shown_start: dict[int, float] = {}  # job id -> the started_at already shown
        waiting: list[dict[str, Any]] = []  # output held back for the next poll
        timed: list[tuple[float, int, int, dict[str, Any]]] = []  # (at, 0 start | 2 end, seq, row)
        starts: dict[int, float] = {}  # job id -> started_at, for starts not shown yet

        def until(at: float, rank: int) -> Iterator[tuple[str, Any]]:
            """The job events of this poll up to (at, rank), in order."""
            while timed and timed[0][:2] <= (at, rank):
                t, r, _seq, row = timed.pop(0)
                if r == 0:
                    shown_start[row["id"]] = t
                yield "job", row

        def place(c: dict[str, Any], hold_after: float | None) -> Iterator[tuple[str, Any]]:
            """Output after the job events that came before it; held back when that is not known yet."""
            job_id, at = c["job_id"], c["at"] or 0.0
            if hold_after is not None and at > hold_after:
                waiting.append(c)  # written after the job rows were read
                return
            if job_id in starts and job_id not in shown_start:
                yield from until(max(starts[job_id], at), 0)  # its start first, whatever the clocks
            if job_id not in shown_start:
                waiting.append(c)  # its job started after the job rows were read
                return
            yield from until(at, 1)
            yield "log", c

        while True:
            run = self.run_row(run_id)  # before the events: a run seen final has every job change in them
            snapshot = now()
            final = run["status"] in FINAL_RUN
            stopping = final or (stop_on_hold and run["status"] == "on_hold")
            cutoff = None if stopping else snapshot  # what happened after it is shown next poll
            fresh = watch.changed(thorough=stopping)
            again, postponed = postponed, {}
            jobs = sorted(
                {**again, **{j["id"]: j for j in fresh}}.values(), key=lambda r: (r["position"], r["id"])
            )
            timed.clear()
            later: list[dict[str, Any]] = []  # holds, waits, reasons: after everything else
            for j in jobs:
                if cutoff is not None and j["id"] not in again:
                    # a start or an end after the cutoff waits for the next poll (once), as output
                    # written after it does, so that a job's end never comes before its output
                    begin = j["started_at"] if j["status"] not in ("pending", "waiting", "held") else None
                    end = j["finished_at"] if j["status"] in FINAL_JOB else None
                    if (begin or 0.0) > cutoff or (end or 0.0) > cutoff:
                        postponed[j["id"]] = j
                        if begin is None or begin > cutoff or shown_start.get(j["id"]) == begin:
                            continue
                        j = {**j, "status": "running", "reason": None}  # its start now, its end next poll
                key = (j["status"], j["reason"])
                changed = seen.get(j["id"]) != key
                seen[j["id"]] = key
                started = j["started_at"] is not None and j["status"] not in ("pending", "waiting", "held")
                if started and shown_start.get(j["id"]) != j["started_at"]:
                    row = j if j["status"] == "running" else {**j, "status": "running", "reason": None}
                    timed.append((j["started_at"], 0, len(timed), row))
                    shown_start.pop(j["id"], None)  # a retry starts again
                    if j["status"] == "running":
                        continue
                if not changed:
                    continue
                if j["status"] in FINAL_JOB:
                    timed.append((j["finished_at"] or float("inf"), 2, len(timed), j))
                else:
                    later.append(j)
            timed.sort(key=lambda e: e[:3])
            starts.clear()
            starts.update({e[3]["id"]: e[0] for e in timed if e[1] == 0})
            held_back = sorted(waiting, key=lambda c: c["id"])
            waiting.clear()
            # output of the jobs that may have written some: running, or changed in this poll
            # (ended, retried) after having started; the others' is read once their start is
            active = {i for i, r in watch.rows.items() if r["status"] == "running"}
            active.update(j["id"] for j in fresh if j["started_at"] is not None)

            def read(active: set[int]) -> Iterator[dict[str, Any]]:
                for c in _new_chunks(self.db, {i: last_seq.get(i, 0) for i in sorted(active)}):
                    last_seq[c["job_id"]] = max(last_seq.get(c["job_id"], 0), c["seq"])
                    c["job"] = watch.rows[c["job_id"]]["name"]
                    yield c

            # what was held back goes among what is read now, by id: an output read now can be
            # older than one held back, and must not come after the end of its job
            again_ids = {c["id"] for c in held_back}
            for c in heapq.merge(held_back, read(active), key=lambda c: c["id"]):
                yield from place(c, None if c["id"] in again_ids else cutoff)
            yield from until(float("inf"), 3)
            for j in later:
                yield "job", j
            if stopping:
                for c in waiting:  # never drop output
                    yield "log", c
                yield "run", watch.final_view(run) if final else self.run_view(run_id)
                return
            time.sleep(poll)

    def wait_runs(
        self, run_ids: list[int], *, poll: float = 0.1, stop_on_hold: bool = False
    ) -> Iterator[RunView]:
        """Yield the view of each run as it finishes (or waits on a hold), until all have.

        One loop for all of them: each poll reads the events committed since the last (those
        that end a run, or hold one), then the rows of the runs they name; a slower sweep reads
        the runs that are done and were not seen so (a safety net: it returns only those)."""
        import time

        done = set(FINAL_RUN) | ({"on_hold"} if stop_on_hold else set())
        kinds = sorted({f"run.{s}" for s in FINAL_RUN} | ({"job.held"} if stop_on_hold else set()))
        left = list(dict.fromkeys(run_ids))
        cursor = self.db.event_cursor()  # before the first look: nothing committed after it is missed
        for part in _batches(left, ID_BATCH):
            found = {r["id"] for r in self.db.all(f"SELECT id FROM runs WHERE id IN ({_marks(part)})", part)}
            missing = [i for i in part if i not in found]
            if missing:
                raise NotFound(f"no run #{missing[0]}")
        look, swept = left, time.monotonic()
        while True:
            ended: list[int] = []
            for part in _batches(look, ID_BATCH):
                ended += [
                    r["id"]
                    for r in self.db.all(
                        f"SELECT id FROM runs WHERE id IN ({_marks(part)}) AND status IN ({_marks(done)})",
                        (*part, *sorted(done)),
                    )
                ]
            if ended:
                gone = set(ended)
                left = [i for i in left if i not in gone]
                yield from self._run_views(sorted(gone))
            if not left:
                return
            time.sleep(poll)
            events, cursor = self.db.events_since(
                cursor, f"kind IN ({_marks(kinds)}) AND run_id IS NOT NULL", kinds, "run_id"
            )
            named = {e["run_id"] for e in events}
            look = [i for i in left if i in named]
            if time.monotonic() - swept >= RUNS_SWEEP_EVERY:
                look, swept = left, time.monotonic()

    def _run_views(self, ids: list[int]) -> Iterator[RunView]:
        """The views of these runs, a batch of them at a time."""
        for part in _batches(ids, ID_BATCH):
            marks = _marks(part)
            runs = self.db.all(f"SELECT * FROM runs WHERE id IN ({marks}) ORDER BY id", part)
            jobs: dict[int, list[dict[str, Any]]] = {i: [] for i in part}
            for j in self.db.all(f"SELECT * FROM jobs WHERE run_id IN ({marks}) ORDER BY position, id", part):
                jobs[j["run_id"]].append(j)
            mats: dict[int, list[dict[str, Any]]] = {i: [] for i in part}
            for m in self.db.all(
                f"SELECT run_id, name, revision, timestamp FROM materials WHERE run_id IN ({marks}) ORDER BY name",
                part,
            ):
                mats[m["run_id"]].append(m)
            approvals = approvals_of(self.db, part)
            for r in runs:
                yield run_view(r, jobs[r["id"]], mats[r["id"]], approvals)

    def wait_run(self, run_id: int, *, poll: float = 0.1, stop_on_hold: bool = True) -> RunView:
        for kind, value in self.follow(run_id, poll=poll, stop_on_hold=stop_on_hold):
            if kind == "run":
                return value
        raise AssertionError("unreachable")


MAX_LIMIT = 100_000  # listings return at most this many rows
FOLLOW_BATCH = 64  # log chunks (at most 64 KiB each) read at a time while following a run
REASONS_EVERY = 1.0  # seconds between a follower's looks at the reasons that change without an event
RUNS_SWEEP_EVERY = 2.0  # seconds between wait_runs' safety sweeps over the runs it waits for
ID_BATCH = 500  # ids per `IN (…)` list
CHUNK_JOBS = 200  # jobs per query for their new output
LIVE_JOB = ("pending", "waiting", "held", "running")  # job statuses whose reason may change without an event


def _marks(items: Any) -> str:
    return ",".join("?" * len(items))


def _batches(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class _JobWatch:
    """The jobs of one run as its follower last read them, and which changed since (Service.follow).

    The first look reads every job. After it, a job's row is read again when an event committed
    since the last look names it (every status change records one), and about once a second
    (and on the last look) the counts of the live jobs by status and reason are compared with
    the rows held here: the groups that differ are read narrowly (id, status, reason) and the
    jobs that moved read in full. That catches what changes without an event of its own: a
    waiting job's reason, a pending job becoming waiting, jobs cancelled with their run, copies
    added by run_on_all_agents."""

    def __init__(self, db: Database, run_id: int) -> None:
        self.db = db
        self.run_id = run_id
        self.cursor = db.event_cursor()  # before the first read: nothing committed after it is missed
        self.rows: dict[int, dict[str, Any]] = {}
        self.moved: dict[int, dict[str, Any]] = {}  # rows changed in place by the last look (_quiet)
        self.looked: float | None = None  # monotonic time of the last look at the quiet changes

    def changed(self, *, thorough: bool = False) -> list[dict[str, Any]]:
        """The rows of the jobs that may have changed since the last call (every job the first
        time), in (position, id) order. `thorough`: also everything that changes without an event."""
        import time

        if self.looked is None:
            rows = self.db.all("SELECT * FROM jobs WHERE run_id = ? ORDER BY position, id", (self.run_id,))
            self.rows = {r["id"]: r for r in rows}
            self.looked = time.monotonic()
            return rows
        events, self.cursor = self.db.events_since(self.cursor, "run_id = ?", (self.run_id,), "job_id")
        ids = {e["job_id"] for e in events if e["job_id"] is not None}
        if (
            thorough
            or any(e["job_id"] is None for e in events)  # the run's own (cancel requested, finished)
            or time.monotonic() - self.looked >= REASONS_EVERY
        ):
            self.looked = time.monotonic()
            ids |= self._quiet(thorough)
        moved = {i: r for i, r in self.moved.items() if i not in ids}
        self.moved = {}
        rows = list(moved.values())
        for part in _batches(sorted(ids), ID_BATCH):
            rows += self.db.all(f"SELECT * FROM jobs WHERE id IN ({_marks(part)})", part)
        for r in rows:
            self.rows[r["id"]] = r
        rows.sort(key=lambda r: (r["position"], r["id"]))
        return rows

    def _quiet(self, thorough: bool) -> set[int]:
        """The jobs whose status or reason changed without an event (as far as counts can tell):
        those to read again; a job that only moved between the statuses before a start (or
        whose reason alone changed) is not read again, its row here takes the new status and
        reason (self.moved): nothing else of it changes without an event."""
        ids: set[int] = set()
        if thorough:  # jobs added without an event and ended before any look (copies of a cancelled run)
            total = int(self.db.scalar("SELECT COUNT(*) FROM jobs WHERE run_id = ?", (self.run_id,)) or 0)
            if total != len(self.rows):
                ids |= {
                    r["id"]
                    for r in self.db.all("SELECT id FROM jobs WHERE run_id = ?", (self.run_id,))
                    if r["id"] not in self.rows
                }
        counted = {
            (r["status"], r["reason"]): r["n"]
            for r in self.db.all(
                "SELECT status, COALESCE(reason, '') AS reason, COUNT(*) AS n FROM jobs "
                f"WHERE run_id = ? AND status IN ({_marks(LIVE_JOB)}) GROUP BY status, COALESCE(reason, '')",
                (self.run_id, *LIVE_JOB),
            )
        }
        mine: dict[tuple[str, str], int] = {}
        for r in self.rows.values():
            if r["status"] in LIVE_JOB:
                k = (r["status"], r["reason"] or "")
                mine[k] = mine.get(k, 0) + 1
        differ = [k for k in counted.keys() | mine.keys() if counted.get(k, 0) != mine.get(k, 0)]
        if not differ:
            return ids
        # Between two looks, jobs leave their group mostly by starting (an event says so, read
        # this poll or the next): a group that only shrank is not read, the jobs that moved are
        # found in the groups that grew. The last look (thorough) reads every group that differs,
        # and reads again the jobs that left one (cancelled with their run: no event of their own).
        now_in: dict[int, tuple[str, str]] = {}  # the members of the groups read, in the store
        present = sorted(k for k in differ if counted.get(k, 0) > (0 if thorough else mine.get(k, 0)))
        for part in _batches(present, 100):
            cond = " OR ".join("(status = ? AND COALESCE(reason, '') = ?)" for _ in part)
            for r in self.db.all(
                f"SELECT id, status, COALESCE(reason, '') AS reason FROM jobs WHERE run_id = ? AND ({cond})",
                (self.run_id, *(x for k in part for x in k)),
            ):
                now_in[r["id"]] = (r["status"], r["reason"])
        groups = set(differ)
        unstarted = ("pending", "waiting", "held")
        for i, k in now_in.items():  # moved in (or new)
            held = self.rows.get(i)
            if held is not None and (held["status"], held["reason"] or "") == k:
                continue
            if held is not None and (
                held["status"] == k[0] or (held["status"] in unstarted and k[0] in unstarted)
            ):
                self.moved[i] = {**held, "status": k[0], "reason": k[1] or None}
            else:
                ids.add(i)
        if thorough:
            for i, r in self.rows.items():  # moved out
                k = (r["status"], r["reason"] or "")
                if k in groups and now_in.get(i) != k and i not in self.moved:
                    ids.add(i)
        return ids

    def final_view(self, run: dict[str, Any]) -> RunView:
        """The finished run's view from the rows held here (each read after its job ended: a final
        job's row changes no more), instead of reading every job once more."""
        mats = self.db.all(
            "SELECT name, revision, timestamp FROM materials WHERE run_id = ? ORDER BY name", (self.run_id,)
        )
        rows = sorted(self.rows.values(), key=lambda r: (r["position"], r["id"]))
        return run_view(run, rows, mats, approvals_of(self.db, [self.run_id]))


def _new_chunks(db: Database, floors: dict[int, int]) -> Iterator[dict[str, Any]]:
    """The output of these jobs after the seq each has read (job id -> seq), in id order.

    A job's chunks are written in order by one writer, numbered by `seq`, so a job's floor moves
    only past what was read: a chunk that commits late with a smaller id than others (PostgreSQL,
    writers side by side) is read next time, never passed over. FOLLOW_BATCH chunks at a time; the
    jobs are asked CHUNK_JOBS at a time and the answers merged by id."""
    import heapq

    def pages(part: dict[int, int]) -> Iterator[dict[str, Any]]:
        while part:
            cond = " OR ".join("(job_id = ? AND seq > ?)" for _ in part)
            batch = db.all(
                f"SELECT id, job_id, seq, stream, data, at FROM log_chunks WHERE {cond} ORDER BY id LIMIT ?",
                (*(x for kv in part.items() for x in kv), FOLLOW_BATCH),
            )
            for c in batch:
                part[c["job_id"]] = max(part[c["job_id"]], c["seq"])
                yield c
            if len(batch) < FOLLOW_BATCH:
                return

    ids = list(floors)
    parts = [pages({i: floors[i] for i in part}) for part in _batches(ids, CHUNK_JOBS)]
    if len(parts) == 1:
        yield from parts[0]
    else:
        yield from heapq.merge(*parts, key=lambda c: c["id"])


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:  # SQLite reads LIMIT -5 as "no limit"
        raise Invalid(f"--limit must be between 1 and {MAX_LIMIT:,}, not {limit}")


# ---------------------------------------------------------------- JSON shapes (SPEC 10)


def _definitions_stamp(root: Path) -> tuple[float, ...]:
    stamps = []
    for pattern in ("sluice.yaml", "models/*.y*ml", "workflows/*.y*ml"):
        for p in sorted(root.glob(pattern)):
            try:
                stamps.append(p.stat().st_mtime)
            except OSError:
                pass
    return tuple(stamps)


def approvals_of(db: Database, run_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The approvals recorded for these runs' jobs (holds needing several), by job id, in order."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not run_ids:
        return out
    for a in db.all(
        f"SELECT job_id, approver, at, comment FROM approvals WHERE run_id IN ({_marks(run_ids)}) ORDER BY at, id",
        run_ids,
    ):
        out.setdefault(a["job_id"], []).append(
            {"by": a["approver"], "at": iso(a["at"]), "comment": a["comment"]}
        )
    return out


def run_view(
    run: dict[str, Any],
    jobs: list[dict[str, Any]],
    mats: list[dict[str, Any]],
    approvals: dict[int, list[dict[str, Any]]] | None = None,
) -> RunView:
    plan = loads(run["plan"], {})
    specs = {k: spec_from(v) for k, v in plan.get("inputs", {}).items()}
    secrets = run_secrets(run, plan, jobs)
    return {
        "id": run["id"],
        "kind": run["kind"],
        "target": run["target"],
        "status": run["status"],
        "trigger": run["trigger"],
        "created_by": run["created_by"],
        "created_at": iso(run["created_at"]),
        "started_at": iso(run["started_at"]),
        "finished_at": iso(run["finished_at"]),
        "inputs": masked(specs, loads(run["inputs"], {})),
        "parent_run_id": run["parent_run_id"],
        "rerun_of": run.get("rerun_of"),
        "break_glass": run.get("break_glass"),
        "materials": [
            {"name": m["name"], "revision": m["revision"], "timestamp": iso(m["timestamp"])} for m in mats
        ],
        "jobs": [job_view(j, secrets, (approvals or {}).get(j["id"], [])) for j in jobs],
    }


def run_secrets(run: dict[str, Any], plan: dict[str, Any], jobs: list[dict[str, Any]]) -> list[str]:
    """The values of a run's secret inputs and hold fields: masked wherever the run is shown."""
    names = secret_names(plan) if "jobs" in plan and "inputs" in plan else set()
    values = [v for k, v in loads(run["inputs"], {}).items() if k in names]
    for j in jobs:
        values += [v for k, v in loads(j.get("fields"), {}).items() if k in names]
    # longest first, so a secret that contains another is masked whole
    return sorted({str(v) for v in values if v not in (None, "")}, key=len, reverse=True)


def job_view(
    j: dict[str, Any], secrets: list[str] | None = None, approvals: list[dict[str, Any]] | None = None
) -> JobView:
    secrets = secrets or []
    reason = j["reason"]
    return {
        "name": j["name"],
        "status": j["status"],
        "reason": mask_text(reason, secrets) if reason else reason,
        "agent": j["agent"],
        "exit_code": j["exit_code"],
        "started_at": iso(j["started_at"]),
        "finished_at": iso(j["finished_at"]),
        "outputs": {k: mask_text(str(v), secrets) for k, v in loads(j["outputs"], {}).items()},
        "released_by": j["released_by"],
        "released_at": iso(j["released_at"]),
        "comment": j["comment"],
        "approvals": approvals or [],
        "break_glass": j.get("break_glass"),
        "fields": {k: mask_text(str(v), secrets) for k, v in loads(j.get("fields"), {}).items()},
    }


def event_view(e: dict[str, Any]) -> EventView:
    return {
        "id": e["id"],
        "at": iso(e["at"]),
        "actor": e["actor"],
        "kind": e["kind"],
        "run_id": e["run_id"],
        "job_id": e["job_id"],
        "item_id": e["item_id"],
        "workflow": e["workflow"],
        "message": e["message"],
        "details": loads(e["details"], {}),
    }


def _input_view(spec: InputSpec) -> dict[str, Any]:
    return {
        "type": spec.type,
        "required": spec.required,
        "default": None if spec.secret else spec.default,
        "enum": spec.enum,
        "pattern": spec.pattern,
        "description": spec.description,
        "secret": spec.secret,
    }


def mask_text(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, SECRET_MASK)
    return text


__all__ = ["DefinitionError", "Service", "create_run", "record_event", "secret_names"]
