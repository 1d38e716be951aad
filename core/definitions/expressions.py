"""`${{ … }}` expressions: plain substitution of a few known references, no evaluation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EXPR_RE = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_REF_RE = re.compile(
    r"^(?:inputs\.([A-Za-z0-9_-]+)"
    r"|jobs\.([A-Za-z0-9_.-]+?)\.outputs\.([A-Za-z0-9_.-]+)"
    r"|run\.(id)"
    r"|materials\.([A-Za-z0-9_.-]+)\.revision)$"
)


def parse_expression(text: str) -> tuple[str, ...]:
    m = _REF_RE.match(text.strip())
    if not m:
        raise ValueError(
            f"unknown expression '${{{{ {text} }}}}': use inputs.NAME, jobs.JOB.outputs.KEY, run.id "
            "or materials.NAME.revision"
        )
    if m.group(1):
        return ("inputs", m.group(1))
    if m.group(2):
        return ("jobs", m.group(2), m.group(3))
    if m.group(4):
        return ("run", "id")
    return ("materials", m.group(5))


def substitute(text: str, ctx: Mapping[str, Any]) -> str:
    """Replace each expression with its value from ctx; unknown values become ''.

    ctx: {"inputs": {...}, "jobs": {job: {key: value}}, "run": {"id": n}, "materials": {name: rev}}
    """

    def one(m: re.Match[str]) -> str:
        ref = parse_expression(m.group(1))
        if ref[0] == "inputs":
            v = ctx.get("inputs", {}).get(ref[1])
        elif ref[0] == "jobs":
            v = ctx.get("jobs", {}).get(ref[1], {}).get(ref[2])
        elif ref[0] == "run":
            v = ctx.get("run", {}).get("id")
        else:
            v = ctx.get("materials", {}).get(ref[1])
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return EXPR_RE.sub(one, text)
