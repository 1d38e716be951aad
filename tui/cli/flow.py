"""`sluice freeze` and `sluice unfreeze`: stop every new run now, and let them start again."""

from __future__ import annotations

import argparse

from .common import UsageError, open_service
from .render import Out


def do_freeze(args: argparse.Namespace, out: Out) -> int:
    from core import flow, queueing

    svc = open_service(args)
    until = queueing.parse_at(args.until, svc.project.timezone) if args.until is not None else None
    made = flow.freeze(svc, args.reason, until=until, except_=args.except_)
    if out.json:
        out.emit(made)
    else:
        spared = f"; except {', '.join(made['except'])}" if made["except"] else ""
        out.line(f"{made['text']}: no new run starts{spared}; ready jobs of runs in flight wait")
    return 0


def do_unfreeze(args: argparse.Namespace, out: Out) -> int:
    from core import flow

    svc = open_service(args)
    lifted = flow.unfreeze(svc)
    if out.json:
        out.emit(lifted)
    else:
        for f in lifted:
            out.line(f"lifted: {f['reason']} (set by {(f['by'] or '?').split('@')[0]})")
    return 0


def break_glass(args: argparse.Namespace) -> str | None:
    """The reason given with --break-glass, or None without it; --reason alone is a mistake."""
    if getattr(args, "break_glass", False):
        if not (args.reason or "").strip():
            raise UsageError("--break-glass needs --reason TEXT: why this cannot wait")
        return str(args.reason)
    if getattr(args, "reason", None) is not None:
        raise UsageError("--reason goes with --break-glass (an emergency override)")
    return None
