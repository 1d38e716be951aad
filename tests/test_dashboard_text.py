"""Text from people and jobs reaches the dashboard as text: Rich markup in it (`[/x]`, `[bold]`) is
neither parsed (a MarkupError took the dashboard down) nor applied, and control characters are
shown escaped (`\\x1b`), as the CLI shows them (issue 12)."""

from __future__ import annotations

import asyncio

from conftest import Proj
from dash import app_for, fixed_demo, toasts
from test_dashboard import settle
from test_dashboard_tables import row_text


def detail(app, pane: str) -> str:
    """The detail line under a pane's table, as drawn."""
    return str(app.query_one(f"#{pane}-detail").render())


NOTE = "[/x] \x1b[2J [bold]x"
SHOWN = "[/x] \\x1b[2J [bold]x"  # what the operator reads


def test_markup_and_escapes_in_a_note_are_shown_as_text(proj: Proj) -> None:
    fixed_demo(proj)
    svc = proj.service()
    with svc.db.write() as tx:
        tx.execute("UPDATE queue_items SET note = ? WHERE id = 1", (NOTE,))

    async def go() -> None:
        from tui.screens.modals import InfoScreen

        app = app_for(proj)
        async with app.run_test(size=(160, 30)) as pilot:
            await settle(pilot, app)
            table = app.pane("queue").table
            assert SHOWN in row_text(table, "1")
            assert detail(app, "queue") == f"#1 teardown-dns · note: {SHOWN}"
            await pilot.press("enter")  # the preview quotes the note too
            await settle(pilot, app, until=lambda: isinstance(app.screen, InfoScreen))
            assert f"note: {SHOWN}" in str(app.screen.query_one("#dialog-items Static").render())

    asyncio.run(go())


def test_markup_in_a_reason_a_filter_and_a_refused_value_is_text(proj: Proj) -> None:
    fixed_demo(proj)
    from core import flow

    svc = proj.service()
    flow.unpause(svc, "teardown-dns", actor="carol@jump-1")
    flow.pause(svc, "teardown-dns", "[/x] DBA [bold]away", actor="carol@jump-1")

    async def go() -> None:
        from textual.geometry import Region

        from tui.screens.modals import FormScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, app)
            await pilot.press("x", "y")  # item #1: its workflow is paused; the toast quotes the reason
            await settle(pilot, app, until=lambda: any("stays queued" in t for t in toasts(app)))
            assert any("[/x] DBA [bold]away" in t for t in toasts(app)), toasts(app)
            await pilot.press("slash", *"[/x]", "enter")  # a filter of markup: in the pane's title
            await settle(pilot, app)
            pane = app.pane("queue")
            top = pane.render_lines(Region(0, 0, pane.outer_size.width, 1))[0].text  # its border
            assert "filter: [/x]" in top, top
            await pilot.press("escape", "2")
            await settle(pilot, app)
            await pilot.press("r", "enter", *"[/x]", "enter")  # a refused value, quoted under the form
            await settle(pilot, app, until=lambda: isinstance(app.screen, FormScreen))
            error = str(app.screen.query_one("#dialog-error").render())
            assert "'[/x]' does not match pattern" in error, error

    asyncio.run(go())


def test_the_detail_line_shows_what_80_columns_cut_off(proj: Proj) -> None:
    """At 80x24 the Note and the Released/rejected columns are off-screen: the line under each
    table says them for the row under the cursor."""
    fixed_demo(proj)

    async def go() -> None:
        from tui.screens.run import RunScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            assert detail(app, "queue") == "#1 teardown-dns · note: decommission step 3"
            await pilot.press("down")
            assert detail(app, "queue") == "#2 ad-account.create token=*** user=jsmith · note: new hire"
            await pilot.press("2")
            await settle(pilot, app)
            assert detail(app, "runs").startswith("#2 release on hold · ship held")
            await pilot.press("5")
            await settle(pilot, app)
            assert detail(app, "history").startswith("workflow.paused by carol: ")
            await pilot.press("2", "down", "enter")  # run #1: its job released by carol, “ok”
            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen))
            await settle(pilot, app, until=lambda: app.screen.view is not None)
            line = str(app.screen.query_one("#job-detail").render())
            assert line == "build succeeded on qa-1 · binary=app-v1 · released by carol 11-18 11:08 “ok”", (
                line
            )

    asyncio.run(go())
