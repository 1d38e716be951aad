"""Start, stop and inspect the engine of a project (used by both faces)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def stop(root: Path, *, now: bool = False, wait: float = 30.0) -> bool:
    """Ask the engine to stop: drain (finish running jobs) or now (cancel them). False if none ran."""
    info = engine_running(root)
    if not info or not info.get("pid"):
        return False
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGUSR1 if now else signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if engine_running(root) is None:
            return True
        time.sleep(0.05)
    return True


__all__ = ["ensure", "info_path", "start_background", "status", "stop"]
