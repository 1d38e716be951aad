"""Materials and natural order (SPEC 7, seed 002) with a real git repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import Proj


def git(repo: Path, *args: str, when: str | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    if when:
        env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def make_repo(root: Path) -> dict[str, str]:
    """The seed's three check-ins: 15:28 on day one, 08:45 and 09:52 the next day."""
    repo = root / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    revs = {}
    for name, when in (
        ("r10687", "2010-04-26T15:28:16+05:30"),
        ("r10688", "2010-04-27T08:45:29+05:30"),
        ("r10689", "2010-04-27T09:52:15+05:30"),
    ):
        (repo / "f").write_text(name)
        git(repo, "add", "f")
        git(repo, "commit", "-q", "-m", name, when=when)
        revs[name] = git(repo, "rev-parse", "HEAD")
    return revs


PIPELINE = """\
name: pipeline
materials:
  app: {git: ../app, branch: main}
jobs:
  build:
    env: {REV: "${{ materials.app.revision }}"}
    steps: [{run: 'echo "built $REV / $SLUICE_MATERIAL_APP_REVISION"'}]
"""


def test_natural_order_of_the_seed_example(proj: Proj) -> None:
    revs = make_repo(proj.root.parent)
    proj.write("workflows/pipeline.yaml", PIPELINE)
    for rev in (revs["r10687"], revs["r10689"], revs["r10688"]):  # triggered with options, out of order
        proj.ok("workflow", "run", "pipeline", "--pin", f"app={rev}")
    schedule = [r["id"] for r in proj.ok("run", "list", "--json").json]
    natural = [r["id"] for r in proj.ok("run", "list", "--order", "natural", "--json").json]
    assert list(reversed(schedule)) == [1, 2, 3]
    assert list(reversed(natural)) == [1, 3, 2]
    view = proj.ok("run", "show", "3", "--json").json
    assert view["materials"] == [
        {"name": "app", "revision": revs["r10688"], "timestamp": view["materials"][0]["timestamp"]}
    ]
    assert view["materials"][0]["timestamp"].startswith("2010-04-27T")
    assert f"built {revs['r10688']} / {revs['r10688']}" in proj.ok("run", "logs", "3").out


def test_without_pin_the_branch_head_is_recorded(proj: Proj) -> None:
    revs = make_repo(proj.root.parent)
    proj.write("workflows/pipeline.yaml", PIPELINE)
    view = proj.ok("workflow", "run", "pipeline", "--json").json
    assert view["materials"][0]["revision"] == revs["r10689"]


def test_unknown_pin_creates_nothing(proj: Proj) -> None:
    make_repo(proj.root.parent)
    proj.write("workflows/pipeline.yaml", PIPELINE)
    r = proj.sluice("workflow", "run", "pipeline", "--pin", "app=deadbeef")
    assert r.code == 2 and "material app: unknown revision 'deadbeef'" in r.err
    r = proj.sluice("workflow", "run", "pipeline", "--pin", "ap=HEAD")
    assert r.code == 2 and "no material 'ap' in pipeline (did you mean 'app'?)" in r.err
    r = proj.sluice("workflow", "queue", "pipeline", "--pin", "app=nope")
    assert r.code == 2
    assert proj.ok("run", "list", "--json").json == [] and proj.ok("queue", "list", "--json").json == []


def test_queued_item_keeps_its_pin(proj: Proj) -> None:
    revs = make_repo(proj.root.parent)
    proj.write("workflows/pipeline.yaml", PIPELINE)
    proj.ok("workflow", "queue", "pipeline", "--pin", f"app={revs['r10687']}")
    proj.ok("queue", "execute", "1", "--wait")
    assert proj.ok("run", "show", "1", "--json").json["materials"][0]["revision"] == revs["r10687"]


def test_workflow_material_deploys_the_last_good_build_and_triggers(proj: Proj) -> None:
    proj.write(
        "workflows/build.yaml",
        """\
        name: build
        inputs: {ok: {default: "yes"}}
        jobs: {b: {steps: [{run: '[ "$INPUT_OK" = yes ]'}]}}
        """,
    )
    proj.write(
        "workflows/deploy.yaml",
        """\
        name: deploy
        materials: {build: {workflow: build, trigger: true}}
        jobs: {d: {steps: [{run: 'echo "deploying build $SLUICE_MATERIAL_BUILD_REVISION"'}]}}
        """,
    )
    proj.write(
        "workflows/audit.yaml",
        """\
        name: audit
        materials: {build: {workflow: build, trigger: false}}
        jobs: {a: {steps: [{run: 'true'}]}}
        """,
    )
    proj.ok("workflow", "run", "build")  # run 1 succeeds -> deploy starts (run 2), audit does not
    svc = proj.service()
    proj.wait_for(
        lambda: svc.db.scalar("SELECT COUNT(*) FROM runs WHERE target = 'deploy'") == 1, what="deploy"
    )
    deploy = svc.wait_run(2)
    assert deploy["trigger"] == "upstream" and deploy["status"] == "succeeded"
    assert deploy["materials"][0]["revision"] == "1"
    assert "deploying build 1" in proj.ok("run", "logs", "2").out
    assert proj.sluice("workflow", "run", "build", "-i", "ok=no").code == 1  # a failed build triggers nothing
    audit = proj.ok("workflow", "run", "audit", "--json").json
    assert audit["materials"][0]["revision"] == "1"  # the last good build, not the failed run 3
    assert svc.db.scalar("SELECT COUNT(*) FROM runs WHERE target = 'deploy'") == 1
    proj.ok("workflow", "pause", "deploy", "--reason", "freeze")
    proj.ok("workflow", "run", "build")
    proj.wait_for(
        lambda: any(e["kind"] == "upstream.refused" for e in proj.ok("history", "--json").json),
        what="upstream refusal",
    )
    assert svc.db.scalar("SELECT COUNT(*) FROM runs WHERE target = 'deploy'") == 1


def test_a_timer_whose_material_is_gone_skips_the_fire_with_the_reason(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        timer: "* * * * * *"
        materials: {app: {git: ../no-such-repo}}
        jobs: {a: {steps: [{run: "true"}]}}
        """,
    )
    proj.ok("engine", "start")
    svc = proj.service()
    proj.wait_for(
        lambda: svc.db.scalar("SELECT COUNT(*) FROM timer_fires WHERE status = 'skipped'"),
        what="a skipped fire",
    )
    reason = svc.db.scalar("SELECT reason FROM timer_fires WHERE status = 'skipped' LIMIT 1")
    assert reason.startswith("material app: unknown revision 'HEAD'")
    assert svc.db.scalar("SELECT COUNT(*) FROM runs") == 0
