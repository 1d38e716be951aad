"""The Queue pane: queued items, marked with space, executed or purged after a confirmation."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding

from core import preview, queueing, recovery
from core.errors import SluiceError
from core.identity import actor_user
from core.queueing import Outcome
from core.shapes import ItemView

from ..messages import ItemRefused
from ..screens.modals import ConfirmScreen, InfoScreen
from ..screens.run import short
from ..texts import preview_lines
from .base import WINDOW, Pane, Window


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
        Binding("enter", "preview", "Preview", id="queue.preview"),
        Binding("space", "mark", "Mark", id="queue.mark"),
        Binding("x", "execute", "Execute", id="queue.execute"),
        Binding("d", "purge", "Purge", id="queue.purge"),
        Binding("u", "restore", "Undo", id="queue.restore"),
        Binding("a", "mark_all", "Mark all", show=False, id="queue.mark_all"),
    ]
    DESTRUCTIVE = {"execute", "purge", "mark", "mark_all", "restore"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.marked: set[int] = set()

    def fetch(self) -> Window[ItemView]:
        items, total = queueing.window(self.sluice.svc, text=self.filter_text or None, limit=WINDOW)
        return Window(items, total)

    def show(self, data: Window[ItemView]) -> None:
        items = data.rows
        self.data = {str(i["id"]): i for i in items}
        self.marked &= {i["id"] for i in items}
        self.table.apply([(str(i["id"]), self._cells(i)) for i in items])
        self.set_count(len(items), data.total, f" · {len(self.marked)} marked" if self.marked else "")

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

    def detail(self, row: dict[str, Any]) -> str:
        inputs = " ".join(f"{k}={v}" for k, v in row["inputs"].items())
        bits = [f"#{row['id']} {row['target']}" + (f" {inputs}" if inputs else "")]
        bits.append(f"note: {row['note']}" if row["note"] else "no note")
        return " · ".join(bits)

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

    def on_data_table_row_selected(self, event: Any) -> None:
        event.stop()
        self.action_preview()

    def action_preview(self) -> None:
        """What executing the item under the cursor would do now, and whether it could start."""
        item = self.current()
        if item is None:
            return
        svc, item_id = self.sluice.svc, item["id"]
        self.sluice.look(
            lambda: preview.preview(svc, item_id),
            lambda p: self.app.push_screen(InfoScreen(f"Preview · queue item #{item_id}", preview_lines(p))),
        )

    def action_restore(self) -> None:
        """Offer back the items purged last, listing them; restored to their old places."""
        svc = self.sluice.svc
        self.sluice.look(lambda: recovery.last_purged(svc), self._offer_restore)

    def _offer_restore(self, items: list[ItemView]) -> None:
        if not items:
            self.notify("nothing purged to restore", severity="warning")
            return
        ids = [i["id"] for i in items]
        lines = [self._line(i) for i in items]
        svc = self.sluice.svc

        def done(ok: bool | None) -> None:
            if ok:
                self.sluice.act(
                    lambda: recovery.restore(svc, ids),
                    f"restored {len(ids)} item(s): " + ", ".join(f"#{i}" for i in ids),
                )

        title = f"Restore the {len(items)} item(s) purged last?  They go back to their places."
        self.app.push_screen(ConfirmScreen(title, lines, "Restore"), done)

    @staticmethod
    def _line(i: dict[str, Any]) -> str:
        return f"#{i['id']}  {i['kind']:8s} {i['target']}  " + " ".join(
            f"{k}={v}" for k, v in i["inputs"].items()
        )

    def action_execute(self) -> None:
        self._confirm("execute", self.selection())

    def action_purge(self) -> None:
        self._confirm("purge", self.selection())

    def _confirm(self, verb: str, items: list[dict[str, Any]]) -> None:
        if not items:
            self.notify(
                "nothing selected: mark items with space, or move the cursor to one", severity="warning"
            )
            return
        ids = [i["id"] for i in items]
        lines = [self._line(i) for i in items]
        title = f"{verb.title()} {len(items)} queued item(s)?" + (
            "  Each starts as one run." if verb == "execute" else "  Nothing will run."
        )
        svc = self.sluice.svc

        def done(ok: bool | None) -> None:
            if not ok:
                return
            self.marked -= set(ids)
            if verb == "execute":
                self.sluice.act(lambda: self._report(queueing.execute(svc, ids)), _started)
            else:
                self.sluice.act(lambda: queueing.purge(svc, ids), f"purged {len(ids)} item(s)")

        self.app.push_screen(ConfirmScreen(title, lines, verb.title()), done)

    def _report(self, outcomes: list[Outcome]) -> list[Outcome]:
        """In the action worker: say which items stay queued; nothing started at all is a failure."""
        refused = [o for o in outcomes if o.refused]
        for o in refused:
            self.sluice.post_message(ItemRefused(o.item["id"], o.refused))
        if refused and not any(o.run_id or o.deferred for o in outcomes):
            raise SluiceError("nothing could start")
        return outcomes


def _started(outcomes: list[Outcome]) -> str:
    """The toast after executing: the runs it started (by number), and what waits for its window."""
    runs = [f"#{o.item['id']} as run #{o.run_id}" for o in outcomes if o.run_id]
    waits = [f"#{o.item['id']} {o.deferred}" for o in outcomes if o.deferred]
    return (
        "; ".join([("started " + ", ".join(runs)) if runs else "", *waits]).strip("; ") or "nothing started"
    )
