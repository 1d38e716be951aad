"""`sluice db copy`: the state database."""

from __future__ import annotations

import argparse

from .common import open_service
from .render import Out


def do_copy(args: argparse.Namespace, out: Out) -> int:
    from core.engine import control
    from core.errors import Refused
    from core.store.copy import copy
    from core.store.db import Database

    svc = open_service(args)
    if control.status(svc.project.root):
        raise Refused(
            "the engine is running: stop it first (sluice engine stop), so nothing changes mid-copy"
        )
    target = Database(args.to)
    if target.url == svc.db.url:
        raise Refused("the target is the project's own database")
    counts = copy(svc.db, target)
    if out.json:
        out.emit({"copied": counts, "to": target.where})
    else:
        out.line(
            f"copied {sum(counts.values()):,} rows ({counts['runs']:,} runs, {counts['events']:,} events, "
            f"{counts['queue_items']:,} queue items) to {target.where}"
        )
        out.line(
            f"next: set 'database: {args.to}' in sluice.yaml (or SLUICE_DATABASE_URL) and start the engine"
        )
    return 0
