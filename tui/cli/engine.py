"""`sluice engine start | stop | status`: the background engine of this project."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import open_service, project_dir
from .render import Out, note


def _root(args: argparse.Namespace) -> Path:
    from core.definitions import find_project_root

    return find_project_root(project_dir(args)) if args.project else find_project_root()


def do_status(args: argparse.Namespace, out: Out) -> int:
    from core.engine import control

    info = control.status(_root(args))
    if out.json:
        out.emit({"running": bool(info), **(info or {})})
    elif info:
        out.line(f"engine running: pid {info.get('pid')} on {info.get('host')}")
    else:
        out.line("engine not running ('sluice engine start' starts it)")
    return 0 if info else 3  # as `systemctl status` does (SPEC 10)


def do_stop(args: argparse.Namespace, out: Out) -> int:
    from core.engine import control

    result = control.stop(_root(args), now=args.now)
    if out.json:
        out.emit(result.as_json())
    elif result.gone:
        out.line(result.message)
    else:
        note(result.message)
    return 0 if result.gone else 1


def do_start(args: argparse.Namespace, out: Out) -> int:
    from core.engine import control

    root = _root(args)
    if args.foreground:
        from core.engine.main import main as engine_main

        return engine_main(["--project", str(root)])
    open_service(args)  # validates definitions and migrates before we detach
    info = control.status(root)
    if info:
        msg = f"engine already running (pid {info.get('pid')})"
    else:
        info = control.start_background(root)
        msg = f"engine started in the background (pid {info.get('pid')})"
    if out.json:
        out.emit({"running": True, **info})
    else:
        out.line(msg)
    return 0
