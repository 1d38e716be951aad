"""Running workflows and methods through the CLI on a real engine: the DAG, steps, outputs, logs."""

from __future__ import annotations

from conftest import Proj

SHAPE_RUN = {
    "id",
    "kind",
    "target",
    "status",
    "trigger",
    "created_by",
    "created_at",
    "started_at",
    "finished_at",
    "inputs",
    "parent_run_id",
    "rerun_of",  # SPEC 14: the run a `run rerun` repeats
    "break_glass",  # SPEC 13: why a window or a freeze was overridden
    "materials",
    "jobs",
}
SHAPE_JOB = {
    "name",
    "status",
    "reason",
    "agent",
    "exit_code",
    "started_at",
    "finished_at",
    "outputs",
    "released_by",
    "released_at",
    "comment",
    "approvals",  # SPEC 13: each approval of a hold that needs several
    "break_glass",
    "fields",  # SPEC 11: what the releaser gave, secrets masked
}


def jobs(view: dict) -> dict[str, dict]:
    return {j["name"]: j for j in view["jobs"]}


def test_run_follows_and_returns_json_shape(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {who: {default: world}}
        jobs:
          a: {steps: [{run: 'echo "hi $INPUT_WHO"'}]}
          b: {needs: [a], steps: [{run: echo second}]}
        """,
    )
    r = proj.ok("workflow", "run", "w", "--input", "who=ops")
    assert "[a] hi ops" in r.out
    assert "[b] second" in r.out
    assert "run #1 ✓ succeeded" in r.out
    assert "started the engine in the background" in r.err
    view = proj.ok("run", "show", "1", "--json").json
    assert set(view) == SHAPE_RUN
    assert set(view["jobs"][0]) == SHAPE_JOB
    assert view["status"] == "succeeded" and view["trigger"] == "manual" and view["kind"] == "workflow"
    assert view["inputs"] == {"who": "ops"}
    assert [j["status"] for j in view["jobs"]] == ["succeeded", "succeeded"]
    assert view["created_at"][-6] in "+-"  # ISO 8601 with offset
    assert isinstance(view["id"], int)


def test_failed_run_exits_1_and_skips_dependents(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          build: {steps: [{run: "exit 3"}]}
          deploy: {needs: [build], steps: [{run: echo deploying}]}
          after-deploy: {needs: [deploy], steps: [{run: echo never}]}
          on-fail: {needs: [deploy], if: failure, steps: [{run: echo cleaning up}]}
          notify: {needs: [build], if: always, steps: [{run: echo notified}]}
        """,
    )
    r = proj.sluice("workflow", "run", "w", "--json")
    assert r.code == 1
    js = jobs(r.json)
    assert r.json["status"] == "failed"
    assert js["build"]["status"] == "failed" and js["build"]["exit_code"] == 3
    assert js["deploy"]["status"] == "skipped" and "build did not succeed" in js["deploy"]["reason"]
    assert js["after-deploy"]["status"] == "skipped"
    assert js["on-fail"]["status"] == "succeeded"
    assert js["notify"]["status"] == "succeeded"
    logs = proj.ok("run", "logs", "1").out
    assert "deploying" not in logs and "never" not in logs
    assert "cleaning up" in logs and "notified" in logs


def test_if_failure_is_skipped_when_all_succeed(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          a: {steps: [{run: "true"}]}
          rollback: {needs: [a], if: failure, steps: [{run: echo rollback}]}
        """,
    )
    view = proj.ok("workflow", "run", "w", "--json").json
    assert view["status"] == "succeeded"
    assert jobs(view)["rollback"]["status"] == "skipped"


def test_a_pipeline_whose_reader_stops_early_ends_as_in_a_terminal(proj: Proj) -> None:
    """The engine's agent starts steps with posix_spawn: the step gets SIGPIPE and SIGXFSZ at their
    defaults (Python ignores both), so a writer whose reader is gone ends at once, without a word."""
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          a: {steps: [{run: 'while :; do echo x; done | head -n 2; grep -E "^SigIgn" /proc/self/status'}]}
        """,
    )
    r = proj.sluice("workflow", "run", "w", "--json")
    assert r.code == 0, r.err
    logs = proj.ok("run", "logs", "1", "--job", "a").out
    assert "x\nx\n" in logs and "Broken pipe" not in logs
    ignored = int(logs.split("SigIgn:")[1].split()[0], 16)
    assert not ignored & (1 << (13 - 1)) and not ignored & (1 << (25 - 1))  # SIGPIPE, SIGXFSZ


