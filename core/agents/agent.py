"""An agent: registers, heartbeats, claims the jobs it may run, runs them, reports (SPEC 8).

The engine runs the agents of sluice.yaml in its own process (one `local` agent when none
are listed); `sluice agent start` runs one as its own process on any host that reaches
the database. Matching follows GoCD: environment fencing both ways, every job resource
present, enabled, alive. A claim is one conditional UPDATE, so a job is claimed once, ever.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import identity
from ..errors import Refused
from ..service import record_event, record_events
from ..store.db import Database, IntegrityError, StoreError, StoreUnavailable, Tx, dumps, loads, now
from ..times import agent_timeout
from .runner import LOG_LIMIT, JobRunner, Reactor, StoreThread, job_environ

# Claims: the waiting jobs this agent may take, matched in SQL (environment fencing, pinned
# copies, an enabled agent; resources are checked on the few rows read), in dispatch order
# along ix_jobs_claim; then one conditional UPDATE takes them all, so a job is claimed once,
# ever. On PostgreSQL the rows are locked with SKIP LOCKED: concurrent claimers pass over a
# job another agent is taking instead of queueing behind it.
_SET = (
    "UPDATE jobs SET status = 'running', agent = ?, attempt = attempt + 1, claim_token = claim_token + 1, "
    "started_at = ?, finished_at = NULL, reason = NULL "
)
_TAKE = {
    "sqlite": "WHERE id IN ({ids}) AND status = 'waiting' AND gate IS NULL RETURNING *",
    "postgresql": "WHERE id IN (SELECT id FROM jobs WHERE id IN ({ids}) AND status = 'waiting' AND gate IS NULL "
    "ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING *",
}
_CANDIDATES = (
    "SELECT j.id, j.resources FROM jobs j JOIN runs r ON r.id = j.run_id "
    "LEFT JOIN workflow_states ws ON r.kind = 'workflow' AND ws.workflow = r.target "
    "WHERE j.status = 'waiting' AND j.gate IS NULL AND r.cancel_requested = 0 AND COALESCE(ws.paused, 0) = 0 "
    "AND (j.only_agent IS NULL OR j.only_agent = ?) AND {env}{res} "
    "AND EXISTS (SELECT 1 FROM agents a WHERE a.name = ? AND a.enabled = 1 AND a.lost = 0) "
    "ORDER BY j.status, j.gate, j.run_id, j.position, j.id LIMIT ?{lock}"
)
# PostgreSQL: the candidates are locked as they are read, and rows another agent is claiming
# are passed over, so agents claiming at the same moment take different jobs
_LOCK = {"sqlite": "", "postgresql": " FOR UPDATE OF j SKIP LOCKED"}


def matches(agent: Mapping[str, Any], plan: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
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


def agent_rows(db: Database | Tx) -> list[dict[str, Any]]:
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
        self.environ = job_environ()  # what every job's environment starts from
        self.lock = threading.Lock()
        self.store_thread = StoreThread(name)  # what may wait on the store
        self.reactor = Reactor(name, on_round=self._round_ended)  # runs every job of this agent
        self._round_queued = False
        self.plans: dict[int, dict[str, Any]] = {}
        self.run_rows: dict[int, dict[str, Any]] = {}  # the runs of our jobs (what a job reads never changes)
        self.done: list[JobRunner] = []  # finished, result not stored yet
        self.kick = threading.Event()  # wakes the agent's loop: jobs became ready, or one ended
        self.notify: Callable[[], None] = lambda: None  # also wakes a loop that waits on a selector
        self.after_step: Callable[[], None] = lambda: None  # after each step, in the thread that did it
        self.report_after = 0.0
        self.report_delay = 0.2
        self.stepping = threading.RLock()  # one step (report and claim) at a time
        self.plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # the engine's plan cache
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
            # two agents of one name starting at once: the row is locked while each decides
            row = tx.one(f"SELECT * FROM agents WHERE name = ?{tx.for_update}", (self.name,))
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
                try:
                    tx.insert("agents", {"name": self.name, "enabled": 1, **values})
                except IntegrityError:  # PostgreSQL: another process inserted it a moment ago
                    raise Refused(
                        f"agent {self.name} was registered a moment ago by another process"
                    ) from None
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

    def step(self, plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
        """The agent's whole work after a wake-up, in one write transaction: the results of the jobs
        that finished since the last step (those that end together are committed together), then
        the claim of as many matching waiting jobs as there are free slots. Returns how many started.

        One caller at a time: after a round in which jobs ended, the reactor (SQLite, the store free)
        or the store thread does it, when no other step is under way; otherwise those results wait
        for the step under way, which loops until none is left."""
        with self.stepping:
            try:
                started = self._step(plan_of or self.plan_of)
                while True:
                    with self.lock:
                        if not self.done or time.monotonic() < self.report_after:
                            return started
                    started += self._step(plan_of or self.plan_of)
            finally:
                self.after_step()

    def _step(self, plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None) -> int:
        if time.monotonic() < self.report_after:
            batch: list[JobRunner] = []
        else:
            with self.lock:
                batch, self.done = self.done, []
        free = self.free() + len(batch)
        claimed: list[dict[str, Any]] = []
        runs: dict[int, dict[str, Any]] = {}
        if not batch and (free <= 0 or self.draining):
            return 0  # nothing to store, no room to claim: no transaction at all
        try:
            with self.db.write() as tx:
                # the results' log rows and every event of the step go in one INSERT each
                events: list[dict[str, Any]] = []
                logs: list[dict[str, Any]] = []
                for runner in batch:
                    runner.report_in(tx, events, logs)
                tx.insert_many("log_chunks", logs)
                if free > 0:
                    claimed, runs = self._claim_in(tx, free, events)
                record_events(tx, events)
        except StoreUnavailable:
            with self.lock:  # nothing was stored: try again a little later (the jobs stay ours)
                self.done[:0] = batch
            self._forget_unused_runs()
            if batch and not self.db.not_waiting:  # (the reactor's quick try hands over at once)
                self.report_after = time.monotonic() + self.report_delay
                self.report_delay = min(self.report_delay * 2, 5.0)
            raise
        except StoreError:
            self._forget_unused_runs()
            if not batch:
                raise
            if self.db.not_waiting:  # the reactor's quick try: the store thread does the rest, waiting
                with self.lock:
                    self.done[:0] = batch
                raise
            for runner in batch:  # refused for good: each on its own, its log apart if need be
                runner.finish_alone()
            claimed = []
        except Exception:
            # a bug, not the store: the results stay queued (the jobs keep their slots and are
            # stored by a later step), and the engine log says what happened
            with self.lock:
                self.done[:0] = batch
            self._forget_unused_runs()
            raise
        else:
            for runner in batch:
                runner.committed()
        if batch:
            self.report_delay = 0.2
            finished = {r.run_row["id"] for r in batch}
            # the runs are marked to look at before the runners leave: an engine that stops once it
            # has no runners left still settles the runs these jobs finished
            for run_id in sorted(finished):
                self.on_done(run_id)
            with self.lock:
                for runner in batch:
                    self.runners.pop(runner.job["id"], None)
                live = {r.run_row["id"] for r in self.runners.values()} | {j["run_id"] for j in claimed}
                for run_id in finished - live:
                    self.plans.pop(run_id, None)
                    self.run_rows.pop(run_id, None)
        for job in claimed:
            run = runs[job["run_id"]]
            runner = JobRunner(
                self.db,
                self.root,
                job,
                run,
                self.name,
                self._finished,
                plan=self._plan(run, plan_of),
                log_limit=self.log_limit,
                environ=self.environ,
                write_later=self.store_thread.submit,
            )
            with self.lock:
                self.runners[job["id"]] = runner
            self.reactor.submit(runner)
        return len(claimed)

    def _forget_unused_runs(self) -> None:
        """Drop the run rows a claim that was undone read (no job of ours belongs to them)."""
        with self.lock:
            live = {r.run_row["id"] for r in self.runners.values()}
            for run_id in [r for r in self.run_rows if r not in live]:
                del self.run_rows[run_id]

    def _claim_in(
        self, tx: Tx, free: int, events: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
        """Claim up to `free` matching waiting jobs: the candidates, one UPDATE that takes them (one
        statement when the agent needs no resources matched), the runs they start; their
        `job.started` events are added to `events`."""
        if self.draining:
            return [], {}
        if self.environments:
            env = f"r.environment IN ({','.join('?' * len(self.environments))})"
        else:
            env = "r.environment IS NULL"
        res = "" if self.resources else " AND j.resources IS NULL"
        t = now()
        lock = _LOCK[self.db.dialect]
        if not self.resources:
            # the candidates as a CTE, read once: PostgreSQL may run a `WHERE id IN (SELECT … LIMIT n
            # FOR UPDATE SKIP LOCKED)` subquery again for each row and take more than n
            candidates = _CANDIDATES.format(env=env, res=res, lock=lock).replace(
                "j.id, j.resources", "j.id", 1
            )
            # SQLite: `+status` keeps it from scanning every waiting job along ix_jobs_claim to find
            # the few ids (0.65 ms against 0.01 ms at 3,000 waiting jobs): the ids go by rowid
            pg = self.db.dialect == "postgresql"
            jobs = tx.all(
                f"WITH c AS {'MATERIALIZED ' if pg else ''}({candidates}) "
                + _SET
                + f"WHERE id IN (SELECT id FROM c) AND {'' if pg else '+'}status = 'waiting' AND gate IS NULL "
                "RETURNING *",
                (self.name, *self.environments, self.name, free, self.name, t),
            )
        else:
            have = set(self.resources)
            rows = tx.all(
                _CANDIDATES.format(env=env, res=res, lock=lock),
                (self.name, *self.environments, self.name, free * 4 + 50),
            )
            ids = [r["id"] for r in rows if not r["resources"] or set(loads(r["resources"])) <= have][:free]
            if not ids:
                return [], {}
            take = _SET + _TAKE[self.db.dialect].format(ids=",".join("?" * len(ids)))
            jobs = tx.all(take, (self.name, t, *ids))
        if not jobs:
            return [], {}
        jobs.sort(key=lambda j: j["id"])
        run_ids = sorted({j["run_id"] for j in jobs})
        marks = ",".join("?" * len(run_ids))
        tx.execute(
            f"UPDATE runs SET started_at = COALESCE(started_at, ?), status = 'running' "
            f"WHERE id IN ({marks}) AND (started_at IS NULL OR status <> 'running')",
            (t, *run_ids),
        )
        unknown = [r for r in run_ids if r not in self.run_rows]
        if unknown:
            marks = ",".join("?" * len(unknown))
            for r in tx.all(f"SELECT * FROM runs WHERE id IN ({marks})", unknown):
                self.run_rows[r["id"]] = r
        events.extend(
            {
                "kind": "job.started",
                "actor": f"sluice@{self.name}",
                "message": f"{j['name']} started on {self.name}",
                "run_id": j["run_id"],
                "job_id": j["id"],
            }
            for j in jobs
        )
        return jobs, {r: self.run_rows[r] for r in run_ids}

    def _finished(self, runner: JobRunner) -> None:
        """A job's processes are gone (called in the reactor): its result waits for the round's end."""
        with self.lock:
            self.done.append(runner)

    def _round_ended(self) -> None:
        """Jobs ended in the reactor's round: their results are stored, and the freed slots filled.

        On SQLite the reactor does it itself when the store's write lock is free at this moment (no
        hand-over to another thread: a fifth of a short job's cost); otherwise, and always on
        PostgreSQL, the store thread does (once for rounds that end while it is busy), so that the
        reactor goes on reading the other jobs whatever the store does."""
        if not self._round_queued:
            with self.db.without_waiting() as fast:
                if fast and self._step_if_free():
                    return
        if not self._round_queued:
            self._round_queued = True
            self.store_thread.submit(self._after_round)

    def _after_round(self) -> None:
        """In the store thread: the results of the jobs that ended are stored together, and the
        freed slots filled, by a step done here when no other step is under way (else by that one)."""
        self._round_queued = False
        if not self._step_if_free():
            self.kick.set()  # results left over (the store is away) or a step under way elsewhere
            self.notify()

    def _step_if_free(self) -> bool:
        """A step, unless one is under way in another thread; True when no result is left to store."""
        if not self.stepping.acquire(blocking=False):
            return False
        try:
            self.step()
        except StoreError:
            pass  # busy or away: the results stay queued
        except Exception as e:  # a bug: said, and the results stay queued too
            sys.stderr.write(f"sluice: agent {self.name}: {e}\n")
        finally:
            self.stepping.release()
        with self.lock:
            return not self.done

    def loop(
        self, stop: threading.Event, plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ) -> None:
        """An embedded agent's own thread: woken by the scheduler (jobs became ready) or by a job that ended."""
        if plan_of is not None:
            self.plan_of = plan_of
        while not stop.is_set():
            self.kick.wait(1.0)
            self.kick.clear()
            try:
                self.step()
            except StoreError:
                pass  # the store is away: the results wait in memory, the next wake-up tries again
            except Exception as e:  # the agent's thread must outlive a bug in one pass
                sys.stderr.write(f"sluice: agent {self.name}: {e}\n")

    def _plan(
        self, run: dict[str, Any], plan_of: Callable[[dict[str, Any]], dict[str, Any]] | None
    ) -> dict[str, Any]:
        p = self.plans.get(run["id"])
        if p is None:
            p = plan_of(run) if plan_of else loads(run["plan"])
            self.plans[run["id"]] = p
        return p

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


