"""Materials (SPEC 7): what a run is built from, recorded when the run is created.

A git material records `git rev-parse` of its branch (HEAD if none), or of a pinned
revision, with the commit time; a workflow material records the latest succeeded run of
that workflow (revision = its run id, timestamp = that run's own natural timestamp). The
earliest material timestamp is the run's place in natural order.
"""

from __future__ import annotations

import subprocess
from typing import Any

from .errors import Invalid, Refused
from .shapes import Plan
from .store.db import Database, Tx


def git_revision(path: str, rev: str, name: str) -> tuple[str, float]:
    """(commit id, commit time) of rev in the repository at path; Invalid when it is not there."""
    try:
        sha = subprocess.run(
            ["git", "-C", path, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Invalid(f"material {name}: cannot run git in {path}: {e}") from None
    if sha.returncode != 0:
        raise Invalid(f"material {name}: unknown revision '{rev}' in {path}")
    commit = sha.stdout.strip()
    ts = subprocess.run(
        ["git", "-C", path, "log", "-1", "--format=%ct", commit], capture_output=True, text=True, timeout=30
    )
    return commit, float(ts.stdout.strip() or 0)


def check_pins(plan: Plan, pins: dict[str, str]) -> None:
    """Pins name known materials and existing revisions (before anything is created)."""
    mats = plan.get("materials") or {}
    for name, rev in pins.items():
        if name not in mats:
            from .definitions.loader import did_you_mean

            raise Invalid(f"--pin {name}: no material '{name}' in {plan['name']}{did_you_mean(name, mats)}")
        m = mats[name]
        if m.get("git"):
            git_revision(m["git"], rev, name)
        elif not rev.lstrip("#").isdigit():
            raise Invalid(f"--pin {name}={rev}: a workflow material is pinned to a run id")


def resolve(tx: Tx | Database, plan: Plan, pins: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Each material's revision and timestamp for a new run of plan (reads only: `queue show` asks too)."""
    pins = pins or {}
    out = []
    for name, m in (plan.get("materials") or {}).items():
        if m.get("git"):
            rev, ts = git_revision(m["git"], pins.get(name) or m.get("branch") or "HEAD", name)
            out.append({"name": name, "kind": "git", "revision": rev, "timestamp": ts})
            continue
        if name in pins:
            row = tx.one(
                "SELECT id, natural_at FROM runs WHERE id = ? AND kind = 'workflow' AND target = ? "
                "AND status = 'succeeded'",
                (int(pins[name].lstrip("#")), m["workflow"]),
            )
            if row is None:
                raise Invalid(
                    f"--pin {name}={pins[name]}: no succeeded run #{pins[name].lstrip('#')} of {m['workflow']}"
                )
        else:
            row = tx.one(
                "SELECT id, natural_at FROM runs WHERE kind = 'workflow' AND target = ? AND status = 'succeeded' "
                "ORDER BY id DESC LIMIT 1",
                (m["workflow"],),
            )
        if row is None:
            # nothing to build from yet: say so instead of recording a run with no revision
            raise Refused(
                f"material {name}: workflow {m['workflow']} has no succeeded run yet; run it first "
                f"(sluice workflow run {m['workflow']}) or pin a run with --pin {name}=RUN"
            )
        out.append(
            {
                "name": name,
                "kind": "workflow",
                "revision": str(row["id"]),
                "timestamp": row["natural_at"],
            }
        )
    return out
