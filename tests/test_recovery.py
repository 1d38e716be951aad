"""Review and recovery (SPEC 14): preview a queued item, undo a purge, re-run a run."""

from __future__ import annotations

from conftest import Proj
from test_materials import git, make_repo

FLAKY = """\
name: ship
inputs: {version: {required: true}}
jobs:
  build:
    steps:
      - run: 'echo build >> ../ran.txt; echo "artifact=app-$INPUT_VERSION" >> "$SLUICE_OUTPUT"'
  check:
    needs: [build]
    steps:
      - run: 'echo check >> ../ran.txt; test -e ../fixed'
  deploy:
    needs: [check]
    env: {ART: "${{ jobs.build.outputs.artifact }}"}
    steps:
      - run: 'echo deploy >> ../ran.txt; echo "deploying $ART"'
"""


def jobs(view: dict) -> dict[str, dict]:
    return {j["name"]: j for j in view["jobs"]}


def ran(proj: Proj) -> list[str]:
    return (proj.root.parent / "ran.txt").read_text().split()


# ---------------------------------------------------------------- run rerun


def test_rerun_failed_carries_over_what_succeeded_with_its_outputs(proj: Proj) -> None:
    proj.write("workflows/ship.yaml", FLAKY)
    first = proj.sluice("workflow", "run", "ship", "-i", "version=1.4", "--json")
    assert first.code == 1 and first.json["status"] == "failed"
    assert ran(proj) == ["build", "check"]
    (proj.root.parent / "fixed").touch()

    view = proj.ok("run", "rerun", str(first.json["id"]), "--failed", "--json").json
    assert view["status"] == "succeeded"
    assert view["trigger"] == "rerun" and view["rerun_of"] == first.json["id"]
    assert view["inputs"] == {"version": "1.4"}
    build = jobs(view)["build"]
    assert build["status"] == "succeeded"
    assert build["reason"] == f"carried over from run #{first.json['id']}"
    assert build["outputs"] == {"artifact": "app-1.4"}
    assert ran(proj) == ["build", "check", "check", "deploy"]  # build did not run again
    logs = proj.ok("run", "logs", str(view["id"]), "--job", "deploy").out
    assert "deploying app-1.4" in logs  # the carried-over output reached the job that needs it

    shown = proj.ok("run", "show", str(view["id"])).out
    assert f"rerun of run #{first.json['id']}" in shown
    assert "carried over from run #1" in shown
    events = proj.ok("history", "--json").json
    created = next(e for e in events if e["kind"] == "run.created" and e["run_id"] == view["id"])
    assert created["details"]["rerun_of"] == first.json["id"]
    assert created["details"]["carried_over"] == ["build"]


def test_rerun_repeats_the_inputs_and_material_revisions(proj: Proj) -> None:
    revs = make_repo(proj.root.parent)
    proj.write(
        "workflows/pipeline.yaml",
        """\
        name: pipeline
        inputs: {target: {default: staging}}
        materials:
          app: {git: ../app, branch: main}
        jobs:
          build:
            steps: [{run: 'echo "built $SLUICE_MATERIAL_APP_REVISION for $INPUT_TARGET"'}]
        """,
    )
    first = proj.ok("workflow", "run", "pipeline", "-i", "target=prod", "--json").json
    repo = proj.root.parent / "app"
    (repo / "f").write_text("newer")
    git(repo, "commit", "-qam", "newer")
    assert git(repo, "rev-parse", "HEAD") != revs["r10689"]

    again = proj.ok("run", "rerun", str(first["id"]), "--json").json
    assert again["status"] == "succeeded" and again["trigger"] == "rerun"
    assert [m["revision"] for m in again["materials"]] == [revs["r10689"]]
    assert again["inputs"] == {"target": "prod"}
    assert jobs(again)["build"]["reason"] is None  # everything ran again: nothing carried over
    logs = proj.ok("run", "logs", str(again["id"])).out
    assert f"built {revs['r10689']} for prod" in logs


