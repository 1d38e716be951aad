"""The sluice dashboard: Queue, Runs, Agents and Workflows, live, keyboard first, 80x24 first.

Every change goes through the same use cases as the CLI (core.queueing, core.holds,
core.flow, core.service); the dashboard holds no SQL or scheduling rules of its own.
Data is fetched in one poller thread and applied as keyed diffs, so nothing is sent to the
terminal while nothing changes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Vertical
from textual.widgets import ContentSwitcher, Footer, Input, Static

from core import flow, holds, queueing
from core.errors import SluiceError
from core.identity import actor_user
from core.service import Service
from core.statuses import FINAL_RUN
from core.store.db import StoreError

from .screens.base import ReadOnlyAware, styled_status
from .screens.modals import ConfirmScreen, FormScreen, HelpScreen
from .screens.run import LogScreen, RunScreen, short
from .widgets.live_table import LiveTable

WINDOW = 500  # rows shown per pane; the rest is counted ("500 of 87,312") and reachable by filter
POLL_SECONDS = 0.5


# ---------------------------------------------------------------- panes


class Pane(ReadOnlyAware, Vertical):
    """A bordered pane with a filter line and a live table."""

    title = ""
    columns: list[tuple[str, str]] = []
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="pane.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="pane.clear_filter"),
        Binding("question_mark", "help", "Help", id="pane.help"),
    ]

    def __init__(self, **kwargs: Any):
        super().__init__(classes="pane", **kwargs)
        self.filter_text = ""
        self.data: dict[str, dict[str, Any]] = {}

    @property
    def sluice(self) -> SluiceApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter (enter applies, escape clears)", classes="filter")
        yield LiveTable(self.columns, id=f"{self.id}-table")

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def on_mount(self) -> None:
        self.border_title = self.title

    def action_filter(self) -> None:
        box = self.query_one(Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Submitted, ".filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        if not self.filter_text:
            event.input.remove_class("shown")
        self.table.focus()
        self.sluice.kick()

    def action_clear_filter(self) -> None:
        box = self.query_one(Input)
        box.value = ""
        box.remove_class("shown")
        self.filter_text = ""
        self.table.focus()
        self.sluice.kick()

    def action_help(self) -> None:
        self.sluice.show_help(self.title, self)

    def current(self) -> dict[str, Any] | None:
        key = self.table.cursor_key
        return self.data.get(key) if key else None

    def set_count(self, shown: int, total: int, extra: str = "") -> None:
        count = f"{total:,}" if shown == total else f"{shown:,} of {total:,}"
        flt = f" · filter: {self.filter_text}" if self.filter_text else ""
        title = f"{self.title} · {count}{flt}{extra}"
        if title != self.border_title:  # an unchanged title must not repaint (nothing sent while idle)
            self.border_title = title

    # fetch() runs in the poller thread; show() on the UI thread
    def fetch(self) -> Any:
        raise NotImplementedError

    def show(self, data: Any) -> None:
        raise NotImplementedError


class QueuePane(Pane):
    title = "Queue"
    columns = [
        ("id", "ID"),
        ("mark", "✓"),
        ("kind", "Kind"),
        ("target", "Target"),
        ("inputs", "Inputs"),
        ("by", "By"),
        ("queued", "Queued"),
        ("due", "Due"),
        ("note", "Note"),
    ]
    BINDINGS = [
        Binding("space", "mark", "Mark", id="queue.mark"),
        Binding("x", "execute", "Execute", id="queue.execute"),
        Binding("d", "purge", "Purge", id="queue.purge"),
        Binding("a", "mark_all", "Mark all", show=False, id="queue.mark_all"),
    ]
    DESTRUCTIVE = {"execute", "purge", "mark", "mark_all"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.marked: set[int] = set()

    def fetch(self) -> Any:
        return queueing.window(self.sluice.svc, text=self.filter_text or None, limit=WINDOW)

    def show(self, data: Any) -> None:
        items, total = data
        self.data = {str(i["id"]): i for i in items}
        self.marked &= {i["id"] for i in items}
        self.table.apply([(str(i["id"]), self._cells(i)) for i in items])
        self.set_count(len(items), total, f" · {len(self.marked)} marked" if self.marked else "")

    def _cells(self, i: dict[str, Any]) -> tuple[Any, ...]:
        return (
            f"#{i['id']}",
            "●" if i["id"] in self.marked else " ",
            i["kind"],
            i["target"],
            " ".join(f"{k}={v}" for k, v in i["inputs"].items()),
            actor_user(i["queued_by"]),
            short(i["queued_at"]),
            short(i["not_before"]),
            i["note"] or "",
        )

    def _refresh_marks(self) -> None:
        self.table.apply([(k, self._cells(i)) for k, i in self.data.items()])
        self.set_count(len(self.data), len(self.data), f" · {len(self.marked)} marked" if self.marked else "")
        self.sluice.kick()

    def action_mark(self) -> None:
        item = self.current()
        if item is None:
            return
        self.marked ^= {item["id"]}
        self._refresh_marks()
        self.table.action_cursor_down()

    def action_mark_all(self) -> None:
        ids = {i["id"] for i in self.data.values()}
        self.marked = set() if ids <= self.marked else ids
        self._refresh_marks()

    def selection(self) -> list[dict[str, Any]]:
        """Marked items, or else the one under the cursor: captured now, at the key press."""
        if self.marked:
            return [i for i in self.data.values() if i["id"] in self.marked]
        item = self.current()
        return [item] if item else []

    def action_execute(self) -> None:
        self.sluice.queue_flow("execute", self.selection())

    def action_purge(self) -> None:
        self.sluice.queue_flow("purge", self.selection())


class RunsPane(Pane):
    title = "Runs"
    columns = [
        ("id", "Run"),
        ("status", "Status"),
        ("target", "Target"),
        ("held", "Held"),
        ("trigger", "Trigger"),
        ("by", "By"),
        ("created", "Created"),
    ]
    BINDINGS = [
        Binding("enter", "open", "Open", id="runs.open"),
        Binding("r", "release", "Release", id="runs.release"),
        Binding("R", "reject", "Reject", id="runs.reject"),
        Binding("c", "cancel_run", "Cancel", id="runs.cancel"),
        Binding("l", "logs", "Logs", id="runs.logs"),
        Binding("o", "toggle_order", "Order", id="runs.order"),
    ]
    DESTRUCTIVE = {"release", "reject", "cancel_run"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.order = "schedule"

    def fetch(self) -> Any:
        return self.sluice.svc.runs_window(text=self.filter_text or None, order=self.order, limit=WINDOW)

    def show(self, data: Any) -> None:
        runs, total = data
        self.data = {str(r["id"]): r for r in runs}
        rows = []
        for r in runs:
            held = Text(", ".join(r["held"]), style="bold yellow") if r["held"] else ""
            rows.append(
                (
                    str(r["id"]),
                    (
                        f"#{r['id']}",
                        styled_status(r["status"]),
                        r["target"],
                        held,
                        r["trigger"],
                        actor_user(r["created_by"]),
                        short(r["created_at"]),
                    ),
                )
            )
        self.table.apply(rows)
        self.set_count(len(runs), total, f" · {self.order} order")

    @on(LiveTable.RowSelected)
    def _selected(self, event: LiveTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def _run_id(self) -> int | None:
        run = self.current()
        return run["id"] if run else None

    def action_open(self) -> None:
        run_id = self._run_id()
        if run_id is not None:
            self.app.push_screen(RunScreen(run_id))

    def action_logs(self) -> None:
        run_id = self._run_id()
        if run_id is not None:
            self.app.push_screen(LogScreen(run_id, None))

    def _held(self) -> tuple[int, str] | None:
        run = self.current()
        if run is None:
            return None
        if len(run["held"]) != 1:
            self.notify("no single held job here: open the run (enter) to choose", severity="warning")
            return None
        return run["id"], run["held"][0]

    def action_release(self) -> None:
        held = self._held()
        if held:
            self.sluice.release_flow(*held)

    def action_reject(self) -> None:
        held = self._held()
        if held:
            self.sluice.reject_flow(*held)

    def action_cancel_run(self) -> None:
        run_id = self._run_id()
        if run_id is not None:
            self.sluice.cancel_flow([run_id])

    def action_toggle_order(self) -> None:
        self.order = "natural" if self.order == "schedule" else "schedule"
        self.sluice.kick()


class AgentsPane(Pane):
    title = "Agents"
    columns = [
        ("name", "Agent"),
        ("env", "Environment"),
        ("state", "State"),
        ("jobs", "Jobs"),
        ("resources", "Resources"),
        ("capacity", "Cap"),
        ("host", "Host"),
        ("beat", "Heartbeat"),
    ]
    BINDINGS = [
        Binding("e", "enable", "Enable", id="agents.enable"),
        Binding("d", "disable", "Disable", id="agents.disable"),
    ]
    DESTRUCTIVE = {"enable", "disable"}

    def fetch(self) -> Any:
        agents = self.sluice.svc.list_agents()
        if self.filter_text:
            agents = [
                a
                for a in agents
                if self.filter_text
                in " ".join([a["name"], a["host"], a["state"], *a["environments"], *a["resources"]])
            ]
        return agents

    def show(self, agents: Any) -> None:
        # grouped by environment: sort by the first environment ("-" for none), then name
        agents = sorted(agents, key=lambda a: ((a["environments"] or ["-"])[0], a["name"]))
        self.data = {a["name"]: a for a in agents}
        self.table.apply(
            [
                (
                    a["name"],
                    (
                        a["name"],
                        ", ".join(a["environments"]) or "-",
                        styled_status(a["state"]),
                        ", ".join(a["jobs"]),
                        ", ".join(a["resources"]),
                        str(a["capacity"]),
                        a["host"],
                        short(a["heartbeat_at"])[6:],
                    ),
                )
                for a in agents
            ]
        )
        self.set_count(len(agents), len(agents))

    def action_enable(self) -> None:
        self._set(True)

    def action_disable(self) -> None:
        self._set(False)

    def _set(self, enabled: bool) -> None:
        agent = self.current()
        if agent is not None:
            name = agent["name"]
            self.sluice.act(
                lambda: self.sluice.svc.set_agent_enabled(name, enabled),
                f"{'enabled' if enabled else 'disabled'} agent {name}",
            )


class WorkflowsPane(Pane):
    title = "Workflows"
    columns = [
        ("name", "Workflow"),
        ("state", "State"),
        ("last", "Last run"),
        ("timer", "Next fire"),
        ("description", "Description"),
    ]
    BINDINGS = [
        Binding("s,enter", "start", "Start run", id="workflows.start"),
        Binding("p", "pause", "Pause", id="workflows.pause"),
        Binding("u", "unpause", "Unpause", id="workflows.unpause"),
        Binding("U", "unlock", "Unlock", show=False, id="workflows.unlock"),
    ]
    DESTRUCTIVE = {"start", "pause", "unpause", "unlock"}

    def fetch(self) -> Any:
        rows = self.sluice.svc.workflow_states()
        if self.filter_text:
            rows = [w for w in rows if self.filter_text in w["name"] + " " + (w["description"] or "")]
        return rows

    def show(self, rows: Any) -> None:
        self.data = {w["name"]: w for w in rows}
        out = []
        for w in rows:
            if w["paused"]:
                state = Text(
                    f"‖ paused: {w['pause_reason']} ({actor_user(w['paused_by'] or '')})", style="bold yellow"
                )
            elif w["locked_by_run"]:
                state = Text(f"⊘ locked by #{w['locked_by_run']}", style="yellow")
            else:
                state = Text("○ ready")
            last = (
                Text.assemble(f"#{w['last_run']['id']} ", styled_status(w["last_run"]["status"]))
                if w["last_run"]
                else ""
            )
            out.append((w["name"], (w["name"], state, last, short(w["next_fire"]), w["description"] or "")))
        self.table.apply(out)
        self.set_count(len(rows), len(rows))

    @on(LiveTable.RowSelected)
    def _selected(self, event: LiveTable.RowSelected) -> None:
        event.stop()
        self.action_start()

    def _workflow(self) -> str | None:
        w = self.current()
        return w["name"] if w else None

    def action_start(self) -> None:
        name = self._workflow()
        if name:
            self.sluice.start_flow(name)

    def action_pause(self) -> None:
        name = self._workflow()
        if not name:
            return

        def done(values: dict[str, str] | None) -> None:
            if values:
                self.sluice.act(lambda: flow.pause(self.sluice.svc, name, values["reason"]), f"paused {name}")

        self.app.push_screen(
            FormScreen(
                f"Pause {name}",
                [{"name": "reason", "label": "Reason (shown to anyone refused)", "required": True}],
                "Pause",
            ),
            done,
        )

    def action_unpause(self) -> None:
        name = self._workflow()
        if name:
            self.sluice.act(lambda: flow.unpause(self.sluice.svc, name), f"unpaused {name}")

    def action_unlock(self) -> None:
        name = self._workflow()
        if name:
            self.sluice.act(lambda: flow.unlock(self.sluice.svc, name), f"unlocked {name}")


PANES: list[tuple[str, str, type[Pane]]] = [
    ("1", "queue", QueuePane),
    ("2", "runs", RunsPane),
    ("3", "agents", AgentsPane),
    ("4", "workflows", WorkflowsPane),
]


# ---------------------------------------------------------------- the command palette


class SluiceCommands(Provider):
    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, SluiceApp)
        commands: list[tuple[str, Callable[[], Any], str]] = [
            (f"Go to {pid.title()}", lambda p=pid: app.action_show_pane(p), f"key {key}")
            for key, pid, _ in PANES
        ]
        if not app.read_only:
            commands += [
                ("Execute marked queue items", lambda: app.pane("queue").action_execute(), "queue: x"),
                ("Purge marked queue items", lambda: app.pane("queue").action_purge(), "queue: d"),
            ]
        commands.append(
            ("Toggle schedule / natural order", lambda: app.pane("runs").action_toggle_order(), "runs: o")
        )
        matcher = self.matcher(query)
        for title, callback, help_text in commands:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


# ---------------------------------------------------------------- the app


class SluiceApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "sluice"
    COMMANDS = App.COMMANDS | {SluiceCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("1", "show_pane('queue')", "Queue", show=False, id="app.queue"),
        Binding("2", "show_pane('runs')", "Runs", show=False, id="app.runs"),
        Binding("3", "show_pane('agents')", "Agents", show=False, id="app.agents"),
        Binding("4", "show_pane('workflows')", "Workflows", show=False, id="app.workflows"),
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
        with ContentSwitcher(initial="queue", id="panes"):
            for _key, pid, cls in PANES:
                yield cls(id=pid)
        yield Footer()

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

    def pane(self, pid: str) -> Pane:
        return self.query_one(f"#{pid}", Pane)

    def _topbar(self) -> None:
        parts = Text()
        parts.append(f"sluice · {self.svc.project.name}  ", style="bold")
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

    # ------------------------------------------------------------ live data

    def kick(self) -> None:
        """Fetch now rather than at the next poll."""
        self._kick.set()

    def targets(self) -> list[Any]:
        top = self.screen
        if hasattr(top, "fetch") and top is not self.screen_stack[0]:
            return [top]
        if top is self.screen_stack[0]:
            return [self.pane(self.active)]
        return []

    def refresh_now(self) -> None:
        """Fetch and show synchronously (tests and the first paint)."""
        for target in self.targets():
            target.show(target.fetch())

    @work(thread=True, exclusive=True, group="poller")
    def _poller(self) -> None:
        while not self._stop.is_set():
            try:
                targets = self.call_from_thread(self.targets)
                for target in targets:
                    data = target.fetch()
                    if self._stop.is_set():
                        return
                    self.call_from_thread(self._show, target, data)
            except (StoreError, SluiceError) as e:
                self.call_from_thread(self.notify, str(e), severity="error")
            except RuntimeError:
                return  # the app is closing
            self._kick.wait(POLL_SECONDS)
            self._kick.clear()
        self.svc.db.close()

    def _show(self, target: Any, data: Any) -> None:
        if target.is_attached:
            target.show(data)

    # ------------------------------------------------------------ actions (all through core use cases)

    def act(self, call: Callable[[], Any], success: str) -> None:
        """Run a use case off the event loop; report the outcome in a notification."""
        self._act(call, success)

    @work(thread=True, group="actions")
    def _act(self, call: Callable[[], Any], success: str) -> None:
        try:
            call()
        except (SluiceError, StoreError) as e:
            self.call_from_thread(self.notify, getattr(e, "message", str(e)), severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, success)
            if self.start_engine:
                self._ensure_engine_now()
        self.kick()

    def _ensure_engine(self) -> None:
        self._act_engine()

    @work(thread=True, group="engine")
    def _act_engine(self) -> None:
        self._ensure_engine_now()

    def _ensure_engine_now(self) -> None:
        from core.engine import control

        try:
            info = control.ensure(self.svc.project.root)
        except RuntimeError as e:
            self.call_from_thread(self.notify, str(e), severity="error")
            return
        if info is not None:
            self.call_from_thread(
                self.notify,
                f"started the engine in the background (pid {info.get('pid')}); "
                "runs go on when this dashboard closes",
            )

    def queue_flow(self, verb: str, items: list[dict[str, Any]]) -> None:
        if not items:
            self.notify(
                "nothing selected: mark items with space, or move the cursor to one", severity="warning"
            )
            return
        ids = [i["id"] for i in items]
        lines = [
            f"#{i['id']}  {i['kind']:8s} {i['target']}  "
            + " ".join(f"{k}={v}" for k, v in i["inputs"].items())
            for i in items
        ]
        title = f"{verb.title()} {len(items)} queued item(s)?" + (
            "  Each starts as one run." if verb == "execute" else "  Nothing will run."
        )

        def done(ok: bool | None) -> None:
            if not ok:
                return
            queue = self.pane("queue")
            queue.marked -= set(ids)
            if verb == "execute":
                self.act(
                    lambda: self._report(queueing.execute(self.svc, ids)), f"executed {len(ids)} item(s)"
                )
            else:
                self.act(lambda: queueing.purge(self.svc, ids), f"purged {len(ids)} item(s)")

        self.push_screen(ConfirmScreen(title, lines, verb.title()), done)

    def _report(self, outcomes: list[Any]) -> None:
        refused = [o for o in outcomes if o.refused]
        for o in refused:
            self.call_from_thread(
                self.notify, f"#{o.item['id']} stays queued: {o.refused}", severity="warning", timeout=10
            )
        if refused and not any(o.run_id for o in outcomes):
            raise SluiceError("nothing could start")

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

    def start_flow(self, workflow: str) -> None:
        wf = self.svc.workflow(workflow)
        fields = [
            {
                "name": n,
                "label": n + (f" ({s.description})" if s.description else ""),
                "required": s.required and s.default is None,
                "value": "" if s.secret or s.default is None else s.default,
                "placeholder": "|".join(map(str, s.enum)) if s.enum else (s.pattern or s.type),
                "secret": s.secret,
            }
            for n, s in wf.inputs.items()
        ]

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            given = {k: v for k, v in values.items() if v != ""}
            self.act(lambda: self.svc.run_workflow(workflow, given), f"started a run of {workflow}")

        self.push_screen(FormScreen(f"Start a run of {workflow}", fields, "Start", starts_work=True), done)

    def show_help(self, title: str, node: Any) -> None:
        keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        for n in [node, *node.ancestors_with_self] if hasattr(node, "ancestors_with_self") else [node]:
            # our own keys only: Textual's (ctrl+q, ctrl+c, tab as focus) would list quit three ways
            inherited = [
                b
                for cls in type(n).__mro__
                if cls.__module__.startswith("tui.")
                for b in cls.__dict__.get("BINDINGS", [])
            ]
            for b in inherited:
                if not isinstance(b, Binding) or b.key in seen or b.action in SUMMARISED:
                    continue
                if hasattr(n, "check_action") and n.check_action(b.action, ()) is False:
                    continue
                seen.add(b.key)
                keys.append((b.key.replace("question_mark", "?").replace("slash", "/"), b.description))
        keys += [
            ("j/k, g/G, home/end", "down, up, first/last row"),
            ("1-4, tab", "switch panes"),
            ("ctrl+p", "command palette"),
            ("q", "quit"),
        ]
        self.push_screen(HelpScreen(f"Keys · {title}", keys))


# listed once at the end of the help, not binding by binding
SUMMARISED = (
    "quit",
    "next_pane",
    "previous_pane",
    "show_pane('queue')",
    "show_pane('runs')",
    "show_pane('agents')",
    "show_pane('workflows')",
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
