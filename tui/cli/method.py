"""`sluice method ...`: the methods of models: list, run, queue and schedule."""

from __future__ import annotations

import argparse

from .common import open_service
from .flow import break_glass
from .follow import start_and_follow
from .queue import stage
from .render import Out


def do_list(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.list_methods()
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["model", "method", "inputs", "description"],
        [
            [
                m["model"],
                m["method"],
                ", ".join(k + ("*" if v["required"] else "") for k, v in m["inputs"].items()),
                m["description"],
            ]
            for m in rows
        ],
    )
    return 0


def do_run(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    glass = break_glass(args)
    return start_and_follow(
        args, out, svc, lambda inputs: svc.run_method(args.model, args.method, inputs, break_glass=glass)
    )


def do_stage(args: argparse.Namespace, out: Out) -> int:
    """`method queue`, and `method schedule` (the same with --at)."""
    svc = open_service(args)
    return stage(args, out, svc, "method", svc.method(args.model, args.method).target)
