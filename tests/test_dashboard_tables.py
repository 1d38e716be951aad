"""The live tables: cells keep their whole text when an update makes them longer (issue 12, point 2);
the keys people already have move the cursor (j/k, g/G, Home/End)."""

from __future__ import annotations

import asyncio

from conftest import Proj
from dash import app_for, fixed_demo
from test_dashboard import settle


def row_text(table, key: str) -> str:
    """The row as drawn on screen (what the user reads), not the data behind it."""
    y = table.get_row_index(key) + 1  # below the header
    return table.render_line(y - int(table.scroll_y)).text


def test_a_cell_that_grows_is_not_cut(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("4")
            await settle(pilot, app)
            table = app.pane("workflows").table
            reason = "change freeze until the DBA is back from the holiday"
            assert reason not in row_text(table, "release")  # longer than anything in the column
            await pilot.press("p", *reason, "enter")
            await settle(pilot, app, until=lambda: app.pane("workflows").current()["paused"])
            await pilot.pause()
            assert f"‖ paused: {reason}" in row_text(table, "release"), row_text(table, "release")

    asyncio.run(go())


def test_j_k_g_G_home_end_move_the_cursor_by_rows(proj: Proj) -> None:
    fixed_demo(proj)  # four queued items

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            table = app.pane("queue").table
            assert table.row_count == 4 and table.cursor_row == 0
            seen = []
            for key in ["j", "j", "k", "G", "g", "end", "home"]:
                await pilot.press(key)
                seen.append(table.cursor_row)
            assert seen == [1, 2, 1, 3, 0, 3, 0]
            assert table.scroll_x == 0  # Home/End go to a row, they do not scroll sideways
            await pilot.press("question_mark")
            assert "first/last row" in dict(app.screen.keys)["j/k, g/G, home/end"]

    asyncio.run(go())


def test_the_log_view_searches_and_scrolling_back_stops_following(proj: Proj) -> None:
    fixed_demo(proj)
    svc = proj.service()
    with svc.db.write() as tx:  # a long log: 300 lines, one of them the needle
        lines = "".join(f"line {i}\n" if i != 120 else "ERROR disk full\n" for i in range(300))
        tx.insert(
            "log_chunks", {"job_id": 1, "run_id": 1, "seq": 3, "stream": "out", "data": lines, "at": 0.0}
        )

    async def go() -> None:
        from tui.screens.run import LogScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            app.push_screen(LogScreen(1, "build"))
            await settle(pilot, app, until=lambda: isinstance(app.screen, LogScreen) and app.screen.after > 0)
            screen = app.screen
            assert screen.follow
            await pilot.press("pageup")
            assert not screen.follow  # new output no longer snaps the view to the end
            await pilot.press("end")
            assert screen.follow
            await pilot.press("slash", *"ERROR", "enter")
            await settle(pilot, app)
            assert screen.found == 122 and not screen.follow  # two lines of steps come first
            assert "/ERROR: line 123" in str(screen.query_one("#log-view").border_title)
            await pilot.press("slash", "escape")  # escape leaves the search box, not the log view
            assert isinstance(app.screen, LogScreen)

    asyncio.run(go())


def test_w_wraps_long_log_lines_and_control_characters_are_shown_escaped(proj: Proj) -> None:
    fixed_demo(proj)
    svc = proj.service()
    long = "x" * 150 + " END"
    with svc.db.write() as tx:
        data = f"\x1b[2Jred\x07 alert\n{long}\n" + "".join(
            f"line {i}\n" if i != 30 else "ERROR here\n" for i in range(80)
        )
        tx.insert(
            "log_chunks", {"job_id": 1, "run_id": 1, "seq": 3, "stream": "out", "data": data, "at": 0.0}
        )

    async def go() -> None:
        from tui.screens.run import LogScreen

        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            app.push_screen(LogScreen(1, "build"))
            await settle(pilot, app, until=lambda: isinstance(app.screen, LogScreen) and app.screen.after > 0)
            log = app.screen.query_one("#log")

            def rows() -> list[str]:
                return [log.render_line(y).text.rstrip() for y in range(log.size.height)]

            await pilot.press("home")  # the top of the log
            shown = rows()
            assert shown[2] == "\\x1b[2Jred\\x07 alert"  # escaped, as the CLI's tables show them
            assert shown[3] == "x" * log.size.width  # one row, cut at the edge
            assert "END" not in "".join(shown)
            await pilot.press("w")
            shown = rows()
            width = log.scrollable_content_region.width
            assert shown[3] == "x" * width and shown[4] == "x" * (150 - width)  # the rest below
            assert shown[5] == "END"
            assert shown[-1] != ""  # and the lines after it moved down, not over it
            assert "wrapped" in str(app.screen.query_one("#log-view").border_title)
            await pilot.press("slash", *"ERROR", "enter")  # a search lands on the line, wrapped too
            await settle(pilot, app)
            assert rows()[0] == "ERROR here"
            with svc.db.write() as tx:  # output arriving while wrapped: a partial line, then its end
                for seq, part in ((4, "tail " + "y" * 100), (5, " done\n")):
                    tx.insert(
                        "log_chunks",
                        {"job_id": 1, "run_id": 1, "seq": seq, "stream": "out", "data": part, "at": 0.0},
                    )
                    await settle(pilot, app)
            await pilot.press("end")
            await settle(pilot, app)
            tail = [r for r in rows() if r]
            assert tail[-3:] == ["tail", "y" * width, "y" * (100 - width) + " done"]  # broken at spaces
            await pilot.press("slash", *"ERROR", "enter", "w")  # and back: whole lines, the match on top
            await settle(pilot, app)
            assert rows()[0] == "ERROR here"
            await pilot.press("home")
            assert "END" not in "".join(rows())

    asyncio.run(go())


def footer(app) -> str:
    """The footer as drawn (its keys and their words), one line."""
    from textual.widgets import Footer

    bar = app.screen.query_one(Footer)
    return " ".join(k.render_line(0).text.strip() for k in bar.query("FooterKey") if k.region.width)


def test_the_footer_shows_the_panes_enter_and_fits_80_columns(proj: Proj) -> None:
    """DataTable's own enter (hidden) took the key from the pane's, so the footer never said what
    enter does; the Runs footer was cut at 80 columns."""
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            assert "⏎ Preview" in footer(app)
            await pilot.press("2")
            await settle(pilot, app)
            line = footer(app)
            assert "⏎ Open" in line and line.endswith("q Quit"), line  # nothing cut at the right
            assert "o Order" not in line  # in the help (?), not the footer
            await pilot.press("enter")  # and enter does what the footer says
            from tui.screens.run import RunScreen

            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen))

    asyncio.run(go())
