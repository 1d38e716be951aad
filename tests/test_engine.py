"""The engine as a process: timeouts, retries, cancel, crash recovery, bounded memory, control."""

from __future__ import annotations

import signal
import time

from conftest import Proj, gone


def pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if not gone(p)]


def child_pids(proj: Proj, count: int) -> list[int]:
    """Pids the job wrote to its workspace (the shell and its background children)."""
    path = proj.root / "pids"
    proj.wait_for(lambda: path.exists() and len(path.read_text().split()) >= count, what="job pids")
    return [int(p) for p in path.read_text().split()]


TREE = """\
name: w
jobs:
  long:
    {extra}
    steps:
      - run: 'sleep 300 & echo $! >> pids; sleep 300 & echo $! >> pids; echo $$ >> pids; wait'
"""


def test_timeout_kills_the_process_tree(proj: Proj) -> None:
    proj.write("workflows/w.yaml", TREE.format(extra="timeout: 1s"))
    r = proj.sluice("workflow", "run", "w", "--json")
    assert r.code == 1
    job = r.json["jobs"][0]
    assert job["status"] == "failed" and job["reason"] == "timed out after 1.0s"
    assert pids_alive(child_pids(proj, 3)) == []


def test_cancel_kills_the_process_tree(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        TREE.format(extra="env: {A: b}") + "  after: {needs: [long], steps: [{run: echo no}]}\n",
    )
    proj.ok("workflow", "run", "w", "--detach")
    pids = child_pids(proj, 3)
    assert len(pids_alive(pids)) == 3
    view = proj.ok("run", "cancel", "1", "--wait", "--json").json
    assert view["status"] == "cancelled"
    statuses = {j["name"]: (j["status"], j["reason"]) for j in view["jobs"]}
    assert statuses["long"][0] == "cancelled" and statuses["long"][1].startswith("cancelled by ")
    assert statuses["after"][0] == "cancelled"
    assert pids_alive(pids) == []
    assert proj.sluice("run", "cancel", "1").code == 3  # already finished


def test_cancel_escalates_to_sigkill(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          stubborn: {steps: [{run: "trap '' TERM; echo $$ > pids; while true; do sleep 0.1; done"}]}
        """,
    )
    proj.ok("workflow", "run", "w", "--detach")
    pids = child_pids(proj, 1)
    proj.ok("run", "cancel", "1", "--wait")  # SLUICE_KILL_GRACE=2 in tests
    assert pids_alive(pids) == []
    assert "SIGKILL" in proj.ok("run", "logs", "1").out


def test_retry_reruns_failed_jobs_up_to_the_limit(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          flaky:
            retry: {limit: 3}
            steps: [{run: 'echo x >> tries; [ "$(wc -l < tries)" -ge 3 ]'}]
          never:
            retry: {limit: 2, exit_codes: [75]}
            steps: [{run: 'echo y >> tries2; exit 1'}]
        """,
    )
    r = proj.sluice("workflow", "run", "w", "--json")
    js = {j["name"]: j for j in r.json["jobs"]}
    assert js["flaky"]["status"] == "succeeded"
    assert (proj.root / "tries").read_text().count("x") == 3
    assert js["never"]["status"] == "failed"  # exit 1 is not in exit_codes: no retry
    assert (proj.root / "tries2").read_text().count("y") == 1
    assert "job.retry" in [e["kind"] for e in proj.ok("history", "--json").json]


