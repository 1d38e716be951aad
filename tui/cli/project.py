"""The project as a whole: `init`, `validate`, `demo`, and `tui` (the dashboard)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UsageError, project_dir
from .render import Out, note


def do_validate(args: argparse.Namespace, out: Out) -> int:
    from core.definitions import load_project

    project = load_project(project_dir(args))
    if out.json:
        out.emit(
            {
                "valid": True,
                "problems": [],
                "workflows": sorted(project.workflows),
                "models": sorted(project.models),
            }
        )
    else:
        out.line(
            f"{project.name}: {len(project.workflows)} workflow(s), {len(project.models)} model(s): all valid"
        )
    return 0


def do_init(args: argparse.Namespace, out: Out) -> int:
    from core.scaffold import init_project

    root = init_project(Path(args.dir))
    out.line(f"created a sluice project in {root}")
    out.line("next: cd there, then 'sluice validate' and 'sluice workflow run hello'")
    return 0


def do_tui(args: argparse.Namespace, out: Out) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("tui: the dashboard needs a terminal")
    from ..app import run_dashboard

    return run_dashboard(
        project_dir(args),
        read_only=getattr(args, "read_only", False),
        mouse=True if getattr(args, "mouse", False) else None,
    )


def do_demo(args: argparse.Namespace, out: Out) -> int:
    from core.scaffold import copy_demo, stage_demo

    target = copy_demo(Path(args.dir or "sluice-demo"))
    note(f"demo project in {target}")
    staged = stage_demo(target)
    if staged:
        note(staged)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        out.line(f"demo project ready in {target}; open it with: cd {target} && sluice")
        return 0
    from ..app import run_dashboard

    return run_dashboard(target)
