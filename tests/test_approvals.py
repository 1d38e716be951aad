"""Four-eyes, N-of-M approvals and break glass on holds (SPEC 13), through the CLI, races included."""

from __future__ import annotations

from conftest import Proj

SETTINGS = (
    "name: test\ncapacity: 4\ntrust_sluice_user: true\n"
    "groups: {seniors: [carol, dave, erin], oncall: [alice]}\nbreak_glass: oncall\n"
)


def as_(who: str) -> dict[str, str]:
    return {"SLUICE_USER": who}


def swap(proj: Proj, hold: str, extra: str = "") -> None:
    proj.write("sluice.yaml", SETTINGS + extra)
    log = proj.root.parent / "swapped"
    proj.write(
        "workflows/swap.yaml",
        f"name: swap\njobs:\n  go:\n    hold: {hold}\n"
        f"    steps: [{{run: 'echo \"$INPUT_TICKET\" >> {log}'}}]\n",
    )


def ran(proj: Proj) -> list[str]:
    log = proj.root.parent / "swapped"
    return log.read_text().splitlines() if log.exists() else []  # one line per time the job ran


def test_four_eyes_keeps_the_requester_from_approving(proj: Proj) -> None:
    swap(proj, "{prompt: swap?, four_eyes: true}")
    run = proj.ok("workflow", "run", "swap", "--json", env=as_("alice")).json
    assert "four-eyes (the requester may not approve)" in proj.ok("run", "show", str(run["id"])).out
    r = proj.sluice("workflow", "release", "go", env=as_("alice"))
    assert r.code == 3
    assert f"alice started run #{run['id']} and may not approve it (four_eyes)" in r.err
    assert proj.ok("run", "show", str(run["id"]), "--json").json["status"] == "on_hold"
    proj.ok("workflow", "release", "go", env=as_("bob"))
    assert proj.service().wait_run(run["id"])["status"] == "succeeded"


def test_four_eyes_counts_who_queued_and_who_executed(proj: Proj) -> None:
    swap(proj, "{prompt: swap?}", "four_eyes: true\n")  # the project's default
    item = proj.ok("workflow", "queue", "swap", "--json", env=as_("alice")).json["id"]
    [out] = proj.ok("queue", "execute", str(item), "--json", env=as_("bob")).json
    for who, how in (("alice", "queued"), ("bob", "executed the queue item of")):
        r = proj.sluice("workflow", "release", "go", env=as_(who))
        assert r.code == 3 and f"{who} {how} run #{out['run_id']}" in r.err
    proj.ok("workflow", "release", "go", env=as_("carol"))


def test_a_hold_may_turn_the_project_default_off(proj: Proj) -> None:
    swap(proj, "{prompt: swap?, four_eyes: false}", "four_eyes: true\n")
    run = proj.ok("workflow", "run", "swap", "--json", env=as_("alice")).json
    proj.ok("workflow", "release", "go", env=as_("alice"))
    assert proj.service().wait_run(run["id"])["status"] == "succeeded"


def test_two_approvals_from_two_people(proj: Proj) -> None:
    swap(
        proj,
        "{prompt: swap?, approvers: [seniors], approvals: 2, fields: {ticket: {required: true}}}",
    )
    run = proj.ok("workflow", "run", "swap", "--json", env=as_("alice")).json
    first = proj.ok(
        "workflow", "release", "go", "-f", "ticket=CHG-1", "-m", "looks fine", "--json", env=as_("carol")
    ).json
    go = first["jobs"][0]
    assert go["status"] == "held" and "1 of 2: carol" in go["reason"]
    assert [a["by"] for a in go["approvals"]] == ["carol"] and go["approvals"][0]["comment"] == "looks fine"
    assert "hold go: approvers: seniors · 1 of 2: carol" in proj.ok("run", "show", str(run["id"])).out
    r = proj.sluice("workflow", "release", "go", "-f", "ticket=CHG-1", env=as_("carol"))
    assert r.code == 3 and "carol already approved go" in r.err
    assert (
        proj.sluice("workflow", "release", "go", "-f", "ticket=CHG-1", env=as_("bob")).code == 3
    )  # no approver

    proj.ok("workflow", "release", "go", "-f", "ticket=CHG-2", env=as_("dave"))
    done = proj.service().wait_run(run["id"])
    assert done["status"] == "succeeded"
    assert ran(proj) == ["CHG-2"]  # the fields of the last approval reach the job
    shown = proj.ok("run", "show", str(run["id"])).out
    assert "approved by carol, dave" in shown
    kinds = [e["kind"] for e in proj.ok("history", "--json").json if e["run_id"] == run["id"]]
    assert kinds.count("job.approved") == 2 and kinds.count("job.released") == 1


