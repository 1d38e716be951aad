"""The dashboard's status line and History pane (issue 12: what an operator at 2 am needs first)."""

from __future__ import annotations

import asyncio

from conftest import Proj
from dash import app_for, fixed_demo
from test_dashboard import settle


def status(app) -> str:
    from tui.app import StatusLine

    return str(app.query_one(StatusLine).render())


def test_the_status_line_says_engine_down_what_waits_and_a_freeze(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        from core import flow
        from core.store.db import now

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            assert status(app) == "✗ engine down (never started) · 1 held · 1 paused"
            flow.freeze(app.svc, "INC-9 payments", actor="erin@jump-1")
            with app.svc.db.write() as tx:  # an engine holds the lease now
                tx.execute(
                    "INSERT INTO leases (name, holder, token, expires_at) VALUES ('scheduler', 'jump-2:41:ab', 1, ?)",
                    (now() + 30,),
                )
            await settle(pilot, app, until=lambda: "engine up" in status(app))
            line = status(app)
            assert line.startswith("● engine up (jump-2) · beat <5s ago · 1 held")
            assert "❄ frozen by erin: INC-9 payments until lifted" in line

    asyncio.run(go())


def _lease(app, expires_at: float) -> None:
    """An engine's lease, as another host's engine would leave it."""
    with app.svc.db.write() as tx:
        tx.execute("DELETE FROM leases")
        tx.execute(
            "INSERT INTO leases (name, holder, token, expires_at) VALUES ('scheduler', 'jump-2:41:ab', 1, ?)",
            (expires_at,),
        )


def test_the_status_line_says_how_old_the_engines_heartbeat_is(proj: Proj) -> None:
    """The lease is the engine's heartbeat: renewed every beat_interval() to lease_seconds() ahead.
    Its age shows in 5-second steps (a header ticking every second would repaint every second)."""
    fixed_demo(proj)

    async def go() -> None:
        from core.store.db import now
        from core.times import beat_interval, lease_seconds

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            lease = lease_seconds()
            _lease(app, now() + lease - 1)  # beat a second ago
            await settle(pilot, app, until=lambda: "beat" in status(app))
            assert status(app).startswith("● engine up (jump-2) · beat <5s ago · 1 held")
            late = 2 * beat_interval() + 1  # a beat missed and the next overdue; the lease still runs
            assert 5 <= late < lease
            _lease(app, now() + lease - late)
            await settle(pilot, app, until=lambda: "late" in status(app))
            assert status(app).startswith(f"◔ engine up (jump-2) · beat {int(late // 5) * 5}s ago, late · ")
            _lease(app, now() + lease - 300)  # the engine died five minutes ago
            await settle(pilot, app, until=lambda: "down" in status(app))
            assert status(app).startswith("✗ engine down (last beat 5m ago) · 1 held")
            _lease(app, 0)  # what a clean stop leaves (Lease.release)
            await settle(pilot, app, until=lambda: "stopped" in status(app))
            assert status(app).startswith("✗ engine down (stopped) · 1 held")

    asyncio.run(go())


def test_the_status_line_takes_a_second_row_rather_than_cut_a_part(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        from core import flow
        from core.store.db import now
        from core.times import lease_seconds

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            flow.freeze(app.svc, "INC-9 payments", actor="erin@jump-1")
            _lease(app, now() + lease_seconds())
            await settle(pilot, app, until=lambda: "frozen" in status(app))
            rows = status(app).split("\n")
            assert rows == [
                "● engine up (jump-2) · beat <5s ago · 1 held · 1 paused",
                "❄ frozen by erin: INC-9 payments until lifted (sluice unfreeze)",
            ]
            from tui.app import StatusLine

            assert app.query_one(StatusLine).size.height == 2

    asyncio.run(go())


def test_the_engine_states_from_a_real_engines_lease(proj: Proj) -> None:
    """What a real engine leaves in the store reads up while it runs and stopped once it stopped."""
    svc = proj.service()
    assert svc.overview()["engine"]["state"] == "never"
    proj.ok("engine", "start")
    try:
        engine = svc.overview()["engine"]
        assert engine["state"] == "up" and engine["beat_age"] < 5, engine
    finally:
        proj.ok("engine", "stop")
    assert svc.overview()["engine"]["state"] == "stopped"


def test_history_pane_lists_the_events_newest_first_and_filters_them(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        from core import flow

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("5")
            await settle(pilot, app)
            pane = app.pane("history")
            ids = [int(k) for k in pane.data]
            assert ids == sorted(ids, reverse=True) and len(ids) >= 6
            assert any(e["kind"] == "workflow.paused" for e in pane.data.values())
            flow.unpause(app.svc, "teardown-dns", actor="carol@jump-1")  # another terminal
            await settle(pilot, app, until=lambda: pane.table.cursor_key is not None)
            newest = pane.data[str(max(int(k) for k in pane.data))]
            assert newest["kind"] == "workflow.unpaused"
            await pilot.press("slash", *"paused", "enter")
            await settle(pilot, app)
            assert {e["kind"] for e in pane.data.values()} == {"workflow.paused", "workflow.unpaused"}

    asyncio.run(go())


def test_a_runs_row_says_what_it_waits_for(proj: Proj) -> None:
    fixed_demo(proj)
    svc = proj.service()
    with svc.db.write() as tx:  # a third run, its job waiting for an agent in prod
        run = svc.db.one("SELECT * FROM runs WHERE id = 1")
        assert run is not None
        tx.execute(
            "INSERT INTO runs (kind, target, status, trigger, created_by, created_at, inputs, plan, cancel_requested) "
            "VALUES ('workflow', 'release', 'running', 'manual', 'dave@jump-1', ?, '{}', ?, 0)",
            (run["created_at"] + 500, run["plan"]),
        )
        tx.execute(
            "INSERT INTO jobs (run_id, name, base, position, status, reason, attempt, outputs, claim_token) "
            "VALUES (3, 'build', 'build', 0, 'waiting', 'no enabled agent in prod', 0, '{}', 0)"
        )

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            await pilot.press("2")
            await settle(pilot, app)
            table = app.pane("runs").table
            why = {key: str(table.get_row(key)[3]) for key in ("1", "2", "3")}
            assert why["1"] == ""  # finished: nothing to wait for
            assert why["2"].startswith("ship held")
            assert why["3"] == "waiting: no enabled agent in prod"

    asyncio.run(go())


def test_a_workflow_file_added_while_the_dashboard_is_open_appears(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("4")
            await settle(pilot, app)
            assert "hotfix" not in app.pane("workflows").data
            proj.write("workflows/hotfix.yaml", "name: hotfix\njobs:\n  a: {steps: [{run: 'true'}]}\n")
            await settle(pilot, app, until=lambda: "hotfix" in app.pane("workflows").data)

    asyncio.run(go())


def first_command(app) -> str:
    """The palette's best match on screen ("" while it has none)."""
    lists = app.screen.query("CommandList")
    if not lists or not lists.first().option_count:
        return ""
    return str(lists.first().get_option_at_index(0).prompt)


def test_the_command_palette_reaches_actions_by_name(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        from tui.screens.modals import FormScreen
        from tui.screens.run import RunScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("colon", *"run 1")  # `:` opens it, as in vim and k9s
            await settle(pilot, app, until=lambda: "Open run #1" in first_command(app))
            await pilot.press("enter")
            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen))
            assert app.screen.run_id == 1
            await pilot.press("escape", "colon", *"release ship 2")
            await settle(pilot, app, until=lambda: "Release ship 2" in first_command(app))
            await pilot.press("enter")  # the same release form as r, with its checks
            await settle(pilot, app, until=lambda: isinstance(app.screen, FormScreen))
            assert "ship" in app.screen.title_text

    asyncio.run(go())


def test_workflows_pane_says_when_a_closed_window_opens(proj: Proj) -> None:
    fixed_demo(proj)
    proj.write(
        "sluice.yaml",
        proj.root.joinpath("sluice.yaml").read_text()
        + "windows:\n  maintenance: {cron: '0 2 1 1 *', duration: 1h}\n",
    )
    text = proj.root.joinpath("workflows/release.yaml").read_text()
    proj.write(
        "workflows/release.yaml", text.replace("lock: until_complete\n", "lock: none\nwindow: maintenance\n")
    )
    with proj.service().db.write() as tx:
        tx.execute("UPDATE runs SET status = 'cancelled' WHERE id = 2")

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            await pilot.press("4")
            await settle(pilot, app)
            state = str(app.pane("workflows").table.get_row("release")[1])
            assert state.startswith("◷ maintenance: opens ") and "01-01 02:00" in state

    asyncio.run(go())


def test_a_held_jobs_line_in_the_run_view_says_approvers_approvals_since_and_time_left(proj: Proj) -> None:
    """The run view's held job says what the Runs row says (core's held_whys and _whys share one
    computation, why_text the words): approvers, approvals so far, held since, time left."""
    fixed_demo(proj)
    from core.service import record_event
    from core.store.db import dumps, loads, now

    svc = proj.service()
    with svc.db.write() as tx:
        run = svc.db.one("SELECT plan FROM runs WHERE id = 2")
        plan = loads(run["plan"])
        plan["jobs"]["ship"]["hold"].update(approvers=["carol", "dave"], approvals=2)
        ship = svc.db.one("SELECT id FROM jobs WHERE run_id = 2 AND name = 'ship'")["id"]
        tx.execute("UPDATE runs SET plan = ? WHERE id = 2", (dumps(plan),))
        tx.execute("UPDATE jobs SET hold_deadline = ? WHERE id = ?", (now() + 3 * 3600 + 350, ship))
        tx.insert(
            "approvals",
            {"job_id": ship, "run_id": 2, "approver": "carol", "actor": "carol@jump-1", "at": now() - 60},
        )
        record_event(tx, "job.held", "sluice", "ship held", run_id=2, job_id=ship)
        tx.execute(
            "UPDATE events SET at = ? WHERE kind = 'job.held' AND job_id = ?", (now() - 14 * 60 - 5, ship)
        )
    held = "held 14m · approvers: carol, dave · 1 of 2: carol · 3h05m left"

    async def go() -> None:
        from tui.screens.run import RunScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("2")
            await settle(pilot, app)
            assert str(app.pane("runs").table.get_row("2")[3]) == f"ship {held}"
            await pilot.press("enter")
            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen) and app.screen.view)
            screen = app.screen
            assert str(screen.query_one("#jobs").get_row("ship")[3]) == f"Ship it?; {held}"
            await pilot.press("down")  # the detail line says it in full, at 80 columns too
            assert str(screen.query_one("#job-detail").render()) == f"ship held · Ship it? · {held}"

    asyncio.run(go())
