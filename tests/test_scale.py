"""Several engines and agents on one database (SPEC 9): failover, a batch over three agents,
and moving a project's history to PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Proj

LEASE_TAKEOVER = 25  # the standby takes over once the killed engine's 10 s lease has run out


def twin(proj: Proj, tmp_path: Path, name: str) -> tuple[Proj, dict[str, str]]:
    """A second project directory (another host, as far as the engines know) on the same database."""
    db_url = proj.db_url or f"sqlite:///{proj.root / '.sluice' / 'state.db'}"
    other = Proj(tmp_path / name, proj.template_db, db_url)
    other.root.mkdir()
    for path in proj.root.rglob("*.yaml"):
        other.write(str(path.relative_to(proj.root)), path.read_text())
    return other, {"SLUICE_DATABASE_URL": db_url}


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
        jobs: {a: {steps: [{run: 'echo "$INPUT_N" >> "$SLUICE_PROJECT/../ran"; sleep 0.2'}]}}
        """,
    )
    standby, env = twin(proj, tmp_path, "standby")
    for i in range(30):
        proj.ok("workflow", "queue", "w", "-i", f"n={i}", env=env)
    proj.ok("engine", "start", env=env)
    time.sleep(0.5)
    standby.ok("engine", "start", env=env)  # waits as a standby
    try:
        proj.ok("queue", "execute", "--all", "--yes", env=env)
        time.sleep(1.5)
        proj.kill_engine(signal.SIGKILL)  # the active engine dies mid-batch
        svc = shared_service(proj, env["SLUICE_DATABASE_URL"])
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
    for r in runs:
        if r["status"] == "failed":
            assert r["jobs"][0]["reason"] == "engine restarted"
        else:
            assert r["inputs"]["n"] in lines
    starts = [e for e in svc.history(500) if e["kind"] == "engine.started"]
    assert len({e["message"] for e in starts}) == 2  # both engines were the scheduler in turn
    assert sum(1 for r in runs if r["status"] == "succeeded") >= 25


def test_two_engines_three_agents_run_200_items_once_each(proj: Proj, tmp_path: Path) -> None:
    proj.write("sluice.yaml", "name: t\ncapacity: 1\n")
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {n: {}}
        jobs: {a: {steps: [{run: 'echo "$INPUT_N $SLUICE_AGENT" >> "$SLUICE_PROJECT/../ran"'}]}}
        """,
    )
    second, env = twin(proj, tmp_path, "second")
    agents: list[subprocess.Popen[str]] = []
    try:
        proj.ok("engine", "start", env=env)
        second.ok("engine", "start", env=env)
        for i in range(3):
            agents.append(proj.popen("agent", "start", "--name", f"worker-{i}", "--capacity", "2", env=env))
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
    used = {ln.split()[1] for ln in lines}
    assert {"worker-0", "worker-1", "worker-2"} & used  # the agent processes took part
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
