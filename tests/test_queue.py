"""The staged queue (SPEC 3) through the CLI, with real concurrent processes."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

from conftest import REPO, Proj, add_ticker, engine_pids, wait_ticks

MODELS = """\
name: ad-account
methods:
  create:
    inputs: {user: {required: true, pattern: '^[a-z]+$'}, token: {secret: true, default: hunter2}}
    run: 'echo "create $INPUT_USER" >> "$SLUICE_PROJECT/ran"'
"""
LB = """\
name: load-balancer
methods:
  swap:
    inputs: {target: {required: true, enum: [blue, green]}}
    run: 'echo "swap $INPUT_TARGET" >> "$SLUICE_PROJECT/ran"'
"""
WF = """\
name: {name}
inputs: {{to: {{default: "1"}}}}
jobs:
  a: {{steps: [{{run: 'echo "{name} $INPUT_TO" >> "$SLUICE_PROJECT/ran"'}}]}}
"""


def setup(proj: Proj) -> None:
    proj.write("models/ad.yaml", MODELS)
    proj.write("models/lb.yaml", LB)
    for name in ("db-migration", "app-deployment", "teardown-dns"):
        proj.write(f"workflows/{name}.yaml", WF.format(name=name))


def ran(proj: Proj) -> list[str]:
    path = proj.root / "ran"
    return path.read_text().splitlines() if path.exists() else []


def test_queue_validates_inputs_fills_defaults_and_masks_secrets(proj: Proj) -> None:
    setup(proj)
    r = proj.sluice("method", "queue", "ad-account", "create", "-i", "user=J-Smith")
    assert r.code == 2 and "does not match pattern" in r.err
    r = proj.sluice("method", "queue", "ad-account", "create")
    assert r.code == 2 and "missing required input 'user'" in r.err
    assert proj.ok("queue", "list", "--json").json == []
    item = proj.ok(
        "method", "queue", "ad-account", "create", "-i", "user=jsmith", "--note", "starts Monday", "--json"
    ).json
    assert set(item) == {
        "id",
        "kind",
        "target",
        "inputs",
        "status",
        "queued_by",
        "queued_at",
        "not_before",
        "note",
        "run_id",
    }
    assert item["kind"] == "method" and item["target"] == "ad-account.create"
    assert item["inputs"] == {"user": "jsmith", "token": "***"}
    assert item["status"] == "queued" and item["note"] == "starts Monday" and item["run_id"] is None
    listing = proj.ok("queue", "list").out
    assert "hunter2" not in listing and "token=***" in listing and "starts Monday" in listing
    assert "hunter2" not in proj.ok("history", "--json").out
    assert ran(proj) == []  # queueing runs nothing


def test_one_invocation_one_item(proj: Proj) -> None:
    setup(proj)
    first = proj.ok("method", "queue", "load-balancer", "swap", "-i", "target=green", "--json").json
    r = proj.sluice("method", "queue", "load-balancer", "swap", "-i", "target=green")
    assert r.code == 3
    assert f"already queued as item #{first['id']}" in r.err
    proj.ok("method", "queue", "load-balancer", "swap", "-i", "target=blue")  # other inputs: fine
    # defaults count: to=1 given or not is the same invocation
    proj.ok("workflow", "queue", "db-migration")
    assert proj.sluice("workflow", "queue", "db-migration", "-i", "to=1").code == 3
    proj.ok("queue", "purge", str(first["id"]))
    proj.ok("method", "queue", "load-balancer", "swap", "-i", "target=green")  # purged: may queue again


def test_concurrent_queueing_makes_one_item(proj: Proj) -> None:
    setup(proj)
    procs = [proj.popen("workflow", "queue", "teardown-dns") for _ in range(6)]
    outs = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    codes = sorted(c for c, _ in outs)
    assert codes == [0, 3, 3, 3, 3, 3], outs
    assert len(proj.ok("queue", "list", "--json").json) == 1


def test_unique_index_is_in_the_database(proj: Proj) -> None:
    """Not only a check in Python: the database itself refuses a second queued copy."""
    import pytest

    from core.store.db import IntegrityError

    setup(proj)
    proj.ok("workflow", "queue", "teardown-dns")
    svc = proj.service()
    with pytest.raises(IntegrityError):
        with svc.db.write() as tx:
            tx.execute(
                "INSERT INTO queue_items (kind, target, inputs, inputs_key, pins, status, queued_by, queued_at) "
                "SELECT kind, target, inputs, inputs_key, pins, status, 'x', 0 FROM queue_items"
            )


def test_selectors(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "queue", "db-migration")
    proj.ok("workflow", "queue", "app-deployment")
    proj.ok("method", "queue", "ad-account", "create", "-i", "user=jsmith")
    proj.ok("method", "queue", "load-balancer", "swap", "-i", "target=green")
    proj.ok("method", "queue", "load-balancer", "swap", "-i", "target=blue")

    def ids(*sel: str) -> list[int]:
        return [i["id"] for i in proj.ok("queue", "list", *sel, "--json").json]

    assert ids() == [1, 2, 3, 4, 5]
    assert ids("--all") == [1, 2, 3, 4, 5]
    assert ids("--workflows") == [1, 2]
    assert ids("--methods") == [3, 4, 5]
    assert ids("--workflow", "app-deployment") == [2]
    assert ids("--method", "swap") == [4, 5]
    assert ids("--method", "ad-account.create") == [3]
    assert ids("2", "4") == [2, 4]


def test_execute_in_queued_order_each_once_then_purge(proj: Proj) -> None:
    setup(proj)
    proj.write("sluice.yaml", "name: t\ncapacity: 1\n")  # one at a time: the order is visible
    proj.ok("workflow", "queue", "teardown-dns")
    proj.ok("workflow", "queue", "db-migration")
    proj.ok("method", "queue", "ad-account", "create", "-i", "user=jsmith")
    r = proj.ok("queue", "execute", "--workflows", "--yes", "--wait")
    assert "started #1 workflow teardown-dns to=1 as run #1" in r.out
    assert "started #2 workflow db-migration to=1 as run #2" in r.out
    assert ran(proj) == ["teardown-dns 1", "db-migration 1"]
    items = proj.ok("queue", "list", "--json").json
    assert [i["id"] for i in items] == [3]
    proj.ok("queue", "purge", "--methods", "--yes")
    assert proj.ok("queue", "list", "--json").json == []
    assert ran(proj) == ["teardown-dns 1", "db-migration 1"]  # purge ran nothing
    kinds = [
        (e["kind"], e["item_id"], e["run_id"]) for e in proj.ok("history", "--json", "--limit", "100").json
    ]
    assert ("queue.executed", 1, 1) in kinds and ("queue.executed", 2, 2) in kinds
    assert ("queue.purged", 3, None) in kinds
    assert ("queue.queued", 3, None) in kinds
    runs = proj.ok("run", "list", "--json").json
    assert {r["trigger"] for r in runs} == {"queue"}


def test_executing_again_is_not_found(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "queue", "teardown-dns")
    proj.ok("queue", "execute", "1")
    r = proj.sluice("queue", "execute", "1")
    assert r.code == 4 and "no longer queued (it was executed as run #1)" in r.err
    r = proj.sluice("queue", "purge", "9")
    assert r.code == 4 and "no queue item #9" in r.err


def test_wait_exits_1_when_a_run_fails(proj: Proj) -> None:
    proj.write("workflows/bad.yaml", 'name: bad\njobs: {a: {steps: [{run: "exit 2"}]}}\n')
    proj.ok("workflow", "queue", "bad")
    r = proj.sluice("queue", "execute", "--all", "--yes", "--wait")
    assert r.code == 1 and "✗ failed" in r.out


def test_bulk_needs_yes_without_a_terminal(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "queue", "db-migration")
    for sel in (["--all"], ["--workflows"], ["--methods"]):
        for verb in ("execute", "purge"):
            r = proj.sluice("queue", verb, *sel)
            assert r.code == 2 and "--yes is required without a terminal" in r.err
    r = proj.sluice("queue", "execute")
    assert r.code == 2 and "choose items" in r.err
    assert proj.ok("queue", "list", "--json").json[0]["status"] == "queued"
    proj.ok("queue", "purge", "--workflow", "db-migration")  # a named selector needs no --yes


def _on_terminal(proj: Proj, args: list[str], answer: str) -> str:
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", *args],
        cwd=proj.root,
        env=proj.env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in out and time.monotonic() < deadline:
        out += os.read(master, 4096)
    os.write(master, answer.encode() + b"\n")
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(timeout=30)
    os.close(master)
    return out.decode()


def test_terminal_confirmation_lists_items_and_cancel_changes_nothing(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "queue", "db-migration")
    proj.ok("method", "queue", "ad-account", "create", "-i", "user=jsmith")
    text = _on_terminal(proj, ["queue", "purge", "--all"], "n")
    assert "db-migration" in text and "ad-account.create" in text and "Purge these 2 item(s)?" in text
    assert "nothing was changed" in text
    assert len(proj.ok("queue", "list", "--json").json) == 2
    text = _on_terminal(proj, ["queue", "purge", "--all"], "y")
    assert "purged #1" in text
    assert proj.ok("queue", "list", "--json").json == []


def test_paused_workflow_item_stays_queued(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "queue", "db-migration")
    proj.ok("workflow", "pause", "db-migration", "--reason", "DBA on holiday")
    r = proj.sluice("queue", "execute", "--all", "--yes")
    assert r.code == 3
    assert "stays queued: workflow db-migration is paused by" in r.err and "DBA on holiday" in r.err
    assert proj.ok("queue", "list", "--json").json[0]["status"] == "queued"
    proj.ok("method", "queue", "ad-account", "create", "-i", "user=jsmith")
    r = proj.sluice("queue", "execute", "--all", "--yes")
    assert r.code == 0  # one item started, the paused one is reported
    assert "stays queued" in r.err
    assert "queue.refused" in [e["kind"] for e in proj.ok("history", "--json").json]
    proj.ok("workflow", "unpause", "db-migration")
    proj.ok("queue", "execute", "--all", "--yes", "--wait")
    assert proj.ok("queue", "list", "--json").json == []


def test_concurrent_execute_starts_each_item_once(proj: Proj) -> None:
    setup(proj)
    for i in range(20):
        proj.ok("workflow", "queue", "db-migration", "-i", f"to={i}")
    a = proj.popen("queue", "execute", "--all", "--yes")
    b = proj.popen("queue", "execute", *[str(i) for i in range(5, 21)], "--yes")
    c = proj.popen("queue", "execute", "--workflow", "db-migration", "--yes")
    outs = [p.communicate(timeout=60)[0] for p in (a, b, c)]
    # each item was reported started by exactly one of the three, whatever their exit codes
    started = sorted(
        int(ln.split()[1].lstrip("#"))
        for out in outs
        for ln in out.splitlines()
        if ln.startswith("started #")
    )
    assert started == list(range(1, 21)), outs
    svc = proj.service()
    rows = svc.db.all("SELECT queue_item_id, COUNT(*) AS n FROM runs GROUP BY queue_item_id")
    assert len(rows) == 20 and all(r["n"] == 1 for r in rows)
    proj.wait_for(
        lambda: all(r["status"] == "succeeded" for r in svc.list_runs(limit=100)), what="20 runs to finish"
    )
    # every run is final, so nothing more can start: each command ran once, each job started once
    assert sorted(ran(proj)) == sorted(f"db-migration {i}" for i in range(20))
    assert {
        r["n"]
        for r in svc.db.all("SELECT COUNT(*) AS n FROM events WHERE kind = 'job.started' GROUP BY job_id")
    } == {1}
    assert svc.db.scalar("SELECT COUNT(DISTINCT job_id) FROM events WHERE kind = 'job.started'") == 20


def test_engine_killed_during_execute_all_each_item_one_run(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {n: {}}
        jobs: {a: {steps: [{run: 'echo "$INPUT_N" >> "$SLUICE_PROJECT/ran"; sleep 0.1'}]}}
        """,
    )
    for i in range(40):
        proj.ok("workflow", "queue", "w", "-i", f"n={i}")
    proj.ok("engine", "start")
    ex = proj.popen("queue", "execute", "--all", "--yes")
    svc = proj.service()
    for k in range(1, 5):  # kill the engine four times while the batch goes on, each time at new progress
        proj.wait_for(
            lambda k=k: svc.db.scalar("SELECT COUNT(*) FROM events WHERE kind = 'job.started'") >= 4 * k,
            timeout=60,
            what=f"{4 * k} jobs started",
        )
        proj.kill_engine(signal.SIGKILL)
        proj.ok("engine", "start")
    assert ex.wait(timeout=60) == 0
    proj.wait_for(
        lambda: all(r["status"] in ("succeeded", "failed") for r in svc.list_runs(limit=100)),
        timeout=60,
        what="all runs final",
    )
    runs = svc.list_runs(limit=100)
    assert sorted(r["inputs"]["n"] for r in runs) == sorted(str(i) for i in range(40))  # one run per item
    items = svc.db.all("SELECT status, run_id FROM queue_items")
    assert all(i["status"] == "executed" and i["run_id"] for i in items)
    lines = ran(proj)
    assert len(lines) == len(set(lines))  # no command ran twice
    for r in runs:
        if r["status"] == "failed":
            assert r["jobs"][0]["reason"] == "engine restarted"
        else:
            assert r["inputs"]["n"] in lines
    starts = {
        s["job_id"]: s["n"]
        for s in svc.db.all(
            "SELECT job_id, COUNT(*) AS n FROM events WHERE kind = 'job.started' GROUP BY job_id"
        )
    }
    assert set(starts.values()) == {1}  # no job started twice
    succeeded = {j["id"] for j in svc.db.all("SELECT id FROM jobs WHERE status = 'succeeded'")}
    assert succeeded <= set(starts)


