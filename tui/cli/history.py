"""`sluice history`: the audit trail; `history verify` checks its chain, `history export` writes it."""

from __future__ import annotations

import argparse

from .common import open_service
from .render import Out, short_time


def do_history(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.history(args.limit, run_id=args.run, kind="break_glass" if args.break_glass else None)
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["time", "actor", "event", "what"],
        [[short_time(e["at"]), e["actor"], e["kind"], e["message"]] for e in rows],
    )
    return 0


def do_verify(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    v = svc.verify_history()
    if out.json:
        out.emit(
            {
                "intact": v.intact,
                "events": v.events,
                "head": v.head,
                "head_id": v.head_id,
                "unsealed": v.unsealed,
                "problem": v.problem,
                "broken_at": v.broken_at,
                "message": v.message,
            }
        )
        return 0 if v.intact else 1
    later = f"; {v.unsealed:,} newer event(s) not sealed yet" if v.unsealed else ""
    if v.intact:
        head = f"head {v.head[:12]}…" if v.head else "nothing sealed yet"
        out.line(f"{v.events:,} events, chain intact, {head}{later}")
        return 0
    out.line(f"chain broken: {v.message} ({v.events:,} events before it intact)")
    return 1


def do_export(args: argparse.Namespace, out: Out) -> int:
    import json
    import sys

    svc = open_service(args)
    events = svc.export_history(args.since)
    first = next(events, None)  # a --since that names nothing: said before any output
    if first is None:
        return 0
    write = sys.stdout.write
    write(json.dumps(first, sort_keys=True) + "\n")
    for event in events:
        write(json.dumps(event, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0
