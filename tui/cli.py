"""The command line: parse, call a use case in core, render. No SQL and no rules here.

Imports stay lazy: `sluice --version` and listings must not pay for SQLAlchemy or Textual.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, NoReturn

from .glyphs import GLYPHS

VERSION = "0.1.0"

COLOURS = {
    "succeeded": "32",
    "failed": "31",
    "rejected": "31",
    "held": "33",
    "on_hold": "33",
    "running": "36",
    "cancelled": "35",
    "waiting": "34",
}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # note() says "sluice: " once; the subcommand follows it ("sluice: run show: …")
        where = self.prog.removeprefix("sluice").strip()
        raise UsageError(f"{where}: {message}" if where else message)


# ---------------------------------------------------------------- numbers from users
# Every number a user gives is bounded before it reaches SQL, range() or a sleep (SPEC 10).

MAX_ID = 2**63 - 1  # ids are 64-bit integers in both stores
MAX_LIMIT = 100_000
MAX_CAPACITY = 10_000


def _bounded(text: str, low: int, high: int, what: str = "a whole number") -> int:
    s = text.strip().removeprefix("#")
    if not re.fullmatch(r"[+-]?\d{1,40}", s):
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
    n = int(s)
    if not low <= n <= high:
        raise argparse.ArgumentTypeError(f"{text} is out of range ({low} to {high:,})")
    return n


def id_arg(text: str) -> int:
    return _bounded(text, 1, MAX_ID, "an id")


def limit_arg(text: str) -> int:
    return _bounded(text, 1, MAX_LIMIT)


def capacity_arg(text: str) -> int:
    return _bounded(text, 1, MAX_CAPACITY)


# ---------------------------------------------------------------- text from users
# Notes, inputs, reasons, names and log lines shown in tables came from users or jobs: their
# control characters are shown escaped (`\x1b`), never sent live, so a note cannot hide or
# rewrite lines on a reviewer's screen (SPEC 10). `--json` carries the raw text.

_UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f"  # C0 (but tab) and C1 controls: ESC, CR, BS, CSI, …
    "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"  # bidi overrides, separators
    "\ud800-\udfff]"  # lone surrogates (bytes that were not UTF-8)
)
_UNSAFE_CELL = re.compile(_UNSAFE.pattern[:-1] + "\t]")  # in a table a tab breaks the columns too


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    c = ord(ch)
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str, *, cell: bool = False) -> str:
    """Text with its control characters escaped, safe to send to a terminal."""
    return (_UNSAFE_CELL if cell else _UNSAFE).sub(_escape_one, text)


# ---------------------------------------------------------------- output helpers


class Out:
    """Everything the CLI prints goes through here: lines and tables are escaped as a whole.

    Our own colours travel as markers with a per-process nonce (no stored text can forge
    one) and become escape sequences only after the user's text has been escaped.
    """

    def __init__(self, as_json: bool):
        self.json = as_json
        self.tty = sys.stdout.isatty()
        self.colour = self.tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self._mark = "\ue000" + secrets.token_hex(8)
        self._marks = re.compile(re.escape(self._mark) + r"(\d+)\ue001")

    def status(self, s: str) -> str:
        text = f"{GLYPHS.get(s, '?')} {s}"
        if self.colour and s in COLOURS:
            return f"{self._mark}{COLOURS[s]}\ue001{text}{self._mark}0\ue001"
        return text

    def _paint(self, text: str) -> str:
        return self._marks.sub(lambda m: f"\x1b[{m.group(1)}m", text)

    def _width(self, s: str) -> int:
        return len(self._marks.sub("", s))

    def emit(self, doc: Any) -> None:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")

    def line(self, text: str = "") -> None:
        sys.stdout.write(self._paint(printable(text)) + "\n")
        sys.stdout.flush()

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        cells = [[printable("" if c is None else str(c), cell=True) for c in r] for r in rows]
        widths = [max([len(h)] + [self._width(r[i]) for r in cells]) for i, h in enumerate(headers)]
        lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
        for r in cells:
            lines.append(
                "  ".join(c + " " * (w - self._width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
            )
        sys.stdout.write(self._paint("\n".join(lines)) + "\n")
        sys.stdout.flush()


def note(message: str) -> None:
    """One line on stderr: `sluice: what, where; hint` (escaped: it may quote a user's text)."""
    sys.stderr.write(f"sluice: {printable(message.removeprefix('sluice: '))}\n")
    sys.stderr.flush()


def ago(iso_time: str | None) -> str:
    if not iso_time:
        return ""
    from datetime import datetime

    from core.definitions.durations import format_duration

    t = datetime.fromisoformat(iso_time).timestamp()
    import time

    return format_duration(time.time() - t) + " ago"


def short_time(iso_time: str | None) -> str:
    return iso_time[:19].replace("T", " ") if iso_time else ""


# ---------------------------------------------------------------- the parser


def build_parser() -> Parser:
    p = Parser(prog="sluice", description="Stage it, review it, release it.")
    p.add_argument("--version", action="version", version=f"sluice {VERSION}")
    p.add_argument(
        "--project", metavar="DIR", help="project directory (default: walk up from here; or SLUICE_PROJECT)"
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)

    def cmd(parent: Any, name: str, help: str, json_flag: bool = True) -> Parser:
        c = parent.add_parser(name, help=help, description=help)
        if json_flag:
            c.add_argument("--json", action="store_true", help="one JSON document on stdout")
        return c

    c = sub.add_parser("tui", help="open the dashboard")
    c.add_argument("--read-only", action="store_true", help="no actions that change anything (for reviewers)")
    c.add_argument("--mouse", action="store_true", help="enable the mouse (off over SSH by default)")
    sub.add_parser(
        "demo", help="copy the demo project to a folder and open it in the dashboard"
    ).add_argument("dir", nargs="?", help="where to put the demo project (default: ./sluice-demo)")
    c = cmd(sub, "init", "write a small working project", json_flag=False)
    c.add_argument("dir", nargs="?", default=".")
    cmd(sub, "validate", "check every definition; exit 2 on problems")
    c = cmd(sub, "history", "the audit trail: every state change, newest first")
    c.add_argument("--limit", type=limit_arg, default=50, help=f"at most N events (1 to {MAX_LIMIT:,})")
    c.add_argument("--run", type=id_arg, help="only events of this run")

    eng = sub.add_parser("engine", help="control the background engine").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    c = cmd(eng, "start", "start the engine (detached unless --foreground)")
    c.add_argument("--foreground", action="store_true", help="stay attached (for service managers)")
    c = cmd(eng, "stop", "stop the engine after its running jobs finish")
    c.add_argument("--now", action="store_true", help="cancel running jobs instead of waiting for them")
    cmd(eng, "status", "is the engine running, and where")

    wf = sub.add_parser("workflow", help="workflows").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    cmd(wf, "list", "the project's workflows")
    cmd(wf, "show", "one workflow's definition and state").add_argument("name")
    c = cmd(wf, "run", "start a run and follow it until it finishes or waits on a hold")
    c.add_argument("name")
    c.add_argument("--input", "-i", action="append", metavar="K=V", help="an input (repeatable)")
    c.add_argument(
        "--pin", action="append", metavar="MATERIAL=REV", help="build from this revision (repeatable)"
    )
    c.add_argument("--detach", "-d", action="store_true", help="return the run id at once")

    c = cmd(wf, "queue", "stage a run of a workflow in the queue")
    c.add_argument("name")
    c.add_argument("--input", "-i", action="append", metavar="K=V", help="an input (repeatable)")
    c.add_argument(
        "--pin", action="append", metavar="MATERIAL=REV", help="build from this revision (repeatable)"
    )
    c.add_argument("--note", help="why this is staged (shown in the queue)")
    c = cmd(wf, "schedule", "stage a run that the engine starts at a time")
    c.add_argument("name")
    c.add_argument(
        "--at", required=True, metavar="TIME", help="ISO 8601, HH:MM (next occurrence), or +2h / +30m"
    )
    c.add_argument("--input", "-i", action="append", metavar="K=V", help="an input (repeatable)")
    c.add_argument("--note", help="why this is staged")
    for verb, text in (("release", "let a held job run"), ("reject", "refuse a held job: it fails the run")):
        c = cmd(wf, verb, text)
        c.add_argument("job")
        c.add_argument("--run", type=id_arg, help="the run (needed when several runs hold JOB)")
        c.add_argument("--workflow", "-w", help="only runs of this workflow")
        if verb == "release":
            c.add_argument("--comment", "-m", help="recorded with the release")
            c.add_argument("--field", "-f", action="append", metavar="K=V", help="a field the hold asks for")
        else:
            c.add_argument("--reason", "-m", required=True, help="why (required)")
    c = cmd(wf, "pause", "start no new runs of a workflow; ready jobs of its runs wait")
    c.add_argument("name")
    c.add_argument("--reason", "-m", required=True, help="why (required; shown to anyone refused)")
    cmd(wf, "unpause", "let a paused workflow start runs again").add_argument("name")
    cmd(wf, "unlock", "clear an until_success lock left by a failed run").add_argument("name")

    me = sub.add_parser("method", help="methods of models").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    cmd(me, "list", "every model's methods")
    c = cmd(me, "run", "run one method now and follow it")
    c.add_argument("model")
    c.add_argument("method")
    c.add_argument("--input", "-i", action="append", metavar="K=V", help="an input (repeatable)")
    c.add_argument("--detach", "-d", action="store_true", help="return the run id at once")

    for verb, text in (
        ("queue", "stage a method run in the queue"),
        ("schedule", "stage a method run that the engine starts at a time"),
    ):
        c = cmd(me, verb, text)
        c.add_argument("model")
        c.add_argument("method")
        if verb == "schedule":
            c.add_argument(
                "--at", required=True, metavar="TIME", help="ISO 8601, HH:MM (next occurrence), or +2h / +30m"
            )
        c.add_argument("--input", "-i", action="append", metavar="K=V", help="an input (repeatable)")
        c.add_argument("--note", help="why this is staged")

    qu = sub.add_parser("queue", help="the staged queue").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    for verb, text in (
        ("list", "staged items, oldest first"),
        ("execute", "start the selected items, each as exactly one run"),
        ("purge", "remove the selected items without running anything"),
    ):
        c = cmd(qu, verb, text)
        c.add_argument("ids", nargs="*", type=id_arg, metavar="ITEM_ID")
        c.add_argument("--all", action="store_true", help="every queued item")
        c.add_argument("--workflows", action="store_true", help="every queued workflow")
        c.add_argument("--methods", action="store_true", help="every queued method")
        c.add_argument("--workflow", metavar="NAME", help="queued runs of this workflow")
        c.add_argument("--method", metavar="NAME", help="queued runs of this method (METHOD or MODEL.METHOD)")
        if verb != "list":
            c.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        if verb == "execute":
            c.add_argument("--wait", action="store_true", help="follow the started runs until they finish")
        if verb == "list":
            c.add_argument(
                "--limit", type=limit_arg, default=None, help=f"at most N items (1 to {MAX_LIMIT:,})"
            )

    ag = sub.add_parser("agent", help="agents: workers that run jobs").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    cmd(ag, "list", "agents with environments, resources, state, current jobs, heartbeat")
    c = cmd(ag, "start", "run an agent here (in the foreground) for this project's database", json_flag=False)
    c.add_argument("--name", required=True)
    c.add_argument("--env", action="append", default=[], metavar="ENV", help="an environment (repeatable)")
    c.add_argument("--resource", action="append", default=[], metavar="R", help="a resource (repeatable)")
    c.add_argument("--capacity", type=capacity_arg, default=None, help="jobs at once (default: CPU count)")
    cmd(ag, "enable", "let an agent take jobs again").add_argument("name")
    cmd(ag, "disable", "an agent finishes its current jobs and takes no more").add_argument("name")

    db = sub.add_parser("db", help="the state database").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    c = cmd(db, "copy", "copy this project's state (all history) into another, empty database")
    c.add_argument(
        "--to", required=True, metavar="URL", help="e.g. postgresql+psycopg://sluice@db-host/sluice"
    )

    ru = sub.add_parser("run", help="runs").add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    c = cmd(ru, "list", "runs, newest first")
    c.add_argument("--workflow", "-w")
    c.add_argument(
        "--status", "-s", choices=["pending", "running", "on_hold", "succeeded", "failed", "cancelled"]
    )
    c.add_argument("--order", choices=["schedule", "natural"], default="schedule")
    c.add_argument("--limit", "-n", type=limit_arg, default=20, help=f"at most N runs (1 to {MAX_LIMIT:,})")
    cmd(ru, "show", "one run with its jobs").add_argument("run", type=id_arg)
    c = cmd(ru, "logs", "a run's output", json_flag=True)
    c.add_argument("run", type=id_arg)
    c.add_argument("--job", "-j")
    c.add_argument("--follow", "-f", action="store_true", help="keep printing until the run finishes")
    c = cmd(ru, "cancel", "cancel a run: SIGTERM to its jobs' processes, SIGKILL after 10s")
    c.add_argument("run", type=id_arg)
    c.add_argument("--wait", action="store_true", help="wait until the run has stopped")
    return p


# ---------------------------------------------------------------- opening the project


def project_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.project) if args.project else None


