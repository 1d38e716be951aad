"""Words both faces show the same way (no Textual here: the CLI imports it too)."""

from __future__ import annotations

from typing import Any


def preview_lines(p: dict[str, Any]) -> list[str]:
    """`queue show` and the Queue pane's preview: what executing the item would do now."""
    item = p["item"]
    inputs = " ".join(f"{k}={v}" for k, v in item["inputs"].items())
    lines = [f"#{item['id']} {item['kind']} {item['target']}" + (f"  {inputs}" if inputs else "")]
    if item["note"]:
        lines.append(f"note: {item['note']}")
    lines.append("")
    if p["can_start"]:
        lines.append("✓ can start now")
    else:
        lines.append("✗ cannot start now:")
        lines += [f"  - {b['message']}" for b in p["blockers"]]
    if p["environment"]:
        lines.append(f"environment: {p['environment']}")
    if p["materials"]:
        lines.append("materials: " + ", ".join(f"{m['name']}@{m['revision'][:12]}" for m in p["materials"]))
    if p["jobs"]:
        lines += ["", "jobs:"]
    for j in p["jobs"]:
        bits = []
        if j["needs"]:
            bits.append("after " + ", ".join(j["needs"]))
        if j["condition"] != "success":
            bits.append(f"if {j['condition']}")
        if j["parallelism"] > 1:
            bits.append(f"{j['parallelism']} copies")
        if j["run_on_all_agents"]:
            bits.append("on every agent")
        if j["group"]:
            bits.append(f"group {j['group']}")
        if j["resources"]:
            bits.append("needs " + ", ".join(j["resources"]))
        lines.append(f"  {j['name']}" + (f"  ({'; '.join(bits)})" if bits else ""))
        hold = j["hold"]
        if hold:
            who = ", ".join(hold["approvers"]) if hold["approvers"] else "anyone"
            extra = []
            if hold.get("approvals", 1) > 1:
                extra.append(f"{hold['approvals']} approvals")
            if hold.get("four_eyes"):
                extra.append("four-eyes")
            if hold["fields"]:
                extra.append("fields " + ", ".join(hold["fields"]))
            lines.append(
                f"    hold: {hold['prompt'] or 'waiting for release'} · approvers {who}"
                + (f" · {' · '.join(extra)}" if extra else "")
            )
        if j["trigger"]:
            wait = ", waits for it" if j["trigger"]["wait"] else ""
            lines.append(f"    triggers {j['trigger']['workflow']}{wait}")
        elif j["agents"]:
            lines.append("    agents now: " + ", ".join(j["agents"]))
    return lines


def rerun_plan(view: dict[str, Any], failed: bool) -> tuple[list[str], list[str]]:
    """(jobs that would run again, jobs carried over) for `run rerun [--failed]` of VIEW."""
    if not failed:
        return [j["name"] for j in view["jobs"]], []
    bases: dict[str, list[dict[str, Any]]] = {}
    for j in view["jobs"]:
        bases.setdefault(j["name"].split("[")[0], []).append(j)
    carried = [j["name"] for js in bases.values() if all(x["status"] == "succeeded" for x in js) for j in js]
    return [j["name"] for j in view["jobs"] if j["name"] not in carried], carried
