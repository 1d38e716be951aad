"""An agent: registers, heartbeats, claims the jobs it may run, runs them, reports (SPEC 8).

The engine runs the agents of sluice.yaml in its own process (one `local` agent when none
are listed); `sluice agent start` runs one as its own process on any host that reaches
the database. Matching follows GoCD: environment fencing both ways, every job resource
present, enabled, alive. A claim is one conditional UPDATE, so a job is claimed once, ever.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import identity
from ..errors import Refused
from ..service import record_event
from ..store.db import Database, StoreError, dumps, loads, now
from .runner import LOG_LIMIT, JobRunner, WorkerPool

# One statement, one winner. On PostgreSQL the row is locked with SKIP LOCKED, so concurrent
# claimers pass over a job another agent is taking instead of queueing behind it.
_SET = (
    "UPDATE jobs SET status = 'running', agent = ?, attempt = attempt + 1, claim_token = claim_token + 1, "
    "started_at = ?, finished_at = NULL, reason = NULL "
)
CLAIM = {
    "sqlite": _SET + "WHERE id = ? AND status = 'waiting' AND gate IS NULL",
    "postgresql": _SET
    + "WHERE id = (SELECT id FROM jobs WHERE id = ? AND status = 'waiting' AND gate IS NULL "
    "FOR UPDATE SKIP LOCKED)",
}


def agent_timeout() -> float:
    """A heartbeat older than this marks an agent lost (and an agent cut off this long stops its jobs)."""
    return float(os.environ.get("SLUICE_AGENT_TIMEOUT", "15"))


def matches(agent: dict[str, Any], plan: dict[str, Any], spec: dict[str, Any]) -> bool:
    """GoCD's rules: a workflow in environment E runs only on agents in E; an agent in any
    environment runs only jobs of its environments; the agent has every resource the job needs."""
    env = plan.get("environment")
    envs = agent["environments"]
    if env is None and envs:
        return False
    if env is not None and env not in envs:
        return False
    return set(spec.get("resources") or []) <= set(agent["resources"])


def describe_wait(agents: list[dict[str, Any]], plan: dict[str, Any], spec: dict[str, Any]) -> str:
    """Why no agent takes a job, in words a person can act on."""
    env = plan.get("environment")
    res = spec.get("resources") or []
    where = f"in {env}" if env else "in no environment"
    needs = f" with resources [{', '.join(res)}]" if res else ""
    candidates = [a for a in agents if matches(a, plan, spec)]
    usable = [a for a in candidates if a["enabled"] and not a["lost"]]
    if not usable:
        if candidates:
            states = ", ".join(f"{a['name']} {'lost' if a['lost'] else 'disabled'}" for a in candidates)
            return f"no enabled agent {where}{needs} ({states})"
        return f"no enabled agent {where}{needs}"
    return f"all {len(usable)} matching agent{'s' if len(usable) > 1 else ''} busy"


def agent_rows(db: Database) -> list[dict[str, Any]]:
    rows = db.all("SELECT * FROM agents ORDER BY name")
    for a in rows:
        a["environments"] = loads(a["environments"], [])
        a["resources"] = loads(a["resources"], [])
    return rows


class Agent:
    def __init__(
        self,
        db: Database,
        root: Path,
        name: str,
        *,
        environments: list[str] | None = None,
        resources: list[str] | None = None,
        capacity: int | None = None,
        on_done: Callable[[int], None] | None = None,
        self_fence: bool = True,
        log_limit: int = LOG_LIMIT,
    ):
        self.db = db
        self.root = root
        self.name = name
        self.log_limit = log_limit
        self.environments = list(environments or [])
        self.resources = list(resources or [])
        self.capacity = capacity or os.cpu_count() or 1
        self.on_done = on_done or (lambda run_id: None)
        self.runners: dict[int, JobRunner] = {}
        self.lock = threading.Lock()
        self.pool = WorkerPool(self.capacity)
        self.plans: dict[int, dict[str, Any]] = {}
        self.draining = False
        self.last_beat_ok = time.monotonic()
        # cut off from the store past the agent timeout, kill our jobs: an engine elsewhere may retry them.
        # The engine's own agents on SQLite need not: every engine of that store runs on this host and
        # kills a lost agent's processes itself, and a slow store must not make the engine give up its runs.
        self.self_fence = self_fence

    @property
    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "environments": self.environments,
            "resources": self.resources,
            "enabled": 1,
            "lost": 0,
        }

    # ------------------------------------------------------------ life

    def register(self, *, takeover: bool = False) -> None:
        """Add or refresh this agent's row. A live agent of the same name elsewhere is refused."""
        t = now()
        with self.db.write() as tx:
            row = tx.one("SELECT * FROM agents WHERE name = ?", (self.name,))
            if (
                row is not None
                and not takeover
                and not row["lost"]
                and row["heartbeat_at"] > t - agent_timeout()
                and (row["host"], row["pid"]) != (identity.host(), os.getpid())
            ):
                raise Refused(f"agent {self.name} is already running on {row['host']} (pid {row['pid']})")
            values = {
                "host": identity.host(),
                "pid": os.getpid(),
                "environments": dumps(self.environments),
                "resources": dumps(self.resources),
                "capacity": self.capacity,
                "lost": 0,
                "started_at": t,
                "heartbeat_at": t,
            }
            if row is None:
                tx.insert("agents", {"name": self.name, "enabled": 1, **values})
                record_event(
                    tx,
                    "agent.registered",
                    f"sluice@{self.name}",
                    f"agent {self.name} registered on {identity.host()}",
                )
            else:
                sets = ", ".join(f"{k} = :{k}" for k in values)
                tx.execute(f"UPDATE agents SET {sets} WHERE name = :name", {**values, "name": self.name})

    def heartbeat(self) -> bool:
        """Record that we are alive. Cut off from the store too long, or declared lost: stop our jobs."""
        try:
            with self.db.write() as tx:
                tx.execute(
                    "UPDATE agents SET heartbeat_at = ? WHERE name = ? AND lost = 0", (now(), self.name)
                )
                row = tx.one("SELECT lost FROM agents WHERE name = ?", (self.name,))
            self.last_beat_ok = time.monotonic()
            if row and row["lost"]:
                # the scheduler gave our jobs up (failed or retried elsewhere): they must not run on here
                self.kill_all("agent was declared lost")
                self.register(takeover=True)
            return True
        except StoreError:
            self.check_cut_off()
            return False

    def check_cut_off(self) -> bool:
        """No heartbeat stored for longer than the agent timeout: stop our jobs (they may be retried elsewhere)."""
        if self.self_fence and self.runners and time.monotonic() - self.last_beat_ok > agent_timeout():
            self.kill_all("agent cut off from the store")
            return True
        return False

    def kill_all(self, why: str) -> None:
        for runner in list(self.runners.values()):
            runner.cancel(why, status="failed")
            runner.kill_now()

    # ------------------------------------------------------------ claiming

    def free(self) -> int:
        return 0 if self.draining else self.capacity - len(self.runners)

    def enabled(self) -> bool:
        row = self.db.one("SELECT enabled, lost FROM agents WHERE name = ?", (self.name,))
        return bool(row and row["enabled"] and not row["lost"])

    def claim(self, plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
        """Claim and start as many matching waiting jobs as there are free slots; returns how many."""
        free = self.free()
        if free <= 0 or not self.enabled():
            return 0
        candidates = self.db.all(
            "SELECT j.id, j.base, j.copy_key, j.run_id FROM jobs j JOIN runs r ON r.id = j.run_id "
            "LEFT JOIN workflow_states ws ON r.kind = 'workflow' AND ws.workflow = r.target "
            "WHERE j.status = 'waiting' AND j.gate IS NULL AND r.cancel_requested = 0 AND COALESCE(ws.paused, 0) = 0 "
            "ORDER BY j.run_id, j.position, j.id LIMIT 500"
        )
        picked: list[dict[str, Any]] = []
        for c in candidates:
            if len(picked) >= free:
                break
            plan = self._plan(c["run_id"], plan_of)
            spec = plan["jobs"][c["base"]]
            if spec.get("run_on_all_agents") and c["copy_key"] != self.name:
                continue  # a copy pinned to another agent
            if matches(self.row, plan, spec):
                picked.append(c)
        if not picked:
            return 0
        started = []
        t = now()
        with self.db.write() as tx:
            for c in picked:
                changed = tx.execute(CLAIM[self.db.dialect], (self.name, t, c["id"]))
                if not changed:
                    continue  # another agent was faster
                job = tx.one("SELECT * FROM jobs WHERE id = ?", (c["id"],))
                run = tx.one("SELECT * FROM runs WHERE id = ?", (c["run_id"],))
                assert job is not None and run is not None
                if run["started_at"] is None:
                    tx.execute(
                        "UPDATE runs SET started_at = ?, status = 'running' WHERE id = ?", (t, run["id"])
                    )
                elif run["status"] != "running":
                    tx.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run["id"],))
                record_event(
                    tx,
                    "job.started",
                    f"sluice@{self.name}",
                    f"{job['name']} started on {self.name}",
                    run_id=run["id"],
                    job_id=job["id"],
                )
                started.append((job, run))
        for job, run in started:
            runner = JobRunner(
                self.db,
                self.root,
                job,
                run,
                self.name,
                self._done,
                plan=self._plan(run["id"], plan_of),
                log_limit=self.log_limit,
            )
            with self.lock:
                self.runners[job["id"]] = runner
            self.pool.submit(runner.run)
        return len(started)

    def _plan(
        self, run_id: int, plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None
    ) -> dict[str, Any]:
        p = self.plans.get(run_id)
        if p is None:
            run = self.db.one("SELECT id, plan FROM runs WHERE id = ?", (run_id,))
            assert run is not None
            p = plan_of(run) if plan_of else loads(run["plan"])
            self.plans[run_id] = p
        return p

    def _done(self, runner: JobRunner) -> None:
        # the run is marked to look at before the runner leaves: an engine that stops once it has no
        # runners left still settles the run this job finished
        self.on_done(runner.run_row["id"])
        with self.lock:
            self.runners.pop(runner.job["id"], None)
            if not any(r.run_row["id"] == runner.run_row["id"] for r in self.runners.values()):
                self.plans.pop(runner.run_row["id"], None)

    def check_cancels(self) -> None:
        """Stop our jobs whose run was cancelled, or that the scheduler gave up (agent lost)."""
        if not self.runners:
            return
        ids = list(self.runners)
        marks = ",".join("?" * len(ids))
        for r in self.db.all(
            f"SELECT j.id, j.status, j.claim_token, r.cancel_requested, r.cancelled_by FROM jobs j "
            f"JOIN runs r ON r.id = j.run_id WHERE j.id IN ({marks})",
            ids,
        ):
            runner = self.runners.get(r["id"])
            if runner is None:
                continue
            if r["status"] != "running" or r["claim_token"] != runner.token:
                runner.cancel("no longer this agent's job")
            elif r["cancel_requested"]:
                runner.cancel(f"cancelled by {(r['cancelled_by'] or 'sluice').split('@')[0]}")


