"""The sluice dashboard: Queue, Runs, Agents and Workflows, live, keyboard first, 80x24 first.

Every change goes through the same use cases as the CLI (core.queueing, core.holds,
core.flow, core.service); the dashboard holds no SQL or scheduling rules of its own.
Data is fetched in one poller thread and applied as keyed diffs, so nothing is sent to the
terminal while nothing changes. Worker threads tell the UI thread what happened with the
typed messages of tui.messages; the panes live in tui.panes, one module each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.widgets import ContentSwitcher, Footer, Input, Static

from core import holds
from core.errors import SluiceError
from core.service import Service
from core.statuses import FINAL_RUN
from core.store.db import StoreError

from .commands import SluiceCommands
from .messages import (
    ActionDone,
    ActionFailed,
    EngineFailed,
    EngineStarted,
    Fetched,
    FetchFailed,
    ItemRefused,
    LiveView,
    Looked,
)
from .panes import PANES, Pane
from .screens.modals import ConfirmScreen, FormScreen, HelpScreen
from .screens.run import LogScreen, RunScreen
from .texts import engine_words, printable

POLL_SECONDS = 0.5

# The help (?) lists the focused pane's or screen's own key table, then these: the app's BINDINGS
# below and the tables' motion keys (LiveTable), each summarised in one line, listed once.
GLOBAL_HELP = [
    ("j/k, g/G, home/end", "down, up, first/last row"),
    ("1-5, tab", "switch panes"),
    (": or ctrl+p", "every action by name"),
    ("q", "quit"),
]


class StatusLine(LiveView[dict[str, Any]], Static):
    """The line under the tabs: the engine up or down with its heartbeat's age, what waits on
    people and agents, what failed today, what is paused, and a freeze in force (core's
    Service.overview). At 80 columns it may take a second row rather than cut a part."""

    @property
    def sluice(self) -> SluiceApp:
        return self.app  # type: ignore[return-value]

    def fetch(self) -> dict[str, Any]:
        return self.sluice.svc.overview()

    def show(self, data: dict[str, Any]) -> None:
        words, tone = engine_words(data["engine"])
        style = {"good": "bold green", "warn": "bold yellow"}.get(tone, "bold red")
        parts: list[tuple[str, str]] = [(words, style)]
        for n, what, style in (
            (data["held"], "held", "bold yellow"),
            (data["waiting"], "waiting", ""),
            (data["failed_today"], "failed today", "bold red"),
            (data["paused"], "paused", "yellow"),
        ):
            if n:
                parts.append((f"{n} {what}", style))
        parts += [(f"❄ {printable(text, cell=True)}", "bold reverse") for text in data["frozen"]]
        if parts != getattr(self, "_parts", None):  # unchanged: nothing sent to the terminal
            self._parts = parts
            self._lay_out()

    def on_resize(self) -> None:
        if getattr(self, "_parts", None):
            self._lay_out()

    def _lay_out(self) -> None:
        """The parts joined by ` · `, a part that would pass the right edge starting the next row."""
        width = max(20, self.content_size.width or self.app.size.width - 2)  # the padding
        line, col = Text(), 0
        for i, (text, style) in enumerate(self._parts):
            if i and col + 3 + cell_len(text) > width:
                line.append("\n")
                col = 0
            elif i:
                line.append(" · ")
                col += 3
            line.append(text, style=style)
            col += cell_len(text)
        if line != getattr(self, "_line", None):
            self._line = line
            self.update(line)


class SluiceApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "sluice"
    COMMANDS = App.COMMANDS | {SluiceCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("colon", "command_palette", "Commands", show=False, id="app.commands"),
        Binding("1", "show_pane('queue')", "Queue", show=False, id="app.queue"),
        Binding("2", "show_pane('runs')", "Runs", show=False, id="app.runs"),
        Binding("3", "show_pane('agents')", "Agents", show=False, id="app.agents"),
        Binding("4", "show_pane('workflows')", "Workflows", show=False, id="app.workflows"),
        Binding("5", "show_pane('history')", "History", show=False, id="app.history"),
        # priority: the screen's own tab (move the focus) would otherwise take the key first
        Binding("tab", "next_pane", "Next pane", show=False, id="app.next", priority=True),
        Binding("shift+tab", "previous_pane", "Previous pane", show=False, id="app.previous", priority=True),
    ]

    def __init__(
        self,
        svc: Service,
        *,
        read_only: bool = False,
        start_engine: bool = True,
        poll: bool = True,
        theme: str | None = None,
    ):
        # NO_COLOR: Textual turns colours to greys unless the app draws with native ANSI colours,
        # and on a 16-colour terminal those greys come out black on black. With ansi_color set it
        # drops colours for the terminal's own defaults instead; app.tcss then shows the cursor,
        # focus and the current tab with reverse video and bold (the `:nocolor` rules).
        super().__init__(ansi_color=True if os.environ.get("NO_COLOR") is not None else None)
        self.svc = svc
        self.read_only = read_only
        self.start_engine = start_engine
        self.poll = poll
        self.active = "queue"
        self._kick = threading.Event()
        self._stop = threading.Event()
        self.theme = theme or ("ansi-dark" if _few_colours() else "textual-dark")

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("", id="topbar")
        yield StatusLine("", id="status-line")
        with ContentSwitcher(initial="queue", id="panes"):
            for _key, pid, cls in PANES:
                yield cls(id=pid)
        yield Footer(show_command_palette=False)  # ctrl+p is in the help: the 80 columns go to the keys

    def on_mount(self) -> None:
        self._topbar()
        self.pane("queue").table.focus()
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._hangup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        if self.start_engine and not self.read_only:
            self._ensure_engine()
        if self.poll:
            self._poller()

    def _hangup(self) -> None:
        """The SSH session dropped: leave cleanly (runs go on in the engine)."""
        self._stop.set()
        self.exit()

    def on_unmount(self) -> None:
        self._stop.set()
        self._kick.set()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every toast is plain text, escaped: messages quote names, reasons and values people typed
        (`[/x]` there is text, not markup to parse or to fail on). Widgets' notify ends here too."""
        super().notify(
            printable(message), title=printable(title), severity=severity, timeout=timeout, markup=False
        )

    def pane(self, pid: str) -> Pane:
        return self.query_one(f"#{pid}", Pane)

    def _topbar(self) -> None:
        parts = Text()
        parts.append(f"sluice · {printable(self.svc.project.name, cell=True)}  ", style="bold")
        for key, pid, _ in PANES:
            label = f" {key} {pid.title()} "
            parts.append(label, style="reverse bold" if pid == self.active else "")
        if self.read_only:
            parts.append("  read-only", style="bold yellow")
        self.query_one("#topbar", Static).update(parts)

    def action_show_pane(self, pid: str) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        self.active = pid
        self.query_one(ContentSwitcher).current = pid
        self.pane(pid).table.focus()
        self._topbar()
        self.kick()

    def action_next_pane(self) -> None:
        if self.screen is not self.screen_stack[0]:  # a dialog or the run view: tab moves the focus there
            self.screen.focus_next()
            return
        ids = [p for _, p, _ in PANES]
        self.action_show_pane(ids[(ids.index(self.active) + 1) % len(ids)])

    def action_previous_pane(self) -> None:
        if self.screen is not self.screen_stack[0]:
            self.screen.focus_previous()
            return
        ids = [p for _, p, _ in PANES]
        self.action_show_pane(ids[(ids.index(self.active) - 1) % len(ids)])

    def show_help(self, title: str, view: Pane | RunScreen | LogScreen) -> None:
        """The keys of VIEW's own table (those it offers now: none that read-only takes away), then
        the app's, summarised."""
        keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        for b in view.key_table():
            if b.key in seen or view.check_action(b.action, ()) is False:
                continue
            seen.add(b.key)
            keys.append((b.key.replace("question_mark", "?").replace("slash", "/"), b.description))
        self.push_screen(HelpScreen(f"Keys · {title}", [*keys, *GLOBAL_HELP]))

    # ------------------------------------------------------------ live data

    def kick(self) -> None:
        """Fetch now rather than at the next poll."""
        self._kick.set()

    def targets(self) -> list[LiveView[Any]]:
        """What the poller keeps current: the run or log view on top, else the pane shown."""
        top = self.screen
        if isinstance(top, LiveView) and top is not self.screen_stack[0]:
            return [top]
        if top is self.screen_stack[0]:
            return [self.pane(self.active), self.query_one(StatusLine)]
        return []

    def refresh_now(self) -> None:
        """Fetch and show synchronously (tests and the first paint)."""
        self.svc.reload_if_changed()
        for target in self.targets():
            target.show(target.fetch())

    @work(thread=True, exclusive=True, group="poller")
    def _poller(self) -> None:
        while not self._stop.is_set():
            try:
                self.svc.reload_if_changed()  # a workflow file added or edited meanwhile shows up
                targets = self.call_from_thread(self.targets)
                for target in targets:
                    data = target.fetch()
                    if self._stop.is_set():
                        return
                    self.post_message(Fetched(target, data))
            except (StoreError, SluiceError) as e:
                self.post_message(FetchFailed(str(e)))
            except RuntimeError:
                return  # the app is closing
            self._kick.wait(POLL_SECONDS)
            self._kick.clear()
        self.svc.db.close()

    @on(Fetched)
    def _fetched(self, message: Fetched[Any]) -> None:
        if message.view.is_attached:  # a run view closed meanwhile shows nothing
            message.view.show(message.data)

    @on(FetchFailed)
    def _fetch_failed(self, message: FetchFailed) -> None:
        self.notify(message.error, severity="error")

    # ------------------------------------------------------------ actions (all through core use cases)

    def act(self, call: Callable[[], object], success: str | Callable[[Any], str]) -> None:
        """Run a use case off the event loop; report the outcome in a notification (`success`, or
        what it says about the use case's result: the run it started)."""
        self._act(call, success)

    @work(thread=True, group="actions")
    def _act(self, call: Callable[[], object], success: str | Callable[[Any], str]) -> None:
        try:
            result = call()
        except (SluiceError, StoreError) as e:
            self.post_message(ActionFailed(getattr(e, "message", str(e))))
        else:
            self.post_message(ActionDone(success(result) if callable(success) else success))
            if self.start_engine:
                self._ensure_engine_now()
        self.kick()

    def look(self, read: Callable[[], object], then: Callable[[Any], None]) -> None:
        """Read through a use case off the event loop, then open what shows it (on the UI thread)."""
        self._look(read, then)

    @work(thread=True, group="actions")
    def _look(self, read: Callable[[], object], then: Callable[[Any], None]) -> None:
        try:
            result = read()
        except (SluiceError, StoreError) as e:
            self.post_message(ActionFailed(getattr(e, "message", str(e))))
        else:
            self.post_message(Looked(result, then))

    @on(Looked)
    def _looked(self, message: Looked) -> None:
        message.then(message.result)

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.notify(message.success)

    @on(ActionFailed)
    def _action_failed(self, message: ActionFailed) -> None:
        self.notify(message.error, severity="error", timeout=8)

    @on(ItemRefused)
    def _item_refused(self, message: ItemRefused) -> None:
        self.notify(f"#{message.item_id} stays queued: {message.why}", severity="warning", timeout=10)

    def _ensure_engine(self) -> None:
        self._act_engine()

    @work(thread=True, group="engine")
    def _act_engine(self) -> None:
        self._ensure_engine_now()

    def _ensure_engine_now(self) -> None:
        """In a worker thread: start the engine if none runs, and say so."""
        from core.engine import control

        try:
            info = control.ensure(self.svc.project.root)
        except RuntimeError as e:
            self.post_message(EngineFailed(str(e)))
            return
        if info is not None:
            self.post_message(EngineStarted(info.get("pid")))

    @on(EngineStarted)
    def _engine_started(self, message: EngineStarted) -> None:
        self.notify(
            f"started the engine in the background (pid {message.pid}); runs go on when this dashboard closes"
        )

    @on(EngineFailed)
    def _engine_failed(self, message: EngineFailed) -> None:
        self.notify(message.error, severity="error")

    # ------------------------------------------------------------ held jobs and runs (panes and the run view)

    def release_flow(self, run_id: int, job: str) -> None:
        try:
            form = holds.release_form(self.svc, job, run_id=run_id)
        except (SluiceError, StoreError) as e:
            self.notify(getattr(e, "message", str(e)), severity="error", timeout=8)
            return
        # a refusal that needs no typing (not an approver) is said before the form opens
        if not form.may_release:
            self.notify(form.refusal, severity="error", timeout=8)
            return
        fields: list[dict[str, Any]] = [{"name": "comment", "label": "Comment"}]
        for f in form.fields:
            fields.append(
                {
                    "name": f"f.{f.name}",
                    "label": f.name + (f" ({f.description})" if f.description else ""),
                    "required": f.required,
                    "value": "" if f.secret else (f.default or ""),
                    "placeholder": "|".join(f.choices),
                    "secret": f.secret,
                }
            )

        def given(values: dict[str, str]) -> dict[str, str]:
            return {k[2:]: v for k, v in values.items() if k.startswith("f.") and v != ""}

        def check(values: dict[str, str]) -> tuple[str | None, str] | None:
            problem = form.problem(given(values))
            return (f"f.{problem[0]}", problem[1]) if problem else None

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            fields_given = given(values)
            comment = values.get("comment") or None
            self.act(
                lambda: holds.release(self.svc, job, run_id=run_id, comment=comment, fields=fields_given),
                f"released {job} in run #{run_id}",
            )

        self.push_screen(
            FormScreen(
                f"Release {job} in run #{run_id}?", fields, "Release", note=form.prompt, validate=check
            ),
            done,
        )

    def reject_flow(self, run_id: int, job: str) -> None:
        def done(values: dict[str, str] | None) -> None:
            if values:
                self.act(
                    lambda: holds.reject(self.svc, job, run_id=run_id, reason=values["reason"]),
                    f"rejected {job} in run #{run_id}",
                )

        self.push_screen(
            FormScreen(
                f"Reject {job} in run #{run_id}? The run fails.",
                [{"name": "reason", "label": "Reason", "required": True}],
                "Reject",
            ),
            done,
        )

    def cancel_flow(self, run_ids: list[int]) -> None:
        lines = []
        ended = []
        alive = []
        for rid in run_ids:
            r = self.svc.run_row(rid)
            if r["status"] in FINAL_RUN:  # nothing to cancel: say so, no dialog to dismiss
                ended.append(f"run #{rid} already {r['status']}: nothing to cancel")
            else:
                alive.append(rid)
                lines.append(f"#{rid}  {r['target']}  ({r['status']})")
        run_ids = alive
        if ended:
            self.notify("; ".join(ended), severity="warning")
        if not run_ids:
            return

        def done(ok: bool | None) -> None:
            if ok:
                for rid in run_ids:
                    self.act(lambda rid=rid: self.svc.cancel_run(rid), f"cancel of run #{rid} requested")

        self.push_screen(
            ConfirmScreen(f"Cancel {len(run_ids)} run(s)? Running steps get SIGTERM.", lines, "Cancel run"),
            done,
        )


def _few_colours() -> bool:
    term = os.environ.get("TERM", "")
    return (
        bool(os.environ.get("NO_COLOR"))
        or term in ("xterm", "linux", "screen", "vt100", "dumb")
        or ("COLORTERM" not in os.environ and "256" not in term)
    )


def run_dashboard(root: Path | None = None, *, read_only: bool = False, mouse: bool | None = None) -> int:
    svc = Service.open(root)
    app = SluiceApp(svc, read_only=read_only)
    if mouse is None:  # over SSH each hover is traffic: keyboard only unless asked
        mouse = "SSH_CONNECTION" not in os.environ and "SSH_TTY" not in os.environ
    app.run(mouse=mouse)
    return 0


__all__ = ["Input", "SluiceApp", "Static", "on", "run_dashboard"]
