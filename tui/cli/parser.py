"""The command tree: every command, its arguments and its handler (`set_defaults(handler=...)`).

An option that several commands take is defined once, as a parent parser, and given to each
of them with `parents=[...]`. A handler is named ("queue.do_execute": do_execute in queue.py)
and imported only when its command runs.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from .common import UsageError
from .render import Out

VERSION = "0.1.0"


class Handler:
    """A command's handler, "module.function" in this package, imported when the command runs:
    `sluice --help` and `sluice --version` do not load the modules of every command."""

    def __init__(self, ref: str) -> None:
        self.module, self.function = ref.split(".")

    def __call__(self, args: argparse.Namespace, out: Out) -> int:
        from importlib import import_module

        return getattr(import_module(f"{__package__}.{self.module}"), self.function)(args, out)

    def __repr__(self) -> str:
        return f"Handler('{self.module}.{self.function}')"


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


# ---------------------------------------------------------------- the parser


def _option(*flags: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A parent parser holding one option, for `parents=[...]`."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(*flags, **kwargs)
    return p


def _actions(sub: Any) -> Any:
    """The ACTION subcommands of a command group (`sluice engine ACTION`)."""
    return sub.add_subparsers(dest="sub", metavar="ACTION", parser_class=Parser, required=True)


def build_parser() -> Parser:
    # ---- options several commands take, each defined once
    as_json = _option("--json", action="store_true", help="one JSON document on stdout")
    inputs = _option("--input", "-i", action="append", metavar="K=V", help="an input (repeatable)")
    pins = _option(
        "--pin", action="append", metavar="MATERIAL=REV", help="build from this revision (repeatable)"
    )
    detach = _option("--detach", "-d", action="store_true", help="return the run id at once")
    at = _option(
        "--at", required=True, metavar="TIME", help="ISO 8601, HH:MM (next occurrence), or +2h / +30m"
    )
    note = _option("--note", help="why this is staged")
    yes = _option("--yes", "-y", action="store_true", help="do not ask for confirmation")
    # an emergency override (sluice.yaml's break_glass group), always with a reason
    glass = argparse.ArgumentParser(add_help=False)
    glass.add_argument(
        "--break-glass", action="store_true", help="override (members of sluice.yaml's break_glass group)"
    )
    glass.add_argument("--reason", help="why the override cannot wait (required with --break-glass)")

    # what a command acts on: `workflow ... NAME`, `method ... MODEL METHOD`
    workflow_name = argparse.ArgumentParser(add_help=False)
    workflow_name.add_argument("name")
    model_method = argparse.ArgumentParser(add_help=False)
    model_method.add_argument("model")
    model_method.add_argument("method")

    # which held job: `workflow release` and `workflow reject`
    held = argparse.ArgumentParser(add_help=False)
    held.add_argument("job")
    held.add_argument("--run", type=id_arg, help="the run (needed when several runs hold JOB)")
    held.add_argument("--workflow", "-w", help="only runs of this workflow")

    # which queued items: `queue list`, `queue execute`, `queue purge`
    items = argparse.ArgumentParser(add_help=False)
    items.add_argument("ids", nargs="*", type=id_arg, metavar="ITEM_ID")
    items.add_argument("--all", action="store_true", help="every queued item")
    items.add_argument("--workflows", action="store_true", help="every queued workflow")
    items.add_argument("--methods", action="store_true", help="every queued method")
    items.add_argument("--workflow", metavar="NAME", help="queued runs of this workflow")
    items.add_argument("--method", metavar="NAME", help="queued runs of this method (METHOD or MODEL.METHOD)")

    def cmd(
        group: Any,
        name: str,
        help: str,
        handler: str,
        *parents: argparse.ArgumentParser,
        json: bool = True,
    ) -> Parser:
        c = group.add_parser(
            name, help=help, description=help, parents=[as_json, *parents] if json else list(parents)
        )
        c.set_defaults(handler=Handler(handler))
        return c

    p = Parser(prog="sluice", description="Stage it, review it, release it.")
    p.add_argument("--version", action="version", version=f"sluice {VERSION}")
    p.add_argument(
        "--project", metavar="DIR", help="project directory (default: walk up from here; or SLUICE_PROJECT)"
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)

    # ---- the project
    c = sub.add_parser("tui", help="open the dashboard")
    c.add_argument("--read-only", action="store_true", help="no actions that change anything (for reviewers)")
    c.add_argument("--mouse", action="store_true", help="enable the mouse (off over SSH by default)")
    c.set_defaults(handler=Handler("project.do_tui"))
    c = sub.add_parser("demo", help="copy the demo project to a folder and open it in the dashboard")
    c.add_argument("dir", nargs="?", help="where to put the demo project (default: ./sluice-demo)")
    c.set_defaults(handler=Handler("project.do_demo"))
    c = cmd(sub, "init", "write a small working project", "project.do_init", json=False)
    c.add_argument("dir", nargs="?", default=".")
    cmd(sub, "validate", "check every definition; exit 2 on problems", "project.do_validate")
    c = cmd(sub, "history", "the audit trail: every state change, newest first", "history.do_history")
    c.add_argument("--limit", type=limit_arg, default=50, help=f"at most N events (1 to {MAX_LIMIT:,})")
    c.add_argument("--run", type=id_arg, help="only events of this run")
    c.add_argument("--break-glass", action="store_true", help="only the emergency overrides (break_glass)")
    hist = c.add_subparsers(dest="sub", metavar="ACTION", parser_class=Parser, required=False)
    cmd(
        hist,
        "verify",
        "check the chained history; exit 1 naming the first event changed, inserted or removed",
        "history.do_verify",
    )
    c = cmd(
        hist, "export", "the sealed events with their hashes, as JSON lines", "history.do_export", json=False
    )
    c.add_argument("--since", type=id_arg, metavar="ID", help="only the events sealed after event ID")

    # ---- sluice freeze / unfreeze
    c = cmd(
        sub,
        "freeze",
        "start no new run anywhere (except --except) until unfreeze or --until",
        "flow.do_freeze",
    )
    c.add_argument("--reason", "-m", required=True, help="why (required; shown to anyone refused)")
    c.add_argument("--until", metavar="TIME", help="ISO 8601, HH:MM (next occurrence), or +2h / +30m")
    c.add_argument(
        "--except",
        dest="except_",
        action="append",
        default=[],
        metavar="WORKFLOW",
        help="a workflow that may still start (repeatable)",
    )
    cmd(sub, "unfreeze", "lift the freezes set with sluice freeze", "flow.do_unfreeze")

    # ---- sluice engine ...
    eng = _actions(sub.add_parser("engine", help="control the background engine"))
    c = cmd(eng, "start", "start the engine (detached unless --foreground)", "engine.do_start")
    c.add_argument("--foreground", action="store_true", help="stay attached (for service managers)")
    c = cmd(eng, "stop", "stop the engine after its running jobs finish", "engine.do_stop")
    c.add_argument("--now", action="store_true", help="cancel running jobs instead of waiting for them")
    cmd(eng, "status", "is the engine running, and where", "engine.do_status")

    # ---- sluice workflow ...
    wf = _actions(sub.add_parser("workflow", help="workflows"))
    cmd(wf, "list", "the project's workflows", "workflow.do_list")
    cmd(wf, "show", "one workflow's definition and state", "workflow.do_show", workflow_name)
    text = "start a run and follow it until it finishes or waits on a hold"
    cmd(wf, "run", text, "workflow.do_run", workflow_name, inputs, pins, detach, glass)
    text = "stage a run of a workflow in the queue"
    c = cmd(wf, "queue", text, "workflow.do_stage", workflow_name, inputs, pins)
    c.add_argument("--note", help="why this is staged (shown in the queue)")  # its help says more than `note`
    text = "stage a run that the engine starts at a time"
    cmd(wf, "schedule", text, "workflow.do_stage", workflow_name, at, inputs, note)
    c = cmd(wf, "release", "let a held job run", "workflow.do_release", held, glass)
    c.add_argument("--comment", "-m", help="recorded with the release")
    c.add_argument("--field", "-f", action="append", metavar="K=V", help="a field the hold asks for")
    c = cmd(wf, "reject", "refuse a held job: it fails the run", "workflow.do_reject", held)
    c.add_argument("--reason", "-m", required=True, help="why (required)")
    text = "start no new runs of a workflow; ready jobs of its runs wait"
    c = cmd(wf, "pause", text, "workflow.do_pause", workflow_name)
    c.add_argument("--reason", "-m", required=True, help="why (required; shown to anyone refused)")
    cmd(wf, "unpause", "let a paused workflow start runs again", "workflow.do_unpause", workflow_name)
    text = "clear an until_success lock left by a failed run"
    cmd(wf, "unlock", text, "workflow.do_unlock", workflow_name)

    # ---- sluice method ...
    me = _actions(sub.add_parser("method", help="methods of models"))
    cmd(me, "list", "every model's methods", "method.do_list")
    cmd(me, "run", "run one method now and follow it", "method.do_run", model_method, inputs, detach, glass)
    cmd(me, "queue", "stage a method run in the queue", "method.do_stage", model_method, inputs, note)
    text = "stage a method run that the engine starts at a time"
    cmd(me, "schedule", text, "method.do_stage", model_method, at, inputs, note)

    # ---- sluice queue ...
    qu = _actions(sub.add_parser("queue", help="the staged queue"))
    c = cmd(qu, "list", "staged items, oldest first", "queue.do_list", items)
    c.add_argument("--limit", type=limit_arg, default=None, help=f"at most N items (1 to {MAX_LIMIT:,})")
    c = cmd(
        qu, "execute", "start the selected items, each as exactly one run", "queue.do_execute", items, yes
    )
    c.add_argument("--wait", action="store_true", help="follow the started runs until they finish")
    cmd(qu, "purge", "remove the selected items without running anything", "queue.do_purge", items, yes)
    text = "what executing an item would do now, and whether it could start"
    cmd(qu, "show", text, "queue.do_show").add_argument("id", type=id_arg, metavar="ITEM_ID")
    text = "put purged items back in the queue, in their old places"
    cmd(qu, "restore", text, "queue.do_restore").add_argument(
        "ids", nargs="+", type=id_arg, metavar="ITEM_ID"
    )

    # ---- sluice agent ...
    ag = _actions(sub.add_parser("agent", help="agents: workers that run jobs"))
    cmd(ag, "list", "agents with environments, resources, state, current jobs, heartbeat", "agent.do_list")
    text = "run an agent here (in the foreground) for this project's database"
    c = cmd(ag, "start", text, "agent.do_start", json=False)
    c.add_argument("--name", required=True)
    c.add_argument("--env", action="append", default=[], metavar="ENV", help="an environment (repeatable)")
    c.add_argument("--resource", action="append", default=[], metavar="R", help="a resource (repeatable)")
    c.add_argument("--capacity", type=capacity_arg, default=None, help="jobs at once (default: CPU count)")
    cmd(ag, "enable", "let an agent take jobs again", "agent.do_enable").add_argument("name")
    text = "an agent finishes its current jobs and takes no more"
    cmd(ag, "disable", text, "agent.do_disable").add_argument("name")

    # ---- sluice db ...
    db = _actions(sub.add_parser("db", help="the state database"))
    text = "copy this project's state (all history) into another, empty database"
    c = cmd(db, "copy", text, "db.do_copy")
    c.add_argument(
        "--to", required=True, metavar="URL", help="e.g. postgresql+psycopg://sluice@db-host/sluice"
    )

    # ---- sluice run ...
    ru = _actions(sub.add_parser("run", help="runs"))
    c = cmd(ru, "list", "runs, newest first", "run.do_list")
    c.add_argument("--workflow", "-w")
    c.add_argument(
        "--status", "-s", choices=["pending", "running", "on_hold", "succeeded", "failed", "cancelled"]
    )
    c.add_argument("--order", choices=["schedule", "natural"], default="schedule")
    c.add_argument("--limit", "-n", type=limit_arg, default=20, help=f"at most N runs (1 to {MAX_LIMIT:,})")
    cmd(ru, "show", "one run with its jobs", "run.do_show").add_argument("run", type=id_arg)
    c = cmd(ru, "logs", "a run's output", "run.do_logs")
    c.add_argument("run", type=id_arg)
    c.add_argument("--job", "-j")
    c.add_argument("--follow", "-f", action="store_true", help="keep printing until the run finishes")
    text = "start a run again: same target, inputs and material revisions"
    c = cmd(ru, "rerun", text, "run.do_rerun", detach)
    c.add_argument("run", type=id_arg)
    c.add_argument("--failed", action="store_true", help="carry over the jobs that succeeded; run the rest")
    c = cmd(ru, "cancel", "cancel a run: SIGTERM to its jobs' processes, SIGKILL after 10s", "run.do_cancel")
    c.add_argument("run", type=id_arg)
    c.add_argument("--wait", action="store_true", help="wait until the run has stopped")
    return p
