"""Agents and environments (SPEC 8) with several real agent processes."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import Proj, gone

ENV = {"SLUICE_AGENT_TIMEOUT": "2"}
SETTINGS = "name: t\nenvironments: {qa: {}, prod: {}}\n"


def start_agent(proj: Proj, name: str, *args: str) -> subprocess.Popen[str]:
    p = proj.popen("agent", "start", "--name", name, *args, env=ENV)
    svc = proj.service()
    proj.wait_for(
        lambda: svc.db.scalar("SELECT COUNT(*) FROM agents WHERE name = ? AND lost = 0", (name,)),
        what=f"agent {name}",
    )
    return p


@pytest.fixture
def agents(proj: Proj):
    procs: list[subprocess.Popen[str]] = []

    def start(name: str, *args: str) -> subprocess.Popen[str]:
        p = start_agent(proj, name, *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def jobs(view: dict) -> dict[str, dict]:
    return {j["name"]: j for j in view["jobs"]}


def test_environment_fencing_both_ways(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write("workflows/qa.yaml", 'name: to-qa\nenvironment: qa\njobs: {a: {steps: [{run: "true"}]}}\n')
    proj.write(
        "workflows/prod.yaml", 'name: to-prod\nenvironment: prod\njobs: {a: {steps: [{run: "true"}]}}\n'
    )
    proj.write("workflows/none.yaml", 'name: anywhere\njobs: {a: {steps: [{run: "true"}]}}\n')
    proj.ok("engine", "start", env=ENV)  # runs the implicit `local` agent, in no environment
    agents("qa-1", "--env", "qa")
    agents("prod-1", "--env", "prod")
    svc = proj.service()
    for wf in ("to-qa", "to-prod", "anywhere", "to-qa", "to-prod", "anywhere"):
        proj.ok("workflow", "run", wf, "--detach", env=ENV)
    for run_id in range(1, 7):
        assert svc.wait_run(run_id)["status"] == "succeeded"
    placed = {(r["target"], r["jobs"][0]["agent"]) for r in svc.list_runs()}
    assert placed == {("to-qa", "qa-1"), ("to-prod", "prod-1"), ("anywhere", "local")}


def test_resources_and_the_waiting_reason(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/train.yaml",
        """\
        name: train
        environment: qa
        jobs: {fit: {resources: [gpu], steps: [{run: "true"}]}}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    agents("qa-cpu", "--env", "qa", "--resource", "linux")
    proj.ok("workflow", "run", "train", "--detach", env=ENV)
    svc = proj.service()
    proj.wait_for(
        lambda: jobs(svc.run_view(1))["fit"]["reason"] == "no enabled agent in qa with resources [gpu]",
        what="the waiting reason",
    )
    agents("qa-gpu", "--env", "qa", "--resource", "linux", "--resource", "gpu")
    view = svc.wait_run(1)
    assert view["status"] == "succeeded" and jobs(view)["fit"]["agent"] == "qa-gpu"


