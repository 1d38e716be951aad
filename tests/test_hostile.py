"""Hostile input and the rules of SPEC 2 and 10 that came out of attacking sluice (issue 10).

Hostile definition files, arguments and values each fail with one clear line and the right
exit code, nothing is changed by them, and text from users reaches a terminal escaped.
Tests that never touch a database run once (on a `defs_proj`); the others on both backends.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys

import pytest
from conftest import Proj, Result

PROBLEM = re.compile(r"^(?P<path>[\w./-]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")
ESC = "\x1b"


def one_problem(r: Result, path: str = "workflows/w.yaml") -> re.Match[str]:
    """Exit 2, no traceback, and exactly one `path:line:col: message` line naming the file."""
    assert r.code == 2, r
    assert "Traceback" not in r.err, r.err
    lines = [ln for ln in r.err.splitlines() if not ln.startswith("sluice:")]
    assert len(lines) == 1, r.err
    m = PROBLEM.match(lines[0])
    assert m and m["path"] == path, lines
    return m


def queued(proj: Proj) -> list[dict]:
    return proj.ok("queue", "list", "--json").json


# ---------------------------------------------------------------- item 8: SLUICE_USER

HELD = """\
name: ship
jobs:
  ship:
    hold: {approvers: [seniors]}
    steps: [{run: 'echo shipped >> "$SLUICE_PROJECT/ran"'}]
"""


def test_sluice_user_is_refused_where_the_project_does_not_trust_it(proj: Proj) -> None:
    proj.write("sluice.yaml", "name: t\ngroups: {seniors: [carol]}\n")
    proj.write("workflows/ship.yaml", HELD)
    proj.ok("workflow", "run", "ship")
    r = proj.sluice("workflow", "release", "ship", env={"SLUICE_USER": "carol"})
    assert r.code == 3, r
    assert "SLUICE_USER is set, but this project does not trust it" in r.err
    assert "trust_sluice_user: true" in r.err
    assert proj.ok("run", "show", "1", "--json").json["jobs"][0]["status"] == "held"
    assert "job.released" not in [e["kind"] for e in proj.ok("history", "--json").json]
    # staging records an actor too: refused, nothing queued
    r = proj.sluice("workflow", "queue", "ship", env={"SLUICE_USER": "carol"})
    assert r.code == 3 and "trust_sluice_user" in r.err
    assert queued(proj) == []
    # reading needs no actor
    proj.ok("queue", "list", env={"SLUICE_USER": "carol"})


def test_login_variables_do_not_make_anyone_an_approver(proj: Proj) -> None:
    """getpass.getuser() believes LOGNAME and USER: the actor comes from the process's uid."""
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    proj.write("sluice.yaml", "name: t\ngroups: {seniors: [carol]}\n")
    proj.write("workflows/ship.yaml", HELD)
    proj.ok("workflow", "run", "ship")
    posing = {"LOGNAME": "carol", "USER": "carol", "LNAME": "carol", "USERNAME": "carol"}
    r = proj.sluice("workflow", "release", "ship", env=posing)
    assert r.code == 3, r
    assert f"{me} may not release ship" in r.err
    assert proj.ok("run", "show", "1", "--json").json["jobs"][0]["status"] == "held"


def test_trusted_sluice_user_is_the_actor(proj: Proj) -> None:
    proj.write("sluice.yaml", "name: t\ntrust_sluice_user: true\ngroups: {seniors: [carol]}\n")
    proj.write("workflows/ship.yaml", HELD)
    proj.ok("workflow", "run", "ship")
    r = proj.sluice("workflow", "release", "ship", env={"SLUICE_USER": "mallory"})
    assert r.code == 3 and "mallory may not release ship" in r.err
    proj.ok("workflow", "release", "ship", env={"SLUICE_USER": "carol"})
    assert proj.service().wait_run(1)["jobs"][0]["released_by"].startswith("carol@")


def test_trust_sluice_user_must_be_a_boolean(defs_proj: Proj) -> None:
    defs_proj.write("sluice.yaml", "name: t\ntrust_sluice_user: sure\n")
    m = one_problem(defs_proj.sluice("validate"), "sluice.yaml")
    assert (m["line"], m["col"]) == ("2", "20") and m["message"] == "trust_sluice_user must be true or false"


