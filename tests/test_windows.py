"""Change windows, freezes and break glass (SPEC 13), with real engines and processes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import Proj

from core.identity import os_user

ME = os_user()
CLOSED = "{cron: '0 0 1 1 *', duration: 1m}"  # midnight on 1 January, for a minute
OPEN = "{cron: '* * * * *', duration: 2m}"  # opens every minute, for two: always open

JOB = "jobs:\n  a: {steps: [{run: 'true'}]}\n"


def settings(proj: Proj, extra: str = "") -> None:
    proj.write(
        "sluice.yaml",
        f"name: test\ncapacity: 4\ngroups: {{oncall: [{ME}], others: [nobody-here]}}\nbreak_glass: oncall\n"
        f"windows:\n  maintenance: {CLOSED}\n  always: {OPEN}\n{extra}",
    )


def gated(proj: Proj, name: str, after: str, *, header: str = "") -> tuple[int, Any, Path]:
    """Start workflow `name`: job `a` runs until the test touches the returned gate, then `after`
    (YAML of the next job). Returns the run id, a service, the gate, once `a` is running."""
    gate = proj.root.parent / "go"
    proj.write(
        f"workflows/{name}.yaml",
        f"name: {name}\n{header}jobs:\n  a: {{steps: [{{run: 'while [ ! -e {gate} ]; do sleep 0.05; done'}}]}}\n"
        + after,
    )
    run_id = proj.ok("workflow", "run", name, "--detach", "--json").json["id"]
    svc = proj.service()
    proj.wait_for(lambda: svc.run_view(run_id)["jobs"][0]["status"] == "running", what="a running")
    return run_id, svc, gate


def test_a_run_outside_its_window_is_refused_with_the_next_opening(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/db-migration.yaml", "name: db-migration\nwindow: maintenance\n" + JOB)
    proj.write("workflows/open.yaml", "name: open\nwindow: always\n" + JOB)
    proj.write("models/db.yaml", "name: db\nwindow: maintenance\nmethods:\n  vacuum: {run: 'true'}\n")
    r = proj.sluice("workflow", "run", "db-migration")
    assert r.code == 3
    opens = datetime(datetime.now().year + 1, 1, 1).strftime("%a %Y-%m-%d 00:00")
    assert f"db-migration runs only in window maintenance; it opens {opens}" in r.err
    r = proj.sluice("method", "run", "db", "vacuum")
    assert r.code == 3 and "db.vacuum runs only in window maintenance" in r.err
    assert proj.ok("workflow", "run", "open", "--json").json["status"] == "succeeded"

    listed = {w["name"]: w for w in proj.ok("workflow", "list", "--json").json}
    assert listed["db-migration"]["window"]["name"] == "maintenance"
    assert listed["db-migration"]["window"]["open"] is False
    assert listed["open"]["window"]["open"] is True
    text = proj.ok("workflow", "show", "db-migration").out
    assert f"window maintenance closed; opens {opens}" in text

    item = proj.ok("workflow", "queue", "db-migration", "--json").json["id"]
    shown = proj.ok("queue", "show", str(item), "--json").json
    assert shown["can_start"] is False
    assert [b["kind"] for b in shown["blockers"]] == ["window"]
    assert f"opens {opens}" in shown["blockers"][0]["message"]


def test_queued_items_wait_for_their_window_and_start_when_it_opens_once(proj: Proj) -> None:
    # a window that opens a few seconds from now, for two seconds, once a minute
    at = int(time.time()) + 8
    second, minute = at % 60, (at // 60) % 60
    settings(proj)
    proj.write(
        "sluice.yaml",
        proj.root.joinpath("sluice.yaml").read_text()
        + f"  soon: {{cron: '{minute} * * * * {second}', duration: 2s}}\n",
    )
    proj.write("workflows/w.yaml", "name: w\nwindow: soon\n" + JOB)
    item = proj.ok("workflow", "queue", "w", "--json").json["id"]
    r = proj.ok("queue", "execute", str(item), "--json")  # accepted: exit 0
    [out] = r.json
    assert out["status"] == "queued" and out["not_before"] is not None
    assert "waits for window soon" in r.err
    assert time.time() < at  # it really was closed when we asked
    svc = proj.service()
    run_id = proj.wait_for(
        lambda: svc.db.scalar("SELECT run_id FROM queue_items WHERE id = ?", (item,)),
        timeout=30,
        what="the run",
    )
    run = svc.wait_run(int(run_id))
    assert run["status"] == "succeeded" and run["trigger"] == "schedule"
    assert datetime.fromisoformat(run["created_at"]).timestamp() >= at - 1
    assert svc.db.scalar("SELECT COUNT(*) FROM runs") == 1
    kinds = [e["kind"] for e in proj.ok("history", "--json").json]
    assert "queue.deferred" in kinds


def test_a_freeze_stops_every_new_run_and_names_who_and_why(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/w.yaml", "name: w\n" + JOB)
    proj.write("workflows/smoke.yaml", "name: smoke\n" + JOB)
    proj.write("models/m.yaml", "name: m\nmethods:\n  go: {run: 'true'}\n")
    item = proj.ok("workflow", "queue", "w", "--json").json["id"]
    f = proj.ok("freeze", "--reason", "incident 4711", "--except", "smoke", "--json").json
    assert f["reason"] == "incident 4711" and f["except"] == ["smoke"] and f["until"] is None

    r = proj.sluice("workflow", "run", "w")
    assert r.code == 3 and f"w: frozen by {ME}: incident 4711 until lifted" in r.err
    assert proj.sluice("method", "run", "m", "go").code == 3
    shown = proj.ok("queue", "show", str(item), "--json").json
    assert [b["kind"] for b in shown["blockers"]] == ["freeze"]
    r = proj.sluice("queue", "execute", str(item))
    assert r.code == 3 and "incident 4711" in r.err
    assert proj.ok("queue", "list", "--json").json[0]["status"] == "queued"  # stays queued
    assert proj.ok("workflow", "run", "smoke", "--json").json["status"] == "succeeded"  # excepted

    lifted = proj.ok("unfreeze", "--json").json
    assert [x["reason"] for x in lifted] == ["incident 4711"]
    assert proj.ok("workflow", "run", "w", "--json").json["status"] == "succeeded"
    assert proj.sluice("unfreeze").code == 3  # nothing is frozen
    kinds = [e["kind"] for e in proj.ok("history", "--json").json]
    assert "freeze.set" in kinds and "freeze.lifted" in kinds


def test_jobs_of_runs_in_flight_wait_while_frozen_and_go_on_after(proj: Proj) -> None:
    settings(proj)
    run_id, svc, gate = gated(proj, "w", "  b: {needs: [a], steps: [{run: 'true'}]}\n")
    proj.ok("freeze", "--reason", "hold everything")
    gate.touch()

    def b() -> dict:
        return {j["name"]: j for j in svc.run_view(run_id)["jobs"]}["b"]

    proj.wait_for(lambda: b()["status"] == "waiting" and "frozen" in (b()["reason"] or ""), what="b frozen")
    assert "hold everything" in b()["reason"]
    proj.ok("unfreeze")
    assert svc.wait_run(run_id)["status"] == "succeeded"


def test_a_freeze_in_sluice_yaml_is_in_force_between_its_times(proj: Proj) -> None:
    settings(
        proj,
        "freezes:\n  - {from: 2020-01-01T00:00, to: 2999-01-01T00:00, reason: the long freeze}\n"
        "  - {from: 2020-01-01T00:00, to: 2020-01-02T00:00, reason: long over}\n",
    )
    proj.write("workflows/w.yaml", "name: w\n" + JOB)
    r = proj.sluice("workflow", "run", "w")
    assert r.code == 3 and "w: frozen (sluice.yaml): the long freeze until" in r.err
    assert "long over" not in r.err
    r = proj.sluice("unfreeze")
    assert r.code == 3 and "comes from sluice.yaml" in r.err


def skipped_fire(proj: Proj) -> str:
    """Start the engine; the reason of the first timer fire it skips (none may start a run)."""
    proj.ok("engine", "start")
    svc = proj.service()
    row = proj.wait_for(
        lambda: svc.db.one("SELECT * FROM timer_fires WHERE status = 'skipped' LIMIT 1"),
        what="a skipped fire",
    )
    assert svc.db.scalar("SELECT COUNT(*) FROM runs") == 0
    return str(row["reason"])  # type: ignore[index]


def test_a_timer_fire_during_a_freeze_is_skipped_with_the_reason(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/tick.yaml", "name: tick\ntimer: '* * * * * *'\n" + JOB)
    proj.ok("freeze", "--reason", "quiet please")
    assert "quiet please" in skipped_fire(proj)


def test_break_glass_overrides_a_window_and_is_recorded(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/db-migration.yaml", "name: db-migration\nwindow: maintenance\n" + JOB)
    r = proj.sluice("workflow", "run", "db-migration", "--break-glass")
    assert r.code == 2 and "--reason" in r.err
    view = proj.ok(
        "workflow", "run", "db-migration", "--break-glass", "--reason", "sev1: disk full", "--json"
    ).json
    assert view["status"] == "succeeded"
    shown = proj.ok("run", "show", str(view["id"])).out
    assert "break glass: sev1: disk full" in shown
    listed = proj.ok("history", "--break-glass", "--json").json
    assert [e["kind"] for e in listed] == ["break_glass"]
    assert listed[0]["details"]["reason"] == "sev1: disk full"
    assert "window maintenance" in listed[0]["details"]["overrode"]


def test_break_glass_is_refused_to_others_and_without_the_setting(proj: Proj) -> None:
    settings(proj)
    proj.write(
        "sluice.yaml",
        proj.root.joinpath("sluice.yaml").read_text().replace("break_glass: oncall", "break_glass: others"),
    )
    proj.write("workflows/db-migration.yaml", "name: db-migration\nwindow: maintenance\n" + JOB)
    r = proj.sluice("workflow", "run", "db-migration", "--break-glass", "--reason", "x")
    assert r.code == 3 and f"{ME} may not break glass (only group others)" in r.err
    proj.write(
        "sluice.yaml", proj.root.joinpath("sluice.yaml").read_text().replace("break_glass: others\n", "")
    )
    r = proj.sluice("workflow", "run", "db-migration", "--break-glass", "--reason", "x")
    assert r.code == 3 and "names no break_glass group" in r.err
    assert proj.ok("run", "list", "--json").json == []


def test_no_run_starts_after_a_freeze_committed(proj: Proj) -> None:
    """Runs being created from several processes while a freeze is set: every start that begins
    after `sluice freeze` returned is refused, and none of them is created."""
    import subprocess
    import sys

    settings(proj)
    proj.write("workflows/w.yaml", "name: w\ninputs: {n: {}}\n" + JOB)
    stop = proj.root.parent / "stop"
    logs = [proj.root.parent / f"tries-{i}" for i in range(3)]
    procs = [
        subprocess.Popen(
            [
                "sh",
                "-c",
                f"i=0; while [ ! -e {stop} ]; do i=$((i+1)); "
                f"{sys.executable} -m tui.cli workflow run w -i n={k}-$i --detach >/dev/null 2>&1; echo $? >> {log}; done",
            ],
            cwd=proj.root,
            env=proj.env(),
        )
        for k, log in enumerate(logs)
    ]

    def tries() -> list[list[str]]:
        return [log.read_text().split() if log.exists() else [] for log in logs]

    svc = proj.service()
    try:
        proj.wait_for(lambda: all(len(t) >= 1 for t in tries()), what="runs being started")
        proj.ok("freeze", "--reason", "now")
        runs_then = svc.db.scalar("SELECT COUNT(*) FROM runs")
        seen = [len(t) for t in tries()]
        # every process starts at least two more tries after the freeze returned
        proj.wait_for(lambda: all(len(t) >= n + 2 for t, n in zip(tries(), seen, strict=True)), what="tries")
    finally:
        stop.touch()
        for p in procs:
            p.wait(60)
    later = [t[n + 1 :] for t, n in zip(tries(), seen, strict=True)]  # tries that began after it
    assert all(code == "3" for t in later for code in t), later
    assert svc.db.scalar("SELECT COUNT(*) FROM runs") == runs_then


def test_a_timer_fire_outside_the_window_is_skipped_with_the_reason(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/tick.yaml", "name: tick\nwindow: maintenance\ntimer: '* * * * * *'\n" + JOB)
    assert "tick runs only in window maintenance; it opens" in skipped_fire(proj)


def test_a_freeze_until_a_time_ends_by_itself(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/w.yaml", "name: w\n" + JOB)
    made = proj.ok("freeze", "--reason", "short one", "--until", "+3s", "--json").json
    assert made["until"] is not None
    assert proj.sluice("workflow", "run", "w").code == 3
    proj.wait_for(lambda: proj.sluice("workflow", "run", "w").code == 0, what="the freeze to end")
    assert proj.sluice("freeze", "--reason", "x", "--until", "+400d").code == 2  # at most a year
    assert proj.sluice("freeze", "--reason", "x", "--except", "nope").code == 4


def test_a_window_opening_while_people_execute_starts_each_item_once(proj: Proj) -> None:
    """Deferred items fall due at the opening while two terminals execute them too."""
    import subprocess
    import sys

    at = int(time.time()) + 8
    second, minute = at % 60, (at // 60) % 60
    settings(proj)
    proj.write(
        "sluice.yaml",
        proj.root.joinpath("sluice.yaml").read_text()
        + f"  soon: {{cron: '{minute} * * * * {second}', duration: 30s}}\n",
    )
    proj.write("workflows/w.yaml", "name: w\nwindow: soon\ninputs: {n: {}}\n" + JOB)
    for n in range(6):
        proj.ok("workflow", "queue", "w", "-i", f"n={n}")
    proj.ok("queue", "execute", "--all", "--yes")  # all deferred to the opening
    assert time.time() < at
    svc = proj.service()
    loop = (
        f"while [ $(date +%s) -lt {at + 4} ]; do "
        f"{sys.executable} -m tui.cli queue execute --all --yes >/dev/null 2>&1; done"
    )
    racers = [subprocess.Popen(["sh", "-c", loop], cwd=proj.root, env=proj.env()) for _ in range(2)]
    for p in racers:
        p.wait(120)
    proj.wait_for(
        lambda: svc.db.scalar("SELECT COUNT(*) FROM queue_items WHERE status = 'queued'") == 0,
        what="every item executed",
    )
    rows = svc.db.all("SELECT queue_item_id FROM runs")
    assert sorted(r["queue_item_id"] for r in rows) == sorted(
        r["id"] for r in svc.db.all("SELECT id FROM queue_items")
    )  # one run per item, none twice


def test_a_run_started_with_break_glass_during_a_freeze_runs_to_its_end(proj: Proj) -> None:
    settings(proj)
    proj.write(
        "workflows/w.yaml",
        "name: w\njobs:\n  a: {steps: [{run: 'true'}]}\n  b: {needs: [a], steps: [{run: 'true'}]}\n",
    )
    proj.ok("freeze", "--reason", "INC-5")
    view = proj.ok("workflow", "run", "w", "--break-glass", "--reason", "the fix for INC-5", "--json").json
    assert view["status"] == "succeeded" and view["break_glass"] == "the fix for INC-5"


def test_a_trigger_job_waits_out_a_freeze_and_then_starts_its_run(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/child.yaml", "name: child\n" + JOB)
    run_id, svc, gate = gated(proj, "parent", "  t: {needs: [a], trigger: {workflow: child, wait: true}}\n")
    proj.ok("freeze", "--reason", "hold on")
    gate.touch()

    def t() -> dict:
        return {j["name"]: j for j in svc.run_view(run_id)["jobs"]}["t"]

    proj.wait_for(lambda: "frozen" in (t()["reason"] or ""), what="t frozen")
    assert t()["status"] == "waiting"  # not failed: it waits for the freeze to end
    proj.ok("unfreeze")
    assert svc.wait_run(run_id)["status"] == "succeeded"
    assert svc.db.scalar("SELECT COUNT(*) FROM runs WHERE target = 'child'") == 1


def test_an_upstream_trigger_outside_the_window_is_skipped_with_the_reason(proj: Proj) -> None:
    settings(proj)
    proj.write("workflows/build.yaml", "name: build\n" + JOB)
    proj.write(
        "workflows/deploy.yaml",
        "name: deploy\nwindow: maintenance\nmaterials: {build: {workflow: build, trigger: true}}\n" + JOB,
    )
    proj.ok("workflow", "run", "build")
    svc = proj.service()
    row = proj.wait_for(
        lambda: svc.db.one("SELECT * FROM events WHERE kind = 'upstream.refused'"), what="the refusal"
    )
    assert "deploy runs only in window maintenance" in row["message"]  # type: ignore[index]
    assert svc.db.scalar("SELECT COUNT(*) FROM runs WHERE target = 'deploy'") == 0


def test_a_run_started_inside_its_window_runs_to_its_end_after_it_closes(proj: Proj) -> None:
    at = int(time.time())
    settings(proj)
    proj.write(  # a window open from now for 12 s: room for a slow start on a busy machine
        "sluice.yaml",
        proj.root.joinpath("sluice.yaml").read_text()
        + f"  brief: {{cron: '{(at // 60) % 60} * * * * {at % 60}', duration: 12s}}\n",
    )
    run_id, _, gate = gated(  # started while the window is open
        proj, "w", "  b: {needs: [a], steps: [{run: 'true'}]}\n", header="window: brief\n"
    )
    proj.wait_for(
        lambda: not proj.ok("workflow", "show", "w", "--json").json["window"]["open"],
        what="the window closed",
    )
    gate.touch()
    assert proj.service().wait_run(run_id)["status"] == "succeeded"
