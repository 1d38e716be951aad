"""Start, stop and inspect the engine of a project (used by both faces)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.procs import process_gone
from .main import engine_running, info_path


def status(root: Path) -> dict[str, Any] | None:
    return engine_running(root)


def start_background(root: Path, wait: float = 10.0) -> dict[str, Any]:
    """Start a detached engine (own session: it outlives this terminal and SSH session)."""
    state = root / ".sluice"
    state.mkdir(parents=True, exist_ok=True)
    logf = open(state / "engine.log", "ab")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.engine", "--project", str(root)],
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=logf,
        cwd=str(root),
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    logf.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        info = engine_running(root)
        if info and info.get("pid"):
            return info
        if proc.poll() is not None:
            info = engine_running(root)  # lost a race to another starter: that one is ours too
            if info:
                return info
            raise RuntimeError(
                f"the engine exited at once (code {proc.returncode}); see {state / 'engine.log'}"
            )
        time.sleep(0.02)
    raise RuntimeError(f"the engine did not start within {wait:.0f}s; see {state / 'engine.log'}")


def ensure(root: Path) -> dict[str, Any] | None:
    """Start the engine when none runs; returns its info if this call started it."""
    if status(root) is None:
        return start_background(root)
    return None


@dataclass
class StopResult:
    """What `engine stop` achieved: "stopped" only once the engine's process is gone."""

    state: str  # "stopped" | "not running" | "draining" | "stopping"
    pid: int | None = None
    running_jobs: int = 0

    @property
    def stopped(self) -> bool:
        """This call stopped it."""
        return self.state == "stopped"

    @property
    def gone(self) -> bool:
        """No engine runs now (stopped by this call, or none was running)."""
        return self.state in ("stopped", "not running")

    @property
    def message(self) -> str:
        if self.state == "stopped":
            return "engine stopped"
        if self.state == "not running":
            return "engine was not running"
        if self.state == "draining":
            jobs = f"{self.running_jobs} running job{'s' if self.running_jobs != 1 else ''}"
            return (
                f"engine (pid {self.pid}) is still running: draining {jobs}; "
                "'sluice engine stop --now' cancels them"
            )
        return f"engine (pid {self.pid}) has not stopped yet; it is still shutting down"

    def as_json(self) -> dict[str, Any]:
        return {
            "stopped": self.stopped,
            "state": self.state,
            "pid": self.pid,
            "running_jobs": self.running_jobs,
        }


def stop_wait() -> float:
    return float(os.environ.get("SLUICE_STOP_WAIT", "30"))


def stop(root: Path, *, now: bool = False, wait: float | None = None) -> StopResult:
    """Ask the engine to stop: drain (finish running jobs) or now (cancel them), and wait up to
    `wait` seconds for its process to be gone. Says "stopped" only when it is."""
    info = engine_running(root)
    if not info or not info.get("pid"):
        return StopResult("not running")
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGUSR1 if now else signal.SIGTERM)
    except ProcessLookupError:
        return StopResult("not running")
    deadline = time.monotonic() + (stop_wait() if wait is None else wait)
    while time.monotonic() < deadline:
        if engine_running(root) is None and process_gone(pid):  # its lock goes a moment before it does
            return StopResult("stopped", pid)
        time.sleep(0.05)
    running = _running_jobs(info, pid)
    return StopResult("draining" if running and not now else "stopping", pid, running or 0)


def _running_jobs(info: dict[str, Any], pid: int) -> int | None:
    """Jobs still running on the engine's own agents (None when the store cannot tell now)."""
    url = info.get("url")
    if not url:
        return None
    from ..store.db import Database, StoreError

    try:
        db = Database(url)
        try:
            return int(
                db.scalar(
                    "SELECT COUNT(*) FROM jobs j JOIN agents a ON a.name = j.agent "
                    "WHERE j.status = 'running' AND a.pid = ? AND a.host = ?",
                    (pid, info.get("host") or ""),
                )
                or 0
            )
        finally:
            db.close()
    except StoreError:
        return None


__all__ = ["StopResult", "ensure", "info_path", "start_background", "status", "stop"]
