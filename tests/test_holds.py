"""Holds (SPEC 4): release, reject, approvers, fields, timeouts, cancel, through the CLI."""

from __future__ import annotations

from conftest import Proj

RELEASE = """\
name: release
inputs: {version: {required: true}}
jobs:
  build: {steps: [{run: 'echo "binary=app-$INPUT_VERSION" >> "$SLUICE_OUTPUT"'}]}
  ship:
    needs: [build]
    hold:
      prompt: Ship it?
      approvers: [seniors, dave]
      fields:
        ticket: {required: true, pattern: '^CHG-\\d+$'}
        window: {default: night}
        pin: {secret: true, default: "0000"}
    steps: [{run: 'echo "shipping with $INPUT_TICKET in $INPUT_WINDOW ($INPUT_VERSION)" >> "$SLUICE_PROJECT/ran"'}]
  after-ship: {needs: [ship], steps: [{run: 'echo after >> "$SLUICE_PROJECT/ran"'}]}
  on-failure: {needs: [ship], if: failure, steps: [{run: 'echo rollback >> "$SLUICE_PROJECT/ran"'}]}
  always: {needs: [ship], if: always, steps: [{run: 'echo notify >> "$SLUICE_PROJECT/ran"'}]}
"""


def setup(proj: Proj) -> None:
    # SLUICE_USER plays the approvers here: only a project that trusts it honours it (SPEC 10)
    proj.write("sluice.yaml", "name: t\ntrust_sluice_user: true\ngroups: {seniors: [carol, erin]}\n")
    proj.write("workflows/release.yaml", RELEASE)


def ran(proj: Proj) -> list[str]:
    p = proj.root / "ran"
    return p.read_text().splitlines() if p.exists() else []


def statuses(proj: Proj, run: int) -> dict[str, str]:
    return {j["name"]: j["status"] for j in proj.ok("run", "show", str(run), "--json").json["jobs"]}


def test_run_stops_at_the_hold_and_says_how_to_release(proj: Proj) -> None:
    setup(proj)
    r = proj.ok("workflow", "run", "release", "-i", "version=1")
    assert "‖ held ship: Ship it?" in r.out
    assert "sluice workflow release ship --run 1" in r.out
    assert "run #1 ‖ on_hold" in r.out
    view = proj.ok("run", "show", "1", "--json").json
    assert view["status"] == "on_hold"
    assert statuses(proj, 1) == {
        "build": "succeeded",
        "ship": "held",
        "after-ship": "pending",
        "on-failure": "pending",
        "always": "pending",
    }


def test_release_with_comment_and_fields(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "run", "release", "-i", "version=1")
    r = proj.sluice("workflow", "release", "ship", "--field", "ticket=42", env={"SLUICE_USER": "carol"})
    assert r.code == 2 and "field 'ticket': '42' does not match pattern" in r.err
    r = proj.sluice("workflow", "release", "ship", env={"SLUICE_USER": "carol"})
    assert r.code == 2 and "missing required field 'ticket'" in r.err
    assert statuses(proj, 1)["ship"] == "held"  # nothing changed
    proj.ok(
        "workflow",
        "release",
        "ship",
        "--comment",
        "green looks fine",
        "--field",
        "ticket=CHG-7",
        env={"SLUICE_USER": "carol"},
    )
    svc = proj.service()
    view = svc.wait_run(1)
    assert view["status"] == "succeeded"
    ship = next(j for j in view["jobs"] if j["name"] == "ship")
    assert ship["released_by"].startswith("carol@") and ship["comment"] == "green looks fine"
    assert ship["released_at"] is not None
    assert ran(proj)[0] == "shipping with CHG-7 in night (1)"
    assert sorted(ran(proj)[1:]) == ["after", "notify"]
    ev = next(e for e in proj.ok("history", "--json").json if e["kind"] == "job.released")
    assert ev["actor"].startswith("carol@") and ev["details"]["fields"] == {
        "ticket": "CHG-7",
        "window": "night",
        "pin": "***",
    }


def test_approvers_users_and_groups(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "run", "release", "-i", "version=1")
    r = proj.sluice("workflow", "release", "ship", "--field", "ticket=CHG-1", env={"SLUICE_USER": "mallory"})
    assert r.code == 3 and "mallory may not release ship in run #1 (approvers: seniors, dave)" in r.err
    r = proj.sluice("workflow", "reject", "ship", "--reason", "no", env={"SLUICE_USER": "mallory"})
    assert r.code == 3
    assert statuses(proj, 1)["ship"] == "held"
    assert "job.released" not in [e["kind"] for e in proj.ok("history", "--json").json]
    proj.ok("workflow", "release", "ship", "--field", "ticket=CHG-1", env={"SLUICE_USER": "dave"})  # a user


