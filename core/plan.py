"""A run's plan: the snapshot of its definition taken when the run is created.

The engine executes the plan, never the YAML, so editing a workflow does not change runs
already in flight, and an agent on another host needs no copy of the project.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast

from .definitions.objects import InputSpec, Job, Material, Method, Project, Retry, Step, Workflow
from .shapes import HoldPlan, InputSpecPlan, JobPlan, MaterialPlan, Plan, RetryPlan, StepPlan, TriggerPlan


def _spec(s: InputSpec) -> InputSpecPlan:
    return cast(InputSpecPlan, asdict(s))


def spec_from(d: InputSpecPlan | dict[str, Any]) -> InputSpec:
    return InputSpec(**d)


def _step(project: Project, step: Step) -> StepPlan:
    out: StepPlan = {"name": step.name, "when": step.when, "run": step.run, "method": None}
    if step.method:
        method = project.method(step.method)
        assert method is not None  # validated when loading
        out["run"] = method.run
        out["method"] = step.method
        out["with_"] = dict(step.with_)
        out["method_inputs"] = {k: _spec(v) for k, v in method.inputs.items()}
        out["method_env"] = dict(method.env)
    return out


def _job(project: Project, job: Job, position: int) -> JobPlan:
    hold: HoldPlan | None = None
    if job.hold is not None:
        hold = {
            "prompt": job.hold.prompt,
            "approvers": job.hold.approvers,
            "fields": {k: _spec(v) for k, v in job.hold.fields.items()},
            "timeout": job.hold.timeout,
            "approvals": job.hold.approvals,
            "four_eyes": project.four_eyes if job.hold.four_eyes is None else job.hold.four_eyes,
        }
    trigger: TriggerPlan | None = None
    if job.trigger is not None:
        trigger = {"workflow": job.trigger.workflow, "inputs": job.trigger.inputs, "wait": job.trigger.wait}
    return {
        "name": job.name,
        "position": position,
        "needs": job.needs,
        "if": job.if_,
        "hold": hold,
        "group": job.concurrency_group,
        "concurrency": job.concurrency,
        "parallelism": job.parallelism,
        "run_on_all_agents": job.run_on_all_agents,
        "resources": job.resources,
        "trigger": trigger,
        "timeout": job.timeout,
        "retry": _retry(job.retry),
        "env": job.env,
        "steps": [_step(project, s) for s in job.steps],
    }


def _material(project: Project, m: Material) -> MaterialPlan:
    if m.git is not None:
        return {"git": str((project.root / m.git).resolve()), "branch": m.branch}
    assert m.workflow is not None  # a material is git or workflow (checked when loading)
    return {"workflow": m.workflow, "trigger": m.trigger}


def workflow_plan(project: Project, wf: Workflow) -> Plan:
    return {
        "kind": "workflow",
        "name": wf.name,
        "environment": wf.environment,
        "lock": wf.lock,
        "materials": {name: _material(project, m) for name, m in wf.materials.items()},
        "inputs": {k: _spec(v) for k, v in wf.inputs.items()},
        "jobs": {name: _job(project, job, i) for i, (name, job) in enumerate(wf.jobs.items())},
    }


def method_plan(method: Method) -> Plan:
    job: JobPlan = {
        "name": method.name,
        "position": 0,
        "needs": [],
        "if": "success",
        "hold": None,
        "group": None,
        "concurrency": 1,
        "parallelism": 1,
        "run_on_all_agents": False,
        "resources": [],
        "trigger": None,
        "timeout": method.timeout,
        "retry": _retry(method.retry),
        "env": dict(method.env),
        "steps": [{"name": method.target, "when": "success", "run": method.run, "method": None}],
    }
    return {
        "kind": "method",
        "name": method.target,
        "environment": None,
        "lock": "none",
        "inputs": {k: _spec(v) for k, v in method.inputs.items()},
        "jobs": {method.name: job},
    }


def _retry(retry: Retry | None) -> RetryPlan | None:
    return {"limit": retry.limit, "exit_codes": retry.exit_codes} if retry else None


def secret_names(plan: Plan | dict[str, Any]) -> set[str]:
    names = {k for k, v in plan["inputs"].items() if v.get("secret")}
    for job in plan["jobs"].values():
        hold = job.get("hold")
        if hold:
            names |= {k for k, v in hold["fields"].items() if v.get("secret")}
        for step in job["steps"]:
            names |= {k for k, v in (step.get("method_inputs") or {}).items() if v.get("secret")}
    return names
