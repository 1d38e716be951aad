"""Followers read what changed since their last look (issue 11): `workflow run` (Service.follow)
and `--wait` over several runs, against a real engine and the real CLI, on both backends.

Following is made measurable by counting what the follower reads from the store (a wrapper
around its Database): the rows of `jobs` read while following a wide fan-out to its end must be
O(changes), not O(jobs x polls). Nothing here sleeps for a fixed time: it waits on conditions."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

import pytest
from conftest import Proj


def fan(proj: Proj, n: int, name: str = "fan") -> None:
    proj.write(
        f"workflows/{name}.yaml",
        f"name: {name}\njobs: {{a: {{parallelism: {n}, steps: [{{run: 'echo \"out $SLUICE_JOB\"'}}]}}}}\n",
    )


class Reads:
    """Counts the statements a Database runs for its reader and the rows they return."""

    def __init__(self, db: Any) -> None:
        self.statements = 0
        self.rows = 0
        self.job_rows = 0  # rows of statements that read the jobs table
        self.chunk_rows = 0  # rows of log_chunks
        self.by_sql: Counter[str] = Counter()
        for name in ("all", "one", "scalar"):
            setattr(db, name, self._wrap(getattr(db, name), name))

    def _wrap(self, fn: Any, kind: str) -> Any:
        def counted(sql: str, params: Any = ()) -> Any:
            result = fn(sql, params)
            n = len(result) if kind == "all" else (0 if result is None else 1)
            self.statements += 1
            self.rows += n
            if re.search(r"\bFROM jobs\b", sql):
                self.job_rows += n
            if re.search(r"\bFROM log_chunks\b", sql):
                self.chunk_rows += n
            self.by_sql[re.sub(r"\?(, ?\?)+", "?…", " ".join(sql.split()))[:110]] += n
            return result

        return counted

    def report(self, what: str) -> str:
        lines = [f"{what}: {self.statements} statements, {self.rows} rows, {self.job_rows} of jobs"]
        lines += [f"  {rows:8} {sql}" for sql, rows in self.by_sql.most_common(8)]
        return "\n".join(lines)


def check_each_job_once(events: list[tuple[str, Any]], names: list[str]) -> None:
    """Every job's start, output and end exactly once, in that order (Service.follow's events)."""
    order: dict[str, list[str]] = {}
    outs: Counter[str] = Counter()
    for kind, v in events:
        if kind == "job" and v["status"] in ("running", "succeeded"):
            order.setdefault(v["name"], []).append("start" if v["status"] == "running" else "end")
        elif kind == "log":
            order.setdefault(v["job"], []).append("out")
            outs.update(v["data"].splitlines())
    for j in names:
        steps = [s for i, s in enumerate(order.get(j, [])) if s != "out" or order[j][i - 1] != "out"]
        assert steps == ["start", "out", "end"], (j, order.get(j))
        assert outs[f"out {j}"] == 1, (j, outs[f"out {j}"])
    assert events[-1][0] == "run" and events[-1][1]["status"] == "succeeded"
    assert [j["status"] for j in events[-1][1]["jobs"]] == ["succeeded"] * len(names)


def test_following_a_wide_fan_out_reads_what_changed(proj: Proj) -> None:
    """Each job changes three times (pending to waiting, started, ended): the follower reads each
    job's row about once per change plus once at its first look, whatever the number of polls.
    Before, it read every job of the run at every poll (10 times a second)."""
    n = 500
    fan(proj, n)
    run_id = int(proj.ok("workflow", "run", "fan", "--detach").out)
    svc = proj.service()
    reads = Reads(svc.db)
    started = time.monotonic()
    events = list(svc.follow(run_id))
    took = time.monotonic() - started
    check_each_job_once(events, [f"a[{i}]" for i in range(n)])
    print("\n" + reads.report(f"followed a {n}-way fan-out for {took:.1f}s"))
    assert reads.job_rows < 4 * n, reads.report("too many rows of jobs")
    # and each chunk of output read once
    assert reads.chunk_rows == proj.service().db.scalar(
        "SELECT COUNT(*) FROM log_chunks WHERE run_id = ?", (run_id,)
    )


def test_workflow_run_shows_every_job_of_a_fan_out_once(proj: Proj) -> None:
    n = 200
    fan(proj, n)
    out = proj.ok("workflow", "run", "fan", timeout=180).out.splitlines()
    for i in range(n):
        j = f"a[{i}]"
        mine = [ln for ln in out if ln in (f"» running {j}", f"[{j}] out {j}", f"✓ succeeded {j}")]
        assert mine == [f"» running {j}", f"[{j}] out {j}", f"✓ succeeded {j}"], (j, mine)
    assert out[-1] == "run #1 ✓ succeeded"


RETRIED = """\
name: retried
jobs:
  a:
    retry: {limit: 1}
    steps:
      - run: |
          if [ -e "$SLUICE_PROJECT/tried" ]; then
            echo second-attempt-1
            until [ -e "$SLUICE_PROJECT/go" ]; do sleep 0.02; done
            echo second-attempt-2
          else
            touch "$SLUICE_PROJECT/tried"
            echo first-attempt
            until [ -e "$SLUICE_PROJECT/fail" ]; do sleep 0.02; done
            exit 3
          fi
