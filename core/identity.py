"""Who is acting: the OS user (SLUICE_USER overrides it, e.g. for CI or tests) and host."""

from __future__ import annotations

import getpass
import os
import socket


def user() -> str:
    name = os.environ.get("SLUICE_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def host() -> str:
    return socket.gethostname()


def actor() -> str:
    return f"{user()}@{host()}"


def actor_user(actor_text: str) -> str:
    return actor_text.split("@", 1)[0]
