"""A DataTable updated by keyed diffs: only rows that came, went or changed are touched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from ..texts import printable

Cell = str | Text


def as_text(cell: Cell) -> Text:
    """A cell as plain Text: a string is never read as markup (a note `[/x]` is those four
    characters, not an error), and control characters are shown escaped (`\x1b`)."""
    if isinstance(cell, Text):
        safe = printable(cell.plain, cell=True)
        return cell if safe == cell.plain else Text(safe, style=cell.style)
    return Text(printable(cell, cell=True))


class LiveTable(DataTable):
    """Rows are keyed by id; `apply` brings the table to a new list of rows with minimal work.
    Cells are shown as plain Text (`as_text`), whatever they hold."""

    # the keys people already have (less, vim, k9s); Home/End go to the first/last row, not sideways
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("g,home", "first_row", "First row", show=False, id="table.first"),
        Binding("G,end", "last_row", "Last row", show=False, id="table.last"),
    ]

    def __init__(self, columns: Sequence[tuple[str, str]], *, id_column: int = 0, **kwargs: Any):
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.id_column = id_column  # a column whose text is unique per row (it drives the sort)
        self._columns = list(columns)
        self._rows: dict[str, tuple[Cell, ...]] = {}
        self._order: list[str] = []
        self.on_cursor: Callable[[], None] | None = None  # the row under the cursor changed

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        if old != new and self.on_cursor is not None:
            # at once, in the key's own handling: through RowHighlighted (a message) the detail
            # line would be drawn a frame after the cursor, ~20 ms a key later (bench P4)
            self.on_cursor()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Enter is the pane's (Preview, Open, Start run): DataTable's own enter (select_cursor,
        # not shown) would take the key and leave the footer without it
        if action == "select_cursor":
            return False
        return super().check_action(action, parameters)

    def on_mount(self) -> None:
        for key, label in self._columns:
            self.add_column(label, key=key)

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0, animate=False)

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    @property
    def cursor_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None

    def apply(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> bool:
        """Make the table show `rows` (key, cells) in this order. Returns True if anything changed."""
        new = {key: tuple(cells) for key, cells in rows}
        order = [key for key, _ in rows]
        if new == self._rows and order == self._order:
            return False
        anchor = self.cursor_key
        before = set(self._rows)
        # where add_row puts rows: the kept ones in their old order, then the new ones
        natural = [k for k in self._order if k in new] + [k for k in order if k not in before]
        with self.app.batch_update():
            for key in [k for k in self._rows if k not in new]:
                self.remove_row(key)
                del self._rows[key]
            for key, cells in new.items():
                old = self._rows.get(key)
                if old is None:
                    self.add_row(*map(as_text, cells), key=key)
                elif old != cells:
                    for (col, _), before, after in zip(self._columns, old, cells, strict=True):
                        if before != after:
                            # a status that grows (ready -> paused: reason) must not be cut to the old width
                            self.update_cell(key, col, as_text(after), update_width=True)
                self._rows[key] = cells
            if order != natural:
                # DataTable sorts by cell values: sort on the rank of each row's unique id cell
                rank = {str(new[k][self.id_column]): i for i, k in enumerate(order)}
                self.sort(self._columns[self.id_column][0], key=lambda v: rank.get(str(v), 0))
            self._order = order
            if anchor is not None and anchor in new:
                self.move_cursor(row=self.get_row_index(anchor), animate=False)
        return True
