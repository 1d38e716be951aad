"""Process groups: start each job step in its own session, kill the whole group, spot PID reuse."""

from __future__ import annotations

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


def processes_of_jobs(job_ids: set[int], agents: set[str]) -> list[int]:
    """Process groups on this host that run one of these jobs, found by the SLUICE_JOB_ID and
    SLUICE_AGENT every step carries in its environment (even if its pid never reached the store)."""
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
        try:
            if int(job) in job_ids:
                found.add(os.getpgid(pid))
        except (ValueError, ProcessLookupError):
            continue
    return sorted(found)
