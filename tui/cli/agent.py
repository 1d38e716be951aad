"""`sluice agent list | start | enable | disable`: the workers that run jobs."""

from __future__ import annotations

import argparse

from .common import open_service
from .render import Out, note, short_time


def do_list(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.list_agents()
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["agent", "host", "environments", "resources", "cap", "state", "jobs", "heartbeat"],
        [
            [
                a["name"],
                a["host"],
                ", ".join(a["environments"]) or "-",
                ", ".join(a["resources"]) or "-",
                a["capacity"],
                out.status(a["state"]),
                ", ".join(a["jobs"]),
                short_time(a["heartbeat_at"]),
            ]
            for a in rows
        ],
    )
    return 0


def do_enable(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    row = svc.set_agent_enabled(args.name, True)
    if out.json:
        out.emit(row)
    else:
        out.line(f"agent {args.name} enabled")
    return 0


def do_disable(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    row = svc.set_agent_enabled(args.name, False)
    if out.json:
        out.emit(row)
    else:
        out.line(f"agent {args.name} disabled: it finishes its current jobs and takes no more")
    return 0


def do_start(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    import signal
    import threading

    from core.agents.agent import Agent, serve
    from core.errors import Invalid

    unknown = [e for e in args.env if e not in svc.project.environments]
    if unknown:
        from core.definitions import did_you_mean

        raise Invalid(
            f"unknown environment '{unknown[0]}'{did_you_mean(unknown[0], svc.project.environments)}"
        )
    if args.capacity is not None and args.capacity < 1:
        raise Invalid("--capacity must be at least 1")
    agent = Agent(
        svc.db,
        svc.project.root,
        args.name,
        environments=args.env,
        resources=args.resource,
        capacity=args.capacity,
        log_limit=svc.project.log_limit,
    )
    agent.register()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    note(
        f"agent {args.name} running (environments: {', '.join(args.env) or 'none'}; resources: "
        f"{', '.join(args.resource) or 'none'}; capacity {agent.capacity}); Ctrl-C stops after current jobs"
    )
    return serve(svc.db, svc.project.root, agent, stop=stop)