"""


def printed(p: Any) -> list[str]:
    """The lines a CLI process prints, as they come (read by a thread)."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(ln.rstrip("\n") for ln in p.stdout), daemon=True).start()
    return lines


def test_a_retried_job_shows_the_output_of_both_attempts_in_order(proj: Proj) -> None:
    """Attempt 2 continues the job's seq: its output follows attempt 1's, each line once."""
    proj.write("workflows/retried.yaml", RETRIED)
    p = proj.popen("workflow", "run", "retried")
    lines = printed(p)
    try:
        proj.wait_for(lambda: "[a] first-attempt" in lines, what="attempt 1's line")
        (proj.root / "fail").touch()
        proj.wait_for(lambda: "[a] second-attempt-1" in lines, what="attempt 2's first line")
        (proj.root / "go").touch()
        p.wait(timeout=60)
        proj.wait_for(lambda: lines and lines[-1].startswith("run #1 "), what="the end")
    finally:
        p.kill()
    assert p.returncode == 0, p.stderr.read()
    expected = [
        "» running a",
        "[a] first-attempt",
        "» running a",
        "[a] second-attempt-1",
        "[a] second-attempt-2",
        "✓ succeeded a",
    ]
    assert [ln for ln in lines if ln in expected] == expected, lines
    assert lines[-1] == "run #1 ✓ succeeded"


def test_wait_follows_several_runs_in_one_loop(proj: Proj) -> None:
    """`queue execute --all --wait`: each run is said as it ends (the quick failure first, while
    the first run still waits), and the command returns when all are final, exit 1 for a failure."""
    proj.write(
        "workflows/slow.yaml",
        "name: slow\njobs: {a: {steps: [{run: 'until [ -e \"$SLUICE_PROJECT/go\" ]; do sleep 0.02; done'}]}}\n",
    )
    proj.write("workflows/bad.yaml", "name: bad\njobs: {a: {steps: [{run: 'exit 2'}]}}\n")
    proj.write(
        "workflows/good.yaml",
        "name: good\ninputs: {n: {default: '0'}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
    )
    for wf in ("slow", "bad", "good"):
        proj.ok("workflow", "queue", wf)
    p = proj.popen("queue", "execute", "--all", "--yes", "--wait")
    lines = printed(p)
    try:
        svc = proj.service()
        proj.wait_for(
            lambda: (
                {ln for ln in list(lines) if ln.startswith("run #")}
                == {"run #2 bad: ✗ failed", "run #3 good: ✓ succeeded"}
            ),
            what="bad and good said to have ended while slow runs",
        )
        assert svc.run_row(1)["status"] == "running"
        (proj.root / "go").touch()
        p.wait(timeout=60)
        proj.wait_for(lambda: len([ln for ln in lines if ln.startswith("run #")]) == 3, what="slow said")
    finally:
        p.kill()
    assert p.returncode == 1, p.stderr.read()
    ended = [ln for ln in lines if ln.startswith("run #")]
    assert ended[2:] == ["run #1 slow: ✓ succeeded"], lines
    assert {r["status"] for r in svc.list_runs()} == {"succeeded", "failed"}
    # all succeeding: exit 0
    for i in range(1, 4):
        proj.ok("workflow", "queue", "good", "-i", f"n={i}")
    r = proj.ok("queue", "execute", "--all", "--yes", "--wait")
    assert sorted(ln for ln in r.out.splitlines() if ln.startswith("run #")) == [
        f"run #{i} good: ✓ succeeded" for i in (4, 5, 6)
    ]


