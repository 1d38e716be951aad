"""The dashboard driven by key presses (Textual Pilot); the store is checked afterwards."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
import time

import pytest
from conftest import Proj
from dash import app_for, build, fixed_demo, toasts


def run(coro) -> None:
    asyncio.run(coro)


async def settle(pilot, app, until=None, timeout: float = 10.0) -> None:
    """Let workers finish and refresh the visible data; optionally until a condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.refresh_now()
        await pilot.pause()
        if until is None or until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def items(proj: Proj) -> dict[int, str]:
    return {r["id"]: r["status"] for r in proj.service().db.all("SELECT id, status FROM queue_items")}


def test_execute_marked_items_with_confirmation(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, app)
            await pilot.press("space", "space", "x")
            from tui.screens.modals import ConfirmScreen

            assert isinstance(app.screen, ConfirmScreen)
            assert [ln.split()[0] for ln in app.screen.lines] == ["#1", "#2"]
            assert app.screen.focused.id == "cancel"  # Cancel has the focus
            await pilot.press("y")
            # teardown-dns is paused: its item stays queued and the dashboard says why, on screen
            await settle(
                pilot,
                app,
                until=lambda: any(
                    "#1 stays queued: workflow teardown-dns is paused" in t for t in toasts(app)
                ),
            )
            await settle(pilot, app, until=lambda: any("started #2 as run #3" in t for t in toasts(app)))

    run(go())
    assert items(proj) == {1: "queued", 2: "executed", 3: "queued", 4: "queued"}
    runs = proj.service().db.all("SELECT queue_item_id, trigger FROM runs WHERE queue_item_id IS NOT NULL")
    assert [(r["queue_item_id"], r["trigger"]) for r in runs] == [(2, "queue")]