def test_capacity_busy_reason_and_agent_list(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs:
          a: {parallelism: 3, steps: [{run: 'echo "start $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"; until [ -e "$SLUICE_PROJECT/go" ]; do sleep 0.05; done; echo "end $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"'}]}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    agents("qa-1", "--env", "qa", "--capacity", "1")
    proj.ok("workflow", "run", "w", "--detach", env=ENV)
    svc = proj.service()
    proj.wait_for(
        lambda: any(j["reason"] == "all 1 matching agent busy" for j in svc.run_view(1)["jobs"]),
        what="busy reason",
    )
    listing = {a["name"]: a for a in proj.ok("agent", "list", "--json").json}
    assert listing["qa-1"]["state"] == "busy" and listing["qa-1"]["jobs"][0].startswith("#1 a[")
    assert listing["qa-1"]["environments"] == ["qa"] and listing["qa-1"]["capacity"] == 1
    (proj.root / "go").touch()  # the copies may finish now (the first one held the only slot till here)
    assert svc.wait_run(1)["status"] == "succeeded"
    events = [ln.split() for ln in (proj.root / "spans").read_text().splitlines()]
    t = [(w, float(x)) for w, x in events]
    for i in range(0, 6, 2):  # strictly one at a time: start, end, start, end...
        assert t[i][0] == "start" and t[i + 1][0] == "end"
    assert proj.ok("agent", "list", "--json").json[1]["state"] == "idle"


def test_run_on_all_agents(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs:
          deploy-all: {run_on_all_agents: true, steps: [{run: 'echo "on $SLUICE_AGENT"'}]}
          after: {needs: [deploy-all], steps: [{run: "true"}]}
        """,
    )
    proj.write(
        "workflows/p.yaml",
        """\
        name: p
        environment: prod
        jobs: {deploy-all: {run_on_all_agents: true, steps: [{run: "true"}]}}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    agents("qa-1", "--env", "qa")
    agents("qa-2", "--env", "qa")
    view = proj.ok("workflow", "run", "w", "--json", env=ENV).json
    js = jobs(view)
    assert {n: j["agent"] for n, j in js.items() if n.startswith("deploy-all")} == {
        "deploy-all[qa-1]": "qa-1",
        "deploy-all[qa-2]": "qa-2",
    }
    assert js["after"]["status"] == "succeeded"
    r = proj.sluice("workflow", "run", "p", "--json", env=ENV)
    assert r.code == 1
    assert r.json["jobs"][0]["reason"] == "no enabled agent in prod (run_on_all_agents)"


def test_disable_finishes_current_job_and_takes_no_more(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs:
          one: {steps: [{run: 'until [ -e "$SLUICE_PROJECT/go" ]; do sleep 0.05; done'}]}
          two: {needs: [one], steps: [{run: 'true'}]}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    agents("qa-1", "--env", "qa")
    proj.ok("workflow", "run", "w", "--detach", env=ENV)
    svc = proj.service()
    proj.wait_for(lambda: jobs(svc.run_view(1))["one"]["status"] == "running", what="one running")
    proj.ok("agent", "disable", "qa-1")
    (proj.root / "go").touch()  # one may finish now: the agent is disabled while it runs
    proj.wait_for(lambda: jobs(svc.run_view(1))["one"]["status"] == "succeeded", what="current job finished")
    proj.wait_for(
        lambda: jobs(svc.run_view(1))["two"]["reason"] == "no enabled agent in qa (qa-1 disabled)",
        what="two waits",
    )
    assert proj.ok("agent", "list", "--json").json[1]["state"] == "disabled"
    proj.ok("agent", "enable", "qa-1")
    assert svc.wait_run(1)["status"] == "succeeded"
    assert proj.sluice("agent", "enable", "qa-1").code == 3
    assert proj.sluice("agent", "disable", "nobody").code == 4


def test_agent_killed_mid_job_is_lost_and_retry_runs_elsewhere(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs:
          long: {retry: {limit: 1}, steps: [{run: 'echo "$SLUICE_AGENT" >> "$SLUICE_PROJECT/ran"; sleep 2'}]}
          once: {steps: [{run: 'echo once-$SLUICE_AGENT >> "$SLUICE_PROJECT/ran"; sleep 30'}]}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    first = agents("qa-1", "--env", "qa", "--capacity", "2")
    proj.ok("workflow", "run", "w", "--detach", env=ENV)
    svc = proj.service()
    proj.wait_for(lambda: all(j["status"] == "running" for j in svc.run_view(1)["jobs"]), what="both running")
    killed_at = time.monotonic()
    first.send_signal(signal.SIGKILL)
    agents("qa-2", "--env", "qa")
    proj.wait_for(lambda: jobs(svc.run_view(1))["once"]["status"] == "failed", timeout=15, what="agent lost")
    # lost after the 2 s heartbeat limit, not after the 15 s default: a loose bound, not a benchmark
    assert time.monotonic() - killed_at < 10
    assert jobs(svc.run_view(1))["once"]["reason"] == "agent lost"
    view = svc.wait_run(1)
    assert jobs(view)["long"]["status"] == "succeeded" and jobs(view)["long"]["agent"] == "qa-2"
    assert (proj.root / "ran").read_text().count("once-") == 1
    assert {a["name"]: a["state"] for a in proj.ok("agent", "list", "--json").json}["qa-1"] == "lost"


def test_two_agents_of_one_name_are_refused(proj: Proj, agents) -> None:
    proj.write("sluice.yaml", SETTINGS)
    agents("qa-1", "--env", "qa")
    r = proj.sluice("agent", "start", "--name", "qa-1", "--env", "qa", env=ENV)
    assert r.code == 3 and "agent qa-1 is already running" in r.err
    r = proj.sluice("agent", "start", "--name", "x", "--env", "staging", env=ENV)
    assert r.code == 2 and "unknown environment 'staging'" in r.err


@pytest.mark.sqlite_only("cuts the agent off by holding SQLite's write lock")
def test_agent_cut_off_from_the_store_stops_its_jobs(proj: Proj, agents) -> None:
    import sqlite3

    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs: {long: {steps: [{run: 'echo $$ > "$SLUICE_PROJECT/pid"; sleep 60'}]}}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    p = proj.popen(
        "agent", "start", "--name", "qa-1", "--env", "qa", env={**ENV, "SLUICE_BUSY_TIMEOUT": "0.3"}
    )
    try:
        svc = proj.service()
        proj.wait_for(lambda: svc.db.scalar("SELECT COUNT(*) FROM agents WHERE name = 'qa-1'"), what="agent")
        proj.ok("workflow", "run", "w", "--detach", env=ENV)
        pidfile = proj.root / "pid"
        proj.wait_for(pidfile.exists, what="job started")
        pid = int(pidfile.read_text())
        holder = sqlite3.connect(proj.root / ".sluice" / "state.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # the store is unreachable for everyone...
        try:
            # ...until the agent, unable to heartbeat past its 2 s limit, has stopped its own job: it
            # cannot run on after being given up (and it did so while the store was still away)
            proj.wait_for(lambda: gone(pid), timeout=30, what="the agent to stop its job while cut off")
        finally:
            holder.execute("ROLLBACK")
        proj.wait_for(lambda: svc.run_view(1)["jobs"][0]["status"] == "failed", what="job failed")
        # whichever came first: the engine giving the agent up, or the agent reporting why it stopped
        assert svc.run_view(1)["jobs"][0]["reason"] in ("agent lost", "agent cut off from the store")
    finally:
        p.kill()
        p.wait(timeout=10)


def test_the_agents_of_a_stopped_engine_read_offline_not_idle(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    proj.ok("workflow", "run", "w")
    assert {a["name"]: a["state"] for a in proj.ok("agent", "list", "--json").json}["local"] == "idle"
    proj.ok("engine", "stop")
    quick = {"SLUICE_AGENT_TIMEOUT": "1"}  # no heartbeat for a second is "not heard from"
    proj.wait_for(
        lambda: (
            {a["name"]: a["state"] for a in proj.ok("agent", "list", "--json", env=quick).json}["local"]
            == "offline"
        ),
        what="local offline",
    )
    assert "◌ offline" in proj.ok("agent", "list", env=quick).out


@pytest.mark.parametrize("where", ["root", "subdirectory"])
def test_a_job_runs_in_the_project_root_wherever_its_agent_was_started(proj: Proj, where: str) -> None:
    """An agent started in the project root starts its steps one way (posix_spawn), one started in a
    subdirectory another (Popen, which can change directory): a person sees the same either way."""
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs:
          a: {steps: [{run: 'pwd > "$SLUICE_PROJECT/where"; yes | head -n 1; echo to-stdout; echo to-stderr >&2; exit 3'}]}
        """,
    )
    proj.ok("engine", "start", env=ENV)
    cwd = proj.root if where == "root" else proj.root / "sub"
    cwd.mkdir(exist_ok=True)
    agent = proj.popen("agent", "start", "--name", "qa-1", "--env", "qa", env=ENV, cwd=cwd)
    try:
        r = proj.sluice("workflow", "run", "w", "--json", env=ENV)
        assert r.code == 1
        job = r.json["jobs"][0]
        assert (job["status"], job["exit_code"], job["agent"]) == ("failed", 3, "qa-1")
        assert (proj.root / "where").read_text().strip() == str(proj.root)
        logs = proj.ok("run", "logs", "1").out
        assert "to-stdout" in logs and "to-stderr" in logs
        # SIGPIPE at its default in the step, as in a terminal: `yes` ends quietly when head is done
        assert "\ny\n" in logs and "Broken pipe" not in logs
    finally:
        agent.kill()
        agent.wait(timeout=10)