def open_service(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from core.service import Service

    return Service.open(project_dir(args))


def ensure_engine(svc: Any) -> None:
    from core.engine import control

    info = control.ensure(svc.project.root)
    if info is not None:
        note(
            f"started the engine in the background (pid {info.get('pid')}); "
            f"runs go on if this terminal closes. Log: .sluice/engine.log"
        )


# ---------------------------------------------------------------- commands


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


def do_engine(args: argparse.Namespace, out: Out) -> int:
    from core.definitions import find_project_root
    from core.engine import control

    root = find_project_root(project_dir(args)) if args.project else find_project_root()
    if args.sub == "status":
        info = control.status(root)
        if out.json:
            out.emit({"running": bool(info), **(info or {})})
        elif info:
            out.line(f"engine running: pid {info.get('pid')} on {info.get('host')}")
        else:
            out.line("engine not running ('sluice engine start' starts it)")
        return 0 if info else 3  # as `systemctl status` does (SPEC 10)
    if args.sub == "stop":
        result = control.stop(root, now=args.now)
        if out.json:
            out.emit(result.as_json())
        elif result.gone:
            out.line(result.message)
        else:
            note(result.message)
        return 0 if result.gone else 1
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


def do_workflow(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    if args.sub == "list":
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
                    (f"#{w['last_run']['id']} " + out.status(w["last_run"]["status"]))
                    if w["last_run"]
                    else "",
                    short_time(w["next_fire"]),
                    w["description"],
                ]
                for w in rows
            ],
        )
        return 0
    if args.sub == "show":
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
    if args.sub in ("queue", "schedule"):
        return stage(args, out, svc, "workflow", svc.workflow(args.name).name)
    if args.sub in ("release", "reject"):
        return do_hold(args, out, svc)
    if args.sub in ("pause", "unpause", "unlock"):
        from core import flow

        if args.sub == "pause":
            st = flow.pause(svc, args.name, args.reason)
            msg = f"paused {args.name}: new runs are refused and ready jobs wait"
        elif args.sub == "unpause":
            st = flow.unpause(svc, args.name)
            msg = f"unpaused {args.name}"
        else:
            st = flow.unlock(svc, args.name)
            msg = f"unlocked {args.name}"
        if out.json:
            out.emit({"workflow": args.name, **st})
        else:
            out.line(msg)
        return 0
    pins = _pins(args)
    return start_and_follow(args, out, svc, lambda inputs: svc.run_workflow(args.name, inputs, pins=pins))


