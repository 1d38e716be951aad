"""What the command line prints: lines, tables, JSON, one-line notes on stderr, times."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from typing import Any

from ..glyphs import GLYPHS
from ..texts import printable

COLOURS = {
    "succeeded": "32",
    "failed": "31",
    "rejected": "31",
    "held": "33",
    "on_hold": "33",
    "running": "36",
    "cancelled": "35",
    "waiting": "34",
}


# ---------------------------------------------------------------- output helpers


class Out:
    """Everything the CLI prints goes through here: lines and tables are escaped as a whole.

    Our own colours travel as markers with a per-process nonce (no stored text can forge
    one) and become escape sequences only after the user's text has been escaped.
    """

    def __init__(self, as_json: bool):
        self.json = as_json
        self.tty = sys.stdout.isatty()
        self.colour = self.tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self._mark = "\ue000" + secrets.token_hex(8)
        self._marks = re.compile(re.escape(self._mark) + r"(\d+)\ue001")

    def status(self, s: str) -> str:
        text = f"{GLYPHS.get(s, '?')} {s}"
        if self.colour and s in COLOURS:
            return f"{self._mark}{COLOURS[s]}\ue001{text}{self._mark}0\ue001"
        return text

    def _paint(self, text: str) -> str:
        return self._marks.sub(lambda m: f"\x1b[{m.group(1)}m", text)

    def _width(self, s: str) -> int:
        return len(self._marks.sub("", s))

    def emit(self, doc: Any) -> None:
        # indented for a person at a terminal; on one line for a program (json's C encoder
        # does no indenting: 1,000 queue items take 35 ms indented, 4 ms not)
        indent = 2 if sys.stdout.isatty() else None
        sys.stdout.write(json.dumps(doc, indent=indent, default=str) + "\n")

    def line(self, text: str = "") -> None:
        sys.stdout.write(self._paint(printable(text)) + "\n")
        sys.stdout.flush()

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        cells = [[printable("" if c is None else str(c), cell=True) for c in r] for r in rows]
        widths = [max([len(h)] + [self._width(r[i]) for r in cells]) for i, h in enumerate(headers)]
        lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
        for r in cells:
            lines.append(
                "  ".join(c + " " * (w - self._width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
            )
        sys.stdout.write(self._paint("\n".join(lines)) + "\n")
        sys.stdout.flush()


def note(message: str) -> None:
    """One line on stderr: `sluice: what, where; hint` (escaped: it may quote a user's text)."""
    sys.stderr.write(f"sluice: {printable(message.removeprefix('sluice: '))}\n")
    sys.stderr.flush()


def ago(iso_time: str | None) -> str:
    if not iso_time:
        return ""
    from datetime import datetime

    from core.definitions.durations import format_duration

    t = datetime.fromisoformat(iso_time).timestamp()
    import time

    return format_duration(time.time() - t) + " ago"


def short_time(iso_time: str | None) -> str:
    return iso_time[:19].replace("T", " ") if iso_time else ""
