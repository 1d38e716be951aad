"""Who is acting: the OS user and host.

`SLUICE_USER` (a name for CI and service accounts) is honoured only where the project's
sluice.yaml says `trust_sluice_user: true`. Anywhere else, setting it is refused wherever
an actor is needed (SPEC 10): otherwise anyone could become an approver by setting a
variable. Service.open tells this module the project's policy; until then it is distrusted.
"""

from __future__ import annotations

import os
import pwd
import socket

from .errors import Refused

_trust_sluice_user = False


def trust_sluice_user(trusted: bool) -> None:
    """Set the policy of the project this process acts in (from sluice.yaml)."""
    global _trust_sluice_user
    _trust_sluice_user = bool(trusted)


def os_user() -> str:
    """The account this process runs as, from the kernel's uid. Not `getpass.getuser()`: that
    believes LOGNAME and USER first, which would make anyone an approver by setting a variable."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (some containers)
        return f"uid{os.getuid()}"


def user() -> str:
    name = os.environ.get("SLUICE_USER")
    if not name:  # unset or empty: the OS user
        return os_user()
    if not _trust_sluice_user:
        raise Refused(
            "SLUICE_USER is set, but this project does not trust it (sluice.yaml has no "
            f"'trust_sluice_user: true'); unset it to act as {os_user()}"
        )
    name = name.strip()
    if not name or not name.isprintable() or "@" in name or len(name) > 64:
        raise Refused("SLUICE_USER must be a plain user name (printable, no '@', at most 64 characters)")
    return name


def host() -> str:
    return socket.gethostname()


def actor() -> str:
    return f"{user()}@{host()}"


def actor_user(actor_text: str) -> str:
    return actor_text.split("@", 1)[0]
