"""Words both faces show the same way (no Textual here: the CLI imports it too)."""

from __future__ import annotations

import re
from typing import Any

# ---------------------------------------------------------------- text from users
# Notes, inputs, reasons, names and log lines shown in tables came from users or jobs: their
# control characters are shown escaped (`\x1b`), never sent live, so a note cannot hide or
# rewrite lines on a reviewer's screen (SPEC 10). `--json` carries the raw text. The dashboard
# escapes the same way, and shows such text as plain Text, never as markup (`[/x]` is text).

_UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f"  # C0 (but tab) and C1 controls: ESC, CR, BS, CSI, …
    "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"  # bidi overrides, separators
    "\ud800-\udfff]"  # lone surrogates (bytes that were not UTF-8)
)
_UNSAFE_CELL = re.compile(_UNSAFE.pattern[:-1] + "\t]")  # in a table a tab breaks the columns too


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    c = ord(ch)
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str, *, cell: bool = False) -> str:
    """Text with its control characters escaped, safe to send to a terminal."""
    return (_UNSAFE_CELL if cell else _UNSAFE).sub(_escape_one, text)


_LINES = re.compile(r"(.*?)(\r\n|\r|\n|$)", re.S)


def printable_log(text: str) -> str:
    """A job's output with its control characters escaped, its line breaks kept (`\r\n`, and a lone
    `\r` as a progress bar uses it, end a line as `\n` does): for the dashboard's log view."""
    return "".join(printable(line) + ("\n" if end else "") for line, end in _LINES.findall(text)[:-1])


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


def ago(iso_time: str | None, now: float) -> str:
    """`14m`, `2h05m`, `3d`: how long ago (or, for a time to come, how long until)."""
    if not iso_time:
        return ""
    from datetime import datetime

    secs = abs(now - datetime.fromisoformat(iso_time).timestamp())
    if secs < 60:  # not to the second: a cell that changed every poll would repaint the table
        return "<1m"
    return _span(secs)


def _span(secs: float) -> str:
    """`14m`, `2h05m`, `3d` for SECS of a minute or more."""
    if secs < 3600:
        return f"{int(secs // 60)}m"
    if secs < 86400:
        return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"
    return f"{int(secs // 86400)}d"


def why_text(why: dict[str, Any] | None, now: float, *, job: bool = True) -> str:
    """A run's reason, inline: `swap held 14m · approvers: seniors · 1 of 2`, `waiting: no enabled
    agent in prod`. Without `job`, the held job's own line in the run view: `held 14m · …`."""
    if not why:
        return ""
    if why["kind"] != "held":
        reason = why["reason"] or "waiting"
        return reason if reason.startswith(("waiting", "frozen", "paused")) else f"waiting: {reason}"
    bits = [(f"{why['job']} " if job else "") + f"held {ago(why.get('since'), now)}".rstrip()]
    if why.get("approvers"):
        bits.append("approvers: " + ", ".join(why["approvers"]))
    if why.get("needed", 1) > 1:
        done = why.get("approved_by") or []
        bits.append(f"{len(done)} of {why['needed']}" + (f": {', '.join(done)}" if done else ""))
    if why.get("four_eyes"):
        bits.append("four-eyes")
    if why.get("deadline"):
        bits.append(f"{ago(why['deadline'], now)} left")
    return " · ".join(bits)


def beat_age(secs: float) -> str:
    """How old a heartbeat is, in 5-second steps (`<5s`, `5s`, `10s`, then `1m`, `2h05m`): a header
    that changed every second would send bytes every second while nothing happens."""
    if secs < 5:
        return "<5s"
    if secs < 60:
        return f"{int(secs // 5) * 5}s"
    return _span(secs)


def engine_words(engine: dict[str, Any]) -> tuple[str, str]:
    """The header's first words about the engine (core's Service.overview), and their tone:
    `● engine up (jump-1) · beat <5s ago`, `◔ … beat 10s ago, late`, `✗ engine down (last beat
    5m ago)`, `(stopped)`, `(never started)`."""
    state = engine["state"]
    host = f" ({engine['host']})" if engine.get("host") else ""
    if state == "up":
        return f"● engine up{host} · beat {beat_age(engine['beat_age'])} ago", "good"
    if state == "late":
        return f"◔ engine up{host} · beat {beat_age(engine['beat_age'])} ago, late", "warn"
    why = {
        "down": f"last beat {beat_age(engine['beat_age'] or 0)} ago",
        "stopped": "stopped",
        "never": "never started",
    }[state]
    return f"✗ engine down ({why})", "bad"
