"""The run view (jobs with status, reason, agent, outputs, who released) and the log view."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from core import recovery
from core.identity import actor_user
from core.shapes import JobView, RunView
from core.statuses import FINAL_RUN

from ..glyphs import status_text
from ..messages import LiveView
from ..texts import printable, printable_log, rerun_plan, why_text
from ..widgets.detail import DetailLine
from ..widgets.live_table import LiveTable
from ..widgets.wrap_log import WrapLog
from .base import ReadOnlyAware, styled_status
from .modals import ConfirmScreen

if TYPE_CHECKING:
    from ..app import SluiceApp


def short(iso_time: str | None) -> str:
    return iso_time[5:16].replace("T", " ") if iso_time else ""


@dataclass(frozen=True)
class RunData:
    """What the run view's fetch returns: the run, and what each held job waits for."""

    view: RunView
    holds: dict[str, dict[str, Any]]  # held job name -> its why (core's Service.held_whys)


class RunScreen(ReadOnlyAware, LiveView[RunData], Screen[None]):
    BINDINGS = [  # the footer's and the help's (key_table)
        Binding("escape,backspace", "back", "Back", id="run.back"),
        Binding("r", "release", "Release", id="run.release"),
        Binding("R", "reject", "Reject", id="run.reject"),
        Binding("c", "cancel_run", "Cancel run", id="run.cancel"),
        Binding("a", "rerun", "Again", id="run.rerun"),
        Binding("l,enter", "logs", "Logs", id="run.logs"),
        Binding("question_mark", "help", "Help", id="run.help"),
    ]
    DESTRUCTIVE = {"release", "reject", "cancel_run", "rerun"}

    def __init__(self, run_id: int):
        super().__init__()
        self.run_id = run_id
        self.view: RunView | None = None
        self.holds: dict[str, dict[str, Any]] = {}
        self.plan: dict[str, Any] | None = None

    @classmethod
    def key_table(cls) -> list[Binding]:
        return list(cls.BINDINGS)

    @property
    def sluice(self) -> SluiceApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="run-view", classes="pane"):
            yield Static("", id="run-summary")
            yield LiveTable(
                [
                    ("job", "Job"),
                    ("status", "Status"),
                    ("agent", "Agent"),
                    ("detail", "Reason / outputs"),
                    ("by", "Released / rejected"),
                ],
                id="jobs",
            )
            yield DetailLine(id="job-detail")
        yield Footer(show_command_palette=False)  # ctrl+p is in the help: the 80 columns go to the keys

    def on_mount(self) -> None:
        self.query_one("#run-view").border_title = f"Run #{self.run_id}"
        self.query_one(LiveTable).on_cursor = self._show_detail
        self.query_one(LiveTable).focus()
        self.sluice.kick()

    # live data (fetch runs in the app's poller thread)
    def fetch(self) -> RunData:
        if self.plan is None:  # the job graph, for the tree: fetched once
            from core.store.db import loads

            self.plan = loads(self.sluice.svc.run_row(self.run_id)["plan"])
        svc = self.sluice.svc
        view = svc.run_view(self.run_id)
        holds = svc.held_whys(self.run_id) if any(j["status"] == "held" for j in view["jobs"]) else {}
        return RunData(view, holds)

    def show(self, data: RunData) -> None:
        view = self.view = data.view
        self.holds = data.holds
        t = time.time()
        summary = Text.assemble(
            (f"#{view['id']} {view['target']} ", "bold"),
            styled_status(view["status"]),
            f"   {view['trigger']} by {actor_user(view['created_by'])} at {short(view['created_at'])}",
        )
        if view["inputs"]:
            inputs = "  ".join(f"{k}={v}" for k, v in view["inputs"].items())
            summary.append("\ninputs: " + printable(inputs, cell=True))
        if view["parent_run_id"]:
            summary.append(f"\nstarted by run #{view['parent_run_id']}")
        if view.get("rerun_of"):
            summary.append(f"\nre-run of run #{view['rerun_of']}")
        if view.get("break_glass"):
            summary.append(f"\n⚠ break glass: {printable(view['break_glass'], cell=True)}", style="bold")
        if summary != getattr(self, "_summary", None):  # unchanged: no repaint
            self._summary = summary
            self.query_one("#run-summary", Static).update(summary)
        rows = []
        depth = _depths(self.plan)
        for j in view["jobs"]:
            detail = "; ".join(
                x
                for x in [
                    j["reason"] or "",
                    # a held job: its approvers, approvals so far, held since, time left, as in Runs
                    why_text(self.holds.get(j["name"]), t, job=False) if j["status"] == "held" else "",
                    " ".join(f"{k}={v}" for k, v in j["outputs"].items()),
                ]
                if x
            )
            by = released(j)
            base = j["name"].split("[")[0]
            d = depth.get(base, 0)
            label = ("  " * (d - 1) + "└ " if d else "") + j["name"]
            rows.append((j["name"], (label, styled_status(j["status"]), j["agent"] or "", detail, by)))
        self.query_one(LiveTable).apply(rows)
        self._show_detail()

    def _show_detail(self) -> None:
        """The line under the jobs: what the job under the cursor says in full (its reason,
        outputs, who released it, with the comment and fields), past the columns' 80x24."""
        job = self.current_job()
        self.query_one("#job-detail", DetailLine).show(self.detail(job) if job else "")

    def detail(self, j: JobView) -> str:
        bits = [f"{j['name']} {j['status'].replace('_', ' ')}" + (f" on {j['agent']}" if j["agent"] else "")]
        if j["reason"]:
            bits.append(j["reason"])
        if j["status"] == "held" and j["name"] in self.holds:
            bits.append(why_text(self.holds[j["name"]], time.time(), job=False))
        if j["outputs"]:
            bits.append(" ".join(f"{k}={v}" for k, v in j["outputs"].items()))
        by = released(j)
        if by.startswith("approved"):  # a held job's approvals so far: said by its why already
            by = "" if j["name"] in self.holds else by
        if by:
            bits.append(by if by.startswith("approved") else f"released by {by}")
        return " · ".join(bits)

    @on(LiveTable.RowHighlighted)
    def _highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: LiveTable.RowSelected) -> None:
        event.stop()
        self.action_logs()

    def current_job(self) -> JobView | None:
        key = self.query_one(LiveTable).cursor_key
        if self.view is None or key is None:
            return None
        return next((j for j in self.view["jobs"] if j["name"] == key), None)

    def _held_job(self) -> JobView | None:
        job = self.current_job()
        if job is None or job["status"] != "held":
            held = [j for j in (self.view["jobs"] if self.view else []) if j["status"] == "held"]
            if len(held) == 1:
                return held[0]
            self.notify("put the cursor on a held job", severity="warning")
            return None
        return job

    def action_back(self) -> None:
        self.dismiss()

    def action_release(self) -> None:
        job = self._held_job()
        if job is not None:
            self.sluice.release_flow(self.run_id, job["name"])

    def action_reject(self) -> None:
        job = self._held_job()
        if job is not None:
            self.sluice.reject_flow(self.run_id, job["name"])

    def action_cancel_run(self) -> None:
        self.sluice.cancel_flow([self.run_id])

    def action_rerun(self) -> None:
        """Run it again, after a confirmation that lists what runs and what is carried over: the
        jobs that did not succeed when the run failed or was cancelled, else all of it."""
        view = self.view
        if view is None:
            return
        if view["status"] not in FINAL_RUN:
            self.notify(
                f"run #{view['id']} is still {view['status'].replace('_', ' ')}: nothing to re-run yet",
                severity="warning",
            )
            return
        failed = view["status"] != "succeeded"
        again, carried = rerun_plan(dict(view), failed)
        lines = [f"runs again: {', '.join(again)}"] + (
            [f"carried over: {', '.join(carried)}"] if carried else []
        )
        title = f"Run #{view['id']} {view['target']} again" + (" (what did not succeed)?" if failed else "?")
        svc, run_id = self.sluice.svc, view["id"]

        def done(ok: bool | None) -> None:
            if ok:
                self.sluice.act(
                    lambda: recovery.rerun(svc, run_id, failed=failed),
                    lambda new: f"started run #{new} (re-run of #{run_id})",
                )

        self.app.push_screen(ConfirmScreen(title, lines, "Run again"), done)

    def action_logs(self) -> None:
        job = self.current_job()
        self.app.push_screen(LogScreen(self.run_id, job["name"] if job else None))

    def action_help(self) -> None:
        self.sluice.show_help(f"Run #{self.run_id}", self)


