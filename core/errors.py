"""Errors a user can meet: each carries its exit code (SPEC 10) and one line of text."""

from __future__ import annotations


class SluiceError(Exception):
    code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(SluiceError):
    """Invalid usage, definition or input (exit 2)."""

    code = 2


class Refused(SluiceError):
    """Refused: duplicate, paused, locked, not an approver, ambiguous (exit 3)."""

    code = 3


class NotFound(SluiceError):
    code = 4