def test_engine_sigkill_then_restart_is_consistent(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          slow: {steps: [{run: 'echo $$ > pids; echo started >> starts; sleep 300'}]}
          next: {needs: [slow], if: always, steps: [{run: 'echo next >> starts'}]}
        """,
    )
    proj.ok("workflow", "run", "w", "--detach")
    pids = child_pids(proj, 1)
    proj.kill_engine(signal.SIGKILL)
    assert pids_alive(pids) == pids  # the job's process outlives the engine in its own session
    proj.ok("engine", "start")
    view = proj.wait_for(
        lambda: (v := proj.ok("run", "show", "1", "--json").json)["status"] == "failed" and v,
        what="run to finish after restart",
    )
    js = {j["name"]: j for j in view["jobs"]}
    assert js["slow"]["status"] == "failed" and js["slow"]["reason"] == "engine restarted"
    assert js["next"]["status"] == "succeeded"
    assert pids_alive(pids) == []  # the orphan was stopped, not left running
    assert (proj.root / "starts").read_text().splitlines() == ["started", "next"]  # nothing started twice


def test_engine_sigkill_at_random_moments_never_leaves_running_jobs(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          a: {parallelism: 6, steps: [{run: 'echo "$SLUICE_RUN_ID $SLUICE_JOB" >> starts; sleep 0.2'}]}
          b: {needs: [a], if: always, steps: [{run: 'echo "$SLUICE_RUN_ID $SLUICE_JOB" >> starts'}]}
        """,
    )
    svc = proj.service()

    def started(run_id: int) -> int:
        return svc.db.scalar(
            "SELECT COUNT(*) FROM events WHERE kind = 'job.started' AND run_id = ?", (run_id,)
        )

    # three moments of a run's life: just created, its first jobs started, half its jobs started
    for run_id, wait_starts in ((1, 0), (2, 1), (3, 3)):
        assert proj.ok("workflow", "run", "w", "--detach").out.strip() == str(run_id)
        proj.wait_for(
            lambda r=run_id, n=wait_starts: started(r) >= n, what=f"{wait_starts} job(s) of run {run_id}"
        )
        proj.kill_engine(signal.SIGKILL)
        proj.ok("engine", "start")
    proj.wait_for(
        lambda: all(r["status"] in ("succeeded", "failed") for r in svc.list_runs()), what="all runs final"
    )
    runs = svc.list_runs()
    assert sorted(r["id"] for r in runs) == [1, 2, 3]
    starts = (proj.root / "starts").read_text().splitlines()
    assert len(starts) == len(set(starts)), starts  # no job's command ran twice
    for run in runs:
        for j in run["jobs"]:
            assert j["status"] in ("succeeded", "failed", "skipped"), j
            if j["status"] == "failed":
                assert j["reason"] == "engine restarted"
            if j["status"] == "succeeded":  # ran, exactly once (every job writes its line first)
                assert f"{run['id']} {j['name']}" in starts
    # exactly once by identity: every job that started was started by one engine, one time
    per_job = svc.db.all(
        "SELECT job_id, COUNT(*) AS n FROM events WHERE kind = 'job.started' GROUP BY job_id"
    )
    assert per_job and {r["n"] for r in per_job} == {1}


