"""Every status a run, a job and a queue item can have, and the sets the rules use: one home.

`StrEnum` members are strings, so they compare, hash and serialise as the words of SPEC 10
(`JobStatus.HELD == "held"`), and a status read from the database needs no conversion.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    ON_HOLD = "on_hold"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"
    HELD = "held"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class ItemStatus(StrEnum):
    QUEUED = "queued"
    EXECUTED = "executed"
    PURGED = "purged"


# a run that is not finished: it holds a lock (until_complete) and counts as incomplete
ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.ON_HOLD})
FINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
FINAL_JOB = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED, JobStatus.CANCELLED, JobStatus.SKIPPED}
)
# a job that has not started: cancelling its run cancels it where it stands
NOT_STARTED_JOB = frozenset({JobStatus.PENDING, JobStatus.WAITING, JobStatus.HELD})
# a job outcome that fails its run and satisfies `if: failure`
FAILED_JOB = frozenset({JobStatus.FAILED, JobStatus.REJECTED})


def sql_list(statuses: Iterable[str]) -> str:
    """`'a', 'b'` for an SQL `IN (…)`; the words are ours (never user text), in a stable order."""
    return ", ".join(f"'{s}'" for s in sorted(statuses))
