"""Several engines and agents on one database (SPEC 9): failover, a batch over three agents,
and moving a project's history to PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Proj, twin

LEASE_TAKEOVER = 25  # the standby takes over once the killed engine's 10 s lease has run out


def shared_service(proj: Proj, url: str):
    from core.service import Service
    from core.store.db import Database

    svc = Service.open(proj.root)
    svc.db = Database(url)
    return svc


def test_standby_takes_over_and_finishes_the_work(proj: Proj, tmp_path: Path) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {n: {}}
        jobs: {a: {steps: [{run: 'echo "$INPUT_N" >> "$SLUICE_PROJECT/../ran"; sleep 0.5'}]}}
        """,
    )
    standby, env = twin(proj, tmp_path, "standby")
    for i in range(30):
        proj.ok("workflow", "queue", "w", "-i", f"n={i}", env=env)
    svc = shared_service(proj, env["SLUICE_DATABASE_URL"])

    def count(sql: str, *args: object) -> int:
        return svc.db.scalar(sql, args)

    proj.ok("engine", "start", env=env)
    proj.wait_for(  # the first engine holds the lease before the second starts: that one is the standby
        lambda: count("SELECT COUNT(*) FROM events WHERE kind = 'engine.started'") == 1,
        what="the first engine",
    )
    standby.ok("engine", "start", env=env)  # waits as a standby
    try:
        proj.ok("queue", "execute", "--all", "--yes", env=env)
        # mid-batch: a few runs done (each job takes 0.5 s, 4 at a time: 30 take 4 s at the very least)
        proj.wait_for(
            lambda: count("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'") >= 4, what="a few runs done"
        )
        proj.kill_engine(signal.SIGKILL)  # the active engine dies mid-batch
        killed_at = time.time()
        proj.wait_for(
            lambda: all(r["status"] in ("succeeded", "failed") for r in svc.list_runs(limit=100)),
            timeout=LEASE_TAKEOVER + 20,
            what="the standby to finish every run",
        )
    finally:
        standby.kill_engine()
    runs = svc.list_runs(limit=100)
    assert sorted(int(r["inputs"]["n"]) for r in runs) == list(range(30))  # one run per item
    lines = (tmp_path / "ran").read_text().split()
    assert len(lines) == len(set(lines))  # nothing started twice
    failed = [r for r in runs if r["status"] == "failed"]
    # what failed is exactly what the dead engine had in hand: at most its 4 slots, each started
    # before the kill, and each marked so; everything else succeeded
    assert len(failed) <= 4
    for r in failed:
        assert r["jobs"][0]["reason"] == "engine restarted"
    assert all(
        j["started_at"] < killed_at for j in svc.db.all("SELECT started_at FROM jobs WHERE status = 'failed'")
    )
    for r in runs:
        if r["status"] == "succeeded":
            assert r["inputs"]["n"] in lines
    assert sum(1 for r in runs if r["status"] == "succeeded") == 30 - len(failed)
    starts = [e for e in svc.history(500) if e["kind"] == "engine.started"]
    assert len({e["message"] for e in starts}) == 2  # both engines were the scheduler in turn
    # and the standby did finish the work: runs succeeded after the first engine was gone
    assert count("SELECT COUNT(*) FROM runs WHERE status = 'succeeded' AND finished_at > ?", killed_at) >= 1


def test_two_engines_three_agents_run_200_items_once_each(proj: Proj, tmp_path: Path) -> None:
    # the jobs run in environment `pool`, which only the three agent processes serve (the engines'
    # own `local` agents are in no environment): the work can only be done by the three workers
    proj.write("sluice.yaml", "name: t\ncapacity: 1\nenvironments: {pool: {}}\n")
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: pool
        inputs: {n: {}}
        jobs: {a: {steps: [{run: 'echo "$INPUT_N $SLUICE_AGENT" >> "$SLUICE_PROJECT/../ran"; sleep 0.1'}]}}
        """,
    )
    second, env = twin(proj, tmp_path, "second")
    agents: list[subprocess.Popen[str]] = []
    try:
        proj.ok("engine", "start", env=env)
        second.ok("engine", "start", env=env)
        for i in range(3):
            agents.append(
                proj.popen(
                    "agent", "start", "--name", f"worker-{i}", "--env", "pool", "--capacity", "2", env=env
                )
            )
        from core import queueing

        svc = shared_service(proj, env["SLUICE_DATABASE_URL"])
        for i in range(200):
            queueing.add(svc, "workflow", "w", {"n": str(i)})
        proj.ok("queue", "execute", "--all", "--yes", env=env)
        proj.wait_for(
            lambda: svc.db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'") == 200,
            timeout=120,
            what="200 runs",
        )
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        for a in agents:
            a.wait(timeout=30)
        proj.kill_engine()
        second.kill_engine()
    lines = (tmp_path / "ran").read_text().splitlines()
    numbers = [ln.split()[0] for ln in lines]
    assert sorted(numbers, key=int) == [str(i) for i in range(200)]  # each executed once
    per_agent = Counter(ln.split()[1] for ln in lines)
    # the work spread: every worker took part (no worker can take more than 2 at a time, and 200 jobs
    # of 0.1 s each keep all three busy for over 3 s: one idle worker would be a claiming bug)
    assert set(per_agent) == {"worker-0", "worker-1", "worker-2"}, per_agent
    starts = svc.db.all("SELECT job_id, COUNT(*) AS n FROM events WHERE kind = 'job.started' GROUP BY job_id")
    assert len(starts) == 200 and {r["n"] for r in starts} == {1}  # each job started once, by one agent
    assert svc.db.scalar("SELECT COUNT(*) FROM queue_items WHERE status = 'executed'") == 200


@pytest.mark.sqlite_only("copies a SQLite project's history into PostgreSQL")
def test_db_copy_moves_history_to_postgresql(proj: Proj, request: pytest.FixtureRequest) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {a: {steps: [{run: "echo hello"}]}}\n')
    proj.ok("workflow", "run", "w")
    proj.ok("workflow", "queue", "w")
    proj.ok("workflow", "pause", "w", "--reason", "moving house")
    before = proj.ok("run", "show", "1", "--json").json
    r = proj.sluice("db", "copy", "--to", "postgresql+psycopg://x@127.0.0.1:1/none")
    assert r.code == 3 and "stop it first" in r.err  # the engine is running
    proj.ok("engine", "stop")
    server = request.getfixturevalue("pg_server")
    server.admin("CREATE DATABASE moved")
    url = server.url("moved")
    r = proj.ok("db", "copy", "--to", url)
    assert "1 runs" in r.out
    env = {"SLUICE_DATABASE_URL": url}
    assert proj.ok("run", "show", "1", "--json", env=env).json == before
    assert "hello" in proj.ok("run", "logs", "1", env=env).out
    assert proj.ok("queue", "list", "--json", env=env).json[0]["status"] == "queued"
    assert proj.ok("workflow", "list", "--json", env=env).json[0]["paused"] is True
    proj.ok("workflow", "unpause", "w", env=env)
    second = proj.ok("workflow", "run", "w", "--json", env=env).json
    assert second["id"] == 2 and second["status"] == "succeeded"  # ids continue after the copied ones
    proj.kill_engine()
    r = proj.sluice("db", "copy", "--to", url)
    assert r.code == 3 and "copy only into an empty database" in r.err
