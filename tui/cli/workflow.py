"""`sluice workflow ...`: list, show, run, queue and schedule, release and reject a held job,
pause, unpause, unlock."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import ensure_engine, open_service, pins
from .flow import break_glass
from .follow import start_and_follow
from .queue import stage
from .render import Out, short_time


def do_list(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.workflow_states()
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["workflow", "state", "last run", "next fire", "description"],
        [
            [
                w["name"],
                _wf_state(w),
                (f"#{w['last_run']['id']} " + out.status(w["last_run"]["status"])) if w["last_run"] else "",
                short_time(w["next_fire"]),
                w["description"],
            ]
            for w in rows
        ],
    )
    return 0


def do_show(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    wf = svc.workflow(args.name)
    info = next(w for w in svc.workflow_states() if w["name"] == wf.name)
    if out.json:
        out.emit(info)
        return 0
    out.line(f"workflow {wf.name}" + (f": {wf.description}" if wf.description else ""))
    out.line(f"  file: {os.path.relpath(wf.path, svc.project.root)}")
    if wf.environment:
        out.line(f"  environment: {wf.environment}")
    if wf.lock != "none":
        out.line(f"  lock: {wf.lock}")
    if wf.timer:
        out.line(
            f"  timer: {wf.timer.cron} (catch_up: {wf.timer.catch_up}); next fire {short_time(info['next_fire'])}"
        )
    out.line(f"  state: {_wf_state(info)}")
    if info["window"]:
        out.line(f"  {info['window']['text']}")
    for name, spec in wf.inputs.items():
        bits = (
            [spec.type]
            + (["required"] if spec.required else [])
            + ([f"default {spec.default}"] if spec.default is not None and not spec.secret else [])
            + ([f"one of {', '.join(map(str, spec.enum))}"] if spec.enum else [])
            + (["secret"] if spec.secret else [])
        )
        out.line(f"  input {name}: {', '.join(bits)}")
    out.line("  jobs:")
    for name, job in wf.jobs.items():
        extra = []
        if job.needs:
            extra.append("needs " + ", ".join(job.needs))
        if job.if_ != "success":
            extra.append(f"if {job.if_}")
        if job.hold:
            extra.append("hold")
        out.line(f"    {name}" + (f" ({'; '.join(extra)})" if extra else ""))
    if info["last_run"]:
        out.line(f"  last run: #{info['last_run']['id']} {out.status(info['last_run']['status'])}")
    return 0


def _wf_state(w: dict[str, Any]) -> str:
    if w["paused"]:
        return f"paused by {(w['paused_by'] or '').split('@')[0]}: {w['pause_reason']}"
    if w["locked_by_run"]:
        return f"locked by run #{w['locked_by_run']} ({w['lock']})"
    if w.get("window") and not w["window"]["open"]:
        return w["window"]["text"]
    return "ready"


def do_run(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    pinned = pins(args)
    glass = break_glass(args)
    return start_and_follow(
        args, out, svc, lambda inputs: svc.run_workflow(args.name, inputs, pins=pinned, break_glass=glass)
    )


def do_stage(args: argparse.Namespace, out: Out) -> int:
    """`workflow queue`, and `workflow schedule` (the same with --at)."""
    svc = open_service(args)
    return stage(args, out, svc, "workflow", svc.workflow(args.name).name)


# ---------------------------------------------------------------- held jobs


def do_release(args: argparse.Namespace, out: Out) -> int:
    from core import holds
    from core.definitions import parse_pairs

    svc = open_service(args)
    fields = parse_pairs(args.field, "--field")
    view = holds.release(
        svc,
        args.job,
        run_id=args.run,
        workflow=args.workflow,
        comment=args.comment,
        fields=fields,
        break_glass=break_glass(args),
    )
    ensure_engine(svc)
    job = next(
        (j for j in view["jobs"] if j["name"] == args.job or j["name"].split("[")[0] == args.job), None
    )
    if job is not None and job["status"] == "held":  # one approval of several: it stays held
        _said(out, view, f"approved {args.job} in run #{view['id']}: {job['reason']}")
    else:
        _said(out, view, f"released {args.job} in run #{view['id']}")
    return 0


def do_reject(args: argparse.Namespace, out: Out) -> int:
    from core import holds

    svc = open_service(args)
    view = holds.reject(svc, args.job, reason=args.reason, run_id=args.run, workflow=args.workflow)
    ensure_engine(svc)
    _said(out, view, f"rejected {args.job} in run #{view['id']}: the run fails")
    return 0


# ---------------------------------------------------------------- pause and lock


def do_pause(args: argparse.Namespace, out: Out) -> int:
    from core import flow

    svc = open_service(args)
    st = flow.pause(svc, args.name, args.reason)
    _said(out, {"workflow": args.name, **st}, f"paused {args.name}: new runs are refused and ready jobs wait")
    return 0


def do_unpause(args: argparse.Namespace, out: Out) -> int:
    from core import flow

    svc = open_service(args)
    st = flow.unpause(svc, args.name)
    _said(out, {"workflow": args.name, **st}, f"unpaused {args.name}")
    return 0


def do_unlock(args: argparse.Namespace, out: Out) -> int:
    from core import flow

    svc = open_service(args)
    st = flow.unlock(svc, args.name)
    _said(out, {"workflow": args.name, **st}, f"unlocked {args.name}")
    return 0


def _said(out: Out, doc: Any, message: str) -> None:
    """The result: the document with --json, else one line."""
    if out.json:
        out.emit(doc)
    else:
        out.line(message)
