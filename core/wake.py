"""Wake-ups: a datagram to the engine's socket makes it act at once instead of polling.

The socket lives in Linux's abstract namespace (no file to clean up, gone with the process),
named after the database, so every client of one database pokes the same engine.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import tempfile
from pathlib import Path


def address(db_url: str) -> str | bytes:
    digest = hashlib.sha1(db_url.encode()).hexdigest()[:20]
    if sys.platform.startswith("linux"):
        return b"\0sluice-" + digest.encode()
    return str(Path(tempfile.gettempdir()) / f"sluice-{digest}.sock")


def poke(db_url: str) -> bool:
    """Tell the engine something changed. Returns False when no engine listens here."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(b"!", address(db_url))
        return True
    except OSError:
        return False
    finally:
        s.close()


class WakeSocket:
    def __init__(self, db_url: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        addr = address(db_url)
        if isinstance(addr, str):
            Path(addr).unlink(missing_ok=True)
        self.sock.bind(addr)
        self.sock.setblocking(False)

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
