"""The validated objects a project's YAML turns into.

Plain dataclasses (not pydantic) so that loading a project stays cheap for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUT_TYPES = ("string", "int", "bool")
IF_VALUES = ("success", "failure", "always")
LOCK_VALUES = ("none", "until_complete", "until_success")
CATCH_UP_VALUES = ("none", "latest")


@dataclass
class InputSpec:
    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    pattern: str | None = None
    description: str = ""
    secret: bool = False

    @property
    def env_name(self) -> str:
        return env_name(self.name)


def env_name(name: str) -> str:
    return "INPUT_" + name.upper().replace("-", "_")


@dataclass
class Retry:
    limit: int = 0
    exit_codes: list[int] | None = None


@dataclass
class Method:
    model: str
    name: str
    run: str | list[str]
    description: str = ""
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    timeout: float | None = None
    retry: Retry | None = None
    env: dict[str, str] = field(default_factory=dict)
    window: str | None = None  # its model's window

    @property
    def target(self) -> str:
        return f"{self.model}.{self.name}"


@dataclass
class Model:
    name: str
    path: Path
    description: str = ""
    methods: dict[str, Method] = field(default_factory=dict)
    window: str | None = None  # a change window for all its methods


@dataclass
class Step:
    name: str
    run: str | list[str] | None = None
    method: str | None = None
    with_: dict[str, str] = field(default_factory=dict)
    when: str = "success"  # or "always"


@dataclass
class Hold:
    prompt: str = ""
    approvers: list[str] = field(default_factory=list)
    fields: dict[str, InputSpec] = field(default_factory=dict)
    timeout: float | None = None
    approvals: int = 1  # distinct approvers needed before the job runs
    four_eyes: bool | None = None  # None: the project's default (sluice.yaml four_eyes)


@dataclass
class Trigger:
    workflow: str
    inputs: dict[str, str] = field(default_factory=dict)
    wait: bool = True


@dataclass
class Job:
    name: str
    steps: list[Step] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    if_: str = "success"
    hold: Hold | None = None
    concurrency_group: str | None = None
    concurrency: int = 1
    parallelism: int = 1
    run_on_all_agents: bool = False
    resources: list[str] = field(default_factory=list)
    trigger: Trigger | None = None
    timeout: float | None = None
    retry: Retry | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Material:
    name: str
    git: str | None = None
    branch: str | None = None
    workflow: str | None = None
    trigger: bool = True


@dataclass
class Timer:
    cron: str
    catch_up: str = "none"


@dataclass
class Workflow:
    name: str
    path: Path
    description: str = ""
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    environment: str | None = None
    lock: str = "none"
    timer: Timer | None = None
    materials: dict[str, Material] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    window: str | None = None  # a change window of sluice.yaml: runs start only while it is open


@dataclass
class Window:
    """A change window: opens at each fire of `cron` (project timezone), open for `duration` seconds."""

    name: str
    cron: str
    duration: float


@dataclass
class Freeze:
    """No new run starts from `start` to `end` (epoch seconds), except of the listed workflows."""

    start: float
    end: float
    reason: str
    except_: list[str] = field(default_factory=list)


@dataclass
class NotifyHook:
    """A command run with each event of the listed kinds as JSON on stdin."""

    on: list[str]
    run: str | list[str]


@dataclass
class AgentSpec:
    name: str
    environments: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    capacity: int | None = None


@dataclass
class Project:
    root: Path
    name: str
    timezone: str | None = None
    database: str | None = None
    capacity: int | None = None
    log_limit: int = 100 * 1024 * 1024  # a job's stored output, in bytes
    trust_sluice_user: bool = False  # honour SLUICE_USER as the actor (CI, service accounts)
    groups: dict[str, list[str]] = field(default_factory=dict)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    four_eyes: bool = False  # every hold: whoever requested the run may not approve it
    break_glass: str | None = None  # the group that may override four_eyes, approvals, windows, freezes
    windows: dict[str, Window] = field(default_factory=dict)
    freezes: list[Freeze] = field(default_factory=list)
    notify: list[NotifyHook] = field(default_factory=list)
    models: dict[str, Model] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.root / ".sluice"

    def method(self, target: str) -> Method | None:
        model, _, name = target.partition(".")
        m = self.models.get(model)
        return m.methods.get(name) if m else None
