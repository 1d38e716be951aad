"""What the dashboard's worker threads tell the UI thread: typed messages, posted to the app.

The poller, the action worker and the engine check run off the event loop and never touch a
widget. Each posts one of these (`post_message` is thread-safe in Textual) and the app's
handlers apply it on the UI thread: a live view's data is shown, an outcome is notified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from textual.message import Message

T = TypeVar("T")


class LiveView(Generic[T]):
    """A pane or a screen the poller keeps current: `fetch` runs in the poller thread (through core
    use cases only), `show` on the UI thread with what `fetch` returned. Mixed into a widget or a
    screen, which brings `is_attached`."""

    is_attached: bool

    def fetch(self) -> T:
        raise NotImplementedError

    def show(self, data: T) -> None:
        raise NotImplementedError


class Fetched(Message, Generic[T]):
    """The poller fetched VIEW's data: show it, if the view is still there."""

    def __init__(self, view: LiveView[T], data: T) -> None:
        super().__init__()
        self.view = view
        self.data = data


class FetchFailed(Message):
    """The poller's fetch was refused by the store or a use case; it polls on."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ActionDone(Message):
    """A use case run by the action worker went through; `success` says what was done."""

    def __init__(self, success: str) -> None:
        super().__init__()
        self.success = success


class ActionFailed(Message):
    """A use case run by the action worker refused; nothing (more) was changed."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ItemRefused(Message):
    """Executing queued items: this one could not start and stays queued."""

    def __init__(self, item_id: int, why: str) -> None:
        super().__init__()
        self.item_id = item_id
        self.why = why


class EngineStarted(Message):
    """No engine was running for the project: the dashboard started one in the background."""

    def __init__(self, pid: int | None) -> None:
        super().__init__()
        self.pid = pid


class EngineFailed(Message):
    """The engine could not be started."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class Looked(Message):
    """The action worker read something for a dialog (a preview, the items to restore): `then`
    opens it, on the UI thread."""

    def __init__(self, result: object, then: Callable[[Any], None]) -> None:
        super().__init__()
        self.result = result
        self.then = then
