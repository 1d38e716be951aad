"""What the commands share: the usage error, opening the project, starting the engine.

UsageError lives here, below both the parser and the commands that raise it: the parser
names each command's handler, and no command imports the parser (no cycle, even at run time).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .render import note


class UsageError(Exception):
    """A command line that makes no sense: one line on stderr, exit 2."""


def project_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.project) if args.project else None


def open_service(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from core.service import Service

    return Service.open(project_dir(args))


def ensure_engine(svc: Any) -> None:
    from core.engine import control

    info = control.ensure(svc.project.root)
    if info is not None:
        note(
            f"started the engine in the background (pid {info.get('pid')}); "
            f"runs go on if this terminal closes. Log: .sluice/engine.log"
        )


def pins(args: argparse.Namespace) -> dict[str, str]:
    """The `--pin MATERIAL=REV` pairs given (none for commands without the option)."""
    from core.definitions import parse_pairs

    return parse_pairs(getattr(args, "pin", None), "--pin")