def test_large_output_streams_in_bounded_memory(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs: {big: {steps: [{run: "head -c 80000000 /dev/zero | tr '\\\\0' x | fold -w 100"}]}}
        """,
    )
    proj.ok("workflow", "run", "w", "--detach")
    info = proj.wait_for(proj.engine_info, what="engine")
    peak = 0
    svc = proj.service()
    while svc.run_view(1)["status"] not in ("succeeded", "failed"):
        with open(f"/proc/{info['pid']}/status") as f:
            rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS"))
        peak = max(peak, rss)
        time.sleep(0.05)
    assert svc.run_view(1)["status"] == "succeeded"
    stored = svc.db.scalar("SELECT SUM(LENGTH(data)) FROM log_chunks WHERE stream = 'out'")
    assert stored == 80_000_000 + 799_999  # every byte, with the newlines fold adds between lines
    biggest = svc.db.scalar("SELECT MAX(LENGTH(data)) FROM log_chunks")
    assert biggest <= 64 * 1024 + 4
    assert peak < 120_000, f"engine RSS peaked at {peak} KiB for 80 MB of output"


def test_engine_start_status_stop(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    stopped = proj.sluice("engine", "status", "--json")
    assert (stopped.code, stopped.json) == (3, {"running": False})  # like `systemctl status`
    r = proj.ok("engine", "start")
    assert "engine started in the background" in r.out
    st = proj.ok("engine", "status", "--json").json
    assert st["running"] is True and isinstance(st["pid"], int)
    assert "already running" in proj.ok("engine", "start").out
    assert proj.ok("engine", "stop").out.strip() == "engine stopped"
    stopped = proj.sluice("engine", "status", "--json")
    assert (stopped.code, stopped.json) == (3, {"running": False})  # like `systemctl status`
    kinds = [e["kind"] for e in proj.ok("history", "--json").json if e["kind"].startswith("engine.")]
    assert kinds[:2] == ["engine.stopped", "engine.started"]


def test_engine_stop_waits_for_running_jobs(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "sleep 3; echo finished"}]}}\n')
    proj.ok("workflow", "run", "w", "--detach")
    svc = proj.service()
    proj.wait_for(lambda: svc.db.scalar("SELECT status FROM jobs") == "running", what="the job running")
    proj.ok("engine", "stop")
    assert proj.ok("run", "show", "1", "--json").json["status"] == "succeeded"
    assert "finished" in proj.ok("run", "logs", "1").out


def test_engine_foreground(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    p = proj.popen("engine", "start", "--foreground")
    proj.wait_for(proj.engine_info, what="engine info")
    assert proj.engine_info()["pid"] == p.pid
    proj.ok("workflow", "run", "w")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0


def test_runs_survive_the_client_going_away(proj: Proj) -> None:
    # the job runs until the test says go: the client is surely gone while it runs
    proj.write(
        "workflows/w.yaml",
        'name: w\njobs: {j: {steps: [{run: "until [ -e go ]; do sleep 0.05; done; echo done"}]}}\n',
    )
    p = proj.popen("workflow", "run", "w")  # follows the run, as a user at a terminal does
    svc = proj.service()
    proj.wait_for(lambda: svc.db.scalar("SELECT status FROM jobs") == "running", what="the job running")
    p.send_signal(signal.SIGHUP)  # the terminal (or SSH session) closes
    assert p.wait(timeout=10) == -signal.SIGHUP  # the client is gone...
    assert svc.run_view(1)["status"] == "running"  # ...the run is not
    (proj.root / "go").touch()
    assert svc.wait_run(1)["status"] == "succeeded"
    assert "done" in proj.ok("run", "logs", "1").out


def test_an_engine_that_lost_its_lease_writes_nothing_and_stops(proj: Proj) -> None:
    """Fencing: another engine took the lease (this one stalled past it): no write gets through."""
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "echo ran >> ran"}]}}\n')
    proj.ok("engine", "start")
    info = proj.engine_info()
    svc = proj.service()
    with svc.db.write() as tx:  # what a standby does when it takes over
        tx.execute(
            "UPDATE leases SET holder = 'other-host:1:x', token = token + 1, expires_at = ? "
            "WHERE name = 'scheduler'",
            (time.time() + 60,),
        )
    run_id = svc.run_workflow("w", {})
    proj.wait_for(lambda: gone(info["pid"]), what="the fenced engine to stop")
    assert svc.run_view(run_id)["status"] == "pending"  # it moved nothing on
    assert not (proj.root / "ran").exists()
    assert "another engine holds the scheduler lease" in (proj.root / ".sluice" / "engine.log").read_text()


FDS = """\
import json, os
open_fds = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    open_fds.append((fd, os.readlink(f"/proc/self/fd/{fd}")))
print(json.dumps({
    "cwd": os.getcwd(),
    "stdin": os.path.realpath("/proc/self/fd/0"),
    "stdin_read": os.read(0, 16).decode(),
    "fds": open_fds,
    "pgid": os.getpgid(0),
    "parent_pgid": os.getpgid(os.getppid()),
}))
"""


def test_a_step_starts_clean_in_the_project_root(proj: Proj) -> None:
    """What a step inherits from the engine: the project root as its directory, an empty stdin,
    its own process group, and none of the engine's descriptors (store, sockets, locks, pipes)."""
    import json
    import sys

    proj.write("check.py", FDS)
    proj.write(
        "workflows/w.yaml",
        f'name: w\njobs: {{j: {{steps: [{{run: "{sys.executable} check.py"}}]}}}}\n',
    )
    proj.ok("engine", "start")
    engine_pgid = __import__("os").getpgid(proj.engine_info()["pid"])
    proj.ok("workflow", "run", "w")
    seen = json.loads(proj.ok("run", "logs", "1").out.strip().splitlines()[-1])
    assert seen["cwd"] == str(proj.root.resolve())
    assert seen["stdin"] == "/dev/null" and seen["stdin_read"] == ""
    assert seen["fds"] == []
    assert seen["pgid"] != engine_pgid