# ---------------------------------------------------------------- item 9: escaped text

NOTED = """\
name: w
inputs:
  v: {default: plain}
  code: {secret: true, default: "0000"}
jobs:
  gate: {hold: true, steps: [{run: 'true'}]}
"""
EVIL = f"ok{ESC}[2J{ESC}[1A\rforged line\nnext\u202eevil"


def test_user_text_reaches_the_terminal_escaped_and_json_raw(proj: Proj) -> None:
    proj.write("workflows/w.yaml", NOTED)
    proj.ok("workflow", "queue", "w", "--note", EVIL, "-i", f"v={EVIL}")
    for args in (("queue", "list"), ("history",)):
        out = proj.ok(*args).out
        assert ESC not in out and "\r" not in out and "\u202e" not in out, args
        assert "ok\\x1b[2J\\x1b[1A\\rforged line\\nnext\\u202eevil" in out, (args, out)
        assert len(out.splitlines()) == 2, out  # a header and one row: no forged lines
    [item] = queued(proj)
    assert item["note"] == EVIL and item["inputs"]["v"] == EVIL  # --json carries the raw text
    # a run's inputs, a reject reason, and an error that quotes a value
    proj.ok("queue", "execute", str(item["id"]), "--yes")
    proj.ok("workflow", "reject", "gate", "--run", "1", "--reason", EVIL)
    view = proj.service().wait_run(1)
    assert view["status"] == "failed"
    for args in (("run", "show", "1"), ("run", "list")):
        out = proj.ok(*args).out
        assert ESC not in out and "\r" not in out, (args, out)
    assert "rejected by" in proj.ok("run", "show", "1").out
    assert "\\x1b[2J" in proj.ok("run", "show", "1").out
    r = proj.sluice("workflow", "queue", "nope\x1b[31m")
    assert r.code == 4 and ESC not in r.err and "nope\\x1b[31m" in r.err
    assert len(r.err.splitlines()) == 1


# ---------------------------------------------------------------- item 10: hostile files


