"""The dashboard's review and recovery keys (SPEC 14): preview on enter, u to undo a purge,
a to run a finished run again; each through the same use cases as the CLI."""

from __future__ import annotations

import asyncio

from conftest import Proj
from dash import app_for, fixed_demo, toasts
from test_dashboard import settle


def test_enter_previews_a_queued_item_without_starting_it(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        from tui.screens.modals import InfoScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, app)
            await pilot.press("enter")  # item #1: teardown-dns, paused
            await settle(pilot, app, until=lambda: isinstance(app.screen, InfoScreen))
            text = "\n".join(app.screen.lines)
            assert "✗ cannot start now" in text
            assert "paused by carol@jump-1" in text and "DNS freeze until Monday" in text
            await pilot.press("escape")
            await pilot.press("j", "j", "j", "enter")  # item #4: release v7, locked by run #2
            await settle(pilot, app, until=lambda: isinstance(app.screen, InfoScreen))
            text = "\n".join(app.screen.lines)
            assert "locked by run #2" in text
            assert "hold: Ship it?" in text and "fields ticket" in text

    asyncio.run(go())
    assert proj.service().db.scalar("SELECT COUNT(*) FROM runs") == 2  # nothing started by looking


def test_u_restores_the_items_purged_last_after_listing_them(proj: Proj) -> None:
    fixed_demo(proj)
    from core import queueing

    svc = proj.service()
    queueing.purge(svc, [1], actor="alice@jump-1")
    queueing.purge(svc, [2, 3], actor="alice@jump-1")  # the last purge

    async def go() -> None:
        from tui.screens.modals import ConfirmScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, app)
            await pilot.press("u")
            await settle(pilot, app, until=lambda: isinstance(app.screen, ConfirmScreen))
            assert [ln.split()[0] for ln in app.screen.lines] == ["#2", "#3"]
            assert app.screen.focused.id == "cancel"
            await pilot.press("y")
            await settle(
                pilot, app, until=lambda: any("restored 2 item(s): #2, #3" in t for t in toasts(app))
            )

    asyncio.run(go())
    statuses = {r["id"]: r["status"] for r in svc.db.all("SELECT id, status FROM queue_items")}
    assert statuses == {1: "purged", 2: "queued", 3: "queued", 4: "queued"}


def test_a_in_the_run_view_runs_a_run_again_naming_the_new_run(proj: Proj) -> None:
    fixed_demo(proj)
    with proj.service().db.write() as tx:  # run #2 no longer holds release's lock
        tx.execute("UPDATE runs SET status = 'cancelled' WHERE id = 2")
        tx.execute("UPDATE jobs SET status = 'cancelled' WHERE run_id = 2 AND status = 'held'")

    async def go() -> None:
        from tui.screens.modals import ConfirmScreen
        from tui.screens.run import RunScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, app)
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("G", "enter")  # the oldest run: #1, succeeded
            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen))
            assert app.screen.run_id == 1
            await pilot.press("a")
            await settle(pilot, app, until=lambda: isinstance(app.screen, ConfirmScreen))
            assert app.screen.lines == ["runs again: build, ship"]
            assert app.screen.focused.id == "cancel"
            await pilot.press("y")
            await settle(
                pilot, app, until=lambda: any("started run #3 (re-run of #1)" in t for t in toasts(app))
            )

    asyncio.run(go())
    run = proj.service().db.one("SELECT trigger, rerun_of FROM runs WHERE id = 3")
    assert run == {"trigger": "rerun", "rerun_of": 1}


def test_a_on_a_run_still_going_says_so_without_a_dialog(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        from tui.screens.modals import ConfirmScreen
        from tui.screens.run import RunScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, app)
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("g", "enter")  # the newest run: #2, on hold
            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen))
            assert app.screen.run_id == 2
            await pilot.press("a")
            await settle(pilot, app, until=lambda: any("still on hold" in t for t in toasts(app)))
            assert not isinstance(app.screen, ConfirmScreen)

    asyncio.run(go())
    assert proj.service().db.scalar("SELECT COUNT(*) FROM runs") == 2
