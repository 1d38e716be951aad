"""The schema, declared with SQLModel; migrations under migrations/ are generated from it.

Only migrations and the schema test import this module: the running code talks to the
database through `core.store.db` (plain DB-API), because importing SQLModel costs about a
second, which every CLI call would pay (SPEC 12 P3).

Conventions that keep the SQL portable between SQLite and PostgreSQL: times are float
epoch seconds (UTC), flags are integers 0/1, structured values are JSON text.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_target_created", "target", "created_at"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_parent", "parent_run_id"),
        Index("ix_runs_natural", "natural_at", "id"),
        Index("ix_runs_target_id", "target", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str  # workflow | method
    target: str  # workflow name or model.method
    status: str  # pending | running | on_hold | succeeded | failed | cancelled
    trigger: str  # manual | queue | schedule | timer | trigger | upstream
    created_by: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    inputs: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    plan: str = Field(sa_column=Column(Text, nullable=False))  # JSON snapshot of the definition
    parent_run_id: int | None = None
    parent_job_id: int | None = None
    queue_item_id: int | None = None
    cancel_requested: int = 0
    cancelled_by: str | None = None
    reason: str | None = None
    natural_at: float | None = None  # earliest material timestamp (natural order)
    environment: str | None = None  # the plan's environment: agents fence on it in their claim
    rerun_of: int | None = None  # `run rerun`: the run this one repeats
    break_glass: str | None = Field(
        default=None, sa_column=Column(Text)
    )  # why a window or freeze was overridden


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_run", "run_id"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_run_status", "run_id", "status"),
        Index("ix_jobs_claim", "status", "gate", "run_id", "position", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: int
    name: str  # display name, e.g. e2e[0]
    base: str  # the job's name in the workflow
    position: int = 0  # declaration order
    copy_key: str | None = None
    status: str  # pending | waiting | held | running | succeeded | failed | rejected | cancelled | skipped
    reason: str | None = None
    agent: str | None = None
    exit_code: int | None = None
    attempt: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    outputs: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    released_by: str | None = None
    released_at: float | None = None
    comment: str | None = None
    fields: str | None = Field(default=None, sa_column=Column(Text))
    break_glass: str | None = Field(
        default=None, sa_column=Column(Text)
    )  # released past four-eyes/approvals: why
    rejected_by: str | None = None
    rejected_at: float | None = None
    hold_deadline: float | None = None
    pid: int | None = None
    proc_start: str | None = None  # /proc start time: guards against PID reuse
    claim_token: int = 0
    resources: str | None = Field(default=None, sa_column=Column(Text))  # JSON list the agent must have
    only_agent: str | None = None  # a run_on_all_agents copy: the one agent that may take it
    child_run_id: int | None = None
    group_name: str | None = None  # concurrency group of the job, if any
    gate: str | None = None  # why a `waiting` job may not be dispatched yet: group | trigger


class LogChunk(SQLModel, table=True):
    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_job_seq", "job_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: int
    run_id: int
    seq: int
    stream: str  # out | sluice
    data: str = Field(sa_column=Column(Text, nullable=False))
    at: float


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_run", "run_id"),
        Index("ix_events_seq", "seq", unique=True),
        # the events the sealer has still to chain: few, whatever the size of the history
        Index(
            "ix_events_unsealed", "id", sqlite_where=text("seq IS NULL"), postgresql_where=text("seq IS NULL")
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    at: float
    actor: str
    kind: str
    run_id: int | None = None
    job_id: int | None = None
    item_id: int | None = None
    workflow: str | None = None
    message: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    tx: int | None = Field(default=None, sa_column=Column(BigInteger))  # PostgreSQL: the writing transaction
    # the chain (core/chain.py): position in sealing order and sha256(previous hash + canonical JSON)
    seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    hash: str | None = None


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    host: str
    pid: int | None = None
    environments: str = "[]"
    resources: str = "[]"
    capacity: int = 1
    enabled: int = 1
    lost: int = 0
    started_at: float
    heartbeat_at: float


class Lease(SQLModel, table=True):
    __tablename__ = "leases"
    name: str = Field(primary_key=True)
    holder: str
    token: int = 0
    expires_at: float


class QueueItem(SQLModel, table=True):
    __tablename__ = "queue_items"
    __table_args__ = (
        # one invocation, one item: the same kind + target + inputs only once while queued
        Index(
            "ux_queue_items_queued",
            "kind",
            "target",
            "inputs_key",
            unique=True,
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_queue_items_status", "status", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str
    target: str
    inputs: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    inputs_key: str = Field(sa_column=Column(Text, nullable=False))
    pins: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    status: str  # queued | executed | purged
    queued_by: str
    queued_at: float
    not_before: float | None = None
    note: str | None = None
    run_id: int | None = None
    closed_by: str | None = None
    closed_at: float | None = None


class WorkflowState(SQLModel, table=True):
    __tablename__ = "workflow_states"
    workflow: str = Field(primary_key=True)
    paused: int = 0
    paused_by: str | None = None
    paused_at: float | None = None
    pause_reason: str | None = None
    lock_run_id: int | None = None


class TimerFire(SQLModel, table=True):
    __tablename__ = "timer_fires"
    __table_args__ = (UniqueConstraint("workflow", "fire_at", name="ux_timer_fires"),)
    id: int | None = Field(default=None, primary_key=True)
    workflow: str
    fire_at: float
    status: str  # started | skipped
    reason: str | None = None
    run_id: int | None = None


class MaterialRow(SQLModel, table=True):
    __tablename__ = "materials"
    __table_args__ = (Index("ix_materials_run", "run_id"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int
    name: str
    kind: str  # git | workflow
    revision: str
    timestamp: float | None = None


class GroupSlot(SQLModel, table=True):
    __tablename__ = "group_slots"
    __table_args__ = (UniqueConstraint("group_name", "run_id", name="ux_group_slots"),)
    id: int | None = Field(default=None, primary_key=True)
    group_name: str
    run_id: int
    entered_at: float


metadata = SQLModel.metadata


class FreezeRow(SQLModel, table=True):
    """`sluice freeze`: no new run starts while it is in force (sluice.yaml's freezes are not stored)."""

    __tablename__ = "freezes"
    id: int | None = Field(default=None, primary_key=True)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    set_by: str
    set_at: float
    until: float | None = None  # None: until lifted
    except_: str = Field(default="[]", sa_column=Column("except_", Text, nullable=False, server_default="[]"))
    lifted_by: str | None = None
    lifted_at: float | None = None


class Approval(SQLModel, table=True):
    """One approver's release of a hold that needs several (approvals: N): one per person."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("job_id", "approver", name="ux_approvals"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: int
    run_id: int
    approver: str  # the user name: the same person twice is one approval
    actor: str
    at: float
    comment: str | None = Field(default=None, sa_column=Column(Text))
    fields: str | None = Field(default=None, sa_column=Column(Text))


class NotifyDelivery(SQLModel, table=True):
    """An event to hand to a notify hook: at least once, never again after a recorded success."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "hook", name="ux_notify_deliveries"),
        Index("ix_notify_pending", "status", "next_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    event_id: int
    hook: str  # the hook's key: a digest of its `on` and `run`
    status: str  # pending | sent | failed
    attempts: int = 0
    next_at: float
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class Setting(SQLModel, table=True):
    """Small named values the engine keeps across restarts (e.g. how far notify has read)."""

    __tablename__ = "settings"
    name: str = Field(primary_key=True)
    value: str = Field(sa_column=Column(Text, nullable=False))