def test_rerun_refusals(proj: Proj) -> None:
    proj.write("workflows/ship.yaml", FLAKY)
    proj.write(
        "workflows/gated.yaml",
        "name: gated\njobs:\n  ok: {hold: {prompt: go?}, steps: [{run: 'true'}]}\n",
    )
    proj.write("workflows/fine.yaml", "name: fine\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    held = proj.ok("workflow", "run", "gated", "--json").json
    r = proj.sluice("run", "rerun", str(held["id"]))
    assert r.code == 3 and "still on hold" in r.err and f"sluice run cancel {held['id']}" in r.err

    assert proj.sluice("run", "rerun", "999").code == 4
    fine = proj.ok("workflow", "run", "fine", "--json").json
    r = proj.sluice("run", "rerun", str(fine["id"]), "--failed")
    assert r.code == 3 and "succeeded: nothing to run again" in r.err

    failed = proj.sluice("workflow", "run", "ship", "-i", "version=1", "--json").json
    proj.ok("workflow", "pause", "ship", "--reason", "change freeze")
    r = proj.sluice("run", "rerun", str(failed["id"]), "--failed")
    assert r.code == 3 and "paused" in r.err and "change freeze" in r.err
    runs = proj.ok("run", "list", "--workflow", "ship", "--json").json
    assert len(runs) == 1  # nothing was started


def test_rerun_detach_returns_the_new_run_at_once(proj: Proj) -> None:
    proj.write("workflows/ship.yaml", FLAKY)
    failed = proj.sluice("workflow", "run", "ship", "-i", "version=2", "--json").json
    (proj.root.parent / "fixed").touch()
    r = proj.ok("run", "rerun", str(failed["id"]), "--failed", "--detach", "--json")
    new = r.json
    assert new["rerun_of"] == failed["id"] and new["trigger"] == "rerun"
    done = proj.service().wait_run(new["id"])
    assert done["status"] == "succeeded"


# ---------------------------------------------------------------- queue restore


def test_restore_puts_purged_items_back_in_their_place(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\ninputs: {n: {}}\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    ids = [proj.ok("workflow", "queue", "w", "-i", f"n={n}", "--json").json["id"] for n in (1, 2, 3)]
    proj.ok("queue", "purge", str(ids[0]), str(ids[1]), "--yes")
    assert [i["id"] for i in proj.ok("queue", "list", "--json").json] == [ids[2]]

    out = proj.ok("queue", "restore", str(ids[1]), str(ids[0]), "--json").json
    assert [i["id"] for i in out] == [ids[0], ids[1]] and {i["status"] for i in out} == {"queued"}
    listed = proj.ok("queue", "list", "--json").json
    assert [i["id"] for i in listed] == ids  # the original order, not the order of restoring
    assert [i["inputs"] for i in listed] == [{"n": "1"}, {"n": "2"}, {"n": "3"}]
    restored = [e for e in proj.ok("history", "--json").json if e["kind"] == "queue.restored"]
    assert sorted(e["item_id"] for e in restored) == ids[:2]
    assert all(e["details"]["purged_by"] for e in restored)

    text = proj.sluice("queue", "restore", str(ids[0]))
    assert text.code == 3 and f"#{ids[0]} is queued" in text.err
    assert proj.sluice("queue", "restore", "999").code == 4


def test_restore_is_refused_whole_when_the_same_invocation_is_queued_again(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\ninputs: {n: {}}\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    one = proj.ok("workflow", "queue", "w", "-i", "n=1", "--json").json["id"]
    two = proj.ok("workflow", "queue", "w", "-i", "n=2", "--json").json["id"]
    proj.ok("queue", "purge", str(one), str(two), "--yes")
    again = proj.ok("workflow", "queue", "w", "-i", "n=2", "--json").json["id"]

    r = proj.sluice("queue", "restore", str(one), str(two))
    assert r.code == 3
    assert f"cannot restore #{two}" in r.err and f"item #{again}" in r.err
    # all or nothing: #1 was not restored either
    assert [i["id"] for i in proj.ok("queue", "list", "--json").json] == [again]
    assert not [e for e in proj.ok("history", "--json").json if e["kind"] == "queue.restored"]


def test_restoring_a_schedule_whose_time_passed_does_not_start_it(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    item = proj.ok("workflow", "schedule", "w", "--at", "+1h", "--json").json["id"]
    proj.ok("queue", "purge", str(item), "--yes")
    svc = proj.service()
    with svc.db.write() as tx:  # an hour later
        tx.execute("UPDATE queue_items SET not_before = not_before - 7200 WHERE id = ?", (item,))
    r = proj.ok("queue", "restore", str(item), "--json")
    assert r.json[0]["not_before"] is None and r.json[0]["status"] == "queued"
    assert "execute it by hand" in r.err


# ---------------------------------------------------------------- queue show


PREVIEW = """\
name: teardown
environment: prod
lock: until_complete
inputs: {zone: {required: true}, token: {secret: true, default: s3cr3t-value}}
jobs:
  snapshot:
    resources: [aws]
    parallelism: 2
    steps: [{run: 'true'}]
  approve:
    needs: [snapshot]
    hold: {prompt: "delete the zone?", approvers: [carol, dave], fields: {ticket: {required: true}}}
    steps: [{run: 'true'}]
  dns:
    needs: [approve]
    trigger: {workflow: cleanup, wait: true}
"""


def test_queue_show_previews_without_starting(proj: Proj) -> None:
    proj.write("sluice.yaml", "name: test\nenvironments: {prod: {}}\n")
    proj.write("workflows/teardown.yaml", PREVIEW)
    proj.write("workflows/cleanup.yaml", "name: cleanup\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    item = proj.ok("workflow", "queue", "teardown", "-i", "zone=eu", "--json").json["id"]
    shown = proj.ok("queue", "show", str(item), "--json").json
    assert shown["item"]["inputs"] == {"zone": "eu", "token": "***"}
    assert shown["can_start"] is False
    kinds = [b["kind"] for b in shown["blockers"]]
    assert kinds == ["agents", "agents"]  # snapshot and approve need an agent in prod; dns is a trigger
    assert "no enabled agent in prod with resources [aws]" in shown["blockers"][0]["message"]
    js = {j["name"]: j for j in shown["jobs"]}
    assert js["snapshot"]["parallelism"] == 2 and js["snapshot"]["resources"] == ["aws"]
    assert js["approve"]["needs"] == ["snapshot"]
    assert js["approve"]["hold"]["approvers"] == ["carol", "dave"]
    assert js["approve"]["hold"]["fields"] == ["ticket"]
    assert js["dns"]["trigger"] == {"workflow": "cleanup", "wait": True}
    # nothing was started by looking
    assert proj.ok("queue", "list", "--json").json[0]["status"] == "queued"
    assert proj.ok("run", "list", "--json").json == []

    text = proj.ok("queue", "show", str(item)).out
    assert "s3cr3t" not in text
    assert "cannot start now" in text and "no enabled agent in prod" in text
    assert "approvers carol, dave" in text and "delete the zone?" in text


def test_queue_show_names_pause_and_lock_and_a_clear_path(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        "name: w\nlock: until_complete\ninputs: {n: {}}\njobs:\n"
        "  a: {hold: {prompt: wait}, steps: [{run: 'true'}]}\n",
    )
    one = proj.ok("workflow", "queue", "w", "-i", "n=1", "--json").json["id"]
    clear = proj.ok("queue", "show", str(one), "--json").json
    assert clear["can_start"] is True and clear["blockers"] == []
    assert "can start now" in proj.ok("queue", "show", str(one)).out

    held = proj.ok("workflow", "run", "w", "-i", "n=0", "--json").json
    proj.ok("workflow", "pause", "w", "--reason", "db upgrade")
    shown = proj.ok("queue", "show", str(one), "--json").json
    assert shown["can_start"] is False
    messages = {b["kind"]: b["message"] for b in shown["blockers"]}
    assert "db upgrade" in messages["paused"]
    assert f"locked by run #{held['id']}" in messages["locked"]

    proj.ok("queue", "purge", str(one), "--yes")
    purged = proj.ok("queue", "show", str(one), "--json").json
    assert purged["blockers"][0]["kind"] == "purged"
    assert f"sluice queue restore {one}" in purged["blockers"][0]["message"]
    assert proj.sluice("queue", "show", "999").code == 4
