"""Wake-ups: a datagram to the engine's socket makes it act at once instead of polling.

The socket lives in Linux's abstract namespace (no file to clean up, gone with the process),
named after the database, so every client of one database pokes the same engine.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import sys
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=64)
def address(db_url: str) -> str | bytes:
    digest = hashlib.sha1(db_url.encode()).hexdigest()[:20]
    if sys.platform.startswith("linux"):
        return b"\0sluice-" + digest.encode()
    return str(Path(tempfile.gettempdir()) / f"sluice-{digest}.sock")


def poke(db_url: str) -> bool:
    """Tell the engine something changed. Returns False when no engine listens here."""
    return poke_addr(address(db_url))


_SENDER: socket.socket | None = None  # one unbound socket per process sends every poke


def poke_addr(addr: str | bytes) -> bool:
    """Never blocks: the kernel queues only a few datagrams (net.unix.max_dgram_qlen), and a
    full queue already means the listener has a wake-up waiting, so a dropped one loses nothing.
    A blocking send here once hung an engine that poked its own full socket."""
    global _SENDER
    s = _SENDER
    if s is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setblocking(False)
        _SENDER = s
    try:
        s.sendto(b"!", addr)
        return True
    except BlockingIOError:
        return True  # queue full: the listener will wake anyway
    except OSError:
        return False


class WakeSocket:
    """The engine's end. Another engine of the same database on this host may own the address
    (a standby): then this one binds a private address and tries to take the shared one over
    with `claim()` once it becomes the scheduler."""

    def __init__(self, db_url: str):
        self.addr = address(db_url)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.shared = self._bind(self.sock)
        if not self.shared:
            self.sock.bind(b"") if isinstance(self.addr, bytes) else None  # autobind: a private address

    def _bind(self, sock: socket.socket) -> bool:
        try:
            if isinstance(self.addr, str) and not poke_addr(self.addr):
                Path(self.addr).unlink(missing_ok=True)
            sock.bind(self.addr)
            return True
        except OSError:
            return False

    def claim(self) -> bool:
        """Take the shared address if it has become free (the engine that had it is gone)."""
        if self.shared:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if self._bind(sock):
            self.sock.close()
            self.sock = sock
            self.shared = True
            return True
        sock.close()
        return False

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


class PgListener:
    """LISTEN on the database's `sluice` channel: wake-ups across hosts on PostgreSQL."""

    def __init__(self, conninfo: str):
        from .store.db import _pg_connect

        self.conn = _pg_connect(conninfo)
        self.conn.execute("LISTEN sluice")

    def fileno(self) -> int:
        return self.conn.pgconn.socket

    def drain(self) -> None:
        pg = self.conn.pgconn
        pg.consume_input()
        while pg.notifies() is not None:
            pass

    def close(self) -> None:
        self.conn.close()