def _pins(args: argparse.Namespace) -> dict[str, str]:
    from core.definitions import parse_pairs

    return parse_pairs(getattr(args, "pin", None), "--pin")


def _wf_state(w: dict[str, Any]) -> str:
    if w["paused"]:
        return f"paused by {(w['paused_by'] or '').split('@')[0]}: {w['pause_reason']}"
    if w["locked_by_run"]:
        return f"locked by run #{w['locked_by_run']} ({w['lock']})"
    return "ready"


def stage(args: argparse.Namespace, out: Out, svc: Any, kind: str, target: str) -> int:
    from core import queueing
    from core.definitions import parse_pairs

    inputs = parse_pairs(args.input)
    at = queueing.parse_at(args.at, svc.project.timezone) if getattr(args, "at", None) is not None else None
    item = queueing.add(svc, kind, target, inputs, note=args.note, at=at, pins=_pins(args) or None)
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


def do_hold(args: argparse.Namespace, out: Out, svc: Any) -> int:
    from core import holds
    from core.definitions import parse_pairs

    if args.sub == "release":
        fields = parse_pairs(args.field, "--field")
        view = holds.release(
            svc, args.job, run_id=args.run, workflow=args.workflow, comment=args.comment, fields=fields
        )
        ensure_engine(svc)
        msg = f"released {args.job} in run #{view['id']}"
    else:
        view = holds.reject(svc, args.job, reason=args.reason, run_id=args.run, workflow=args.workflow)
        ensure_engine(svc)
        msg = f"rejected {args.job} in run #{view['id']}: the run fails"
    if out.json:
        out.emit(view)
    else:
        out.line(msg)
    return 0