def serve(db: Database, root: Path, agent: Agent, *, stop: threading.Event) -> int:
    """The loop of a standalone agent process: heartbeat, claim, watch for cancels."""
    from ..wake import WakeSocket

    wake = WakeSocket(db.url + f"#agent:{agent.name}")
    beat_every = agent_timeout() / 3
    next_beat = 0.0
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(wake.sock, selectors.EVENT_READ, wake)
    listener = None
    if db.dialect == "postgresql":
        from ..wake import PgListener

        listener = PgListener(db.conninfo)
        sel.register(listener, selectors.EVENT_READ, listener)
    inner = threading.Event()

    def on_done(run_id: int) -> None:
        inner.set()
        _poke_engine(db)

    agent.on_done = on_done
    done = threading.Event()

    def watchdog() -> None:
        # apart from the loop, which may be stuck in a store call for as long as the store is away
        while not done.wait(0.1):
            agent.check_cut_off()

    threading.Thread(target=watchdog, name="cut-off-watchdog", daemon=True).start()
    while not stop.is_set():
        t = time.monotonic()
        if t >= next_beat:
            agent.heartbeat()
            next_beat = t + beat_every
        try:
            agent.check_cancels()
            if not stop.is_set():
                agent.claim()
        except StoreError:
            pass
        if stop.is_set():
            break
        for key, _ in sel.select(timeout=0 if inner.is_set() else 0.25):
            key.data.drain()
        inner.clear()
    agent.draining = True
    while agent.runners:
        if time.monotonic() >= next_beat:
            agent.heartbeat()
            next_beat = time.monotonic() + beat_every
        try:
            agent.check_cancels()
        except StoreError:
            pass
        time.sleep(0.1)
    done.set()
    wake.close()
    return 0


def _poke_engine(db: Database) -> None:
    db.notify()


def poke_agents(db: Database, names: list[str]) -> None:
    if db.dialect == "postgresql":
        db.notify()  # one NOTIFY reaches every agent, on every host
        return
    for name in names:
        db.notify(name)


__all__ = ["Agent", "agent_rows", "agent_timeout", "describe_wait", "matches", "poke_agents", "serve"]