def test_when_always_steps_run_after_a_failed_step(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          a:
            steps:
              - run: echo one
              - run: "exit 4"
              - run: echo skipped-step
              - {run: echo cleanup, when: always}
        """,
    )
    r = proj.sluice("workflow", "run", "w", "--json")
    assert r.code == 1
    a = jobs(r.json)["a"]
    assert a["exit_code"] == 4
    logs = proj.ok("run", "logs", "1", "--job", "a").out
    assert "one" in logs and "cleanup" in logs
    assert "skip step 3" in logs and "\nskipped-step" not in logs


def test_outputs_and_expressions(proj: Proj) -> None:
    proj.write(
        "models/m.yaml",
        """\
        name: greeter
        methods:
          greet:
            inputs: {who: {required: true}, greeting: {default: hello}}
            run: 'echo "$INPUT_GREETING $INPUT_WHO"; echo "said=$INPUT_GREETING" >> "$SLUICE_OUTPUT"'
        """,
    )
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {version: {required: true}}
        jobs:
          build:
            steps:
              - run: 'echo "artifact=app-$INPUT_VERSION" >> "$SLUICE_OUTPUT"; echo "n=7" >> "$SLUICE_OUTPUT"'
          use:
            needs: [build]
            env:
              ART: "${{ jobs.build.outputs.artifact }}"
              RUN: "run-${{ run.id }}"
            steps:
              - run: 'echo "got $ART in $RUN for $SLUICE_WORKFLOW/$SLUICE_JOB"'
              - method: greeter.greet
                with: {who: "${{ jobs.build.outputs.artifact }}"}
        """,
    )
    view = proj.ok("workflow", "run", "w", "-i", "version=1.2", "--json").json
    js = jobs(view)
    assert js["build"]["outputs"] == {"artifact": "app-1.2", "n": "7"}
    assert js["use"]["outputs"] == {"said": "hello"}
    logs = proj.ok("run", "logs", str(view["id"])).out
    assert "got app-1.2 in run-1 for w/use" in logs
    assert "hello app-1.2" in logs


def test_inputs_are_never_pasted_into_commands(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {x: {}}
        jobs:
          a: {steps: [{run: 'printf "%s\\n" "$INPUT_X"'}, {run: [printf, "argv:%s\\n", "$INPUT_X"]}]}
        """,
    )
    danger = "$(touch pwned); `touch pwned2`"
    proj.ok("workflow", "run", "w", "--input", f"x={danger}")
    logs = proj.ok("run", "logs", "1").out
    assert danger in logs
    assert "argv:$INPUT_X" in logs  # a list runs without a shell: no expansion at all
    assert not (proj.root / "pwned").exists() and not (proj.root / "pwned2").exists()


def test_step_environment(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          a:
            parallelism: 2
            steps:
              - run: 'echo "$SLUICE_RUN_ID|$SLUICE_JOB|$SLUICE_WORKFLOW|$SLUICE_PARALLEL_INDEX/$SLUICE_PARALLEL_COUNT|$PWD" ; touch "$SLUICE_WORKSPACE/mark-$SLUICE_PARALLEL_INDEX"'
        """,
    )
    view = proj.ok("workflow", "run", "w", "--json").json
    assert sorted(jobs(view)) == ["a[0]", "a[1]"]
    logs = proj.ok("run", "logs", "1").out
    assert f"1|a[0]|w|0/2|{proj.root}" in logs
    assert f"1|a[1]|w|1/2|{proj.root}" in logs
    ws = proj.root / ".sluice" / "workspaces" / "run-1"
    assert (ws / "mark-0").exists() and (ws / "mark-1").exists()


def test_method_run_and_list(proj: Proj) -> None:
    proj.write(
        "models/m.yaml",
        """\
        name: ad-account
        methods:
          create:
            description: Create an account
            inputs: {user: {required: true, pattern: '^[a-z]+$'}, token: {secret: true, default: s3cr3t}}
            run: 'echo "creating $INPUT_USER with $INPUT_TOKEN"'
        """,
    )
    r = proj.ok("method", "run", "ad-account", "create", "--input", "user=jsmith", "--json")
    view = r.json
    assert view["kind"] == "method" and view["target"] == "ad-account.create"
    assert view["inputs"] == {"user": "jsmith", "token": "***"}
    logs = proj.ok("run", "logs", str(view["id"])).out
    assert "creating jsmith with ***" in logs and "s3cr3t" not in logs
    listed = proj.ok("method", "list", "--json").json
    assert listed[0]["target"] == "ad-account.create"


