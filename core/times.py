"""Times as sluice shows them: ISO 8601 with the local offset, and the next fire of a cron spec.

A leaf module (it imports nothing of sluice), so the gates, the use cases and the engine can
all format times without importing each other.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def zone(tz: str | None) -> tzinfo | None:
    """The project's timezone, or this machine's."""
    return ZoneInfo(tz) if tz else datetime.now().astimezone().tzinfo


def next_fire(cron: str, tz: str | None, after: float | None = None) -> float | None:
    """The first fire of `cron` after `after` (default: now), in the project's timezone; None when
    it will not fire again (a one-off date that has passed)."""
    from croniter import CroniterBadDateError, croniter

    start = datetime.fromtimestamp(after if after is not None else time.time(), zone(tz))
    try:
        return float(croniter(cron, start).get_next(datetime).timestamp())
    except CroniterBadDateError:
        return None


def agent_timeout() -> float:
    """A heartbeat older than this marks an agent lost (and an agent cut off this long stops its jobs)."""
    return float(os.environ.get("SLUICE_AGENT_TIMEOUT", "15"))


def lease_seconds() -> float:
    """How long the scheduler lease lasts without renewal (tests shorten it)."""
    return float(os.environ.get("SLUICE_LEASE_SECONDS", "10"))


def beat_interval() -> float:
    """How often the engine renews its lease (and beats for its agents): a third of the shorter of
    the lease and the agent timeout, so two beats may be missed before either runs out."""
    return min(lease_seconds(), agent_timeout()) / 3