def test_schedule_runs_once_when_due(proj: Proj) -> None:
    setup(proj)
    item = proj.ok("workflow", "schedule", "db-migration", "--at", "+1s", "--json").json
    assert item["not_before"] is not None
    proj.ok("workflow", "schedule", "teardown-dns", "--at", "+5s")  # room for a busy machine before the purge
    proj.ok("queue", "purge", "2")  # purged before it was due: never runs
    # due after the purged one: once it has run, the engine is past the purged item's due time
    proj.ok("workflow", "schedule", "app-deployment", "--at", "+6s")
    proj.wait_for(lambda: len(ran(proj)) == 2, what="the scheduled runs")
    assert ran(proj) == ["db-migration 1", "app-deployment 1"]
    runs = proj.ok("run", "list", "--json").json
    assert [(r["target"], r["trigger"], r["created_by"]) for r in reversed(runs)] == [
        ("db-migration", "schedule", "sluice"),
        ("app-deployment", "schedule", "sluice"),
    ]
    assert proj.service().db.scalar("SELECT status FROM queue_items WHERE id = 2") == "purged"
    kinds = [e["kind"] for e in proj.ok("history", "--json").json]
    assert "queue.scheduled" in kinds and "queue.executed" in kinds


def test_schedule_due_while_engine_was_down_runs_at_start(proj: Proj) -> None:
    """No engine runs while the item falls due; the engine started later runs it, once.

    The old version scheduled through the CLI (which starts an engine), then SIGKILLed that engine at
    whatever point of its first tick it had reached. When the kill landed between the job's claim and
    its command's first write (likelier on PostgreSQL and on a busy machine), the restarted engine
    rightly marked the job `engine restarted` and never ran it again, and the test timed out.
    Here the item is staged through the service (the dashboard's door), which starts no engine.
    """
    from core import queueing

    setup(proj)
    svc = proj.service()
    item = queueing.add(svc, "method", "ad-account.create", {"user": "late"}, at=time.time() + 1)
    proj.wait_for(lambda: queueing.due(svc) == [item["id"]], what="the item to fall due")
    assert engine_pids(proj.root) == [] and proj.engine_info() is None  # really down
    assert ran(proj) == [] and svc.db.scalar("SELECT COUNT(*) FROM runs") == 0
    assert svc.db.scalar("SELECT status FROM queue_items WHERE id = ?", (item["id"],)) == "queued"

    proj.ok("engine", "start")
    [pid] = engine_pids(proj.root)
    proj.wait_for(lambda: ran(proj) == ["create late"], what="the overdue item to run")
    # a later item falls due and runs: the engine went on ticking, and never ran the first one again
    queueing.add(svc, "method", "ad-account.create", {"user": "later"}, at=time.time())
    proj.wait_for(lambda: len(ran(proj)) == 2, what="the later item")
    assert ran(proj) == ["create late", "create later"]
    runs = proj.ok("run", "list", "--json").json
    assert [(r["trigger"], r["inputs"]["user"], r["status"]) for r in reversed(runs)] == [
        ("schedule", "late", "succeeded"),
        ("schedule", "later", "succeeded"),
    ]
    history = list(reversed(proj.ok("history", "--json", "--limit", "100").json))
    kinds = [e["kind"] for e in history]
    # executed by the engine we started, the only one there ever was: at its start
    assert (
        kinds.count("engine.started") == 1
        and f"(pid {pid})" in history[kinds.index("engine.started")]["message"]
    )
    executed = [e for e in history if e["kind"] == "queue.executed"]
    assert [e["item_id"] for e in executed] == [item["id"], item["id"] + 1]
    assert kinds.index("engine.started") < kinds.index("queue.executed")


