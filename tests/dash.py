"""A project with fixed data for the dashboard's tests: same pixels on every machine."""

from __future__ import annotations

import os
import time

from conftest import Proj

os.environ["TZ"] = "UTC"
time.tzset()

T0 = 1_795_000_000.0  # a fixed moment, so the screens show the same times everywhere

WORKFLOWS = {
    "workflows/release.yaml": """\
        name: release
        description: Build and ship the binary
        inputs: {version: {required: true, pattern: '^v\\d+$'}}
        lock: until_complete
        jobs:
          build: {steps: [{run: 'echo "building $INPUT_VERSION"; echo "binary=app-$INPUT_VERSION" >> "$SLUICE_OUTPUT"'}]}
          ship:
            needs: [build]
            hold:
              prompt: Ship it?
              fields: {ticket: {required: true, pattern: '^CHG-\\d+$'}}
            steps: [{run: 'echo "shipping with $INPUT_TICKET"'}]
        """,
    "workflows/teardown-dns.yaml": """\
        name: teardown-dns
        description: Remove the old zone
        jobs: {dns: {steps: [{run: 'echo dns'}]}}
        """,
    "models/ad.yaml": """\
        name: ad-account
        methods:
          create:
            inputs: {user: {required: true}, token: {secret: true, default: hunter2}}
            run: 'echo "create $INPUT_USER"'
        """,
}


def build(proj: Proj) -> None:
    for rel, text in WORKFLOWS.items():
        proj.write(rel, text)


def fixed_demo(proj: Proj) -> None:
    """Queue items, a held run, a finished run, a paused workflow and two agents, all at fixed times."""
    from core import flow, queueing
    from core.plan import workflow_plan
    from core.service import create_run

    build(proj)
    svc = proj.service()
    for kind, target, inputs, note in [
        ("workflow", "teardown-dns", {}, "decommission step 3"),
        ("method", "ad-account.create", {"user": "jsmith"}, "new hire"),
        ("method", "ad-account.create", {"user": "akhan"}, "new hire"),
        ("workflow", "release", {"version": "v7"}, ""),
    ]:
        queueing.add(svc, kind, target, inputs, note=note or None, actor="alice@jump-1")
    wf = svc.project.workflows["release"]
    with svc.db.write() as tx:
        done = create_run(
            tx, workflow_plan(svc.project, wf), {"version": "v1"}, trigger="manual", actor="bob@jump-1"
        )
        held = create_run(
            tx, workflow_plan(svc.project, wf), {"version": "v2"}, trigger="queue", actor="alice@jump-1"
        )
        tx.execute(
            "UPDATE runs SET status = 'succeeded', started_at = ?, finished_at = ? WHERE id = ?",
            (T0 + 60, T0 + 120, done),
        )
        tx.execute(
            "UPDATE jobs SET status = 'succeeded', agent = 'qa-1', started_at = ?, finished_at = ?, "
            "exit_code = 0, outputs = '{\"binary\":\"app-v1\"}', released_by = 'carol@jump-1', "
            "released_at = ?, comment = 'ok' WHERE run_id = ?",
            (T0 + 60, T0 + 90, T0 + 80, done),
        )
        tx.execute("UPDATE runs SET status = 'on_hold', started_at = ? WHERE id = ?", (T0 + 200, held))
        tx.execute(
            "UPDATE jobs SET status = 'succeeded', agent = 'qa-1', started_at = ?, finished_at = ?, "
            "exit_code = 0 WHERE run_id = ? AND name = 'build'",
            (T0 + 200, T0 + 210, held),
        )
        tx.execute(
            "UPDATE jobs SET status = 'held', reason = 'Ship it?' WHERE run_id = ? AND name = 'ship'", (held,)
        )
        for name, env, state_enabled in [("qa-1", '["qa"]', 1), ("prod-1", '["prod"]', 0)]:
            tx.insert(
                "agents",
                {
                    "name": name,
                    "host": "jump-1",
                    "pid": 1,
                    "environments": env,
                    "resources": '["linux"]',
                    "capacity": 2,
                    "enabled": state_enabled,
                    "lost": 0,
                    "started_at": T0,
                    "heartbeat_at": T0 + 300,
                },
            )
        tx.insert(
            "log_chunks",
            {
                "job_id": 1,
                "run_id": done,
                "seq": 1,
                "stream": "sluice",
                "data": "--- step 1: build\n",
                "at": T0 + 61,
            },
        )
        tx.insert(
            "log_chunks",
            {"job_id": 1, "run_id": done, "seq": 2, "stream": "out", "data": "building v1\n", "at": T0 + 62},
        )
    flow.pause(svc, "teardown-dns", "DNS freeze until Monday", actor="carol@jump-1")
    with svc.db.write() as tx:
        tx.execute("UPDATE queue_items SET queued_at = ? + id * 60", (T0,))
        tx.execute("UPDATE runs SET created_at = ? + id * 100", (T0,))
        tx.execute("UPDATE workflow_states SET paused_at = ?", (T0 + 400,))
        tx.execute("UPDATE events SET at = ? + id * 30", (T0,))  # the History pane's times


def app_for(proj: Proj, **kw):
    from tui.app import SluiceApp

    kw.setdefault("start_engine", False)
    kw.setdefault("poll", False)
    kw.setdefault("theme", "textual-dark")
    return SluiceApp(proj.service(), **kw)


def toasts(app) -> list[str]:
    """The notifications a user sees: the text of each Toast on screen, its wrapped lines rejoined."""
    from textual.geometry import Region

    shown = []
    for toast in app.screen.query("Toast"):
        # the toast's whole box (outer_size: padding included), less its left border
        lines = [strip.text.strip(" ▌") for strip in toast.render_lines(Region(0, 0, *toast.outer_size))]
        shown.append(" ".join(line for line in lines if line))
    return shown
