"""Textual's Log (a line API view: only the rows on screen are drawn, fine for 50,000 lines) that can
also wrap long lines at the view's width, and back."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.geometry import Size
from textual.strip import Strip
from textual.widgets import Log


class WrapLog(Log):
    """A Log whose `wrap` (off at first) shows each long line on as many rows as it needs.

    Wrapped, rows are not lines: `_starts[i]` is the row line i starts on (kept as lines come in;
    all of it again only when the width changes or wrapping is turned on). `row_of` and
    `line_at` convert, for a search that shows a line at the top."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.wrap = False
        self._starts: list[int] = []  # wrapped: the first row of each line
        self._rows = 0  # wrapped: rows in all
        self._wrap_width = 0

    # ------------------------------------------------------------ rows and lines

    def _width_now(self) -> int:
        return max(1, self.scrollable_content_region.width)

    def _pieces(self, line: int) -> list[str]:
        text = self._process_line(self._lines[line])
        if cell_len(text) <= self._wrap_width:
            return [text]
        # at spaces where there are some (a word longer than the row is folded)
        lines = Text(text).wrap(self.app.console, self._wrap_width, overflow="fold", no_wrap=False)
        return [line.plain for line in lines] or [""]

    def _reflow(self, first: int = 0) -> None:
        """Count the rows of lines `first` on (the earlier ones have not changed)."""
        self._wrap_width = self._width_now()
        del self._starts[first:]
        row = self._starts[-1] + len(self._pieces(first - 1)) if first > 0 else 0
        for i in range(first, self.line_count):
            self._starts.append(row)
            row += len(self._pieces(i))
        self._rows = row
        self.virtual_size = Size(self._wrap_width, self._rows)

    def set_wrap(self, on: bool) -> None:
        """Wrap (or stop wrapping) long lines, keeping the line at the top of the view in view."""
        top = self.line_at(int(self.scroll_y))
        self.wrap = on
        if on:
            self._reflow()
        else:
            self._starts, self._rows = [], 0
            self.virtual_size = Size(self._width, self.line_count)
        self._render_line_cache.clear()
        self.scroll_to(x=0, y=self.row_of(top), animate=False, immediate=True)
        self.refresh()

    def row_of(self, line: int) -> int:
        """The row (what scroll_y counts) that LINE starts on."""
        if not self.wrap or not self._starts:
            return line
        return self._starts[min(line, len(self._starts) - 1)]

    def line_at(self, row: int) -> int:
        """The line shown on ROW."""
        if not self.wrap or not self._starts:
            return row
        return max(0, bisect_right(self._starts, row) - 1)

    # ------------------------------------------------------------ Log, wrapped

    def write(self, data: str, scroll_end: bool | None = None) -> WrapLog:
        if not self.wrap:
            super().write(data, scroll_end)
            return self
        changed = max(0, len(self._lines) - 1)  # the last line may be a partial one, growing
        before = len(self._lines)
        super().write(data, scroll_end=False)
        # lines pruned from the top (max_lines): every row moves
        self._reflow(0 if len(self._lines) < before else min(changed, len(self._starts)))
        if self.auto_scroll if scroll_end is None else scroll_end:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()
        return self

    def clear(self) -> WrapLog:
        super().clear()
        self._starts, self._rows = [], 0
        return self

    def on_resize(self) -> None:
        if self.wrap and self._width_now() != self._wrap_width:
            top = self.line_at(int(self.scroll_y))
            self._reflow()
            self.scroll_to(y=self.row_of(top), animate=False, immediate=True)
            self.refresh()

    def _render_line(self, y: int, scroll_x: int, width: int) -> Strip:
        if not self.wrap:
            return super()._render_line(y, scroll_x, width)
        rich_style = self.rich_style
        if y >= self._rows or not self._starts:
            return Strip.blank(width, rich_style)
        line = self.line_at(y)
        piece = self._pieces(line)[y - self._starts[line]]
        text = Text(piece, no_wrap=True)
        text.stylize(rich_style)
        strip = Strip(text.render(self.app.console), cell_len(piece))
        return strip.crop_extend(0, width, rich_style).apply_offsets(0, y)
