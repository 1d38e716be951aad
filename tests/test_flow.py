"""Flow control on real engines: concurrency gates (seed 004), timers and the QA story (seed 000),
triggers and the circleback (seed 003), pause from every source, locks."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import Proj, add_ticker, wait_ticks

GATE = """\
name: build
jobs:
  unit-tests: {steps: [{run: 'echo "$SLUICE_RUN_ID unit $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"'}]}
  start-gate:
    needs: [unit-tests]
    concurrency_group: gate
    concurrency: 1
    steps: [{run: 'echo "$SLUICE_RUN_ID gate-start $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"'}]
  stage-deploy:  # the test says when: until then run 1 stays inside the gate
    needs: [start-gate]
    steps: [{run: 'until [ -e "$SLUICE_PROJECT/go" ]; do sleep 0.05; done'}]
  e2e:  # each copy ends only once all three have started: they must run side by side
    needs: [stage-deploy]
    parallelism: 3
    timeout: 60s
    steps: [{run: 'echo "$SLUICE_RUN_ID e2e-start $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"; until [ "$(grep -c "^$SLUICE_RUN_ID e2e-start" "$SLUICE_PROJECT/spans")" -ge 3 ]; do sleep 0.05; done; echo "$SLUICE_RUN_ID e2e-end $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"'}]
  end-gate:
    needs: [e2e]
    concurrency_group: gate
    steps: [{run: 'echo "$SLUICE_RUN_ID gate-end $(date +%s.%N)" >> "$SLUICE_PROJECT/spans"'}]
  after:
    needs: [end-gate]
    steps: [{run: 'true'}]
"""


def spans(proj: Proj) -> list[tuple[int, str, float]]:
    out = []
    for line in (proj.root / "spans").read_text().splitlines():
        run, what, t = line.split()
        out.append((int(run), what, float(t)))
    return out


def test_seed_004_concurrency_gate(proj: Proj) -> None:
    proj.write("sluice.yaml", "name: t\ncapacity: 9\n")
    proj.write("workflows/build.yaml", GATE)
    proj.ok("engine", "start")
    for _ in range(3):
        proj.ok("workflow", "run", "build", "--detach")
    svc = proj.service()

    def job(run_id: int, name: str) -> dict:
        return next(j for j in svc.run_view(run_id)["jobs"] if j["name"] == name)

    # while run 1 holds the gate, run 2's start-gate waits behind it, naming the run...
    proj.wait_for(
        lambda: job(2, "start-gate")["reason"] == "waiting: group gate (behind run #1)",
        what="run 2 behind run 1",
    )
    # ...and outside the gate every run goes on: all unit tests finish while run 1 is inside
    proj.wait_for(
        lambda: all(job(i, "unit-tests")["status"] == "succeeded" for i in (1, 2, 3)), what="unit tests"
    )
    assert job(3, "start-gate")["status"] == "waiting" and job(3, "start-gate")["reason"].startswith(
        "waiting: group gate"
    )
    (proj.root / "go").touch()
    for i in (1, 2, 3):
        assert svc.wait_run(i)["status"] == "succeeded"
    s = spans(proj)
    gate = {
        r: (
            next(t for rr, w, t in s if rr == r and w == "gate-start"),
            next(t for rr, w, t in s if rr == r and w == "gate-end"),
        )
        for r in (1, 2, 3)
    }
    # gate spans never overlap, and runs pass in creation order
    assert gate[1][1] < gate[2][0] and gate[2][1] < gate[3][0]
    # unit tests (outside the gate) of all runs ran before run 1 left the gate: parallel outside
    assert all(t < gate[1][1] for r, w, t in s if w == "unit")
    # the e2e copies of one run overlap inside the gate
    for r in (1, 2, 3):
        starts = [t for rr, w, t in s if rr == r and w == "e2e-start"]
        ends = [t for rr, w, t in s if rr == r and w == "e2e-end"]
        assert len(starts) == 3 and max(starts) < min(ends)
        assert gate[r][0] < min(starts) and max(ends) < gate[r][1]


QA = """\
name: qa-deploy
description: Deploy the last good build to QA, not again while QA is still testing
timer: "* * * * * */2"   # croniter: the sixth field is seconds
lock: until_complete
jobs:
  deploy: {steps: [{run: 'echo "deploy $SLUICE_RUN_ID" >> "$SLUICE_PROJECT/deploys"'}]}
  sign-off:
    needs: [deploy]
    hold: {prompt: QA signs off when done testing}
    steps: [{run: 'true'}]
