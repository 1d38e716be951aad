"""What the dashboard shows: each pane, the run and log views and each dialog, at 80x24 and 120x40."""

from __future__ import annotations

import pytest
from conftest import Proj
from dash import app_for, fixed_demo

SIZES = [(80, 24), (120, 40)]


async def _refresh(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    pilot.app.refresh_now()
    await pilot.pause()


def steps(*keys: str):
    """Press keys, refreshing the data after each (the poller is off in these tests)."""

    async def run_before(pilot) -> None:
        await _refresh(pilot)
        for key in keys:
            await pilot.press(key)
            await _refresh(pilot)

    return run_before


CASES = {
    "queue_marked": steps("space", "space"),
    "runs": steps("2"),
    "agents": steps("3"),
    "workflows": steps("4"),
    "history": steps("5"),
    "run_view": steps("2", "enter"),
    "log_view": steps("2", "down", "enter", "l"),
    "confirm_execute": steps("space", "space", "x"),
    "release_form": steps("2", "r"),
    "reject_form": steps("2", "R"),
    "start_form": steps("4", "s"),
    "pause_form": steps("4", "p"),
    "help": steps("question_mark"),
}


@pytest.mark.sqlite_only("pixels, not data paths: the Pilot tests drive the dashboard on both backends")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", list(CASES))
def test_snapshot(snap_compare, proj: Proj, case: str, size: tuple[int, int]) -> None:
    fixed_demo(proj)
    app = app_for(proj)
    assert snap_compare(app, terminal_size=size, run_before=CASES[case])


@pytest.mark.sqlite_only("pixels, not data paths: the Pilot tests drive the dashboard on both backends")
def test_read_only_footer_has_no_actions(snap_compare, proj: Proj) -> None:
    fixed_demo(proj)
    assert snap_compare(app_for(proj, read_only=True), terminal_size=(80, 24), run_before=steps())


# What jump hosts get: 16 colours (TERM=xterm picks the ansi-dark theme) and NO_COLOR (no colour
# at all: the cursor, focus and the current tab must still show, by reverse video and bold).
MODE_CASES = [
    "queue_marked",
    "runs",
    "run_view",
    "log_view",
    "history",
    "confirm_execute",
    "start_form",
    "help",
]


@pytest.mark.sqlite_only("pixels, not data paths: the Pilot tests drive the dashboard on both backends")
@pytest.mark.parametrize("mode", ["ansi", "no_color"])
@pytest.mark.parametrize("case", MODE_CASES)
def test_snapshot_colour_modes(
    snap_compare, proj: Proj, monkeypatch: pytest.MonkeyPatch, case: str, mode: str
) -> None:
    fixed_demo(proj)
    if mode == "no_color":
        monkeypatch.setenv("NO_COLOR", "1")
    app = app_for(proj, theme="ansi-dark")
    assert snap_compare(app, terminal_size=(80, 24), run_before=CASES[case])
