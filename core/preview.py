"""`queue show` (SPEC 14): what executing a queued item would do now, without doing it."""

from __future__ import annotations

from typing import Any, TypedDict

from . import gates, windows
from .agents.agent import agent_rows, matches
from .definitions.objects import AgentSpec
from .errors import NotFound, SluiceError
from .materials import resolve
from .plan import method_plan, workflow_plan
from .queueing import _specs, item_view
from .service import Service
from .shapes import ItemView, Plan
from .store.db import loads
from .times import iso


class Blocker(TypedDict):
    kind: str  # executed | purged | missing | paused | locked | window | freeze | material | agents
    message: str


class JobPreview(TypedDict):
    name: str
    needs: list[str]
    condition: str  # the job's `if:`
    parallelism: int
    run_on_all_agents: bool
    resources: list[str]
    group: str | None
    hold: dict[str, Any] | None  # prompt, approvers, fields, timeout
    trigger: dict[str, Any] | None  # workflow, wait
    agents: list[str]  # enabled agents that could take it now (none for a trigger job)


class Preview(TypedDict):
    item: ItemView
    can_start: bool
    blockers: list[Blocker]
    environment: str | None
    jobs: list[JobPreview]
    materials: list[dict[str, Any]]


def preview(svc: Service, item_id: int) -> Preview:
    row = svc.db.one("SELECT * FROM queue_items WHERE id = ?", (item_id,))
    if row is None:
        raise NotFound(f"no queue item #{item_id}")
    item = item_view(row, _specs(svc, row["kind"], row["target"]))
    blockers: list[Blocker] = []
    if row["status"] == "executed":
        blockers.append({"kind": "executed", "message": f"already executed as run #{row['run_id']}"})
    elif row["status"] == "purged":
        blockers.append(
            {
                "kind": "purged",
                "message": f"purged by {row['closed_by']} at {iso(row['closed_at'])} "
                f"(sluice queue restore {item_id} puts it back)",
            }
        )
    plan = _plan(svc, row)
    if plan is None:
        blockers.append({"kind": "missing", "message": f"{row['kind']} {row['target']} no longer exists"})
        return {
            "item": item,
            "can_start": False,
            "blockers": blockers,
            "environment": None,
            "jobs": [],
            "materials": [],
        }
    if plan["kind"] == "workflow":
        blockers += _gates(svc, plan)
    closed = windows.closure(svc.project, svc.db, plan["kind"], plan["name"])
    if closed is not None:  # outside its window (execute defers it to the opening), or frozen
        blockers.append({"kind": closed.kind, "message": closed.message})
    materials: list[dict[str, Any]] = []
    try:
        pins = loads(row["pins"], {})
        materials = [
            {"name": m["name"], "revision": m["revision"], "timestamp": iso(m["timestamp"])}
            for m in resolve(svc.db, plan, pins)
        ]
    except SluiceError as e:
        blockers.append({"kind": "material", "message": e.message})
    agents = _agents(svc)
    jobs: list[JobPreview] = []
    for name, spec in plan["jobs"].items():
        fit = [] if spec.get("trigger") else [a["name"] for a in agents if matches(a, plan, spec)]
        hold = spec.get("hold")
        trigger = spec.get("trigger")
        jobs.append(
            {
                "name": name,
                "needs": list(spec["needs"]),
                "condition": spec["if"],
                "parallelism": spec.get("parallelism") or 1,
                "run_on_all_agents": bool(spec.get("run_on_all_agents")),
                "resources": list(spec.get("resources") or []),
                "group": spec.get("group"),
                "hold": (
                    {
                        "prompt": hold["prompt"],
                        "approvers": list(hold["approvers"] or []),
                        "fields": list(hold["fields"]),
                        "timeout": hold["timeout"],
                        "approvals": hold.get("approvals") or 1,
                        "four_eyes": bool(hold.get("four_eyes")),
                    }
                    if hold
                    else None
                ),
                "trigger": {"workflow": trigger["workflow"], "wait": trigger["wait"]} if trigger else None,
                "agents": fit,
            }
        )
        if not trigger and not fit:
            env = plan.get("environment")
            where = f"in {env}" if env else "in no environment"
            res = spec.get("resources") or []
            needs = f" with resources [{', '.join(res)}]" if res else ""
            blockers.append({"kind": "agents", "message": f"job {name}: no enabled agent {where}{needs}"})
    return {
        "item": item,
        "can_start": not blockers,
        "blockers": blockers,
        "environment": plan.get("environment"),
        "jobs": jobs,
        "materials": materials,
    }


def _agents(svc: Service) -> list[dict[str, Any]]:
    """The agents that could take a job once the item starts: the enabled ones that are alive,
    and the engine's own (sluice.yaml's, or `local`), which the engine starts with it."""
    rows = {a["name"]: a for a in agent_rows(svc.db)}
    own = list(svc.project.agents.values()) or [AgentSpec("local")]
    out = [a for a in rows.values() if a["enabled"] and not a["lost"]]
    for spec in own:
        row = rows.get(spec.name)
        if row is None or (row["enabled"] and row["lost"]):
            out.append({"name": spec.name, "environments": spec.environments, "resources": spec.resources})
    return sorted(out, key=lambda a: a["name"])


def _plan(svc: Service, row: dict[str, Any]) -> Plan | None:
    if row["kind"] == "workflow":
        wf = svc.project.workflows.get(row["target"])
        return workflow_plan(svc.project, wf) if wf else None
    method = svc.project.method(row["target"])
    return method_plan(method) if method else None


def _gates(svc: Service, plan: Plan) -> list[Blocker]:
    """Pause and lock, read as the start would check them (gates.refusal), without taking locks."""
    out: list[Blocker] = []
    name = plan["name"]
    state = svc.db.one("SELECT * FROM workflow_states WHERE workflow = ?", (name,))
    if state and state["paused"]:
        out.append(
            {
                "kind": "paused",
                "message": f"workflow {name} is paused by {state['paused_by']} at "
                f"{iso(state['paused_at'])}: {state['pause_reason']}",
            }
        )
    lock = plan.get("lock", "none")
    holder = gates.lock_holder(svc.db, name, lock)
    if holder is not None:
        out.append(
            {
                "kind": "locked",
                "message": f"workflow {name} is locked by run #{holder['id']} ({holder['status']}, lock: {lock})",
            }
        )
    return out