def test_execute_without_marks_takes_the_cursor_row(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("down", "down", "x", "y")
            await settle(pilot, app)

    run(go())
    assert items(proj)[3] == "executed" and items(proj)[1] == "queued"


def test_purge_cancel_then_confirm(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("d", "n")
            await settle(pilot, app)
            assert items(proj)[1] == "queued"
            await pilot.press("d", "escape")
            await settle(pilot, app)
            assert items(proj)[1] == "queued"
            await pilot.press("d", "enter")  # enter on the focused Cancel button: still nothing
            await settle(pilot, app)
            assert items(proj)[1] == "queued"
            await pilot.press("d", "y")
            await settle(pilot, app)

    run(go())
    assert items(proj) == {1: "purged", 2: "queued", 3: "queued", 4: "queued"}
    assert proj.service().db.scalar("SELECT COUNT(*) FROM runs WHERE queue_item_id IS NOT NULL") == 0


def test_release_with_comment_and_field(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await settle(pilot, app)
            # runs are newest first: #2, the held one, is under the cursor
            assert app.pane("runs").current()["held"] == ["ship"]
            await pilot.press("r")
            from tui.screens.modals import FormScreen

            assert isinstance(app.screen, FormScreen)
            await pilot.press(*"looks good", "enter", *"CHG-9", "enter")
            await settle(pilot, app)

    run(go())
    ship = proj.service().db.one("SELECT * FROM jobs WHERE run_id = 2 AND name = 'ship'")
    assert ship["status"] == "waiting" and ship["comment"] == "looks good"
    assert '"ticket":"CHG-9"' in ship["fields"]


def test_a_refused_field_keeps_the_form_and_what_was_typed(proj: Proj) -> None:
    """A refused value closed the dialog and the comment was lost. Now the form stays, says which
    field and why, puts the cursor there, and the corrected release goes through."""
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("r", *"checked by hand", "enter", *"nope", "enter")
            await settle(pilot, app)
            from tui.screens.modals import FormScreen

            form = app.screen
            assert isinstance(form, FormScreen)  # still open
            error = str(form.query_one("#dialog-error").render())
            assert "field 'ticket'" in error and "does not match pattern" in error
            assert form.values() == {"comment": "checked by hand", "f.ticket": "nope"}  # nothing lost
            assert app.focused is form.query_one("#field-1")  # the ticket field
            await pilot.press(*["backspace"] * 4, *"CHG-12", "enter")
            await settle(pilot, app)

    run(go())
    ship = proj.service().db.one("SELECT * FROM jobs WHERE run_id = 2 AND name = 'ship'")
    assert ship["status"] == "waiting" and ship["comment"] == "checked by hand"
    assert '"ticket":"CHG-12"' in ship["fields"]


def test_a_non_approver_is_refused_before_the_release_form(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        "name: w\njobs: {ship: {hold: {approvers: [carol], fields: {ticket: {required: true}}}, "
        "steps: [{run: 'true'}]}}\n",
    )
    proj.ok("workflow", "run", "w")

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("r")
            await settle(pilot, app, until=lambda: any("may not release ship" in t for t in toasts(app)))
            assert app.screen is app.screen_stack[0]  # no form to fill in for nothing

    run(go())
    assert proj.service().db.scalar("SELECT status FROM jobs WHERE name = 'ship'") == "held"


def test_reject_asks_for_a_reason(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("R", "enter")  # empty reason: the form says it is required
            assert "required" in str(app.screen.query_one("#dialog-error").render())
            await pilot.press(*"smoke tests flaky", "enter")
            await settle(pilot, app)

    run(go())
    ship = proj.service().db.one("SELECT * FROM jobs WHERE run_id = 2 AND name = 'ship'")
    assert ship["status"] == "rejected" and ship["reason"].endswith("smoke tests flaky")


def test_run_view_release_and_cancel(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("enter")
            from tui.screens.run import RunScreen

            assert isinstance(app.screen, RunScreen)
            await settle(pilot, app)
            await pilot.press("c")
            await pilot.press("y")
            await settle(pilot, app)

    run(go())
    assert proj.service().db.scalar("SELECT cancel_requested FROM runs WHERE id = 2") == 1


def test_cancel_on_a_finished_run_says_so_without_a_dialog(proj: Proj) -> None:
    fixed_demo(proj)  # run #1 succeeded, run #2 is on hold

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("down")
            assert app.pane("runs").current()["id"] == 1
            await pilot.press("c")
            await settle(pilot, app, until=lambda: toasts(app))
            from tui.screens.modals import ConfirmScreen

            assert not isinstance(app.screen, ConfirmScreen)
            assert toasts(app) == ["run #1 already succeeded: nothing to cancel"]  # one toast says why
            app.clear_notifications()
            await pilot.press("enter")  # and the same in the run view
            from tui.screens.run import RunScreen

            await settle(pilot, app, until=lambda: isinstance(app.screen, RunScreen) and app.screen.view)
            await pilot.press("c")
            await settle(pilot, app, until=lambda: toasts(app))
            assert isinstance(app.screen, RunScreen)
            assert toasts(app) == ["run #1 already succeeded: nothing to cancel"]

    run(go())
    assert proj.service().db.scalar("SELECT cancel_requested FROM runs WHERE id = 1") == 0


def test_pause_and_unpause_a_workflow(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await settle(pilot, app)
            assert app.pane("workflows").current()["name"] == "release"
            await pilot.press("p", *"change freeze", "enter")
            await settle(pilot, app, until=lambda: app.pane("workflows").current()["paused"])
            await pilot.press("down", "u")  # teardown-dns was paused by the fixture
            await settle(pilot, app, until=lambda: not app.pane("workflows").data["teardown-dns"]["paused"])

    run(go())
    rows = {r["workflow"]: r for r in proj.service().db.all("SELECT * FROM workflow_states")}
    assert rows["release"]["paused"] == 1 and rows["release"]["pause_reason"] == "change freeze"
    assert rows["teardown-dns"]["paused"] == 0


def test_start_a_run_with_the_inputs_form(proj: Proj) -> None:
    build(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("4")
            await settle(pilot, app)
            await pilot.press("s", *"v9", "enter")
            await settle(pilot, app, until=lambda: any("started run #1 of release" in t for t in toasts(app)))

    run(go())
    run_row = proj.service().db.one("SELECT * FROM runs")
    assert run_row["target"] == "release" and run_row["inputs"] == '{"version":"v9"}'


def test_read_only_has_no_actions(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj, read_only=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("space", "x", "d")
            assert app.screen is app.screen_stack[0]  # no confirmation opened
            shown = [ab.binding.action for ab in app.active_bindings.values()]
            assert "execute" not in shown and "purge" not in shown
            await pilot.press("2")
            await settle(pilot, app)
            await pilot.press("r", "R", "c")
            assert app.screen is app.screen_stack[0]

    run(go())
    assert set(items(proj).values()) == {"queued"}
    assert proj.service().db.scalar("SELECT status FROM jobs WHERE run_id = 2 AND name = 'ship'") == "held"


def test_filter_is_done_in_the_store(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("slash", *"ad-acc", "enter")
            await settle(pilot, app)
            queue = app.pane("queue")
            assert sorted(queue.data) == ["2", "3"]
            assert "filter: ad-acc" in str(queue.border_title)
            await pilot.press("slash", "escape")
            await settle(pilot, app)
            assert len(queue.data) == 4
            await pilot.press("slash", *"relea")  # as it is typed, no enter
            await settle(pilot, app, until=lambda: sorted(queue.data) == ["4"])

    run(go())


def test_changes_from_another_terminal_appear_within_a_second(proj: Proj) -> None:
    build(proj)

    async def go() -> None:
        app = app_for(proj, poll=True)  # the app's own poller: no refresh_now() here
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.pane("queue").table
            await pilot.pause(0.3)
            assert table.row_count == 0
            # another terminal, as a process of its own; the event loop runs on while it works
            other = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tui.cli",
                "workflow",
                "queue",
                "teardown-dns",
                cwd=proj.root,
                env=proj.env(),
                stdout=asyncio.subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while table.row_count == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            shown_at = time.time()
            assert await other.wait() == 0
            assert table.row_count == 1
            # measured from the commit: the item's queued_at, taken inside the committing transaction
            committed = proj.service().db.scalar("SELECT queued_at FROM queue_items")
            assert shown_at - committed < 1.0, f"shown {shown_at - committed:.2f}s after the commit"

    run(go())


def test_window_of_many_items_shows_a_count(proj: Proj) -> None:
    proj.write("models/m.yaml", "name: m\nmethods:\n  t:\n    inputs: {n: {}}\n    run: 'true'\n")
    svc = proj.service()
    with svc.db.write() as tx:
        for i in range(1200):
            tx.insert(
                "queue_items",
                {
                    "kind": "method",
                    "target": "m.t",
                    "inputs": f'{{"n":"{i}"}}',
                    "inputs_key": f'{{"n":"{i}"}}',
                    "pins": "{}",
                    "status": "queued",
                    "queued_by": "a@b",
                    "queued_at": 1.0 + i,
                },
            )

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            queue = app.pane("queue")
            assert queue.table.row_count == 500
            assert "500 of 1,200" in str(queue.border_title)

    run(go())


def test_help_shows_the_focused_panes_keys(proj: Proj) -> None:
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("question_mark")
            from tui.screens.modals import HelpScreen

            assert isinstance(app.screen, HelpScreen)
            keys = dict(app.screen.keys)
            assert keys["x"] == "Execute" and keys["space"] == "Mark" and keys["/"] == "Filter"
            await pilot.press("escape", "2", "question_mark")
            assert dict(app.screen.keys)["r"] == "Release"

    run(go())


def test_sighup_ends_the_dashboard_and_runs_go_on(proj: Proj) -> None:
    # the job runs until the test says go: it is surely running when the dashboard goes
    proj.write(
        "workflows/w.yaml",
        'name: w\njobs: {j: {steps: [{run: "until [ -e go ]; do sleep 0.05; done; echo done"}]}}\n',
    )
    proj.ok("workflow", "run", "w", "--detach")
    p, master = _dashboard_on_pty(proj)
    assert b"Queue" in plain(_read_until(master, b"Queue"))  # the dashboard is up and painted
    assert p.poll() is None
    os.close(master)  # the terminal goes away
    p.send_signal(signal.SIGHUP)
    assert p.wait(timeout=10) == 0  # a clean exit, not killed by the signal
    svc = proj.service()
    assert svc.run_view(1)["status"] == "running"  # the run goes on without the dashboard...
    (proj.root / "go").touch()
    assert svc.wait_run(1)["status"] == "succeeded"  # ...to its end


def _dashboard_on_pty(proj: Proj, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """The real `sluice tui` on an 80x24 pseudo-terminal (TERM=xterm): the process and the master
    side to read what it draws and to type into."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    p = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "tui"],
        cwd=proj.root,
        env={**proj.env(), "TERM": "xterm", **env},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    return p, master


def _hang_up(p: subprocess.Popen[bytes]) -> None:
    """The terminal goes away (SIGHUP). A dashboard that does not end within 10 s is killed, so a
    failing test leaves nothing spinning behind it, and the test still fails."""
    p.send_signal(signal.SIGHUP)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        raise


def plain(screen: bytes) -> bytes:
    """What a terminal stream says without its control sequences: a word drawn in two pieces (under
    NO_COLOR every segment carries its own SGR reset, and a partial repaint moves the cursor) reads whole."""
    import re

    return re.sub(rb"\x1b\[[0-9;?>$]*[A-Za-z]", b"", screen)


def _read_until(fd: int, wanted: bytes, timeout: float = 30.0) -> bytes:
    """Read a terminal until `wanted` shows (or the timeout passes: the caller asserts)."""
    import select

    out = b""
    end = time.monotonic() + timeout
    while wanted not in plain(out) and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _read_until_quiet(fd: int, quiet: float, timeout: float = 30.0) -> bytes:
    """Read until nothing has come for `quiet` seconds."""
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        chunk = _read_for(fd, quiet)
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the terminal never went quiet ({len(out)} bytes in {timeout:.0f}s)")


def _read_for(fd: int, seconds: float) -> bytes:
    import select

    out = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def test_nothing_is_sent_to_the_terminal_while_nothing_changes(proj: Proj) -> None:
    fixed_demo(proj)
    proj.ok("engine", "start")
    p, master = _dashboard_on_pty(proj)
    try:
        assert b"teardown-dns" in plain(_read_until(master, b"teardown-dns"))  # it painted the queue
        # the first paint is done (the rest of it, if any): 2 s of quiet, as a starved CPU can pause
        # a paint for a second
        _read_until_quiet(master, quiet=2.0)
        # A window where nothing may be sent is a span of time by nature: 3 s are six polls of the
        # dashboard (every 0.5 s), each of which would send any difference it found.
        idle = _read_for(master, 3.0)
        assert idle == b"", f"{len(idle)} bytes sent while nothing changed"
        proj.ok("workflow", "queue", "release", "-i", "version=v8")  # a change from another terminal
        assert b"v8" in plain(_read_until(master, b"v8"))  # and a change is sent
    finally:
        _hang_up(p)
        os.close(master)


@pytest.mark.sqlite_only("what reaches the terminal, not a data path")
def test_no_color_on_a_16_colour_terminal_is_readable(proj: Proj) -> None:
    """`TERM=xterm NO_COLOR=1 sluice tui` drew every row black on black (`ESC[30m` on `ESC[40m`,
    Textual's greys in 16 colours) and the cursor row was invisible. What reaches the terminal now
    uses its own colours, and the cursor row is in reverse video."""
    import re

    fixed_demo(proj)
    p, master = _dashboard_on_pty(proj, NO_COLOR="1")
    try:
        screen = _read_until(master, b"teardown-dns") + _read_until_quiet(master, quiet=1.0)
    finally:
        _hang_up(p)
        os.close(master)
    sgr = [m.group(1).split(b";") for m in re.finditer(rb"\x1b\[([0-9;]*)m", screen)]
    colours = {
        code for params in sgr for code in params if code and (30 <= int(code) <= 49 or int(code) >= 90)
    }
    assert colours <= {b"39", b"49"}, f"colours sent under NO_COLOR: {sorted(colours)}"
    cursor = re.search(rb"\x1b\[([0-9;]*)m #1 ", screen)  # the first item, under the cursor
    assert cursor is not None and b"7" in cursor.group(1).split(b";"), (
        "the cursor row is not in reverse video"
    )


def test_enter_enter_on_a_workflow_never_starts_a_run(proj: Proj) -> None:
    """Enter opened the start form with Start focused (no inputs, or inputs with defaults), so a
    second Enter started a run. Now Cancel has the focus: Enter, Enter starts nothing."""
    proj.write("workflows/bare.yaml", "name: bare\njobs: {j: {steps: [{run: 'true'}]}}\n")
    proj.write(
        "workflows/defaults.yaml",
        "name: defaults\ninputs: {v: {default: '1'}}\njobs: {j: {steps: [{run: 'true'}]}}\n",
    )

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await settle(pilot, app)
            for _ in range(2):  # bare, then defaults
                await pilot.press("enter")
                await settle(pilot, app)
                assert app.screen.query_one("#cancel").has_focus
                await pilot.press("enter")
                await settle(pilot, app)
                assert app.screen is app.screen_stack[0]  # the form closed: cancelled
                await pilot.press("down")
            await pilot.press("s", "tab", "enter")  # deliberately: s, to Start, Enter
            await settle(pilot, app)

    run(go())
    runs = proj.service().db.all("SELECT target FROM runs")
    assert runs == [{"target": "defaults"}]  # only the deliberate start


def test_tab_switches_panes_and_help_lists_quit_once(proj: Proj) -> None:
    """README and `?` said tab switches panes; the screen's own tab (focus) took the key instead.
    And help listed q, ctrl+q (XON on many terminals) and ctrl+c as three ways to quit."""
    fixed_demo(proj)

    async def go() -> None:
        app = app_for(proj)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            seen = [app.active]
            for key in ("tab", "tab", "tab", "tab", "tab", "shift+tab", "shift+tab"):
                await pilot.press(key)
                await settle(pilot, app)
                seen.append(app.active)
            assert seen == [
                "queue",
                "runs",
                "agents",
                "workflows",
                "history",
                "queue",
                "history",
                "workflows",
            ]
            await pilot.press("question_mark")
            await settle(pilot, app)
            text = "\n".join(str(s.render()) for s in app.screen.query("Static"))
            assert "ctrl+q" not in text and "ctrl+c" not in text
            assert [ln.split()[0] for ln in text.splitlines() if ln.strip().endswith("quit")] == ["q"]
            await pilot.press("escape", "4", "s")  # in a dialog, tab still moves between its fields
            await settle(pilot, app)
            before = app.focused
            await pilot.press("tab")
            assert app.focused is not before and app.active == "workflows"

    run(go())


def test_keys_typed_ahead_over_a_slow_link_land_in_the_field_they_were_aimed_at(proj: Proj) -> None:
    """`abc⏎pass⏎` arriving in one burst gave the comment `abcpass` and an empty field: the focus
    moved only when the Input's Submitted message came round, after the keys that followed."""

    proj.write(
        "workflows/w.yaml",
        "name: w\njobs: {gate: {hold: {fields: {word: {required: true}}}, steps: [{run: 'true'}]}}\n",
    )
    proj.ok("workflow", "run", "w")
    p, master = _dashboard_on_pty(proj)
    svc = proj.service()
    try:
        _read_until(master, b"Queue")
        os.write(master, b"2")
        _read_until(master, b"on_hold")
        os.write(master, b"r")
        _read_until(master, b"Release gate")
        os.write(master, b"abc\rpass\r")  # one burst, as a laggy SSH link delivers it
        # keep reading what the dashboard draws (a full pty would block it) until the release is stored
        proj.wait_for(
            lambda: _read_for(master, 0.1) is not None and svc.job_rows(1)[0]["released_by"],
            what="the release",
        )
    finally:
        _hang_up(p)
        os.close(master)
    gate = svc.job_rows(1)[0]
    assert gate["comment"] == "abc"
    assert gate["fields"] == '{"word":"pass"}'
