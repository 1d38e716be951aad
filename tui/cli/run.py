"""`sluice run list | show | logs | rerun | cancel`: runs and their output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..glyphs import GLYPHS
from .common import open_service
from .follow import follow
from .render import Out, short_time

LOG_BATCH = 50  # log chunks read at a time by `run logs`: at most ~3 MiB in memory


def do_list(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.list_runs(workflow=args.workflow, status=args.status, order=args.order, limit=args.limit)
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["run", "target", "status", "trigger", "by", "created", "jobs"],
        [
            [
                f"#{r['id']}",
                r["target"],
                out.status(r["status"]),
                r["trigger"],
                r["created_by"].split("@")[0],
                short_time(r["created_at"]),
                _job_summary(r["jobs"]),
            ]
            for r in rows
        ],
    )
    return 0


def _job_summary(jobs: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    return " ".join(f"{GLYPHS.get(s, '?')}{n}" for s, n in counts.items())


def do_show(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    view = svc.run_view(args.run)
    if out.json:
        out.emit(view)
        return 0
    out.line(f"run #{view['id']} {view['kind']} {view['target']}: {out.status(view['status'])}")
    out.line(f"  trigger {view['trigger']} by {view['created_by']} at {short_time(view['created_at'])}")
    if view["parent_run_id"]:
        out.line(f"  parent run #{view['parent_run_id']}")
    if view["rerun_of"]:
        out.line(f"  rerun of run #{view['rerun_of']}")
    if view["break_glass"]:
        out.line(f"  break glass: {view['break_glass']}")
    if view["inputs"]:
        out.line("  inputs: " + ", ".join(f"{k}={v}" for k, v in view["inputs"].items()))
    for m in view["materials"]:
        out.line(f"  material {m['name']}: {m['revision']} ({short_time(m['timestamp'])})")
    held = [j for j in view["jobs"] if j["status"] == "held"]
    if held:  # who may release, how many must, four-eyes: before anyone tries
        from core.store.db import loads

        plan = loads(svc.run_row(args.run)["plan"], {})
        for j in held:
            hold = (plan.get("jobs", {}).get(j["name"].split("[")[0]) or {}).get("hold") or {}
            bits = [f"approvers: {', '.join(hold.get('approvers') or []) or 'anyone'}"]
            needed = int(hold.get("approvals") or 1)
            if needed > 1:
                done = [a["by"] for a in j["approvals"]]
                bits.append(f"{len(done)} of {needed}" + (f": {', '.join(done)}" if done else ""))
            if hold.get("four_eyes"):
                bits.append("four-eyes (the requester may not approve)")
            out.line(f"  hold {j['name']}: " + " · ".join(bits))
    out.table(
        ["job", "status", "agent", "exit", "started", "finished", "reason / outputs"],
        [
            [
                j["name"],
                out.status(j["status"]),
                j["agent"] or "",
                "" if j["exit_code"] is None else j["exit_code"],
                short_time(j["started_at"]),
                short_time(j["finished_at"]),
                "; ".join(
                    x
                    for x in [
                        j["reason"] or "",
                        ", ".join(f"{k}={v}" for k, v in j["outputs"].items()),
                        (
                            f"released by {j['released_by']}"
                            + (f": {j['comment']}" if j["comment"] else "")
                            + "".join(f" {k}={v}" for k, v in j["fields"].items())
                        )
                        if j["released_by"]
                        else "",
                        ("approved by " + ", ".join(a["by"] for a in j["approvals"]))
                        if j["approvals"]
                        else "",
                        f"break glass: {j['break_glass']}" if j["break_glass"] else "",
                    ]
                    if x
                ),
            ]
            for j in view["jobs"]
        ],
    )
    return 0


def do_logs(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    if args.follow:
        view = svc.run_view(args.run)
        if args.job and not any(
            j["name"] == args.job or j["name"].startswith(args.job + "[") for j in view["jobs"]
        ):
            svc.log_chunks(args.run, job=args.job)  # raises NotFound with a did-you-mean
        try:
            follow(svc, args.run, out, stop_on_hold=False, logs_only=True, job=args.job)
        except KeyboardInterrupt:
            return 130
        return 0
    # Streamed a batch at a time (chunks are at most 64 KiB): memory stays bounded whatever
    # the log's size, and --json writes its array element by element.
    first = True
    batch = svc.log_chunks(args.run, job=args.job, limit=LOG_BATCH)  # not found: before any output
    if out.json:
        sys.stdout.write("[")
    while True:
        for c in batch:
            if out.json:
                doc = {"job": c["job"], "stream": c["stream"], "text": c["data"]}
                sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps(doc))
                first = False
            else:  # the job's own output stream, raw like `kubectl logs` (tables escape theirs)
                sys.stdout.write(c["data"])
        if len(batch) < LOG_BATCH:
            break
        batch = svc.log_chunks(args.run, job=args.job, after=batch[-1]["id"], limit=LOG_BATCH)
    if out.json:
        sys.stdout.write("]\n" if first else "\n]\n")
    sys.stdout.flush()
    return 0


def do_rerun(args: argparse.Namespace, out: Out) -> int:
    """A new run of the same target, inputs and material revisions, followed like `workflow run`."""
    from core import recovery

    from .follow import start_and_follow

    svc = open_service(args)
    args.input = []  # the inputs are the repeated run's
    return start_and_follow(args, out, svc, lambda _inputs: recovery.rerun(svc, args.run, failed=args.failed))


def do_cancel(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    view = svc.cancel_run(args.run)
    if args.wait:
        view = next(svc.wait_runs([args.run], stop_on_hold=False))
    if out.json:
        out.emit(view)
    else:
        out.line(
            f"run #{args.run}: cancel requested"
            if not args.wait
            else f"run #{args.run} {out.status(view['status'])}"
        )
    return 0
