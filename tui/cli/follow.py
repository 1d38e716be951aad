"""Following a run live: its output and job changes as they happen (`workflow run`, `method run`,
`run logs --follow`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import ensure_engine
from .render import Out, note


def start_and_follow(args: argparse.Namespace, out: Out, svc: Any, start: Any) -> int:
    from core.definitions import parse_pairs

    inputs = parse_pairs(args.input)
    run_id = start(inputs)
    ensure_engine(svc)
    if args.detach:
        if out.json:
            out.emit(svc.run_view(run_id))
        else:
            out.line(str(run_id))
        return 0
    if not out.json:
        run = svc.run_view(run_id)
        note(f"run #{run_id} of {run['target']} started; Ctrl-C stops following (the run goes on)")
    try:
        view = follow(svc, run_id, out)
    except KeyboardInterrupt:
        note(f"stopped following run #{run_id}; it goes on. 'sluice run show {run_id}'")
        return 130
    if out.json:
        out.emit(view)
    return 0 if view["status"] in ("succeeded", "on_hold") else 1


def follow(
    svc: Any,
    run_id: int,
    out: Out,
    *,
    stop_on_hold: bool = True,
    logs_only: bool = False,
    job: str | None = None,
) -> dict[str, Any]:
    """Print a run's output and job changes live; return the final run view."""
    view: dict[str, Any] = {}
    pending_nl: dict[str, bool] = {}
    for kind, value in svc.follow(run_id, stop_on_hold=stop_on_hold):
        if kind == "log":
            if out.json or (job and value["job"] != job and not value["job"].startswith(job + "[")):
                continue
            prefix = f"[{value['job']}] "
            text = value["data"]
            lines = text.split("\n")
            buf = []
            for i, ln in enumerate(lines):
                last = i == len(lines) - 1
                if last and ln == "":
                    break
                start = not pending_nl.get(value["job"], False)
                buf.append((prefix if start else "") + ln + ("" if last else "\n"))
                pending_nl[value["job"]] = last
            sys.stdout.write("".join(buf))
            sys.stdout.flush()
        elif kind == "job" and not out.json and not logs_only:
            j = value
            if j["status"] in ("pending", "waiting"):
                continue
            if pending_nl.get(j["name"]):
                sys.stdout.write("\n")
                pending_nl[j["name"]] = False
            reason = f": {j['reason']}" if j["reason"] else ""
            out.line(f"{out.status(j['status'])} {j['name']}{reason}")
            if j["status"] == "held":
                out.line(f"  release: {release_command(svc, run_id, j)}")
                out.line(f"  reject:  sluice workflow reject {j['name']} --run {run_id} --reason '…'")
        elif kind == "run":
            view = value
            if not out.json and not logs_only:
                out.line(f"run #{run_id} {out.status(view['status'])}")
    return view


def release_command(svc: Any, run_id: int, job: dict[str, Any]) -> str:
    """A command to copy and paste: each required field the hold asks for, with a placeholder."""
    from core.store.db import loads

    plan = loads(svc.run_row(run_id)["plan"], {})
    hold = (plan.get("jobs", {}).get(job.get("base") or job["name"]) or {}).get("hold") or {}
    fields = [
        f" --field {name}='…'"
        for name, spec in (hold.get("fields") or {}).items()
        if spec.get("required") and spec.get("default") is None
    ]
    return f"sluice workflow release {job['name']} --run {run_id}{''.join(fields)}"