def released(j: JobView) -> str:
    """Who released the job (or approved it so far), when, with the comment and fields given."""
    by = f"{actor_user(j['released_by'])} {short(j['released_at'])}" if j["released_by"] else ""
    if j.get("approvals") and not j["released_by"]:
        by = "approved by " + ", ".join(a["by"] for a in j["approvals"])
    if j["comment"]:
        by += f" “{j['comment']}”"
    if j.get("fields"):
        by += " " + " ".join(f"{k}={v}" for k, v in j["fields"].items())
    if j.get("break_glass"):
        by += f" ⚠ break glass: {j['break_glass']}"
    return by


def _depths(plan: dict[str, Any] | None) -> dict[str, int]:
    """How deep each job sits in the graph (longest chain of needs): the run view draws it as a tree."""
    if not plan:
        return {}
    jobs = plan.get("jobs", {})
    memo: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in memo:
            memo[name] = 0
            needs = jobs.get(name, {}).get("needs", [])
            memo[name] = 1 + max(depth(n) for n in needs) if needs else 0
        return memo[name]

    return {name: depth(name) for name in jobs}


@dataclass(frozen=True)
class LogData:
    """What the log view's fetch returns: the chunks after the last one shown, and the run's status."""

    chunks: list[dict[str, Any]]
    status: str