def test_waiting_for_many_runs_reads_what_changed(proj: Proj) -> None:
    """wait_runs over 100 runs reads each run's row about once when it ends (and its view),
    not every run at every poll."""
    n = 100
    proj.write("workflows/t.yaml", "name: t\njobs: {a: {steps: [{run: 'true'}]}}\n")
    svc = proj.service()
    for _ in range(n):
        svc.run_workflow("t", {})
    proj.ok("engine", "start")
    reads = Reads(svc.db)
    views = list(svc.wait_runs(list(range(1, n + 1))))
    print("\n" + reads.report(f"waited for {n} runs"))
    assert sorted(v["id"] for v in views) == list(range(1, n + 1))
    assert {v["status"] for v in views} == {"succeeded"}
    assert reads.job_rows == n  # in the views, once each
    assert reads.rows < 6 * n, reads.report("too many rows")


def test_output_committed_late_with_a_smaller_id_is_not_passed_over(proj: Proj, backend: str) -> None:
    """PostgreSQL without one global write lock: a log chunk can commit after another with a larger
    id. Followed by (job, seq), it is shown all the same (by id alone it was skipped)."""
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: ids commit in order")
    import psycopg

    from core.service import record_event
    from core.store.db import now

    proj.write(
        "workflows/w.yaml",
        "name: w\njobs: {x: {steps: [{run: 'true'}]}, y: {steps: [{run: 'true'}]}}\n",
    )
    svc = proj.service()  # no engine: this test writes what an agent would
    run_id = svc.run_workflow("w", {})
    jobs = {j["name"]: j["id"] for j in svc.job_rows(run_id)}

    def set_jobs(status: str, kind: str) -> None:
        with svc.db.write() as tx:
            t = now()
            for name, job_id in jobs.items():
                col = "started_at" if status == "running" else "finished_at"
                tx.execute(f"UPDATE jobs SET status = ?, {col} = ? WHERE id = ?", (status, t, job_id))
                record_event(tx, kind, "test", f"{name} {status}", run_id=run_id, job_id=job_id)
            if status != "running":
                tx.execute("UPDATE runs SET status = 'succeeded', finished_at = ? WHERE id = ?", (t, run_id))
                record_event(tx, "run.succeeded", "test", "done", run_id=run_id)

    set_jobs("running", "job.started")
    events: list[tuple[str, Any]] = []
    follower = threading.Thread(target=lambda: events.extend(proj.service().follow(run_id, poll=0.02)))
    follower.start()
    conninfo = "postgresql://" + proj.db_url.split("://", 1)[1]
    insert = (
        "INSERT INTO log_chunks (job_id, run_id, seq, stream, data, at) VALUES (%s, %s, 1, 'out', %s, %s)"
    )

    def shown(text: str) -> bool:
        return any(k == "log" and v["data"] == text for k, v in list(events))

    with psycopg.connect(conninfo) as a, psycopg.connect(conninfo) as b:
        a.execute(insert, (jobs["x"], run_id, "from x\n", now()))  # the smaller id, not committed yet
        b.execute(insert, (jobs["y"], run_id, "from y\n", now()))
        b.commit()
        proj.wait_for(lambda: shown("from y\n"), what="y's output")
        a.commit()
        proj.wait_for(lambda: shown("from x\n"), what="x's output, committed later with a smaller id")
    set_jobs("succeeded", "job.succeeded")
    follower.join(timeout=30)
    assert not follower.is_alive()
    assert [v["data"] for k, v in events if k == "log"] == ["from y\n", "from x\n"]
    assert events[-1][0] == "run" and events[-1][1]["status"] == "succeeded"
