"""Process groups: start each job step in its own session, kill the whole group, spot PID reuse."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import time


def proc_start(pid: int) -> str | None:
    """The kernel's start time of pid (clock ticks since boot): with the pid, a unique identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def same_process(pid: int | None, start: str | None) -> bool:
    return bool(pid) and start is not None and proc_start(pid) == start  # type: ignore[arg-type]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after the grace period."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)


@functools.lru_cache(maxsize=64)
def store_id(url: str) -> str:
    """A short name for a database, carried by every step (job ids are only unique within one store)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def processes_of_jobs(job_ids: set[int], agents: set[str], store: str) -> list[int]:
    """Process groups on this host that run one of these jobs, found by the SLUICE_JOB_ID,
    SLUICE_AGENT and SLUICE_STORE_ID every step carries in its environment (even if its pid never
    reached the store). Another project's job 1 on an agent also named `local` is not ours."""
    found: set[int] = set()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except (OSError, ValueError):
            continue
        job = env.get(b"SLUICE_JOB_ID")
        agent = env.get(b"SLUICE_AGENT")
        if job is None or agent is None or agent.decode(errors="replace") not in agents:
            continue
        if env.get(b"SLUICE_STORE_ID", b"").decode(errors="replace") != store:
            continue
        try:
            if int(job) in job_ids:
                found.add(os.getpgid(pid))
        except (ValueError, ProcessLookupError):
            continue
    return sorted(found)


def process_gone(pid: int) -> bool:
    """Dead or a zombie (an orphan's zombie may never be reaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


def kill_jobs(
    job_ids: set[int], agents: set[str], store: str, recorded: list[tuple[int, str | None]], wait: float
) -> bool:
    """SIGKILL every process group on this host that runs one of these jobs (found by their
    environment, and by the pids recorded in the store), then wait until they are really gone.
    True when none is left within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        groups = set(processes_of_jobs(job_ids, agents, store))
        groups.update(pid for pid, start in recorded if same_process(pid, start) and not process_gone(pid))
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        if not groups:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