def do_queue(args: argparse.Namespace, out: Out) -> int:
    from core import queueing

    svc = open_service(args)
    sel = queueing.Selector(
        all=args.all,
        workflows=args.workflows,
        methods=args.methods,
        workflow=args.workflow,
        method=args.method,
        ids=list(args.ids),
    )
    sel.check(svc)  # a workflow or method the project does not define: exit 4, did-you-mean
    if args.sub == "list":
        items = queueing.select(svc, sel if sel.given() else None, limit=args.limit)
        if out.json:
            out.emit(items)
            return 0
        if not items:
            out.line("the queue is empty" if not sel.given() else f"nothing queued for {sel.describe()}")
            return 0
        render_items(out, items)
        return 0
    if not sel.given():
        raise UsageError(
            f"queue {args.sub}: choose items: --all, --workflows, --methods, "
            "--workflow NAME, --method NAME, or ITEM_ID..."
        )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not args.yes and not interactive and sel.bulk:
        raise UsageError(f"queue {args.sub} {sel.describe()}: --yes is required without a terminal")
    queueing.check_ids(svc, sel)
    items = queueing.select(svc, sel)
    if not items:
        if out.json:
            out.emit([])
        else:
            out.line(f"nothing queued for {sel.describe()}")
        return 0
    if not args.yes:
        if interactive:
            render_items(out, items)
            verb = "Execute" if args.sub == "execute" else "Purge"
            answer = input(f"{verb} these {len(items)} item(s)? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                out.line("nothing was changed")
                return 0
    ids = [i["id"] for i in items]
    if args.sub == "purge":
        purged = queueing.purge(svc, ids)
        if out.json:
            out.emit(purged)
        else:
            for i in purged:
                out.line(f"purged #{i['id']}: {i['kind']} {i['target']}{_inputs_text(i['inputs'])}")
        return 0
    outcomes = queueing.execute(svc, ids)
    started = [o for o in outcomes if o.run_id]
    if started:
        ensure_engine(svc)
    if not out.json:
        for o in outcomes:
            i = o.item
            label = f"#{i['id']} {i['kind']} {i['target']}{_inputs_text(i['inputs'])}"
            if o.run_id:
                out.line(f"started {label} as run #{o.run_id}")
            elif o.refused:
                note(f"{label} stays queued: {o.refused}")
            else:
                note(f"{label} was already executed or purged by someone else")
    code = 0 if started or not any(o.refused for o in outcomes) else 3
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
        out.emit([{**o.item, "refused": o.refused} for o in outcomes])
    return code


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


def do_method(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    if args.sub == "list":
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
    if args.sub in ("queue", "schedule"):
        return stage(args, out, svc, "method", svc.method(args.model, args.method).target)
    return start_and_follow(args, out, svc, lambda inputs: svc.run_method(args.model, args.method, inputs))


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


LOG_BATCH = 50  # log chunks read at a time by `run logs`: at most ~3 MiB in memory


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


def do_run(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    if args.sub == "list":
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
    if args.sub == "show":
        view = svc.run_view(args.run)
        if out.json:
            out.emit(view)
            return 0
        out.line(f"run #{view['id']} {view['kind']} {view['target']}: {out.status(view['status'])}")
        out.line(f"  trigger {view['trigger']} by {view['created_by']} at {short_time(view['created_at'])}")
        if view["parent_run_id"]:
            out.line(f"  parent run #{view['parent_run_id']}")
        if view["inputs"]:
            out.line("  inputs: " + ", ".join(f"{k}={v}" for k, v in view["inputs"].items()))
        for m in view["materials"]:
            out.line(f"  material {m['name']}: {m['revision']} ({short_time(m['timestamp'])})")
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
                            f"released by {j['released_by']}" if j["released_by"] else "",
                        ]
                        if x
                    ),
                ]
                for j in view["jobs"]
            ],
        )
        return 0
    if args.sub == "logs":
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
    # cancel
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


