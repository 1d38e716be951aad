"""Notify hooks (SPEC 13): the event as JSON on stdin, at least once, retried, never twice after a success."""

from __future__ import annotations

import json
import os

from conftest import Proj

FAST = {"SLUICE_NOTIFY_BACKOFF": "0.1,0.1"}


def hooked(proj: Proj, hook: str, kinds: str = "[job.held]") -> None:
    proj.write(
        "sluice.yaml",
        f"name: test\ncapacity: 4\ngroups: {{seniors: [carol, dave]}}\nnotify:\n  - {{on: {kinds}, run: {hook}}}\n",
    )
    proj.write(
        "workflows/swap.yaml",
        "name: swap\njobs:\n  go:\n    hold: {prompt: swap?, approvers: [seniors, erin]}\n    steps: [{run: 'true'}]\n",
    )


def notified(proj: Proj, kind: str = "notify.sent", n: int = 1) -> list[dict]:
    def check() -> list[dict] | None:
        rows = [e for e in proj.ok("history", "--limit", "200", "--json").json if e["kind"] == kind]
        return rows if len(rows) >= n else None

    return proj.wait_for(check, timeout=30, what=f"{n} {kind}")  # type: ignore[return-value]


def test_a_held_job_reaches_the_hook_with_its_approvers(proj: Proj) -> None:
    out = proj.root.parent / "paged.jsonl"
    hooked(proj, f"'cat >> {out}; echo \"$SLUICE_EVENT_KIND $SLUICE_RUN_ID\" >> {out}.env'")
    run = proj.ok("workflow", "run", "swap", "--json", env=FAST).json
    [sent] = notified(proj)
    doc = json.loads(out.read_text().splitlines()[0])
    assert doc["kind"] == "job.held" and doc["job"] == "go" and doc["workflow"] == "swap"
    assert doc["run_id"] == run["id"] and doc["approvers"] == ["carol", "dave", "erin"]
    assert set(doc) == {"id", "kind", "actor", "at", "message", "run_id", "job", "workflow", "approvers"}
    assert out.with_suffix(".jsonl.env").read_text().split() == ["job.held", str(run["id"])]
    assert sent["details"]["event_id"] == doc["id"] and sent["details"]["attempt"] == 1


def test_a_failing_hook_is_tried_three_times_and_each_attempt_recorded(proj: Proj) -> None:
    count = proj.root.parent / "count"
    # fails twice, then works
    hooked(proj, f"'echo x >> {count}; [ $(wc -l < {count}) -ge 3 ] || {{ echo broken >&2; exit 7; }}'")
    proj.ok("workflow", "run", "swap", env=FAST)
    notified(proj)
    failed = notified(proj, "notify.failed", 2)
    assert sorted(e["details"]["attempt"] for e in failed) == [1, 2]
    assert all("exit 7: broken" in e["message"] for e in failed)
    assert len(count.read_text().split()) == 3


def test_a_hook_that_always_fails_gives_up_after_three(proj: Proj) -> None:
    hooked(proj, "'exit 1'")
    proj.ok("workflow", "run", "swap", env=FAST)
    failed = notified(proj, "notify.failed", 3)
    assert [e["details"]["final"] for e in sorted(failed, key=lambda e: e["details"]["attempt"])] == [
        False,
        False,
        True,
    ]


def test_no_second_delivery_after_a_success_across_restarts(proj: Proj) -> None:
    seen = proj.root.parent / "seen"
    hooked(proj, f'\'cat | python3 -c "import json,sys; print(json.load(sys.stdin)[\\"id\\"])" >> {seen}\'')
    proj.ok("workflow", "run", "swap", env=FAST)
    notified(proj)
    proj.ok("engine", "stop")
    proj.ok("workflow", "run", "swap", env=FAST)  # starts a new engine: a second held job
    notified(proj, n=2)
    ids = seen.read_text().split()
    assert len(ids) == 2 and len(set(ids)) == 2


def test_a_slow_hook_never_delays_the_runs(proj: Proj) -> None:
    pid = proj.root.parent / "hook.pid"
    hooked(proj, f"'echo $$ > {pid}; exec sleep 120'", kinds="[run.created]")
    proj.write("workflows/quick.yaml", "name: quick\njobs:\n  a: {steps: [{run: 'true'}]}\n")
    proj.ok("engine", "start", env=FAST)  # notify starts with the events of its engine's time
    proj.ok("workflow", "run", "quick")
    proj.wait_for(pid.exists, what="the hook started")
    for _ in range(3):  # runs go on start to end while the hook sleeps
        assert proj.ok("workflow", "run", "quick", "--json").json["status"] == "succeeded"
    hook = int(pid.read_text())
    os.kill(hook, 0)  # still sleeping
    os.kill(hook, 9)