def test_bad_input_is_exit_2_and_creates_nothing(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {version: {required: true, pattern: '^v\\d+$'}, n: {type: int, default: 1}, env: {enum: [qa, prod]}}
        jobs: {a: {steps: [{run: "true"}]}}
        """,
    )
    cases = [
        ([], "missing required input 'version'"),
        (["-i", "version=1"], "input 'version': '1' does not match pattern"),
        (["-i", "version=v1", "-i", "n=two"], "input 'n': 'two' is not an integer"),
        (["-i", "version=v1", "-i", "env=staging"], "'staging' is not one of qa, prod"),
        (["-i", "version=v1", "-i", "verison=v2"], "unknown input 'verison' (did you mean 'version'?)"),
        (["-i", "version"], "--input 'version' must look like KEY=VALUE"),
    ]
    for extra, message in cases:
        r = proj.sluice("workflow", "run", "w", *extra)
        assert r.code == 2, (extra, r)
        assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert proj.ok("run", "list", "--json").json == []


def test_not_found_is_exit_4(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: release\njobs: {a: {steps: [{run: "true"}]}}\n')
    r = proj.sluice("workflow", "run", "relase")
    assert r.code == 4 and "no workflow 'relase' (did you mean 'release'?)" in r.err
    r = proj.sluice("run", "show", "99")
    assert r.code == 4 and r.err.strip() == "sluice: no run #99"
    r = proj.sluice("method", "run", "nomodel", "x")
    assert r.code == 4


def test_unknown_command_is_one_line_exit_2(proj: Proj) -> None:
    r = proj.sluice("wrokflow", "list")
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1 and "invalid choice: 'wrokflow'" in r.err


def test_detach_returns_run_id_at_once(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {a: {steps: [{run: "sleep 0.5; echo done"}]}}\n')
    r = proj.ok("workflow", "run", "w", "--detach")
    assert r.out.strip() == "1"
    proj.wait_for(lambda: proj.ok("run", "show", "1", "--json").json["status"] == "succeeded", what="run 1")


def test_logs_follow_streams_until_finished(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs: {a: {steps: [{run: "for i in 1 2 3; do echo line-$i; sleep 0.3; done"}]}}
        """,
    )
    proj.ok("workflow", "run", "w", "--detach")
    r = proj.ok("run", "logs", "1", "--follow")
    assert [ln for ln in r.out.splitlines() if ln.startswith("[a] line-")] == [
        "[a] line-1",
        "[a] line-2",
        "[a] line-3",
    ]


def test_run_list_filters_and_limit(proj: Proj) -> None:
    proj.write("workflows/a.yaml", 'name: a\njobs: {j: {steps: [{run: "true"}]}}\n')
    proj.write("workflows/b.yaml", 'name: b\njobs: {j: {steps: [{run: "false"}]}}\n')
    proj.ok("workflow", "run", "a")
    proj.sluice("workflow", "run", "b")
    proj.ok("workflow", "run", "a")
    assert [r["id"] for r in proj.ok("run", "list", "--json").json] == [3, 2, 1]
    assert [r["id"] for r in proj.ok("run", "list", "--workflow", "a", "--json").json] == [3, 1]
    assert [r["id"] for r in proj.ok("run", "list", "--status", "failed", "--json").json] == [2]
    assert [r["id"] for r in proj.ok("run", "list", "--limit", "1", "--json").json] == [3]
    table = proj.ok("run", "list").out
    assert "✗ failed" in table and "✓ succeeded" in table


def test_history_records_the_run(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    proj.ok("workflow", "run", "w")
    kinds = [e["kind"] for e in proj.ok("history", "--json").json]
    assert {"run.created", "job.started", "job.succeeded", "run.succeeded"} <= set(kinds)
    assert kinds.index("run.succeeded") < kinds.index("run.created")  # newest first


def test_workflow_list_and_show(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        'name: w\ndescription: the w\nlock: until_complete\njobs: {j: {steps: [{run: "true"}]}}\n',
    )
    rows = proj.ok("workflow", "list", "--json").json
    assert rows[0]["name"] == "w" and rows[0]["lock"] == "until_complete" and rows[0]["last_run"] is None
    assert "until_complete" in proj.ok("workflow", "show", "w").out
