"""The shared pane: a bordered box with a filter line and a live table, kept current by the poller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input

from ..messages import LiveView
from ..screens.base import ReadOnlyAware
from ..texts import printable
from ..widgets.detail import DetailLine
from ..widgets.live_table import LiveTable

if TYPE_CHECKING:
    from ..app import SluiceApp

WINDOW = 500  # rows shown per pane; the rest is counted ("500 of 87,312") and reachable by filter

R = TypeVar("R")


@dataclass(frozen=True)
class Window(Generic[R]):
    """What a pane's fetch returns: the rows to show, and how many matched in all."""

    rows: list[R]
    total: int


class Pane(ReadOnlyAware, LiveView[Window[Any]], Vertical):
    """A bordered pane with a filter line, a live table and under it a detail line: what the row
    under the cursor says in full (`detail`), when its columns do not fit.

    Its keys are declared once: the keys every pane has here, each pane's own in its BINDINGS.
    Textual's footer reads both; so does the help (`key_table`)."""

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
        self._title = ""

    @classmethod
    def key_table(cls) -> list[Binding]:
        """The pane's keys for the help: its own, then those every pane has."""
        own = cls.__dict__.get("BINDINGS", []) if cls is not Pane else []
        return [*own, *Pane.BINDINGS]

    @property
    def sluice(self) -> SluiceApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter as you type (enter: back to the list, escape: clear)", classes="filter"
        )
        yield LiveTable(self.columns, id=f"{self.id}-table")
        yield DetailLine(id=f"{self.id}-detail")

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def on_mount(self) -> None:
        self.border_title = self.title
        self.table.on_cursor = self._show_detail

    def action_filter(self) -> None:
        box = self.query_one(Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, ".filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        """The filter applies as it is typed (in the store: a window of 500 of 100,000 runs)."""
        self.filter_text = event.value.strip()
        self.sluice.kick()

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

    def detail(self, row: dict[str, Any]) -> str:
        """The detail line for ROW (the one under the cursor): what its columns cannot show at 80
        columns (the note, the whole reason, who released it and why)."""
        return ""

    def _show_detail(self) -> None:
        row = self.current()
        self.query_one(DetailLine).show(self.detail(row) if row else "")

    @on(LiveTable.RowHighlighted)
    def _highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self._show_detail()

    def action_help(self) -> None:
        self.sluice.show_help(self.title, self)

    def current(self) -> dict[str, Any] | None:
        key = self.table.cursor_key
        return self.data.get(key) if key else None

    def set_count(self, shown: int, total: int, extra: str = "") -> None:
        count = f"{total:,}" if shown == total else f"{shown:,} of {total:,}"
        flt = f" · filter: {printable(self.filter_text, cell=True)}" if self.filter_text else ""
        title = f"{self.title} · {count}{flt}{extra}"
        if title != self._title:  # an unchanged title must not repaint (nothing sent while idle)
            self._title = title
            self.border_title = Content(title)  # plain: a filter `[/x]` is text, not markup
        self._show_detail()  # the row under the cursor may have changed with the data