def alias_bomb(levels: int) -> str:
    items = ['&a0 ["xxxxxxxx","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        items.append(f"&a{i} [{','.join([f'*a{i - 1}'] * 9)}]")
    return (
        "name: w\ninputs:\n  v:\n    enum: [" + ", ".join(items) + "]\njobs:\n  a: {steps: [{run: 'true'}]}\n"
    )


def test_alias_bomb_is_refused_fast(defs_proj: Proj) -> None:
    text = alias_bomb(7)
    assert len(text) < 1024  # 9**7 values from a file under 1 KB
    defs_proj.write("workflows/w.yaml", text)
    m = one_problem(defs_proj.sluice("validate", timeout=30))
    assert "aliases here expand to more than 10,000 values" in m["message"]
    r = defs_proj.sluice("workflow", "list", "--json", timeout=30)
    assert r.code == 2 and r.json["valid"] is False and len(r.json["problems"]) == 1


def test_a_few_aliases_are_fine(defs_proj: Proj) -> None:
    defs_proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          a: {steps: &steps [{run: 'true'}, {run: 'echo two'}]}
          b: {steps: *steps}
        """,
    )
    defs_proj.ok("validate")


def test_self_referring_alias_is_refused(defs_proj: Proj) -> None:
    defs_proj.write(
        "workflows/w.yaml", "name: w\ninputs:\n  v: {default: &a [*a]}\njobs: {a: {steps: [{run: 'true'}]}}\n"
    )
    m = one_problem(defs_proj.sluice("validate", timeout=30))
    assert (m["line"], m["col"]) == ("3", "16")
    assert m["message"] == "an alias refers to the value that contains it"


def test_deep_nesting_is_refused(defs_proj: Proj) -> None:
    deep = "[" * 500 + "]" * 500
    defs_proj.write(
        "workflows/w.yaml",
        f"name: w\ninputs:\n  v: {{default: {deep}}}\njobs: {{a: {{steps: [{{run: 'true'}}]}}}}\n",
    )
    m = one_problem(defs_proj.sluice("validate", timeout=30))
    assert m["message"] == "nesting deeper than 64 levels"


def test_megabyte_file_is_refused_and_a_large_valid_one_passes(defs_proj: Proj) -> None:
    big = "name: w\ndescription: '" + "x" * (1024 * 1024) + "'\njobs: {a: {steps: [{run: 'true'}]}}\n"
    defs_proj.write("workflows/w.yaml", big)
    m = one_problem(defs_proj.sluice("validate", timeout=30))
    assert (m["line"], m["col"]) == ("1", "1") and "larger than 1 MiB" in m["message"]
    # just under the bound, with many jobs: valid, and validated in one go
    jobs = "".join(f"  j{i}: {{steps: [{{run: 'echo {i}'}}]}}\n" for i in range(20_000))
    text = "name: w\njobs:\n" + jobs
    assert 0.5 * 1024 * 1024 < len(text) < 1024 * 1024
    defs_proj.write("workflows/w.yaml", text)
    assert "1 workflow(s)" in defs_proj.ok("validate", timeout=30).out


def test_non_utf8_bytes_point_at_the_byte(defs_proj: Proj) -> None:
    path = defs_proj.root / "workflows" / "w.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"name: w\njobs:\n  a: {steps: [{run: 'echo \xff'}]}\n")
    m = one_problem(defs_proj.sluice("validate"))
    assert (m["line"], m["col"]) == ("3", "27")
    assert m["message"] == "not UTF-8: byte 0xff; save the file as UTF-8"


@pytest.mark.parametrize(
    ("body", "line", "col", "message"),
    [
        (
            "jobs:\n  a:\n    env: {'BAD NAME': x}\n    steps: [{run: 'true'}]\n",
            4,
            11,
            "job a.env: 'BAD NAME' is not a valid environment variable name",
        ),
        (
            "jobs:\n  a:\n    env: {'A=B': x}\n    steps: [{run: 'true'}]\n",
            4,
            11,
            "job a.env: 'A=B' is not a valid environment variable name",
        ),
        (
            "jobs:\n  a:\n    env: {9LIVES: x}\n    steps: [{run: 'true'}]\n",
            4,
            11,
            "job a.env: '9LIVES' is not a valid environment variable name",
        ),
        (
            "inputs: {a.b: {default: x}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
            2,
            10,
            "input name 'a.b' must use letters, digits, '-' or '_' (it becomes $INPUT_A.B)",
        ),
        (
            "materials: {up.stream: {workflow: other}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
            2,
            13,
            "material name 'up.stream' must use letters, digits, '-' or '_'",
        ),
        (
            "jobs:\n  a: {parallelism: 100000000000000000000000, steps: [{run: 'true'}]}\n",
            3,
            20,
            "job a.parallelism must be at most 10,000",
        ),
        (
            "jobs:\n  a: {parallelism: 10001, steps: [{run: 'true'}]}\n",
            3,
            20,
            "job a.parallelism must be at most 10,000",
        ),
        (
            "jobs:\n  a: {concurrency_group: g, concurrency: 99999, steps: [{run: 'true'}]}\n",
            3,
            42,
            "job a.concurrency must be at most 10,000",
        ),
        (
            "jobs:\n  a: {timeout: 99999999999h, steps: [{run: 'true'}]}\n",
            3,
            16,
            "job a.timeout: '99999999999h' is longer than a year",
        ),
        (
            "timer: '0 0 30 2 *'\njobs: {a: {steps: [{run: 'true'}]}}\n",
            2,
            8,
            "timer '0 0 30 2 *' never fires",
        ),
        (
            "inputs: {v: {pattern: '(unclosed'}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
            2,
            23,
            "inputs.v.pattern is not a valid regular expression",
        ),
        (
            "inputs: {v: {pattern: '^(a|aa)+$', default: "
            + "a" * 60
            + "b}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
            2,
            45,
            "inputs.v.default: matching 'aaaa",
        ),
        (
            "inputs: {v: {default: \"nul\\0here\"}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
            2,
            23,
            "inputs.v.default: contains a NUL character, which cannot travel in an environment variable",
        ),
    ],
    ids=[
        "env-space",
        "env-equals",
        "env-digit",
        "input-dot",
        "material-dot",
        "parallelism-1e23",
        "parallelism-10001",
        "concurrency",
        "timeout",
        "cron-never",
        "pattern-invalid",
        "pattern-slow",
        "nul-default",
    ],
)
def test_hostile_definition_is_one_clear_line(
    defs_proj: Proj, body: str, line: int, col: int, message: str
) -> None:
    defs_proj.write("workflows/other.yaml", "name: other\njobs: {a: {steps: [{run: 'true'}]}}\n")
    defs_proj.write("workflows/w.yaml", "name: w\n" + body)
    m = one_problem(defs_proj.sluice("validate", timeout=30))
    assert (int(m["line"]), int(m["col"])) == (line, col), m.group(0)
    assert m["message"].startswith(message), m.group(0)


def test_method_env_names_are_checked_too(defs_proj: Proj) -> None:
    defs_proj.write("models/m.yaml", "name: m\nmethods:\n  go:\n    env: {'X-Y': '1'}\n    run: 'true'\n")
    m = one_problem(defs_proj.sluice("validate"), "models/m.yaml")
    assert (m["line"], m["col"]) == ("4", "11")
    assert m["message"].startswith("method go.env: 'X-Y' is not a valid environment variable name")


def test_capacity_beyond_bounds_is_refused(defs_proj: Proj) -> None:
    defs_proj.write("sluice.yaml", "name: t\ncapacity: 100000000000000000000000\n")
    m = one_problem(defs_proj.sluice("validate"), "sluice.yaml")
    assert m["message"] == "capacity must be at most 10,000"
    defs_proj.write("sluice.yaml", "name: t\nagents: {a: {capacity: 10001}}\n")
    m = one_problem(defs_proj.sluice("validate"), "sluice.yaml")
    assert m["message"] == "agents.a.capacity must be at most 10,000"


def test_database_url_that_cannot_be_a_file(defs_proj: Proj) -> None:
    defs_proj.write("sluice.yaml", "name: t\ndatabase: sqlite:///sluice.yaml/state.db\n")
    for args in (("validate",), ("workflow", "list")):
        m = one_problem(defs_proj.sluice(*args), "sluice.yaml")
        assert (m["line"], m["col"]) == ("2", "11")
        assert "sluice.yaml is a file, so it cannot hold a database" in m["message"]
    # the same URL from the environment: one line too, never a traceback
    defs_proj.write("sluice.yaml", "name: t\n")
    r = defs_proj.sluice(
        "workflow", "list", env={"SLUICE_DATABASE_URL": f"sqlite:///{defs_proj.root}/sluice.yaml/state.db"}
    )
    assert r.code == 2 and "Traceback" not in r.err and len(r.err.splitlines()) == 1, r


def test_slow_pattern_refuses_an_input_fast(proj: Proj) -> None:
    proj.write(
        "workflows/w.yaml",
        "name: w\ninputs: {v: {pattern: '^(a|aa)+$'}}\njobs: {a: {steps: [{run: 'true'}]}}\n",
    )
    proj.ok("validate")
    r = proj.sluice("workflow", "queue", "w", "-i", "v=" + "a" * 60 + "b", timeout=30)
    assert r.code == 2 and "took too long" in r.err and len(r.err.splitlines()) == 1, r
    proj.ok("workflow", "queue", "w", "-i", "v=aaaa")
    assert [i["inputs"] for i in queued(proj)] == [{"v": "aaaa"}]


# ---------------------------------------------------------------- item 7: values


SECRET = """\
name: w
inputs:
  token: {secret: true, pattern: '^tok-[a-z]+$'}
  pin: {secret: true, type: int}
  colour: {secret: true, enum: [red, blue]}
jobs: {a: {steps: [{run: 'true'}]}}
"""


def test_refused_secret_value_is_never_echoed(proj: Proj) -> None:
    proj.write("workflows/w.yaml", SECRET)
    for given, why in (
        ("token=hunter2-SECRET", "does not match pattern ^tok-[a-z]+$"),
        ("pin=hunter2-SECRET", "is not an integer"),
        ("colour=hunter2-SECRET", "is not one of red, blue"),
    ):
        r = proj.sluice("workflow", "queue", "w", "-i", given)
        assert r.code == 2 and why in r.err, r
        assert "hunter2" not in r.err + r.out, r
    assert queued(proj) == []


def test_value_that_cannot_travel_in_the_environment_is_refused(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\ninputs: {v: {}}\njobs: {a: {steps: [{run: 'true'}]}}\n")
    not_utf8 = os.fsdecode(b"v=caf\xe9")  # a Latin-1 terminal's bytes reach argv as surrogates
    r = proj.sluice("workflow", "queue", "w", "-i", not_utf8)
    assert r.code == 2 and "Traceback" not in r.err and "not UTF-8" in r.err, r
    assert len(r.err.splitlines()) == 1
    assert queued(proj) == []


# ---------------------------------------------------------------- item 11: numbers and times


def test_at_must_be_a_time_to_come(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\njobs: {a: {steps: [{run: 'true'}]}}\n")
    for at, why in (
        ("", "--at is empty"),
        ("   ", "--at is empty"),
        ("1970-01-01T00:00", "is in the past"),
        ("0001-01-01T00:00", "is in the past"),
        ("+99999999999h", "is more than ten years ahead"),
        ("+" + "9" * 400 + "h", "is more than ten years ahead"),
        ("9999-12-31T23:59", "is more than ten years ahead"),
    ):
        r = proj.sluice("workflow", "schedule", "w", "--at", at)
        assert r.code == 2 and why in r.err and "Traceback" not in r.err, (at, r)
        assert len(r.err.splitlines()) == 1
    assert queued(proj) == []
    item = proj.ok("workflow", "schedule", "w", "--at", "+2h", "--json").json
    assert item["not_before"] is not None


HUGE = str(10**23)


@pytest.mark.parametrize(
    "args",
    [
        ("run", "show", HUGE),
        ("run", "logs", HUGE),
        ("run", "cancel", HUGE),
        ("history", "--run", HUGE),
        ("history", "--limit", HUGE),
        ("run", "list", "--limit", HUGE),
        ("queue", "list", "--limit", HUGE),
        ("queue", "execute", HUGE, "--yes"),
        ("queue", "purge", HUGE, "--yes"),
        ("workflow", "release", "a", "--run", HUGE),
        ("agent", "start", "--name", "x", "--capacity", HUGE),
        ("history", "--limit", "-5"),
        ("run", "list", "--limit", "0"),
        ("run", "show", "-1"),
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_numbers_from_users_are_bounded(defs_proj: Proj, args: tuple[str, ...]) -> None:
    r = defs_proj.sluice(*args)
    assert r.code == 2 and "Traceback" not in r.err, r
    assert re.fullmatch(r"sluice: [a-z ]+: argument [\w/-]+: .* is out of range \(1 to [\d,]+\)\n", r.err), (
        r.err
    )


def test_largest_ids_reach_the_store_and_are_not_found(proj: Proj) -> None:
    top = str(2**63 - 1)
    for args in (
        ("run", "show", top),
        ("run", "logs", top),
        ("run", "cancel", top),
        ("queue", "execute", top, "--yes"),
        ("workflow", "release", "a", "--run", top),
    ):
        r = proj.sluice(*args)
        assert r.code == 4 and "Traceback" not in r.err and len(r.err.splitlines()) == 1, (args, r)
    assert proj.ok("history", "--run", top, "--json").json == []


def test_history_limit_limits(proj: Proj) -> None:
    proj.write("workflows/w.yaml", "name: w\ninputs: {v: {}}\njobs: {a: {steps: [{run: 'true'}]}}\n")
    for i in range(4):
        proj.ok("workflow", "queue", "w", "-i", f"v={i}")
    assert len(proj.ok("history", "--json").json) == 4
    assert len(proj.ok("history", "--limit", "2", "--json").json) == 2
    assert proj.sluice("history", "--limit", "-5").code == 2


# ---------------------------------------------------------------- item 12: store unavailable


def test_locked_store_exits_75_and_changes_nothing(proj: Proj) -> None:
    """Another process holds the lock the write needs past the busy timeout: exit 75, nothing queued.
    SQLite: its write lock; PostgreSQL: the queue table (a lock wait is bounded by lock_timeout)."""
    proj.write("workflows/w.yaml", "name: w\njobs: {a: {steps: [{run: 'true'}]}}\n")
    proj.ok("queue", "list")  # the schema is current before the lock is taken
    if proj.db_url:
        import psycopg

        holder = psycopg.connect("postgresql://" + proj.db_url.split("://", 1)[1])
        holder.execute("LOCK TABLE queue_items IN ACCESS EXCLUSIVE MODE")
    else:
        holder = sqlite3.connect(proj.root / ".sluice" / "state.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    try:
        r = proj.sluice("workflow", "queue", "w", env={"SLUICE_BUSY_TIMEOUT": "0.5"})
    finally:
        holder.rollback() if proj.db_url else holder.execute("ROLLBACK")
        holder.close()
    assert r.code == 75, r
    assert "try again" in r.err and len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    assert queued(proj) == []


def test_unreachable_postgresql_exits_75(defs_proj: Proj) -> None:
    r = defs_proj.sluice(
        "queue", "list", env={"SLUICE_DATABASE_URL": "postgresql+psycopg://sluice@127.0.0.1:1/sluice"}
    )
    assert r.code == 75, r
    assert "cannot connect to 127.0.0.1:1/sluice" in r.err and len(r.err.splitlines()) == 1


def test_other_store_errors_stay_exit_2(defs_proj: Proj) -> None:
    r = defs_proj.sluice("queue", "list", env={"SLUICE_DATABASE_URL": "mysql://x@y/z"})
    assert r.code == 2 and "unsupported database URL" in r.err, r


# ---------------------------------------------------------------- item 14: selectors

TEARDOWN = "name: {name}\njobs: {{a: {{steps: [{{run: 'true'}}]}}}}\n"
LB = """\
name: load-balancer
methods:
  swap: {inputs: {target: {required: true}}, run: 'true'}
"""


def test_selector_naming_nothing_defined_is_not_found(proj: Proj) -> None:
    proj.write("workflows/dns.yaml", TEARDOWN.format(name="teardown-dns"))
    proj.write("workflows/net.yaml", TEARDOWN.format(name="teardown-networking"))
    proj.write("models/lb.yaml", LB)
    proj.ok("workflow", "queue", "teardown-dns")
    proj.ok("method", "queue", "load-balancer", "swap", "-i", "target=blue")
    for verb in ("list", "execute", "purge"):
        extra = () if verb == "list" else ("--yes",)
        r = proj.sluice("queue", verb, "--workflow", "teardown-dsn", *extra)
        assert r.code == 4, (verb, r)
        assert "no workflow 'teardown-dsn' (did you mean 'teardown-dns'?)" in r.err
        r = proj.sluice("queue", verb, "--method", "swpa", *extra)
        assert r.code == 4 and "no method 'swpa' (did you mean 'swap'?)" in r.err, (verb, r)
        r = proj.sluice("queue", verb, "--method", "load-balancer.swpa", *extra)
        assert r.code == 4, (verb, r)
    assert len(queued(proj)) == 2  # nothing was executed or purged
    for verb in ("list", "execute", "purge"):
        extra = () if verb == "list" else ("--yes",)
        r = proj.ok("queue", verb, "--workflow", "teardown-networking", *extra)
        assert "nothing queued for --workflow teardown-networking" in r.out
    r = proj.ok("queue", "list", "--method", "load-balancer.swap")
    assert "load-balancer.swap" in r.out and "target=blue" in r.out


# ---------------------------------------------------------------- item 15: engine status


def test_engine_status_without_an_engine_exits_3(defs_proj: Proj) -> None:
    r = defs_proj.sluice("engine", "status")
    assert r.code == 3 and "engine not running" in r.out, r
    r = defs_proj.sluice("engine", "status", "--json")
    assert r.code == 3 and r.json["running"] is False


def test_engine_status_with_an_engine_exits_0(proj: Proj) -> None:
    proj.ok("engine", "start")
    assert proj.ok("engine", "status", "--json").json["running"] is True


# ---------------------------------------------------------------- item 19: CLI


RELEASE = """\
name: w
jobs:
  build: {steps: [{run: 'echo built'}]}
  ship:
    needs: [build]
    hold:
      fields:
        ticket: {required: true, pattern: '^CHG-\\d+$'}
        window: {default: night}
        note: {}
    steps: [{run: 'echo "ticket $INPUT_TICKET" >> "$SLUICE_PROJECT/ran"'}]
"""


def test_release_command_printed_for_a_hold_can_be_pasted(proj: Proj) -> None:
    proj.write("workflows/w.yaml", RELEASE)
    out = proj.ok("workflow", "run", "w").out
    [line] = [ln for ln in out.splitlines() if ln.strip().startswith("release:")]
    command = line.split("release:", 1)[1].strip()
    assert command == "sluice workflow release ship --run 1 --field ticket='…'"
    argv = shlex.split(command.replace("…", "CHG-42"))
    assert argv[0] == "sluice"
    proj.ok(*argv[1:])
    assert proj.service().wait_run(1)["status"] == "succeeded"
    assert (proj.root / "ran").read_text() == "ticket CHG-42\n"


def test_errors_say_sluice_once(fresh_proj: Proj) -> None:
    for args, start in (
        (("run", "show", "x"), "sluice: run show: argument run: 'x' is not an id"),
        (("workflow", "frobnicate"), "sluice: workflow: argument ACTION: invalid choice"),
        (("tui",), "sluice: tui: the dashboard needs a terminal"),
        (("queue", "purge"), "sluice: queue purge: choose items"),
        (("--bogus",), "sluice: unrecognized arguments: --bogus"),
    ):
        r = fresh_proj.sluice(*args)
        assert r.code == 2, (args, r)
        assert r.err.startswith(start), (args, r.err)
        assert "sluice: sluice" not in r.err


CHAIN = """\
name: chain
jobs:
  a: {steps: [{run: 'echo out-a'}]}
  b: {needs: [a], steps: [{run: 'echo out-b'}]}
  c: {needs: [b], steps: [{run: 'echo out-c'}]}
  d: {needs: [c], steps: [{run: 'echo out-d'}]}
  e: {needs: [d], steps: [{run: 'echo out-e'}]}
"""


def test_workflow_run_prints_events_in_the_order_they_happened(proj: Proj) -> None:
    proj.write("workflows/chain.yaml", CHAIN)
    lines = proj.ok("workflow", "run", "chain").out.splitlines()
    expected = []
    for j in "abcde":
        expected += [f"» running {j}", f"[{j}] out-{j}", f"✓ succeeded {j}"]
    shown = [ln for ln in lines if ln in expected]
    assert shown == expected, "\n".join(lines)


def test_run_logs_streams_a_large_log_in_bounded_memory(proj: Proj) -> None:
    size = 48 * 1024 * 1024
    proj.write(
        "workflows/big.yaml",
        f"name: big\njobs: {{a: {{steps: [{{run: 'yes 0123456789abcdef0123456789abcdef012345678 | head -c {size}'}}]}}}}\n",
    )
    proj.write("workflows/small.yaml", "name: small\njobs: {a: {steps: [{run: 'echo small'}]}}\n")
    proj.ok("workflow", "run", "big", "--detach")
    proj.ok("workflow", "run", "small", "--detach")
    svc = proj.service()
    assert svc.wait_run(1)["status"] == "succeeded" and svc.wait_run(2)["status"] == "succeeded"

    def peak(*args: str) -> tuple[int, int]:
        """Peak resident memory (KiB) of `sluice ARGS`, and how many bytes it printed."""
        probe = (
            "import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
            "assert p.returncode == 0\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, len(p.stdout))\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", probe, sys.executable, "-m", "tui.cli", *args],
            cwd=proj.root,
            env=proj.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        kib, printed = r.stdout.split()
        return int(kib), int(printed)

    base, _ = peak("run", "logs", "2")
    used, printed = peak("run", "logs", "1")
    assert printed >= size
    assert used - base < 16 * 1024, (base, used)  # the log is 48 MiB: it never sits in memory
    used, printed = peak("run", "logs", "1", "--json")
    assert used - base < 24 * 1024, (base, used)
    assert printed >= size
    r = proj.ok("run", "logs", "2", "--json")
    assert "".join(c["text"] for c in r.json).endswith("small\n")
    assert json.loads(proj.ok("run", "logs", "2", "--job", "a", "--json").out)[0]["job"] == "a"
    r = proj.sluice("run", "logs", "99", "--json")
    assert r.code == 4 and r.out == ""