def _job_summary(jobs: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    return " ".join(f"{GLYPHS.get(s, '?')}{n}" for s, n in counts.items())


def do_agent(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    if args.sub == "list":
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
    if args.sub in ("enable", "disable"):
        row = svc.set_agent_enabled(args.name, args.sub == "enable")
        if out.json:
            out.emit(row)
        else:
            out.line(
                f"agent {args.name} {args.sub}d"
                + (": it finishes its current jobs and takes no more" if args.sub == "disable" else "")
            )
        return 0
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


def do_db(args: argparse.Namespace, out: Out) -> int:
    from core.engine import control
    from core.errors import Refused
    from core.store.copy import copy
    from core.store.db import Database

    svc = open_service(args)
    if control.status(svc.project.root):
        raise Refused(
            "the engine is running: stop it first (sluice engine stop), so nothing changes mid-copy"
        )
    target = Database(args.to)
    if target.url == svc.db.url:
        raise Refused("the target is the project's own database")
    counts = copy(svc.db, target)
    if out.json:
        out.emit({"copied": counts, "to": target.where})
    else:
        out.line(
            f"copied {sum(counts.values()):,} rows ({counts['runs']:,} runs, {counts['events']:,} events, "
            f"{counts['queue_items']:,} queue items) to {target.where}"
        )
        out.line(
            f"next: set 'database: {args.to}' in sluice.yaml (or SLUICE_DATABASE_URL) and start the engine"
        )
    return 0


def do_history(args: argparse.Namespace, out: Out) -> int:
    svc = open_service(args)
    rows = svc.history(args.limit, run_id=args.run)
    if out.json:
        out.emit(rows)
        return 0
    out.table(
        ["time", "actor", "event", "what"],
        [[short_time(e["at"]), e["actor"], e["kind"], e["message"]] for e in rows],
    )
    return 0


def do_tui(args: argparse.Namespace, out: Out) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("tui: the dashboard needs a terminal")
    from .app import run_dashboard

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
    from .app import run_dashboard

    return run_dashboard(target)


HANDLERS = {
    "validate": do_validate,
    "init": do_init,
    "engine": do_engine,
    "workflow": do_workflow,
    "method": do_method,
    "run": do_run,
    "history": do_history,
    "queue": do_queue,
    "agent": do_agent,
    "db": do_db,
    "tui": do_tui,
    "demo": do_demo,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--version", "-V"):
        sys.stdout.write(f"sluice {VERSION}\n")
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        note(str(e))
        return 2
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
            note(f"argument '{arg}' is not UTF-8 text; nothing was changed")
            return 2
    if args.project:
        os.environ["SLUICE_PROJECT"] = str(Path(args.project).resolve())
    if not args.cmd:
        if sys.stdin.isatty() and sys.stdout.isatty():
            args.cmd, args.read_only = "tui", False
        else:
            parser.print_help()
            return 0
    out = Out(getattr(args, "json", False))
    return run_handler(HANDLERS[args.cmd], args, out)


def run_handler(handler: Any, args: argparse.Namespace, out: Out) -> int:
    from core.definitions import DefinitionError, InputError, ProjectNotFound
    from core.errors import SluiceError
    from core.store.db import StoreError, StoreUnavailable

    try:
        return handler(args, out)
    except DefinitionError as e:
        for p in e.problems:
            sys.stderr.write(f"{printable(str(p))}\n")
        note(f"{len(e.problems)} problem(s) in the definitions; nothing was changed")
        if out.json:
            out.emit(
                {
                    "valid": False,
                    "problems": [
                        {"path": p.path, "line": p.line, "col": p.col, "message": p.message}
                        for p in e.problems
                    ],
                }
            )
        return 2
    except ProjectNotFound as e:
        note(str(e))
        return 4
    except SluiceError as e:
        note(e.message)
        return e.code
    except InputError as e:  # a malformed --input/--field/--pin: invalid usage
        note(str(e))
        return 2
    except StoreUnavailable as e:  # busy past the timeout, disk full, unreachable: try again later
        note(f"{e}; nothing was changed, try again")
        return 75
    except StoreError as e:
        note(str(e))
        return 2
    except UsageError as e:
        note(str(e))
        return 2
    except RuntimeError as e:
        note(str(e))
        return 1
    except BrokenPipeError:
        return 0
    except OSError as e:  # e.g. a database path under a file: one line, never a traceback
        import errno

        where = f" ({e.filename})" if e.filename else ""
        note(f"{e.strerror or e}{where}")
        return 75 if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EAGAIN) else 2


if __name__ == "__main__":
    sys.exit(main())
