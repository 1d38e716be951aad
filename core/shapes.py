"""Typed shapes: a run's plan (stored as JSON with the run) and the JSON documents of SPEC 10.

TypedDicts, not classes: both are plain JSON on the wire and in the database, and the type
checker holds every producer to the same keys.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# ---------------------------------------------------------------- the plan (core/plan.py)


class InputSpecPlan(TypedDict):
    name: str
    type: str
    required: bool
    default: Any
    enum: list[Any] | None
    pattern: str | None
    description: str
    secret: bool


class HoldPlan(TypedDict, total=False):
    prompt: str
    approvers: list[str]
    fields: dict[str, InputSpecPlan]
    timeout: float | None
    approvals: int  # distinct approvers needed (plans made before SPEC 13 have none: 1)
    four_eyes: bool  # the requester may not approve (resolved against sluice.yaml's default)


class TriggerPlan(TypedDict):
    workflow: str
    inputs: dict[str, str]
    wait: bool


class RetryPlan(TypedDict):
    limit: int
    exit_codes: list[int] | None


class StepPlan(TypedDict):
    name: str
    when: str
    run: str | list[str] | None
    method: str | None
    with_: NotRequired[dict[str, str]]
    method_inputs: NotRequired[dict[str, InputSpecPlan]]
    method_env: NotRequired[dict[str, str]]


# `if` is a keyword: the functional form names it
JobPlan = TypedDict(
    "JobPlan",
    {
        "name": str,
        "position": int,
        "needs": list[str],
        "if": str,
        "hold": HoldPlan | None,
        "group": str | None,
        "concurrency": int,
        "parallelism": int,
        "run_on_all_agents": bool,
        "resources": list[str],
        "trigger": TriggerPlan | None,
        "timeout": float | None,
        "retry": RetryPlan | None,
        "env": dict[str, str],
        "steps": list[StepPlan],
    },
)


class MaterialPlan(TypedDict, total=False):
    git: str
    branch: str | None
    workflow: str
    trigger: bool


class Plan(TypedDict):
    kind: Literal["workflow", "method"]
    name: str
    environment: str | None
    lock: str
    inputs: dict[str, InputSpecPlan]
    jobs: dict[str, JobPlan]
    materials: NotRequired[dict[str, MaterialPlan]]


# ---------------------------------------------------------------- SPEC 10 JSON shapes


class ItemView(TypedDict):
    id: int
    kind: str
    target: str
    inputs: dict[str, Any]
    status: str
    queued_by: str
    queued_at: str | None
    not_before: str | None
    note: str | None
    run_id: int | None


class MaterialView(TypedDict):
    name: str
    revision: str
    timestamp: str | None


class JobView(TypedDict):
    name: str
    status: str
    reason: str | None
    agent: str | None
    exit_code: int | None
    started_at: str | None
    finished_at: str | None
    outputs: dict[str, str]
    released_by: str | None
    released_at: str | None
    comment: str | None
    approvals: list[dict[str, Any]]  # holds needing several: {by, at, comment}, in order
    break_glass: str | None  # released past four-eyes or approvals: the reason given
    fields: dict[str, str]  # what the releaser gave (secrets masked)


class RunView(TypedDict):
    id: int
    kind: str
    target: str
    status: str
    trigger: str
    created_by: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    inputs: dict[str, Any]
    parent_run_id: int | None
    rerun_of: int | None
    break_glass: str | None  # started past a closed window or a freeze: the reason given
    materials: list[MaterialView]
    jobs: list[JobView]


class EventView(TypedDict):
    id: int
    at: str | None
    actor: str
    kind: str
    run_id: int | None
    job_id: int | None
    item_id: int | None
    workflow: str | None
    message: str
    details: dict[str, Any]
