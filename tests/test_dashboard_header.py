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
            assert status(app) == "✗ engine down · 1 held · 1 paused"
            flow.freeze(app.svc, "INC-9 payments", actor="erin@jump-1")
            with app.svc.db.write() as tx:  # an engine holds the lease now
                tx.execute(
                    "INSERT INTO leases (name, holder, token, expires_at) VALUES ('scheduler', 'jump-2:41:ab', 1, ?)",
                    (now() + 30,),
                )
            await settle(pilot, app, until=lambda: "engine up" in status(app))
            line = status(app)
            assert line.startswith("● engine up (jump-2) · 1 held")
            assert "❄ frozen by erin: INC-9 payments until lifted" in line

    asyncio.run(go())


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
