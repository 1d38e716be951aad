"""Every definition check of SPEC 2, through `sluice validate` (exit 2, path:line:col: message)."""

from __future__ import annotations

import pytest
from conftest import Proj

GOOD_MODEL = """\
name: load-balancer
methods:
  swap:
    inputs:
      target: {required: true, enum: [blue, green]}
    run: echo "$INPUT_TARGET"
"""


@pytest.fixture
def proj(defs_proj: Proj) -> Proj:
    """Definitions are checked before any store is opened: these tests get a project with no
    database, once, instead of the conftest `proj` that runs every test on both backends."""
    return defs_proj


def problems(proj: Proj) -> list[str]:
    r = proj.sluice("validate")
    assert r.code == 2, r
    assert "Traceback" not in r.err
    return [ln for ln in r.err.splitlines() if not ln.startswith("sluice:")]


def wf(proj: Proj, body: str, name: str = "w") -> None:
    proj.write(f"workflows/{name}.yaml", body)


def test_valid_project_passes(proj: Proj) -> None:
    proj.write("models/lb.yaml", GOOD_MODEL)
    wf(
        proj,
        """\
        name: w
        inputs: {version: {required: true}}
        jobs:
          a: {steps: [{run: "true"}]}
          b:
            needs: [a]
            env: {V: "${{ jobs.a.outputs.x }}", R: "${{ run.id }}"}
            steps: [{method: load-balancer.swap, with: {target: "${{ inputs.version }}"}}]
        """,
    )
    r = proj.ok("validate")
    assert "all valid" in r.out


def test_yaml_syntax_error_has_position(proj: Proj) -> None:
    wf(proj, "name: w\njobs:\n  a: {steps: [\n")
    [p] = problems(proj)
    assert p.startswith("workflows/w.yaml:4:1: YAML syntax error")


def test_unknown_key_did_you_mean(proj: Proj) -> None:
    wf(
        proj,
        """\
        name: w
        jobs:
          a:
            stpes: [{run: "true"}]
        """,
    )
    ps = problems(proj)
    assert "workflows/w.yaml:4:5: unknown key 'stpes' in job a (did you mean 'steps'?)" in ps


def test_wrong_types(proj: Proj) -> None:
    wf(
        proj,
        """\
        name: w
        jobs:
          a:
            parallelism: many
            needs: 3
            steps: [{run: "true"}]
        """,
    )
    ps = "\n".join(problems(proj))
    assert "workflows/w.yaml:4:18: job a.parallelism must be an integer" in ps
    assert "workflows/w.yaml:5:12: job a.needs must be a list of strings" in ps


def test_unknown_needs_and_cycle(proj: Proj) -> None:
    wf(
        proj,
        """\
        name: w
        jobs:
          a: {needs: [c], steps: [{run: "true"}]}
          b: {needs: [a], steps: [{run: "true"}]}
          c: {needs: [b], steps: [{run: "true"}]}
          d: {needs: [bb], steps: [{run: "true"}]}
        """,
    )
    ps = "\n".join(problems(proj))
    assert "jobs form a cycle: a -> c -> b -> a" in ps
    assert "workflows/w.yaml:6:15: job d needs unknown job 'bb' (did you mean 'b'?)" in ps


def test_unknown_model_method_workflow_environment_group_material(proj: Proj) -> None:
    proj.write("sluice.yaml", "name: t\nenvironments: {qa: {}}\ngroups: {seniors: [carol]}\n")
    proj.write("models/lb.yaml", GOOD_MODEL)
    wf(
        proj,
        """\
        name: w
        environment: qaa
        materials:
          up: {workflow: buidl}
        jobs:
          a:
            env: {REV: "${{ materials.app.revision }}"}
            steps:
              - method: load-balanser.swap
              - method: load-balancer.swop
          t: {trigger: {workflow: nope}}
          h:
            hold: {approvers: [senoirs]}
            steps: [{run: "true"}]
        """,
    )
    ps = "\n".join(problems(proj))
    assert "unknown environment 'qaa' (did you mean 'qa'?)" in ps
    assert "unknown workflow 'buidl'" in ps
    assert "unknown material 'app'" in ps
    assert "unknown model 'load-balanser' (did you mean 'load-balancer'?)" in ps
    assert "unknown method 'swop' of model load-balancer (did you mean 'swap'?)" in ps
    assert "unknown workflow 'nope'" in ps
    assert "unknown approver or group 'senoirs' (did you mean 'seniors'?)" in ps