"""


def test_seed_000_qa_story_timer_lock_and_sign_off(proj: Proj) -> None:
    proj.write("workflows/qa.yaml", QA)
    proj.ok("engine", "start")
    svc = proj.service()
    proj.wait_for(lambda: svc.db.scalar("SELECT COUNT(*) FROM runs") == 1, what="first timer fire")
    proj.wait_for(lambda: svc.run_view(1)["status"] == "on_hold", what="QA testing (held sign-off)")
    proj.wait_for(
        lambda: svc.db.scalar("SELECT COUNT(*) FROM timer_fires WHERE status = 'skipped'") >= 1,
        what="a fire skipped while QA tests",
    )
    skipped = svc.db.one("SELECT * FROM timer_fires WHERE status = 'skipped' ORDER BY id LIMIT 1")
    assert skipped["reason"] == "workflow qa-deploy is locked by run #1 (on_hold, lock: until_complete)"
    ev = next(e for e in proj.ok("history", "--json", "--limit", "200").json if e["kind"] == "timer.skipped")
    assert "locked by run #1" in ev["message"]
    assert svc.db.scalar("SELECT COUNT(*) FROM runs") == 1  # no second deploy while QA tests
    proj.ok("workflow", "release", "sign-off", "--comment", "QA done")
    proj.wait_for(lambda: svc.db.scalar("SELECT COUNT(*) FROM runs") >= 2, what="next fire deploys")
    assert svc.run_view(2)["trigger"] == "timer"
    deploys = proj.root / "deploys"
    proj.wait_for(lambda: len(deploys.read_text().splitlines()) >= 2, what="the second deploy")
    assert deploys.read_text().splitlines()[:2] == ["deploy 1", "deploy 2"]
    fires = svc.db.all("SELECT fire_at, COUNT(*) AS n FROM timer_fires GROUP BY fire_at")
    assert all(f["n"] == 1 for f in fires)
    shown = proj.ok("workflow", "show", "qa-deploy").out
    assert "next fire" in shown and "* * * * * */2" in shown


def test_timer_fires_once_with_two_engines(proj: Proj, tmp_path: Path) -> None:
    proj.write(
        "workflows/tick.yaml", 'name: tick\ntimer: "* * * * * *"\njobs: {a: {steps: [{run: "true"}]}}\n'
    )
    db_url = proj.db_url or f"sqlite:///{proj.root / '.sluice' / 'state.db'}"
    other = Proj(tmp_path / "other", proj.template_db)
    other.root.mkdir()
    for rel in ("sluice.yaml", "workflows/tick.yaml"):
        other.write(rel, (proj.root / rel).read_text())
    env = {"SLUICE_DATABASE_URL": db_url}
    svc = proj.service()

    def fires_after(t: float) -> int:
        return svc.db.scalar("SELECT COUNT(*) FROM timer_fires WHERE fire_at > ?", (t,))

    def schedulers() -> int:
        return svc.db.scalar("SELECT COUNT(DISTINCT message) FROM events WHERE kind = 'engine.started'")

    try:
        proj.ok("engine", "start", env=env)
        proj.wait_for(lambda: schedulers() == 1, what="the first engine to take the lease")
        other.ok("engine", "start", env=env)  # a standby
        proj.wait_for(lambda: fires_after(0) >= 3, what="three fires by the first engine")
        proj.kill_engine()  # the standby takes over the lease
        killed_at = time.time()
        proj.wait_for(lambda: schedulers() == 2, timeout=LEASE_TAKEOVER + 10, what="the standby to take over")
        proj.wait_for(lambda: fires_after(killed_at) >= 2, what="two fires by the standby")
    finally:
        other.kill_engine()
    fires = svc.db.all("SELECT fire_at, status, run_id FROM timer_fires ORDER BY fire_at")
    assert len(fires) >= 5
    assert len({f["fire_at"] for f in fires}) == len(fires)  # each fire time recorded once
    runs = svc.db.scalar("SELECT COUNT(*) FROM runs WHERE trigger = 'timer'")
    assert runs == sum(1 for f in fires if f["status"] == "started")
    holders = {
        e["message"]
        for e in proj.ok("history", "--json", "--limit", "500").json
        if e["kind"] == "engine.started"
    }
    assert len(holders) == 2  # both engines were the scheduler in turn


LEASE_TAKEOVER = 13.0  # the standby waits for the killed engine's 10 s lease to run out


def test_catch_up_latest_runs_the_latest_missed_fire_once(proj: Proj) -> None:
    proj.write(
        "workflows/hourly.yaml",
        'name: hourly\ntimer: {cron: "0 * * * *", catch_up: latest}\njobs: {a: {steps: [{run: "true"}]}}\n',
    )
    proj.write(
        "workflows/quiet.yaml",
        'name: quiet\ntimer: {cron: "0 * * * *", catch_up: none}\njobs: {a: {steps: [{run: "true"}]}}\n',
    )
    svc = proj.service()
    with svc.db.write() as tx:  # the engine last fired both five hours ago: five fires were missed since
        for wf in ("hourly", "quiet"):
            tx.insert(
                "timer_fires",
                {"workflow": wf, "fire_at": (time.time() // 3600 - 5) * 3600, "status": "started"},
            )
    add_ticker(proj)
    proj.ok("engine", "start")
    proj.wait_for(lambda: svc.db.scalar("SELECT COUNT(*) FROM runs") == 1, what="the catch-up run")
    wait_ticks(proj, after=time.time())  # later ticks catch nothing more up
    runs = svc.list_runs()
    assert [(r["target"], r["trigger"]) for r in runs] == [("hourly", "timer")]
    events = {e["kind"]: e for e in proj.ok("history", "--json").json}
    assert "catching up 5 missed fire(s)" in events["timer.fired"]["message"]
    assert "5 fire(s) missed while no engine ran, dropped" in events["timer.missed"]["message"]


CIRCLE = {
    "workflows/parent.yaml": """\
        name: parent
        inputs: {mode: {default: ok}}
        jobs:
          prepare: {steps: [{run: 'echo "ticket=T-1" >> "$SLUICE_OUTPUT"'}]}
          call-b:
            needs: [prepare]
            trigger:
              workflow: child
              inputs: {mode: "${{ inputs.mode }}", ticket: "${{ jobs.prepare.outputs.ticket }}"}
          use:
            needs: [call-b]
            env: {RESULT: "${{ jobs.call-b.outputs.check.result }}"}
            steps: [{run: 'echo "child said $RESULT"'}]
        """,
    "workflows/child.yaml": """\
        name: child
        inputs: {mode: {required: true, enum: [ok, fail]}, ticket: {required: true}}
        jobs:
          check:
            steps:
              - run: 'echo "result=checked-$INPUT_TICKET" >> "$SLUICE_OUTPUT"; [ "$INPUT_MODE" = ok ]'
        """,
}


def test_trigger_waits_for_the_child_and_gets_its_outputs(proj: Proj) -> None:
    for rel, text in CIRCLE.items():
        proj.write(rel, text)
    r = proj.ok("workflow", "run", "parent", "--json")
    view = r.json
    js = {j["name"]: j for j in view["jobs"]}
    assert js["call-b"]["status"] == "succeeded" and js["call-b"]["agent"] is None  # held no agent
    assert js["call-b"]["outputs"] == {"check.result": "checked-T-1"}
    child = proj.ok("run", "show", "2", "--json").json
    assert child["trigger"] == "trigger" and child["parent_run_id"] == 1
    assert child["inputs"] == {"mode": "ok", "ticket": "T-1"}
    assert "child said checked-T-1" in proj.ok("run", "logs", "1").out


def test_trigger_fails_when_the_child_fails_or_is_refused(proj: Proj) -> None:
    for rel, text in CIRCLE.items():
        proj.write(rel, text)
    r = proj.sluice("workflow", "run", "parent", "-i", "mode=fail", "--json")
    assert r.code == 1
    js = {j["name"]: j for j in r.json["jobs"]}
    assert js["call-b"]["status"] == "failed" and js["call-b"]["reason"] == "run #2 of child failed"
    assert js["use"]["status"] == "skipped"
    proj.ok("workflow", "pause", "child", "--reason", "maintenance")
    r = proj.sluice("workflow", "run", "parent", "--json")
    js = {j["name"]: j for j in r.json["jobs"]}
    assert js["call-b"]["status"] == "failed"
    assert js["call-b"]["reason"].startswith("child refused the run: workflow child is paused by ")
    assert "maintenance" in js["call-b"]["reason"]


def test_manual_circleback_releases_the_parent_hold(proj: Proj) -> None:
    proj.write(
        "workflows/a.yaml",
        """\
        name: a
        jobs:
          kick: {trigger: {workflow: b, wait: false}}
          wait-for-b: {hold: {prompt: b releases this}, steps: [{run: 'echo "b is done"'}]}
          read-b:
            needs: [wait-for-b]
            # b released the hold from its last step, so b may still be finishing: read its result once it has one
            steps: [{run: 'for i in $(seq 100); do sluice run show 2 --json | grep -q "\\"status\\": \\"succeeded\\"" && { echo "b succeeded"; exit 0; }; sleep 0.1; done; exit 1'}]
        """,
    )
    proj.write(
        "workflows/b.yaml",
        """\
        name: b
        jobs:
          work:
            steps:
              - run: 'echo working'
              - when: always
                run: 'sluice workflow release wait-for-b --run "$SLUICE_PARENT_RUN_ID" --comment "from b"'
        """,
    )
    proj.ok("workflow", "run", "a", "--detach")
    svc = proj.service()
    view = svc.wait_run(1, stop_on_hold=False)
    assert view["status"] == "succeeded", view
    js = {j["name"]: j for j in view["jobs"]}
    assert js["kick"]["reason"] == "started run #2 of b"
    assert js["wait-for-b"]["comment"] == "from b"
    assert "b succeeded" in proj.ok("run", "logs", "1", "--job", "read-b").out


def test_pause_refuses_every_source_and_in_flight_runs_wait(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        timer: "* * * * * *"
        jobs:
          first: {steps: [{run: 'until [ -e "$SLUICE_PROJECT/go" ]; do sleep 0.05; done'}]}
          second: {needs: [first], steps: [{run: 'echo second >> "$SLUICE_PROJECT/ran"'}]}
        """,
    )
    proj.write("workflows/caller.yaml", "name: caller\njobs: {t: {trigger: {workflow: w}}}\n")
    proj.ok("engine", "start")
    svc = proj.service()
    proj.wait_for(lambda: svc.db.scalar("SELECT COUNT(*) FROM runs") >= 1, what="a timer run")
    proj.ok("workflow", "pause", "w", "--reason", "change freeze")
    first_run = svc.db.scalar("SELECT MIN(id) FROM runs")
    n_runs = svc.db.scalar("SELECT COUNT(*) FROM runs")
    # manual
    r = proj.sluice("workflow", "run", "w")
    assert r.code == 3 and "workflow w is paused by" in r.err and "change freeze" in r.err
    # queue
    proj.ok("workflow", "queue", "w")
    assert proj.sluice("queue", "execute", "--all", "--yes").code == 3
    # schedule (the queued item is purged first: one invocation, one item)
    proj.ok("queue", "purge", "--workflow", "w")
    item = proj.ok("workflow", "schedule", "w", "--at", "+1s", "--json").json
    refusal = proj.wait_for(
        lambda: svc.db.one(
            "SELECT message FROM events WHERE kind = 'queue.refused' AND item_id = ?", (item["id"],)
        ),
        what="the scheduled item refused",
    )
    assert "workflow w is paused by" in refusal["message"] and "change freeze" in refusal["message"]
    assert svc.db.scalar("SELECT status FROM queue_items WHERE id = ?", (item["id"],)) == "queued"
    # timer: fires are skipped with the reason
    proj.wait_for(
        lambda: svc.db.scalar("SELECT COUNT(*) FROM timer_fires WHERE status = 'skipped'") >= 1,
        what="a skipped fire",
    )
    assert "change freeze" in svc.db.scalar("SELECT reason FROM timer_fires WHERE status = 'skipped' LIMIT 1")
    # trigger
    caller = svc.run_workflow("caller", {})
    view = svc.wait_run(caller)
    assert view["jobs"][0]["reason"].startswith("w refused the run: workflow w is paused")
    # the in-flight run: its next job waits with reason paused
    (proj.root / "go").touch()  # its first job ends only now, well after the pause
    proj.wait_for(
        lambda: {j["name"]: j for j in svc.run_view(first_run)["jobs"]}["second"]["reason"] == "paused",
        what="second waits: paused",
    )
    assert svc.db.scalar("SELECT COUNT(*) FROM runs WHERE target = 'w'") == n_runs
    proj.ok("workflow", "unpause", "w")
    proj.wait_for(lambda: svc.run_view(first_run)["status"] == "succeeded", what="continues on unpause")


