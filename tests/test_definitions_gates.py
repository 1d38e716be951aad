"""`sluice validate` on the keys of SPEC 13: windows, freezes, approvals, four-eyes, break glass, notify."""

from __future__ import annotations

import pytest
from conftest import Proj
from test_definitions import problems, wf

SETTINGS = """\
name: ops
timezone: Europe/London
groups: {seniors: [carol, dave], oncall: [erin]}
four_eyes: true
break_glass: oncall
windows:
  maintenance: {cron: "0 2 * * 6", duration: 3h}
freezes:
  - {from: 2026-12-20T00:00, to: 2027-01-04T00:00, reason: holiday freeze, except: [smoke]}
notify:
  - {on: [job.held, run.failed], run: ./scripts/page.sh}
  - {on: [break_glass], run: [logger, -t, sluice]}
"""


@pytest.fixture
def proj(defs_proj: Proj) -> Proj:
    return defs_proj


def test_the_new_keys_load(proj: Proj) -> None:
    proj.write("sluice.yaml", SETTINGS)
    wf(proj, "name: smoke\njobs:\n  a: {steps: [{run: 'true'}]}\n", "smoke")
    wf(
        proj,
        """\
        name: db-migration
        window: maintenance
        jobs:
          swap:
            hold: {prompt: go?, approvers: [seniors], approvals: 2, four_eyes: false}
            steps: [{run: 'true'}]
        """,
        "db-migration",
    )
    proj.write(
        "models/db.yaml",
        "name: db\nwindow: maintenance\nmethods:\n  vacuum: {run: 'true'}\n",
    )
    assert "all valid" in proj.ok("validate").out
    from core.definitions import load_project

    p = load_project(proj.root)
    assert p.four_eyes is True and p.break_glass == "oncall"
    assert p.windows["maintenance"].duration == 3 * 3600
    [freeze] = p.freezes
    assert freeze.reason == "holiday freeze" and freeze.except_ == ["smoke"]
    assert freeze.end - freeze.start == 15 * 86400
    assert [h.run for h in p.notify] == ["./scripts/page.sh", ["logger", "-t", "sluice"]]
    hold = p.workflows["db-migration"].jobs["swap"].hold
    assert hold is not None and hold.approvals == 2 and hold.four_eyes is False
    assert p.workflows["db-migration"].window == "maintenance"
    assert p.models["db"].methods["vacuum"].window == "maintenance"


def test_unknown_window_and_group_names_say_did_you_mean(proj: Proj) -> None:
    proj.write("sluice.yaml", SETTINGS.replace("break_glass: oncall", "break_glass: oncal"))
    wf(proj, "name: smoke\njobs:\n  a: {steps: [{run: 'true'}]}\n", "smoke")
    wf(proj, "name: w\nwindow: maintenanse\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    found = problems(proj)
    assert any("sluice.yaml" in p and "unknown group 'oncal' (did you mean 'oncall'?)" in p for p in found)
    assert any(
        p.startswith("workflows/w.yaml:2:9")
        and "unknown window 'maintenanse' (did you mean 'maintenance'?)" in p
        for p in found
    ), found


def test_window_cron_and_duration_are_checked(proj: Proj) -> None:
    proj.write(
        "sluice.yaml",
        "windows:\n  a: {cron: '0 2 * *', duration: 3h}\n  b: {cron: '0 0 30 2 *', duration: 1h}\n"
        "  c: {cron: '0 2 * * 6', duration: soon}\n",
    )
    found = problems(proj)
    assert any("windows.a.cron '0 2 * *' is not a valid cron expression" in p for p in found), found
    assert any("windows.b.cron '0 0 30 2 *' never fires" in p for p in found), found
    assert any(p.startswith("sluice.yaml:4:") and "windows.c.duration" in p for p in found), found


def test_a_freeze_that_ends_before_it_starts(proj: Proj) -> None:
    proj.write(
        "sluice.yaml",
        "freezes:\n  - {from: 2027-01-04T00:00, to: 2026-12-20T00:00, reason: backwards}\n"
        "  - {from: next tuesday, to: 2027-01-01T00:00, reason: vague}\n"
        "  - {from: 2026-12-20T00:00, to: 2027-01-04T00:00, reason: x, except: [smok]}\n",
    )
    wf(proj, "name: smoke\njobs:\n  a: {steps: [{run: 'true'}]}\n", "smoke")
    found = problems(proj)
    assert any("freeze.to must come after freeze.from" in p for p in found), found
    assert any("freeze.from: 'next tuesday' is not a time" in p for p in found), found
    assert any("unknown workflow 'smok' (did you mean 'smoke'?)" in p for p in found), found


def test_more_approvals_than_approvers(proj: Proj) -> None:
    proj.write("sluice.yaml", "groups: {seniors: [carol, dave]}\n")
    wf(
        proj,
        """\
        name: w
        jobs:
          a:
            hold: {approvers: [seniors, carol], approvals: 3}
            steps: [{run: 'true'}]
        """,
    )
    [p] = problems(proj)
    assert "approvals: 3 needs 3 distinct approvers, but only 2 can approve (carol, dave)" in p
    assert p.startswith("workflows/w.yaml:4:")


def test_notify_needs_kinds_and_a_command(proj: Proj) -> None:
    proj.write(
        "sluice.yaml", "notify:\n  - {on: [], run: ./x}\n  - {on: [job.held], run: ''}\n  - {run: ./y}\n"
    )
    found = problems(proj)
    assert any("notify.on must list at least one event kind" in p for p in found), found
    assert any("notify.run must not be empty" in p for p in found), found
    assert any("notify" in p and "'on'" in p for p in found), found
