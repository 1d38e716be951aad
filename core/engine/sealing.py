"""The engine's sealer: chains the events every process writes, a moment after they commit."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..chain import seal_pending
from ..store.db import Database, StoreError

SEAL_INTERVAL = 0.5  # seconds between passes: how far sealing may trail writing


class Sealer:
    """A thread of its own, so sealing a burst of events never holds up a tick."""

    def __init__(self, db: Database, log: Callable[[str], None], interval: float = SEAL_INTERVAL):
        self.db = db
        self.log = log
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sealer", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after one last pass, so what this engine wrote last is sealed too."""
        self._stop.set()
        self._thread.join()
        self._pass()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._pass()

    def _pass(self) -> None:
        try:
            seal_pending(self.db)
        except StoreError as e:  # a slow or locked store: the next pass continues from the head
            if not self._failing:
                self.log(f"could not seal the history, will try again: {e}")
            self._failing = True
        else:
            self._failing = False