CANCEL_LOOK = 0.25  # seconds between an agent process's looks for cancelled jobs, at most


def serve(db: Database, root: Path, agent: Agent, *, stop: threading.Event) -> int:
    """The loop of a standalone agent process: heartbeat, report and claim, watch for cancels."""
    import selectors
    import socket

    sys.setswitchinterval(0.0005)  # job threads spawn and read between this loop's work (see the engine)

    from ..wake import WakeSocket

    wake = WakeSocket(db.url + f"#agent:{agent.name}")
    beat_every = agent_timeout() / 3
    next_beat = 0.0
    sel = selectors.DefaultSelector()
    sel.register(wake.sock, selectors.EVENT_READ, wake)
    listener = None
    if db.dialect == "postgresql":
        from ..wake import PgListener

        listener = PgListener(db.conninfo)
        sel.register(listener, selectors.EVENT_READ, listener)
    # a job that ends wakes the loop at once (its result is stored, its slot filled)
    inner_r, inner_w = socket.socketpair()
    inner_r.setblocking(False)
    inner_w.setblocking(False)

    def on_job_end() -> None:
        try:
            inner_w.send(b"!")
        except OSError:
            pass  # a full pipe is a wake-up already pending

    agent.notify = on_job_end
    sel.register(inner_r, selectors.EVENT_READ, None)
    # results stored (by whichever thread stored them): the engine is poked once per step, so it
    # settles those runs and readies what comes next at once
    settled: set[int] = set()

    def on_done(run_id: int) -> None:
        settled.add(run_id)

    def after_step() -> None:
        # in the thread that stored the results (the reactor or the store thread): no hand-off here
        if settled:
            settled.clear()
            _poke_engine(db)  # the engine settles the runs those jobs belong to

    agent.on_done = on_done
    agent.after_step = after_step
    done = threading.Event()

    def watchdog() -> None:
        # apart from the loop, which may be stuck in a store call for as long as the store is away
        while not done.wait(0.1):
            agent.check_cut_off()

    threading.Thread(target=watchdog, name="cut-off-watchdog", daemon=True).start()

    def drain(key: selectors.SelectorKey) -> None:
        if key.data is None:
            try:
                while inner_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        else:
            key.data.drain()

    def step() -> None:
        agent.step()  # results stored, free slots filled, the engine poked

    look_at = 0.0  # when to look for cancels next: at once when this agent is poked by name, else
    # every CANCEL_LOOK; not at every job's end, nor at every NOTIFY on PostgreSQL (each job's end
    # anywhere sends one): that was a query per job per agent
    while not stop.is_set():
        t = time.monotonic()
        if t >= next_beat:
            agent.heartbeat()
            next_beat = t + beat_every
        try:
            if t >= look_at:
                look_at = t + CANCEL_LOOK
                agent.check_cancels()
            step()
        except StoreError:
            pass
        if stop.is_set():
            break
        for key, _ in sel.select(timeout=0 if agent.kick.is_set() else CANCEL_LOOK):
            if key.data is wake:
                look_at = 0.0
            drain(key)
        agent.kick.clear()
    agent.draining = True
    while agent.runners:
        if time.monotonic() >= next_beat:
            agent.heartbeat()
            next_beat = time.monotonic() + beat_every
        try:
            agent.check_cancels()
            step()  # draining: stores results, claims nothing
        except StoreError:
            pass
        for key, _ in sel.select(timeout=0.1):
            drain(key)
    done.set()
    wake.close()
    inner_r.close()
    inner_w.close()
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