def test_two_approvers_releasing_the_last_approval_at_once_run_the_job_once(proj: Proj) -> None:
    swap(proj, "{prompt: swap?, approvers: [seniors], approvals: 2}")
    run = proj.ok("workflow", "run", "swap", "--json", env=as_("alice")).json
    proj.ok("workflow", "release", "go", env=as_("carol"))
    racers = [proj.popen("workflow", "release", "go", env=as_(who)) for who in ("dave", "erin")]
    codes = sorted(p.wait(60) for p in racers)
    # the loser is refused: the job is no longer on hold (3), or already gone from the holds (4)
    assert codes[0] == 0 and codes[1] in (3, 4), [p.stderr.read() for p in racers if p.stderr]
    assert proj.service().wait_run(run["id"])["status"] == "succeeded"
    assert len(ran(proj)) == 1
    svc = proj.service()
    assert svc.db.scalar("SELECT COUNT(*) FROM events WHERE kind = 'job.released'") == 1


def test_the_same_person_from_two_terminals_is_one_approval(proj: Proj) -> None:
    swap(proj, "{prompt: swap?, approvers: [seniors], approvals: 2}")
    proj.ok("workflow", "run", "swap", "--json", env=as_("alice"))
    racers = [proj.popen("workflow", "release", "go", env=as_("carol")) for _ in range(2)]
    assert sorted(p.wait(60) for p in racers) == [0, 3]  # "carol already approved go"
    assert proj.service().db.scalar("SELECT COUNT(*) FROM approvals") == 1


def test_one_reject_by_any_approver_rejects(proj: Proj) -> None:
    swap(proj, "{prompt: swap?, approvers: [seniors], approvals: 2}")
    run = proj.ok("workflow", "run", "swap", "--json", env=as_("alice")).json
    proj.ok("workflow", "release", "go", env=as_("carol"))
    proj.ok("workflow", "reject", "go", "--reason", "not today", env=as_("dave"))
    assert proj.service().wait_run(run["id"])["status"] == "failed"
    assert ran(proj) == []


def test_break_glass_passes_four_eyes_and_approvals_but_not_the_approvers(proj: Proj) -> None:
    swap(proj, "{prompt: swap?, approvers: [seniors, alice], approvals: 2, four_eyes: true}")
    run = proj.ok("workflow", "run", "swap", "--json", env=as_("alice")).json
    r = proj.sluice("workflow", "release", "go", "--break-glass", "--reason", "sev1", env=as_("carol"))
    assert r.code == 3 and "carol may not break glass" in r.err
    proj.ok("workflow", "release", "go", "--break-glass", "--reason", "sev1: site down", env=as_("alice"))
    done = proj.service().wait_run(run["id"])
    assert done["status"] == "succeeded"
    assert done["jobs"][0]["break_glass"] == "sev1: site down"
    assert "break glass: sev1: site down" in proj.ok("run", "show", str(run["id"])).out
    [glass] = proj.ok("history", "--break-glass", "--json").json
    assert glass["actor"].startswith("alice@") and "four_eyes" in glass["details"]["overrode"]

    swap(proj, "{prompt: swap?, approvers: [seniors]}")
    proj.ok("workflow", "run", "swap", env=as_("bob"))
    r = proj.sluice("workflow", "release", "go", "--break-glass", "--reason", "x", env=as_("alice"))
    assert r.code == 3 and "alice may not release go" in r.err


def test_four_eyes_follows_a_run_started_by_a_trigger_back_to_who_asked(proj: Proj) -> None:
    proj.write("sluice.yaml", SETTINGS)
    proj.write(
        "workflows/deploy.yaml",
        "name: deploy\njobs:\n  go:\n    hold: {prompt: ship?, four_eyes: true}\n    steps: [{run: 'true'}]\n",
    )
    proj.write(
        "workflows/pipeline.yaml", "name: pipeline\njobs:\n  t: {trigger: {workflow: deploy, wait: false}}\n"
    )
    parent = proj.ok("workflow", "run", "pipeline", "--json", env=as_("alice")).json
    svc = proj.service()
    child = proj.wait_for(
        lambda: svc.db.scalar("SELECT id FROM runs WHERE target = 'deploy' AND status = 'on_hold'"),
        what="the child",
    )
    r = proj.sluice("workflow", "release", "go", env=as_("alice"))
    assert r.code == 3
    assert f"alice started run #{parent['id']}, which started run #{child} and may not approve it" in r.err
    proj.ok("workflow", "release", "go", env=as_("bob"))
