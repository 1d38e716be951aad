"""`sluice history`: the audit trail."""

from __future__ import annotations

import argparse

from .common import open_service
from .render import Out, short_time


def do_history(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.history(args.limit, run_id=args.run)
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["time", "actor", "event", "what"],
        [[short_time(e["at"]), e["actor"], e["kind"], e["message"]] for e in rows],
    )
    return 0
