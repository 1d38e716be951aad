"""The staged queue: `sluice queue list | execute | purge`, and staging into it (`workflow queue`,
`workflow schedule`, `method queue`, `method schedule`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import UsageError, ensure_engine, open_service, pins
from .render import Out, ago, note, short_time


def stage(args: argparse.Namespace, out: Out, svc: Any, kind: str, target: str) -> int:
    from core import queueing
    from core.definitions import parse_pairs

    inputs = parse_pairs(args.input)
    at = queueing.parse_at(args.at, svc.project.timezone) if getattr(args, "at", None) is not None else None
    item = queueing.add(svc, kind, target, inputs, note=args.note, at=at, pins=pins(args) or None)
    if at is not None:
        ensure_engine(svc)
    if out.json:
        out.emit(item)
    else:
        when = f", due {short_time(item['not_before'])}" if item["not_before"] else ""
        out.line(f"queued #{item['id']}: {kind} {target}{_inputs_text(item['inputs'])}{when}")
    return 0


def _inputs_text(inputs: dict[str, Any]) -> str:
    return (" " + " ".join(f"{k}={v}" for k, v in inputs.items())) if inputs else ""


def _selector(args: argparse.Namespace, svc: Any) -> Any:
    """The items chosen on the command line (ITEM_ID..., --all, --workflow NAME, ...)."""
    from core import queueing

    sel = queueing.Selector(
        all=args.all,
        workflows=args.workflows,
        methods=args.methods,
        workflow=args.workflow,
        method=args.method,
        ids=list(args.ids),
    )
    sel.check(svc)  # a workflow or method the project does not define: exit 4, did-you-mean
    return sel


def do_list(args: argparse.Namespace, out: Out) -> int:
    from core import queueing

    svc = open_service(args)
    sel = _selector(args, svc)
    items = queueing.select(svc, sel if sel.given() else None, limit=args.limit)
    if out.json:
        out.emit(items)
        return 0
    if not items:
        out.line("the queue is empty" if not sel.given() else f"nothing queued for {sel.describe()}")
        return 0
    render_items(out, items)
    return 0


def _agreed_ids(args: argparse.Namespace, out: Out, svc: Any, verb: str) -> list[int] | None:
    """The ids of the selected items, once confirmed (or --yes); None: nothing to do, all said."""
    from core import queueing

    sel = _selector(args, svc)
    if not sel.given():
        raise UsageError(
            f"queue {verb}: choose items: --all, --workflows, --methods, "
            "--workflow NAME, --method NAME, or ITEM_ID..."
        )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not args.yes and not interactive and sel.bulk:
        raise UsageError(f"queue {verb} {sel.describe()}: --yes is required without a terminal")
    queueing.check_ids(svc, sel)
    items = queueing.select(svc, sel)
    if not items:
        if out.json:
            out.emit([])
        else:
            out.line(f"nothing queued for {sel.describe()}")
        return None
    if not args.yes:
        if interactive:
            render_items(out, items)
            answer = input(f"{verb.capitalize()} these {len(items)} item(s)? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                out.line("nothing was changed")
                return None
    return [i["id"] for i in items]


def do_purge(args: argparse.Namespace, out: Out) -> int:
    from core import queueing

    svc = open_service(args)
    ids = _agreed_ids(args, out, svc, "purge")
    if ids is None:
        return 0
    purged = queueing.purge(svc, ids)
    if out.json:
        out.emit(purged)
    else:
        for i in purged:
            out.line(f"purged #{i['id']}: {i['kind']} {i['target']}{_inputs_text(i['inputs'])}")
    return 0


def do_execute(args: argparse.Namespace, out: Out) -> int:
    from core import queueing

    svc = open_service(args)
    ids = _agreed_ids(args, out, svc, "execute")
    if ids is None:
        return 0
    outcomes = queueing.execute(svc, ids)
    started = [o for o in outcomes if o.run_id]
    deferred = [o for o in outcomes if o.deferred]
    if started or deferred:
        ensure_engine(svc)  # a deferred item is started by the engine when its window opens
    for o in outcomes:
        i = o.item
        label = f"#{i['id']} {i['kind']} {i['target']}{_inputs_text(i['inputs'])}"
        if o.run_id:
            if not out.json:
                out.line(f"started {label} as run #{o.run_id}")
        elif o.deferred:
            note(f"{label} {o.deferred}")
        elif o.refused:
            if not out.json:
                note(f"{label} stays queued: {o.refused}")
        elif not out.json:
            note(f"{label} was already executed or purged by someone else")
    code = 0 if started or deferred or not any(o.refused for o in outcomes) else 3
    runs = []
    if args.wait and started:
        # one loop over the event stream for all of them: each is said as it finishes
        for view in svc.wait_runs([o.run_id for o in started], stop_on_hold=False):
            runs.append(view)
            if not out.json:
                out.line(f"run #{view['id']} {view['target']}: {out.status(view['status'])}")
        if any(v["status"] != "succeeded" for v in runs):
            code = 1
    if out.json:
        out.emit([{**o.item, "refused": o.refused, "deferred": o.deferred} for o in outcomes])
    return code


def do_show(args: argparse.Namespace, out: Out) -> int:
    from core import preview

    from ..texts import preview_lines

    svc = open_service(args)
    shown = preview.preview(svc, args.id)
    if out.json:
        out.emit(shown)
        return 0
    for line in preview_lines(dict(shown)):
        out.line(line)
    return 0


def do_restore(args: argparse.Namespace, out: Out) -> int:
    from core import recovery

    svc = open_service(args)
    restored = recovery.restore(svc, args.ids)
    if any(r.item["not_before"] for r in restored):
        ensure_engine(svc)  # a schedule came back: the engine keeps the clock
    for r in restored:
        i = r.item
        if not out.json:
            due = f", due {short_time(i['not_before'])}" if i["not_before"] else ""
            out.line(f"restored #{i['id']}: {i['kind']} {i['target']}{_inputs_text(i['inputs'])}{due}")
        if r.due_passed:
            note(f"#{i['id']}: its time {r.due_passed} passed while it was purged; execute it by hand")
    if out.json:
        out.emit([r.item for r in restored])
    return 0


def render_items(out: Out, items: list[dict[str, Any]]) -> None:
    out.table(
        ["id", "kind", "target", "inputs", "by", "age", "due", "note"],
        [
            [
                f"#{i['id']}",
                i["kind"],
                i["target"],
                " ".join(f"{k}={v}" for k, v in i["inputs"].items()),
                i["queued_by"].split("@")[0],
                ago(i["queued_at"]).removesuffix(" ago"),
                short_time(i["not_before"]),
                i["note"] or "",
            ]
            for i in items
        ],
    )