def test_release_form_describes_the_fields_and_who_may_release(proj: Proj) -> None:
    """What the dashboard's release dialog is built from: one use case, read before anyone types."""
    from core import holds

    setup(proj)
    proj.ok("workflow", "run", "release", "-i", "version=1")
    svc = proj.service()
    form = holds.release_form(svc, "ship", run_id=1, actor="erin@jump-1")  # in the seniors group
    assert (form.run_id, form.job, form.prompt) == (1, "ship", "Ship it?")
    assert form.approvers == ("seniors", "dave") and form.may_release and form.refusal == ""
    fields = {f.name: f for f in form.fields}
    assert sorted(fields) == ["pin", "ticket", "window"]
    assert fields["ticket"].required and fields["ticket"].pattern == "^CHG-\\d+$"
    assert not fields["window"].required and fields["window"].default == "night"  # a default fills it
    assert fields["pin"].secret and not fields["ticket"].secret
    assert form.problem({"ticket": "CHG-1"}) is None
    name, why = form.problem({"ticket": "42"}) or (None, "")
    assert name == "ticket" and "does not match pattern" in why
    assert form.problem({})[0] == "ticket"  # required
    refused = holds.release_form(svc, "ship", run_id=1, actor="mallory@jump-1")
    assert not refused.may_release
    assert refused.refusal == (
        "mallory may not release ship in run #1 (approvers: seniors, dave); nothing was changed"
    )
    assert statuses(proj, 1)["ship"] == "held"  # describing the form changes nothing


def test_several_candidates_need_run(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "run", "release", "-i", "version=1")
    proj.ok("workflow", "run", "release", "-i", "version=2")
    r = proj.sluice("workflow", "release", "ship", "--field", "ticket=CHG-1", env={"SLUICE_USER": "erin"})
    assert (
        r.code == 3
        and "'ship' is on hold in 2 runs: run #1 (release), run #2 (release); pass --run RUN" in r.err
    )
    proj.ok(
        "workflow", "release", "ship", "--run", "2", "--field", "ticket=CHG-2", env={"SLUICE_USER": "erin"}
    )
    proj.service().wait_run(2)
    assert statuses(proj, 2)["ship"] == "succeeded" and statuses(proj, 1)["ship"] == "held"
    r = proj.sluice("workflow", "release", "shipp", env={"SLUICE_USER": "erin"})
    assert r.code == 4 and "no job 'shipp' is on hold; held now: ship (run #1)" in r.err


def test_reject_fails_the_run_and_skips_dependents(proj: Proj) -> None:
    setup(proj)
    proj.ok("workflow", "run", "release", "-i", "version=1")
    r = proj.sluice("workflow", "reject", "ship", env={"SLUICE_USER": "carol"})
    assert r.code == 2  # --reason is required
    proj.ok("workflow", "reject", "ship", "--reason", "smoke tests flaky", env={"SLUICE_USER": "carol"})
    view = proj.service().wait_run(1)
    assert view["status"] == "failed"
    js = {j["name"]: j for j in view["jobs"]}
    assert (
        js["ship"]["status"] == "rejected" and js["ship"]["reason"] == "rejected by carol: smoke tests flaky"
    )
    assert js["after-ship"]["status"] == "skipped"
    assert js["on-failure"]["status"] == "succeeded" and js["always"]["status"] == "succeeded"
    assert sorted(ran(proj)) == ["notify", "rollback"]
    ev = next(e for e in proj.ok("history", "--json").json if e["kind"] == "job.rejected")
    assert ev["details"]["reason"] == "smoke tests flaky"


def test_hold_timeout_rejects_automatically(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          gate: {hold: {timeout: 1s}, steps: [{run: 'echo ran >> "$SLUICE_PROJECT/ran"'}]}
        """,
    )
    r = proj.ok("workflow", "run", "w")
    assert "held gate" in r.out
    view = proj.service().wait_run(1, stop_on_hold=False)
    assert view["status"] == "failed"
    gate = view["jobs"][0]
    assert gate["status"] == "rejected" and gate["reason"] == "rejected by sluice: timed out"
    ev = next(e for e in proj.ok("history", "--json").json if e["kind"] == "job.timed_out")
    assert ev["actor"] == "sluice"
    assert ran(proj) == []


def test_cancelled_held_run_never_runs_the_held_job(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          gate: {hold: true, steps: [{run: 'echo ran >> "$SLUICE_PROJECT/ran"'}]}
        """,
    )
    proj.ok("workflow", "run", "w")
    view = proj.ok("run", "cancel", "1", "--wait", "--json").json
    assert view["status"] == "cancelled" and view["jobs"][0]["status"] == "cancelled"
    r = proj.sluice("workflow", "release", "gate", "--run", "1")
    assert r.code == 4
    # the run is final and its job never started: nothing is left that could run it later
    assert proj.ok("run", "show", "1", "--json").json["status"] == "cancelled"
    assert "job.started" not in [e["kind"] for e in proj.ok("history", "--run", "1", "--json").json]
    assert ran(proj) == []