def test_cron_syntax(proj: Proj) -> None:
    wf(proj, 'name: w\ntimer: "61 * * * *"\njobs: {a: {steps: [{run: "true"}]}}\n')
    [p] = problems(proj)
    assert p == "workflows/w.yaml:2:8: timer '61 * * * *' is not a valid cron expression"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{type: integer}", "inputs.n.type must be one of string, int, bool, not 'integer'"),
        ("{type: int, default: abc}", "inputs.n.default: 'abc' is not an integer"),
        ("{enum: [a, b], default: c}", "inputs.n.default: 'c' is not one of a, b"),
        ("{pattern: '['}", "inputs.n.pattern is not a valid regular expression"),
        ("{requird: true}", "unknown key 'requird' in inputs.n (did you mean 'required'?)"),
    ],
)
def test_input_rules(proj: Proj, spec: str, message: str) -> None:
    wf(proj, f'name: w\ninputs:\n  n: {spec}\njobs: {{a: {{steps: [{{run: "true"}}]}}}}\n')
    assert message in "\n".join(problems(proj))


def test_duplicate_names_across_files(proj: Proj) -> None:
    wf(proj, 'name: w\njobs: {a: {steps: [{run: "true"}]}}\n', name="one")
    wf(proj, 'name: w\njobs: {a: {steps: [{run: "true"}]}}\n', name="two")
    [p] = problems(proj)
    assert p == "workflows/two.yaml:1:1: duplicate workflow name 'w' (also defined in workflows/one.yaml)"


def test_duplicate_key_in_one_file(proj: Proj) -> None:
    wf(proj, 'name: w\njobs:\n  a: {steps: [{run: "true"}]}\n  a: {steps: [{run: "false"}]}\n')
    assert "workflows/w.yaml:4:3: duplicate key 'a'" in problems(proj)


def test_expressions_only_where_allowed(proj: Proj) -> None:
    wf(
        proj,
        """\
        name: w
        inputs: {x: {}}
        jobs:
          a: {steps: [{run: "echo ${{ inputs.x }}"}]}
          b: {env: {Y: "${{ inputs.y }}", Z: "${{ secrets.k }}"}, steps: [{run: "true"}]}
        """,
    )
    ps = "\n".join(problems(proj))
    assert "expressions are not allowed in run text" in ps
    assert "unknown input 'y' in '${{ inputs.y }}'" in ps
    assert "unknown expression" in ps


def test_job_outputs_only_from_needs(proj: Proj) -> None:
    wf(
        proj,
        """\
        name: w
        jobs:
          a: {steps: [{run: "true"}]}
          b: {env: {X: "${{ jobs.a.outputs.k }}"}, steps: [{run: "true"}]}
        """,
    )
    assert "job 'a' is not among this job's needs" in "\n".join(problems(proj))


def test_method_with_checks_inputs(proj: Proj) -> None:
    proj.write("models/lb.yaml", GOOD_MODEL)
    wf(
        proj,
        """\
        name: w
        jobs:
          a: {steps: [{method: load-balancer.swap, with: {targett: blue}}]}
        """,
    )
    assert "unknown input 'targett' for method load-balancer.swap (did you mean 'target'?)" in "\n".join(
        problems(proj)
    )


def test_invalid_definitions_block_every_command(proj: Proj) -> None:
    wf(proj, "name: w\njobs: {a: {steps: [{rn: x}]}}\n")
    for args in (["workflow", "run", "w"], ["workflow", "list"], ["run", "list"]):
        r = proj.sluice(*args)
        assert r.code == 2
        assert "unknown key 'rn'" in r.err
    assert proj.engine_info() is None


def test_validate_json(proj: Proj) -> None:
    wf(proj, "name: w\njobs: {a: {steps: [{rn: x}]}}\n")
    r = proj.sluice("validate", "--json")
    assert r.code == 2
    doc = r.json
    assert doc["valid"] is False
    assert doc["problems"][0]["path"] == "workflows/w.yaml"
    assert doc["problems"][0]["line"] == 2


def test_missing_project_is_one_line(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    p = subprocess.run(
        [sys.executable, "-m", "tui.cli", "workflow", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == 4
    assert p.stderr.startswith("sluice: no sluice.yaml in ")
    assert len(p.stderr.strip().splitlines()) == 1
