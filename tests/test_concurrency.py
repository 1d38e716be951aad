"""Every guarantee at once, under load (issue 11, "Correctness first"; SPEC 3, 4, 5, 8, 9).

Two engines on one database (the second a standby), four agent processes and eight CLI
processes at a time queueing, scheduling, executing, purging, releasing, rejecting,
pausing, unlocking and cancelling over a few hundred items and runs; a timer fires all the
while. Then, once everything is final, each invariant is checked on the store and on what
the job processes themselves wrote:

- each queue item ended as exactly one run, or purged (and never both);
- no job ran twice, and no held job ran without a release;
- no two runs of a locked workflow overlapped, and after a failed or cancelled run of an
  `until_success` workflow the next one started only after an unlock;
- a concurrency group let one run in at a time, in run-creation order;
- a paused workflow started no run while it was paused;
- each timer fire was recorded once and started at most one run;
- every run is final and no job is left running.

Every step of every job appends `start RUN JOB JOB_ID TIME` when it begins and
`end RUN JOB JOB_ID TIME` when it ends to one file shared by all the processes (short
`echo >>` writes to a file opened with O_APPEND do not interleave). Nothing here sleeps for a
fixed time: the CLI processes act as fast as they can, and the test waits on conditions.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from conftest import Proj, twin

# exit codes a command may legitimately end with while others change the same things (SPEC 10):
# 3 refused (duplicate, paused, locked, nothing to unlock, already final), 4 not found (an item
# or a held job someone else took first), 75 the store was busy past its timeout
BUSY = 75
ALLOWED: dict[str, set[int]] = {
    "workflow queue": {0, 3},
    "workflow schedule": {0, 3},
    "method queue": {0, 3},
    "workflow run": {0, 3},
    "queue execute": {0, 3, 4},
    "queue purge": {0, 4},
    "workflow release": {0, 3, 4},
    "workflow reject": {0, 3, 4},
    "workflow pause": {0, 3},
    "workflow unpause": {0, 3},
    "workflow unlock": {0, 3},
    "run cancel": {0, 3, 4},
}
CROWD_TIMEOUT = 180  # the CLI processes' part: about 15-60 s
SETTLE_TIMEOUT = 60  # the end usually takes a few seconds; generous for a machine shared with a CPU hog
FINAL_RUN = {"succeeded", "failed", "cancelled"}
FINAL_JOB = {"succeeded", "failed", "rejected", "cancelled", "skipped"}

# one script for every step: a start line, some work, an end line, an exit code
STEP = """\
#!/bin/bash
echo "start $SLUICE_RUN_ID $SLUICE_JOB $SLUICE_JOB_ID ${{EPOCHREALTIME:-$(date +%s.%N)}}" >> {log}
sleep "$1"
echo "end $SLUICE_RUN_ID $SLUICE_JOB $SLUICE_JOB_ID ${{EPOCHREALTIME:-$(date +%s.%N)}}" >> {log}
exit "${{2:-0}}"
"""

SLUICE_YAML = "name: conc\ncapacity: 2\nenvironments: {pool: {}}\n"

WORKFLOWS = {
    # queued, executed, purged, cancelled, paused and unpaused
    "plain": """\
        name: plain
        environment: pool
        inputs: {{n: {{}}}}
        jobs:
          a: {{steps: [{{run: '{step} 0.05'}}]}}
          b: {{needs: [a], steps: [{{run: '{step} 0.05'}}]}}
        """,
    # one run at a time; a failed or cancelled run keeps the lock until `workflow unlock`
    "locked": """\
        name: locked
        environment: pool
        lock: until_success
        inputs: {{n: {{}}, fail: {{default: "0"}}}}
        jobs:
          one: {{steps: [{{run: '{step} 0.05'}}]}}
          two: {{needs: [one], steps: [{{run: '{step} 0.05 "$INPUT_FAIL"'}}]}}
        """,
    # a gate: `enter` and `leave` share one slot of group g, `middle` runs between them
    "grouped": """\
        name: grouped
        environment: pool
        inputs: {{n: {{}}}}
        jobs:
          enter: {{concurrency_group: g, steps: [{{run: '{step} 0.03'}}]}}
          middle: {{needs: [enter], parallelism: 2, steps: [{{run: '{step} 0.03'}}]}}
          leave: {{needs: [middle], concurrency_group: g, steps: [{{run: '{step} 0.03'}}]}}
        """,
    # a hold that a CLI process releases (or rejects)
    "held": """\
        name: held
        environment: pool
        inputs: {{n: {{}}}}
        jobs:
          prep: {{steps: [{{run: '{step} 0.02'}}]}}
          gate: {{needs: [prep], hold: true, steps: [{{run: '{step} 0.02'}}]}}
          after: {{needs: [gate], steps: [{{run: '{step} 0.02'}}]}}
        """,
    # a timer every two seconds, paused and unpaused meanwhile
    "tick": """\
        name: tick
        environment: pool
        timer: "* * * * * */2"
        jobs:
          t: {{steps: [{{run: '{step} 0.02'}}]}}
        """,
}
# method runs go to the engines' own agents (no environment)
MODEL = """\
    name: m
    methods:
      t:
        inputs: {{n: {{}}}}
        run: '{step} 0.02'
    """


# ------------------------------------------------------------------ the CLI processes


@dataclass
class Call:
    who: str
    args: tuple[str, ...]
    code: int
    err: str
    seconds: float

    @property
    def verb(self) -> str:
        return " ".join(self.args[:2])


@dataclass
class Crowd:
    """Eight CLI processes at a time, each a thread running real `sluice` subprocesses in a loop.

    What a worker acts on (items, held jobs, runs) it picks from a read of the store, so that the
    CLI processes spend their time on the commands that change things."""

    proj: Proj
    env: dict[str, str]
    db: Any
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    busy_makers: int = 0  # threads that still queue or execute: the others go on while any does
    failures: list[str] = field(default_factory=list)

    def sluice(self, who: str, *args: str) -> int:
        t = time.monotonic()
        try:
            r = self.proj.sluice(*args, env=self.env, timeout=90)
            code, err = r.code, r.err
        except subprocess.TimeoutExpired:
            code, err = -1, "timed out after 90 s"
        with self.lock:
            self.calls.append(Call(who, args, code, err, time.monotonic() - t))
        return code

    def pick(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows to act on, once there are some; [] when the makers are done and there are none."""
        while True:
            found = self.db.all(sql, args)
            if found or not self.makers_running():
                return found
            time.sleep(0.05)  # a poll on the condition "there is something to act on"

    def makers_running(self) -> bool:
        with self.lock:
            return self.busy_makers > 0

    def run(self, workers: dict[str, Any]) -> None:
        self.busy_makers = sum(1 for name in workers if name.startswith(MAKERS))
        threads = [
            threading.Thread(target=self._guard, args=(name, fn), name=name) for name, fn in workers.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=CROWD_TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a CLI worker thread never finished"
        assert not self.failures, "a CLI worker thread crashed:\n" + "\n".join(self.failures)

    def _guard(self, name: str, fn: Any) -> None:
        try:
            fn(self, name, random.Random(name))
        except Exception as e:  # reported by run(): a crashed worker must fail the test, not hang it
            self.failures.append(f"{name}: {e!r}")
        finally:
            if name.startswith(MAKERS):
                with self.lock:
                    self.busy_makers -= 1


MAKERS = ("queuer", "executor")  # they work through a fixed list; the others act while any of them runs
QUEUED = "SELECT id FROM queue_items WHERE status = 'queued' ORDER BY id"


def queuer_a(c: Crowd, who: str, rng: random.Random) -> None:
    """Stages plain and locked runs; some plain ones scheduled a moment ahead (the engine starts those)."""
    for i in range(7):
        c.sluice(who, "workflow", "queue", "plain", "-i", f"n={1000 + i}")
        if i % 3 == 0:
            c.sluice(who, "workflow", "schedule", "plain", "--at", "+2s", "-i", f"n={2000 + i}")
        if i % 3 == 1:
            c.sluice(
                who, "workflow", "queue", "locked", "-i", f"n={1000 + i}", "-i", f"fail={int(i % 6 == 4)}"
            )


def queuer_b(c: Crowd, who: str, rng: random.Random) -> None:
    """Stages grouped, held and method runs, each invocation twice (the second is a duplicate, exit 3,
    unless someone executed or purged the first meanwhile)."""
    for i in range(12):
        n = 1000 + i // 2
        if i % 3 == 0:
            c.sluice(who, "workflow", "queue", "grouped", "-i", f"n={n}")
        elif i % 3 == 1:
            c.sluice(who, "workflow", "queue", "held", "-i", f"n={n}")
        else:
            c.sluice(who, "method", "queue", "m", "t", "-i", f"n={n}")


def executor_ids(c: Crowd, who: str, rng: random.Random) -> None:
    """Executes a few of the oldest items by id: the ones an `execute --all` running at the same
    moment starts first (whoever comes second finds them gone: exit 4, or 0 with a note). It begins
    with an `execute --workflows` that overlaps the other executor's first `execute --all`."""
    c.sluice(who, "queue", "execute", "--workflows", "--yes")
    for _ in range(7):
        ids = [r["id"] for r in c.db.all(QUEUED)]
        if ids:
            c.sluice(who, "queue", "execute", *map(str, ids[: rng.randint(1, 5)]))


def executor_bulk(c: Crowd, who: str, rng: random.Random) -> None:
    """Executes by selector, and starts locked and plain runs directly (a locked one is often refused)."""
    selectors = (["--all", "--yes"], ["--workflow", "grouped"], ["--workflow", "locked"], ["--method", "m.t"])
    for i in range(5):
        c.sluice(who, "queue", "execute", *selectors[i % 4])
        c.sluice(who, "workflow", "run", "locked", "--detach", "-i", f"n={3000 + i}")
        if i % 3 == 0:
            c.sluice(who, "workflow", "run", "plain", "--detach", "-i", f"n={3000 + i}")


def purger(c: Crowd, who: str, rng: random.Random) -> None:
    """Purges a few items by id; now and then every queued method item."""
    for i in range(8):
        ids = [r["id"] for r in c.pick(QUEUED)]
        if not ids:
            return
        c.sluice(who, "queue", "purge", *map(str, rng.sample(ids, min(len(ids), 2))))
        if i % 4 == 3:
            c.sluice(who, "queue", "purge", "--method", "t", "--yes")


def releaser(c: Crowd, who: str, rng: random.Random) -> None:
    """Releases held jobs as they come (one in five rejected)."""
    for _ in range(15):
        held = c.pick("SELECT run_id FROM jobs WHERE status = 'held' ORDER BY run_id")
        if not held:
            return
        run_id = str(rng.choice(held)["run_id"])
        if rng.random() < 0.2:
            c.sluice(who, "workflow", "reject", "gate", "--run", run_id, "--reason", "not today")
        else:
            c.sluice(who, "workflow", "release", "gate", "--run", run_id, "--comment", "fine")


def flow(c: Crowd, who: str, rng: random.Random) -> None:
    """Pauses and unpauses plain and tick; unlocks locked."""
    for i in range(4):
        if not c.makers_running():
            return
        c.sluice(who, "workflow", "pause", "plain", "--reason", "DBA on holiday")
        c.sluice(who, "workflow", "unlock", "locked")
        c.sluice(who, "workflow", "unpause", "plain")
        c.sluice(
            who,
            "workflow",
            "pause" if i % 2 == 0 else "unpause",
            "tick",
            *(["--reason", "QA"] if i % 2 == 0 else []),
        )
    c.sluice(who, "workflow", "unpause", "tick")


def canceller(c: Crowd, who: str, rng: random.Random) -> None:
    """Cancels a running or held run now and then (any workflow)."""
    for _ in range(8):
        active = c.pick("SELECT id FROM runs WHERE status IN ('running', 'on_hold') ORDER BY id")
        if not active:
            return
        c.sluice(who, "run", "cancel", str(rng.choice(active)["id"]))


CROWD = {
    "queuer-a": queuer_a,
    "queuer-b": queuer_b,
    "executor-ids": executor_ids,
    "executor-bulk": executor_bulk,
    "purger": purger,
    "releaser": releaser,
    "flow": flow,
    "canceller": canceller,
}


# ------------------------------------------------------------------ reading what happened


@dataclass
class Trace:
    """What the job processes wrote: per job id, its start lines and end lines."""

    starts: dict[int, list[tuple[int, str, float]]]  # job id -> [(run id, job name, time)]
    ends: dict[int, list[float]]

    @classmethod
    def read(cls, path: Path) -> Trace:
        starts: dict[int, list[tuple[int, str, float]]] = defaultdict(list)
        ends: dict[int, list[float]] = defaultdict(list)
        for line in path.read_text().splitlines() if path.exists() else []:
            what, run_id, job, job_id, at = line.split()
            if what == "start":
                starts[int(job_id)].append((int(run_id), job, float(at)))
            else:
                ends[int(job_id)].append(float(at))
        return cls(starts, ends)

    def span(self, jobs: list[dict[str, Any]]) -> tuple[float, float] | None:
        """From the first of these jobs' starts to the last one's end (its end line, or, for a job
        stopped by a cancel, the time the store recorded once its processes were gone)."""
        begun = [self.starts[j["id"]][0][2] for j in jobs if self.starts.get(j["id"])]
        if not begun:
            return None
        ended = [
            self.ends[j["id"]][0] if self.ends.get(j["id"]) else until(j)
            for j in jobs
            if self.starts.get(j["id"])
        ]
        return min(begun), max(ended)


def until(row: dict[str, Any]) -> float:
    """When a run or job finished; not yet: never."""
    return row["finished_at"] if row["finished_at"] is not None else float("inf")


def rows(db: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    return db.all(sql, args)


def jobs_by_run(db: Any, workflow: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for j in rows(
        db,
        "SELECT j.* FROM jobs j JOIN runs r ON r.id = j.run_id WHERE r.kind = 'workflow' AND r.target = ? "
        "ORDER BY j.run_id, j.id",
        workflow,
    ):
        out[j["run_id"]].append(j)
    return out


def intervals(events: list[dict[str, Any]], on: str, off: str) -> list[tuple[float, float]]:
    """(from, to) for each stretch between an `on` event and the next `off` event."""
    out, since = [], None
    for e in events:
        if e["kind"] == on and since is None:
            since = e["at"]
        elif e["kind"] == off and since is not None:
            out.append((since, e["at"]))
            since = None
    if since is not None:
        out.append((since, float("inf")))
    return out


# ------------------------------------------------------------------ the invariants


def check_items_once(db: Any) -> None:
    items = rows(db, "SELECT * FROM queue_items ORDER BY id")
    runs_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows(db, "SELECT * FROM runs WHERE queue_item_id IS NOT NULL"):
        runs_of[r["queue_item_id"]].append(r)
    bad = []
    for it in items:
        runs = runs_of.get(it["id"], [])
        if it["status"] == "executed":
            ok = (
                len(runs) == 1
                and runs[0]["id"] == it["run_id"]
                and runs[0]["target"] == it["target"]
                and json.loads(runs[0]["inputs"]) == json.loads(it["inputs"])
            )
        else:
            ok = it["status"] == "purged" and not runs and it["run_id"] is None
        if not ok:
            bad.append(f"#{it['id']} {it['status']} runs={[r['id'] for r in runs]} run_id={it['run_id']}")
    assert not bad, "queue items that did not end as exactly one run or purged: " + "; ".join(bad[:10])


def check_no_job_twice(db: Any, trace: Trace) -> None:
    jobs = {j["id"]: j for j in rows(db, "SELECT * FROM jobs")}
    twice = {jid: s for jid, s in trace.starts.items() if len(s) > 1}
    unknown = [
        jid
        for jid, s in trace.starts.items()
        if jid not in jobs or (jobs[jid]["run_id"], jobs[jid]["name"]) != s[0][:2]
    ]
    again = [j["id"] for j in jobs.values() if j["attempt"] > 1]
    started = Counter(r["job_id"] for r in rows(db, "SELECT job_id FROM events WHERE kind = 'job.started'"))
    claimed_twice = sorted(jid for jid, n in started.items() if n > 1)
    # a job that ended succeeded or failed ran its step exactly once (no retries are configured)
    missing = [
        j["id"]
        for j in jobs.values()
        if j["status"] in ("succeeded", "failed") and not trace.starts.get(j["id"])
    ]
    assert not (twice or unknown or again or claimed_twice or missing), (
        f"jobs that ran twice or not as recorded: started twice {sorted(twice)[:10]}, lines of unknown jobs "
        f"{unknown[:10]}, attempt > 1 {again[:10]}, claimed twice {claimed_twice[:10]}, finished without "
        f"running {missing[:10]}"
    )


def check_holds(db: Any, trace: Trace) -> None:
    gates = rows(
        db,
        "SELECT j.* FROM jobs j JOIN runs r ON r.id = j.run_id WHERE r.target = 'held' AND j.base = 'gate'",
    )
    bad = [g["id"] for g in gates if trace.starts.get(g["id"]) and not g["released_by"]]
    assert not bad, f"held jobs that ran without a release: {bad[:10]}"


def check_lock(db: Any, trace: Trace) -> None:
    runs = rows(db, "SELECT * FROM runs WHERE kind = 'workflow' AND target = 'locked' ORDER BY id")
    unlocks = [
        e["at"] for e in rows(db, "SELECT at FROM events WHERE kind = 'workflow.unlocked' ORDER BY id")
    ]
    jobs = jobs_by_run(db, "locked")
    bad = []
    for prev, nxt in pairwise(runs):
        if nxt["created_at"] < until(prev):
            bad.append(f"run #{nxt['id']} created before run #{prev['id']} was final")
        elif prev["status"] != "succeeded" and not any(
            until(prev) <= u <= nxt["created_at"] for u in unlocks
        ):
            bad.append(f"run #{nxt['id']} created after run #{prev['id']} {prev['status']} without an unlock")
        a, b = trace.span(jobs[prev["id"]]), trace.span(jobs[nxt["id"]])
        if a and b and b[0] < a[1]:
            bad.append(f"run #{nxt['id']}'s jobs started before run #{prev['id']}'s ended")
    assert not bad, "lock: until_success did not hold: " + "; ".join(bad[:10])


def check_group(db: Any, trace: Trace) -> None:
    entered = [
        e["run_id"]
        for e in rows(db, "SELECT run_id, details FROM events WHERE kind = 'group.entered' ORDER BY id")
        if json.loads(e["details"]).get("group") == "g"
    ]
    spans = []
    for run_id, jobs in sorted(jobs_by_run(db, "grouped").items()):
        span = trace.span([j for j in jobs if j["group_name"] == "g"])
        if span:
            spans.append((run_id, span))
    bad = []
    if entered != sorted(entered) or len(entered) != len(set(entered)):
        bad.append(f"runs entered in the order {entered}")
    for (r1, (_, end1)), (r2, (start2, _)) in pairwise(spans):
        if start2 < end1:
            bad.append(f"run #{r2} had a job of group g running before run #{r1}'s were done")
    assert not bad, "concurrency group g (1 slot, run order) did not hold: " + "; ".join(bad[:10])


def check_pause(db: Any) -> None:
    bad = []
    for wf in ("plain", "tick"):
        events = rows(
            db,
            "SELECT kind, at FROM events WHERE workflow = ? AND kind IN ('workflow.paused', 'workflow.unpaused') "
            "ORDER BY id",
            wf,
        )
        paused = intervals(events, "workflow.paused", "workflow.unpaused")
        for r in rows(db, "SELECT id, created_at FROM runs WHERE kind = 'workflow' AND target = ?", wf):
            if any(a < r["created_at"] < b for a, b in paused):
                bad.append(f"run #{r['id']} of {wf}")
    assert not bad, "runs created while their workflow was paused: " + ", ".join(bad[:10])


def check_timer(db: Any) -> None:
    fires = rows(db, "SELECT * FROM timer_fires WHERE workflow = 'tick' ORDER BY fire_at")
    timed = rows(db, "SELECT id FROM runs WHERE target = 'tick' AND trigger = 'timer'")
    per_time = Counter(f["fire_at"] for f in fires)
    per_run = Counter(f["run_id"] for f in fires if f["run_id"] is not None)
    started = [f for f in fires if f["status"] == "started"]
    bad = []
    if [t for t, n in per_time.items() if n > 1]:
        bad.append(f"fire times recorded twice: {[t for t, n in per_time.items() if n > 1][:5]}")
    if [r for r, n in per_run.items() if n > 1] or len(started) != len(per_run):
        bad.append("a fire without its run, or one run for two fires")
    if {f["run_id"] for f in started} != {r["id"] for r in timed}:
        bad.append(f"{len(timed)} timer runs for {len(started)} started fires")
    if any(f["fire_at"] % 2 for f in fires):
        bad.append("a fire off the two-second grid")
    assert not bad, "timer fires not once each: " + "; ".join(bad)


def check_all_final(db: Any) -> None:
    runs = rows(db, "SELECT id, status FROM runs")
    open_runs = [f"#{r['id']} {r['status']}" for r in runs if r["status"] not in FINAL_RUN]
    open_jobs = [
        f"{j['id']} ({j['name']} of run #{j['run_id']}) {j['status']}"
        for j in rows(db, "SELECT id, run_id, name, status FROM jobs")
        if j["status"] not in FINAL_JOB
    ]
    assert not (open_runs or open_jobs), f"not final: runs {open_runs[:10]}, jobs {open_jobs[:10]}"


# ------------------------------------------------------------------ the test


def everything_final(db: Any) -> bool:
    return not db.scalar(
        "SELECT COUNT(*) FROM runs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
    ) and not db.scalar("SELECT COUNT(*) FROM queue_items WHERE status = 'queued'")


def seed(proj: Proj) -> None:
    """The bulk of the items, staged before the engines start (fast); the CLI processes add more."""
    from core import queueing

    svc = proj.service()
    for i in range(40):
        queueing.add(svc, "workflow", "plain", {"n": str(i)})
    for i in range(20):
        queueing.add(svc, "workflow", "grouped", {"n": str(i)})
        queueing.add(svc, "workflow", "held", {"n": str(i)})
        queueing.add(svc, "method", "m.t", {"n": str(i)})
    for i in range(16):
        queueing.add(svc, "workflow", "locked", {"n": str(i), "fail": "1" if i % 5 == 2 else "0"})


@pytest.mark.timeout(300)  # about a minute on the 2-core machine; more only when it is overloaded
def test_everything_at_once_keeps_every_guarantee(proj: Proj, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    step = tmp_path / "step.sh"
    step.write_text(STEP.format(log=log))
    step.chmod(0o755)
    proj.write("sluice.yaml", SLUICE_YAML)
    for name, text in WORKFLOWS.items():
        proj.write(f"workflows/{name}.yaml", text.format(step=step))
    proj.write("models/m.yaml", MODEL.format(step=step))
    standby, env = twin(proj, tmp_path, "standby")
    seed(proj)
    svc = proj.service()
    db = svc.db
    agents: list[subprocess.Popen[str]] = []
    crowd, drain = Crowd(proj, env, db), Crowd(proj, env, db)
    t0 = time.monotonic()
    try:
        proj.ok("engine", "start", env=env)
        proj.wait_for(  # the first engine is the scheduler before the second one starts: that one waits
            lambda: db.scalar("SELECT COUNT(*) FROM events WHERE kind = 'engine.started'") == 1,
            timeout=30,
            what="the first engine",
        )
        standby.ok("engine", "start", env=env)
        for i in range(4):
            agents.append(
                proj.popen("agent", "start", "--name", f"a{i}", "--env", "pool", "--capacity", "3", env=env)
            )
        proj.wait_for(
            lambda: db.scalar("SELECT COUNT(*) FROM agents WHERE name LIKE 'a%' AND lost = 0") == 4,
            timeout=30,
            what="four agents registered",
        )
        crowd.run(CROWD)
        chaos = time.monotonic() - t0

        # the end: stop the timer, let paused work go on, start what is left (what stays refused
        # is purged), and release every held job until everything is final
        drain.sluice("drain", "workflow", "pause", "tick", "--reason", "the test is ending")
        drain.sluice("drain", "workflow", "unpause", "plain")
        drain.sluice("drain", "queue", "execute", "--all", "--yes")
        drain.sluice("drain", "queue", "purge", "--all", "--yes")

        def settled() -> bool:
            for j in db.all("SELECT run_id FROM jobs WHERE status = 'held'"):
                drain.sluice("drain", "workflow", "release", "gate", "--run", str(j["run_id"]))
            return everything_final(db)

        try:
            proj.wait_for(settled, timeout=SETTLE_TIMEOUT, what="every run final and the queue empty")
        except AssertionError:
            pass  # what is wrong is said by the checks below (check_all_final last)
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        for a in agents:
            try:
                a.wait(timeout=30)
            except subprocess.TimeoutExpired:
                a.kill()
        proj.kill_engine()
        standby.kill_engine()

    calls = crowd.calls + drain.calls
    unexpected = [
        f"{c.who}: sluice {' '.join(c.args)} -> {c.code}: {c.err.strip()[-300:]}"
        for c in calls
        if c.code not in ALLOWED[c.verb] | {BUSY} or "Traceback" in c.err
    ]
    assert not unexpected, "CLI commands failed in a way they may not:\n" + "\n".join(unexpected[:20])

    trace = Trace.read(log)
    check_items_once(db)
    check_no_job_twice(db, trace)
    check_holds(db, trace)
    check_lock(db, trace)
    check_group(db, trace)
    check_pause(db)
    check_timer(db)
    check_all_final(db)

    # and the scenario did exercise what it claims to
    codes = Counter((c.verb, c.code) for c in calls)
    items = Counter(r["status"] for r in db.all("SELECT status FROM queue_items"))
    runs = Counter(r["status"] for r in db.all("SELECT status FROM runs"))
    fires = Counter(r["status"] for r in db.all("SELECT status FROM timer_fires"))
    print(
        f"\n{len(calls)} CLI calls in {chaos:.1f} s, all in {time.monotonic() - t0:.1f} s; items {dict(items)}; "
        f"runs {dict(runs)}; fires {dict(fires)}; busy (75): {sum(n for (_, c), n in codes.items() if c == BUSY)}; "
        f"slowest call {max(c.seconds for c in calls):.1f} s; "
        f"execute/purge races lost: {sum(c.verb in ('queue execute', 'queue purge') and (c.code == 4 or 'someone else' in c.err) for c in calls)}"
    )
    assert items["executed"] >= 60 and items["purged"] >= 5, items
    assert codes[("workflow release", 0)] >= 1 and codes[("run cancel", 0)] >= 1, codes
    assert fires["started"] >= 2, fires