class LogScreen(LiveView[LogData], Screen[None]):
    """A job's output (or the whole run's), following new output as it arrives."""

    BINDINGS = [  # the footer's and the help's (key_table)
        Binding("escape,backspace,q", "back", "Back", id="log.back"),
        Binding("f", "toggle_follow", "Follow on/off", id="log.follow"),
        Binding("slash", "search", "Search", id="log.search"),
        Binding("n", "next_match", "Next match", id="log.next"),
        Binding("w", "toggle_wrap", "Wrap", id="log.wrap"),
        Binding("question_mark", "help", "Help", id="log.help"),
        # scrolling back stops following (new output would snap the view to the end); End resumes
        Binding("pageup", "scroll_back('page')", "Page up", show=False, priority=True, id="log.pageup"),
        Binding("up", "scroll_back('line')", "Line up", show=False, priority=True, id="log.up"),
        Binding("home", "scroll_back('top')", "Top", show=False, priority=True, id="log.top"),
        Binding("end", "to_end", "End: follow again", show=False, priority=True, id="log.end"),
    ]

    def __init__(self, run_id: int, job: str | None):
        super().__init__()
        self.run_id = run_id
        self.job = job
        self.after = 0
        self.follow = True
        self.partial = False
        self.needle = ""
        self.found: int | None = None  # the line of the last match

    @classmethod
    def key_table(cls) -> list[Binding]:
        return list(cls.BINDINGS)

    @property
    def sluice(self) -> SluiceApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="log-view", classes="pane"):
            yield WrapLog(id="log", highlight=False, max_lines=50_000, auto_scroll=True)
            yield Input(placeholder="search (enter finds, escape cancels)", classes="filter", id="log-search")
        yield Footer(show_command_palette=False)  # ctrl+p is in the help: the 80 columns go to the keys

    def on_mount(self) -> None:
        self._title()
        self.query_one(WrapLog).focus()
        self.sluice.kick()

    def _title(self) -> None:
        what = f"job {self.job}" if self.job else "all jobs"
        found = f" · /{self.needle}: line {self.found + 1}" if self.needle and self.found is not None else ""
        wrapped = " · wrapped" if self.query_one(WrapLog).wrap else ""
        follow = " · following" if self.follow else " · paused"
        self.query_one("#log-view").border_title = Content(  # plain: a search `[/x]` is text
            printable(f"Logs · run #{self.run_id} · {what}{follow}{wrapped}{found}", cell=True)
        )

    def fetch(self) -> LogData:
        chunks = self.sluice.svc.log_chunks(self.run_id, job=self.job, after=self.after, limit=500)
        status = self.sluice.svc.run_row(self.run_id)["status"]
        return LogData(chunks, status)

    def show(self, data: LogData) -> None:
        log = self.query_one(WrapLog)
        for c in data.chunks:
            if c["id"] <= self.after:
                continue
            self.after = c["id"]
            out = printable_log(c["data"])  # control characters escaped (`\x1b`), not � nor live
            text = out if self.job else "".join(f"[{c['job']}] {ln}" for ln in out.splitlines(keepends=True))
            log.write(text, scroll_end=self.follow)
        subtitle = status_text(data.status)
        if self.query_one("#log-view").border_subtitle != subtitle:
            self.query_one("#log-view").border_subtitle = subtitle

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_follow(self) -> None:
        self._following(not self.follow)

    def _following(self, on: bool) -> None:
        self.follow = on
        log = self.query_one(WrapLog)
        log.auto_scroll = on
        if on:
            log.scroll_end(animate=False)
        self._title()

    def action_scroll_back(self, how: str) -> None:
        if self.focused is not None and self.focused.id == "log-search":
            return  # typing a search: the keys are the field's
        if self.follow:
            self._following(False)
        log = self.query_one(WrapLog)
        {"page": log.scroll_page_up, "line": log.scroll_up, "top": log.scroll_home}[how](animate=False)

    def action_to_end(self) -> None:
        if self.focused is not None and self.focused.id == "log-search":
            return
        self._following(True)

    def action_toggle_wrap(self) -> None:
        """Long lines wrapped at the view's width, or whole on one row (scroll sideways)."""
        log = self.query_one(WrapLog)
        log.set_wrap(not log.wrap)
        if self.follow:
            log.scroll_end(animate=False)
        self._title()

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Submitted, "#log-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.input.remove_class("shown")
        self.query_one(WrapLog).focus()
        self.needle = event.value
        self.found = None
        if self.needle:
            log = self.query_one(WrapLog)
            self._find(log.line_at(int(log.scroll_y)))

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and self.focused is not None and self.focused.id == "log-search":
            event.stop()
            self.focused.remove_class("shown")
            self.query_one(WrapLog).focus()

    def action_next_match(self) -> None:
        if not self.needle:
            self.notify("search first with /", severity="warning")
            return
        log = self.query_one(WrapLog)
        self._find((self.found if self.found is not None else log.line_at(int(log.scroll_y)) - 1) + 1)

    def _find(self, start: int) -> None:
        """The first line from `start` on (then from the top) that has the needle: shown at the top."""
        log = self.query_one(WrapLog)
        lines = log.lines
        order = list(range(start, len(lines))) + list(range(0, min(start, len(lines))))
        hit = next((i for i in order if self.needle in lines[i]), None)
        if hit is None:
            self.notify(f"'{self.needle}' is not in the log", severity="warning")
            return
        self.found = hit
        if self.follow:
            self.follow = False
            log.auto_scroll = False
        log.scroll_to(y=log.row_of(hit), animate=False)
        self._title()

    def action_help(self) -> None:
        self.sluice.show_help("Logs", self)
