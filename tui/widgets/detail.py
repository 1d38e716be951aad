"""The line under a table: what the row under the cursor says in full, past what 80 columns show."""

from __future__ import annotations

from rich.cells import cell_len
from textual.widgets import Static

from ..texts import printable


class DetailLine(Static):
    """One or two rows of plain text (`.detail` in app.tcss). A new text that takes as many rows
    as the last one repaints this line alone: laying the screen out again at every cursor move
    cost a 500-row pane 40 ms a key (bench P4)."""

    def __init__(self, *, id: str | None = None):
        super().__init__("", markup=False, classes="detail", id=id)
        self._text = ""
        self._rows = 1

    def show(self, text: str) -> None:
        text = printable(text, cell=True)
        if text == self._text:  # unchanged: nothing sent to the terminal
            return
        self._text = text
        width = max(1, self.content_size.width or self.size.width or 78)
        rows = 1 if cell_len(text) <= width else 2
        self.update(text, layout=rows != self._rows)
        self._rows = rows

    @property
    def text(self) -> str:
        return self._text