def test_schedule_time_formats(proj: Proj) -> None:
    setup(proj)
    r = proj.sluice("workflow", "schedule", "db-migration", "--at", "tomorrow")
    assert r.code == 2 and "--at 'tomorrow'" in r.err
    r = proj.sluice("workflow", "schedule", "db-migration", "--at", "25:00")
    assert r.code == 2
    item = proj.ok("workflow", "schedule", "db-migration", "--at", "02:00", "--json").json
    from datetime import datetime

    due = datetime.fromisoformat(item["not_before"])
    assert (due.hour, due.minute) == (2, 0)
    assert 0 < (due - datetime.now().astimezone()).total_seconds() <= 86400
    item = proj.ok("workflow", "schedule", "teardown-dns", "--at", "2030-01-02T03:04", "--json").json
    assert item["not_before"].startswith("2030-01-02T03:04")
    proj.kill_engine()


def test_project_timezone_for_hh_mm(proj: Proj) -> None:
    setup(proj)
    proj.write("sluice.yaml", "name: t\ntimezone: Asia/Tokyo\n")
    item = proj.ok("workflow", "schedule", "db-migration", "--at", "02:00", "--json").json
    from datetime import datetime
    from zoneinfo import ZoneInfo

    due = datetime.fromisoformat(item["not_before"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (due.hour, due.minute) == (2, 0)
    proj.kill_engine()


def test_cli_help_lists_queue_commands() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tui.cli", "queue", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "execute" in p.stdout and "purge" in p.stdout


def test_scheduled_item_of_a_paused_workflow_waits_for_unpause(proj: Proj) -> None:
    setup(proj)
    add_ticker(proj)
    proj.ok("workflow", "pause", "db-migration", "--reason", "freeze")
    proj.ok("workflow", "schedule", "db-migration", "--at", "+1s")
    svc = proj.service()
    refused_at = proj.wait_for(
        lambda: svc.db.scalar("SELECT MIN(at) FROM events WHERE kind = 'queue.refused'"),
        what="the refusal",
    )
    wait_ticks(proj, after=refused_at, count=3)  # the engine handled three more deadlines
    # refused once and reported, not retried on every tick
    assert svc.db.scalar("SELECT COUNT(*) FROM events WHERE kind = 'queue.refused'") == 1
    assert proj.ok("queue", "list", "--json").json[0]["status"] == "queued"
    proj.ok("workflow", "unpause", "db-migration")
    proj.wait_for(lambda: ran(proj) == ["db-migration 1"], what="runs after unpause")


def test_json_is_indented_at_a_terminal_and_on_one_line_for_a_program(proj: Proj) -> None:
    import json

    setup(proj)
    proj.ok("method", "queue", "ad-account", "create", "-i", "user=alice")
    piped = proj.ok("queue", "list", "--json").out
    assert piped.count("\n") == 1 and json.loads(piped)[0]["inputs"]["user"] == "alice"
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "queue", "list", "--json"],
        cwd=proj.root,
        env=proj.env(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other end closed: all was read
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=30) == 0
    os.close(master)
    shown = out.decode().replace("\r\n", "\n")
    assert '\n  {\n    "id": 1,' in shown and json.loads(shown) == json.loads(piped)
