"""Status as a glyph and a word (never colour alone), shared by the CLI and the dashboard."""

GLYPHS = {
    # single-width characters that every monospace font has (no emoji: they are wide, or missing)
    "pending": "○",
    "waiting": "…",
    "held": "‖",
    "on_hold": "‖",
    "running": "»",
    "succeeded": "✓",
    "failed": "✗",
    "rejected": "⊗",
    "cancelled": "⊘",
    "skipped": "↷",
    "queued": "◆",
    "executed": "✓",
    "purged": "-",
    "idle": "○",
    "busy": "»",
    "disabled": "⊘",
    "lost": "✗",
    "offline": "◌",
}
# classes for the dashboard's CSS; the CLI maps them to ANSI colours
TONE = {
    "succeeded": "good",
    "executed": "good",
    "idle": "good",
    "failed": "bad",
    "rejected": "bad",
    "lost": "bad",
    "held": "warn",
    "on_hold": "warn",
    "running": "busy",
    "busy": "busy",
    "waiting": "busy",
    "cancelled": "dim",
    "skipped": "dim",
    "disabled": "dim",
    "offline": "dim",
    "purged": "dim",
    "pending": "dim",
}


def status_text(status: str) -> str:
    return f"{GLYPHS.get(status, '?')} {status}"