def test_until_success_lock_and_unlock(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        lock: until_success
        inputs: {code: {default: "0"}, hold: {default: "no"}}
        jobs: {a: {steps: [{run: 'until [ "$INPUT_HOLD" = no ] || [ -e go ]; do sleep 0.05; done; exit "$INPUT_CODE"'}]}}
        """,
    )
    proj.ok("workflow", "run", "w", "--detach", "-i", "hold=yes")  # runs until the test says go
    svc = proj.service()
    proj.wait_for(lambda: svc.db.scalar("SELECT status FROM jobs") == "running", what="run 1 running")
    r = proj.sluice("workflow", "run", "w")
    assert r.code == 3 and "locked by run #1" in r.err
    r = proj.sluice("workflow", "unlock", "w")
    assert r.code == 3 and "run #1 of w is still" in r.err
    (proj.root / "go").touch()
    assert proj.service().wait_run(1)["status"] == "succeeded"
    proj.ok("workflow", "run", "w")  # run 1 succeeded: the lock is gone
    assert proj.sluice("workflow", "run", "w", "-i", "code=3").code == 1  # run 3 fails...
    r = proj.sluice("workflow", "run", "w")
    assert r.code == 3 and "locked by run #3 (failed, lock: until_success)" in r.err  # ...and keeps the lock
    assert proj.ok("workflow", "list", "--json").json[0]["locked_by_run"] == 3
    proj.ok("workflow", "unlock", "w")
    proj.ok("workflow", "run", "w")
    assert "workflow.unlocked" in [e["kind"] for e in proj.ok("history", "--json").json]


def test_until_complete_counts_a_held_run(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        'name: w\nlock: until_complete\njobs: {gate: {hold: true, steps: [{run: "true"}]}}\n',
    )
    proj.ok("workflow", "run", "w")
    r = proj.sluice("workflow", "run", "w")
    assert r.code == 3 and "locked by run #1 (on_hold" in r.err
    procs = [proj.popen("workflow", "run", "w", "--detach") for _ in range(4)]
    assert all(p.wait(timeout=60) == 3 for p in procs)  # the lock holds under a race
    proj.ok("workflow", "reject", "gate", "--reason", "no")
    proj.service().wait_run(1)
    codes = sorted(
        p.wait(timeout=60) for p in [proj.popen("workflow", "run", "w", "--detach") for _ in range(4)]
    )
    assert codes == [0, 3, 3, 3]  # two at the same moment never both start
