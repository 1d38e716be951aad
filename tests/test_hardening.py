"""Defects found by attacking sluice and by trying it as a new user (issue 10): each fixed at its cause."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO, Proj

BUILD_AND_DEPLOY = {
    "workflows/build.yaml": "name: build\njobs: {b: {steps: [{run: 'true'}]}}\n",
    "workflows/deploy.yaml": """\
        name: deploy
        materials:
          build: {workflow: build, trigger: false}
        jobs:
          d: {steps: [{run: 'echo "deploying build $SLUICE_MATERIAL_BUILD_REVISION"'}]}
        """,
}


def test_input_of_8_kb_is_queued_once_on_both_backends(proj: Proj) -> None:
    """PostgreSQL refused an 8 KB input (btree entry too large) while SQLite took it."""
    proj.write("workflows/w.yaml", "name: w\ninputs: {blob: {}}\njobs: {j: {steps: [{run: 'true'}]}}\n")
    blob = "x" * 8192
    item = proj.ok("workflow", "queue", "w", "--input", f"blob={blob}", "--json").json
    assert item["inputs"] == {"blob": blob}
    again = proj.sluice("workflow", "queue", "w", "--input", f"blob={blob}")
    assert again.code == 3, again.err
    assert f"already queued as item #{item['id']}" in again.err
    assert len(again.err.strip().splitlines()) == 1
    assert (
        proj.ok("workflow", "queue", "w", "--input", f"blob={blob}y").code == 0
    )  # other inputs: another item
    queued = proj.ok("queue", "list", "--json").json
    assert [(i["inputs"]["blob"][-2:]) for i in queued] == ["xx", "xy"]


def test_secret_written_to_outputs_is_masked_in_run_show_and_list(proj: Proj) -> None:
    """A secret that a job writes to $SLUICE_OUTPUT is masked where the run is shown, and still
    reaches the job that uses it."""
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {token: {secret: true, required: true}}
        jobs:
          mint:
            steps: [{run: 'echo "auth=Bearer $INPUT_TOKEN" >> "$SLUICE_OUTPUT"'}]
          use:
            needs: [mint]
            env: {AUTH: "${{ jobs.mint.outputs.auth }}"}
            steps: [{run: '[ "$AUTH" = "Bearer s3cr3t-value" ] && echo "the header reached the job"'}]
        """,
    )
    r = proj.ok("workflow", "run", "w", "--input", "token=s3cr3t-value")
    assert "the header reached the job" in r.out
    show = proj.ok("run", "show", "1")
    shown_json = proj.ok("run", "show", "1", "--json")
    listed = proj.ok("run", "list", "--json")
    for text in (r.out, r.err, show.out, shown_json.out, listed.out):
        assert "s3cr3t-value" not in text
    mint = next(j for j in shown_json.json["jobs"] if j["name"] == "mint")
    assert mint["outputs"] == {"auth": "Bearer ***"}
    assert "auth=Bearer ***" in show.out


def test_workflow_material_with_no_succeeded_run_is_refused_with_the_reason(proj: Proj) -> None:
    """The fresh demo's `workflow run qa-deploy` said `NOT NULL constraint failed: materials.revision`."""
    for rel, text in BUILD_AND_DEPLOY.items():
        proj.write(rel, text)
    r = proj.sluice("workflow", "run", "deploy")
    assert r.code == 3, r.err
    assert r.err.strip() == (
        "sluice: material build: workflow build has no succeeded run yet; run it first "
        "(sluice workflow run build) or pin a run with --pin build=RUN"
    )
    assert proj.ok("run", "list", "--json").json == []  # nothing half-made
    # from the queue: the item stays queued with the same reason, and starts once a build succeeded
    proj.ok("workflow", "queue", "deploy")
    r = proj.sluice("queue", "execute", "--all", "--yes")
    assert r.code == 3
    assert "no succeeded run yet" in r.err
    assert [i["status"] for i in proj.ok("queue", "list", "--json").json] == ["queued"]
    proj.ok("workflow", "run", "build")
    started = proj.ok("queue", "execute", "--all", "--yes", "--wait")
    assert "run #2" in started.out
    run = proj.ok("run", "show", "2", "--json").json
    assert run["status"] == "succeeded"
    assert run["materials"][0]["revision"] == "1"


def test_pinned_queue_item_keeps_its_pin_when_executed(proj: Proj) -> None:
    """Staging an item is one statement now (INSERT … ON CONFLICT DO NOTHING): there is no retry path
    left that could re-add an item without its --pin."""
    for rel, text in BUILD_AND_DEPLOY.items():
        proj.write(rel, text)
    proj.ok("workflow", "run", "build")
    proj.ok("workflow", "run", "build")
    proj.ok("workflow", "queue", "deploy", "--pin", "build=1")
    refused = proj.sluice("workflow", "queue", "deploy", "--pin", "build=1")
    assert refused.code == 3
    proj.ok("queue", "execute", "--all", "--yes", "--wait")
    run = proj.ok("run", "list", "--workflow", "deploy", "--json").json[0]
    assert run["materials"][0]["revision"] == "1"  # the pin, not the latest build (#2)


@pytest.mark.timeout(300)
def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """`sluice demo` from an installed wheel was a traceback: the demo was not packaged."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = wheels.glob("sluice-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    away = tmp_path / "elsewhere"
    away.mkdir()
    # the installed copy and its dependencies only: not the repository
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    where = subprocess.run(
        [sys.executable, "-c", "import core; print(core.__file__)"],
        cwd=away,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site)), where
    r = subprocess.run(
        [sys.executable, "-m", "tui.cli", "demo", "ops"],
        cwd=away,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        assert (away / "ops" / "workflows" / "qa-deploy.yaml").is_file()
        assert "staged 9 items" in r.stderr
        listed = subprocess.run(
            [sys.executable, "-m", "tui.cli", "queue", "list", "--json"],
            cwd=away / "ops",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert len(__import__("json").loads(listed.stdout)) == 9
    finally:
        subprocess.run(
            [sys.executable, "-m", "tui.cli", "engine", "stop", "--now"],
            cwd=away / "ops",
            env=env,
            capture_output=True,
            timeout=60,
        )


def test_postgresql_placeholders_leave_casts_strings_and_comments_alone(pg_server) -> None:
    """The rewriter turned `x::int` into `x:%(int)s`."""
    from core.store.db import Database

    pg_server.admin("CREATE DATABASE sluice_casts")
    db = Database(pg_server.url("sluice_casts"))
    assert db.scalar("SELECT '41'::int + ? AS n", (1,)) == 42
    assert db.scalar("SELECT :a::text || ' ?:b %' AS s -- a comment with ? and :c\n", {"a": 7}) == "7 ?:b %"
    assert db.scalar('SELECT 1 AS "odd:name?"') == 1


def test_a_full_wake_up_queue_never_blocks_the_poker() -> None:
    """The kernel queues about 10 datagrams per socket: a blocking send to a listener that is busy
    (the engine poking itself from dispatch) hung the engine and every agent behind it."""
    import threading
    import uuid

    from core.wake import WakeSocket, poke

    url = f"sqlite:////tmp/sluice-wake-test-{uuid.uuid4().hex}.db"
    listener = WakeSocket(url)  # bound, never read in this test
    try:
        results: list[bool] = []
        poker = threading.Thread(target=lambda: results.extend(poke(url) for _ in range(500)), daemon=True)
        poker.start()
        poker.join(timeout=30)
        assert not poker.is_alive(), "poke blocked on a full queue"
        assert results == [True] * 500  # a listener is there: each poke says so, delivered or already due
        listener.drain()  # and the listener still wakes
        assert poke(url) is True
    finally:
        listener.close()
    assert poke(url) is False  # nobody listens any more


def test_a_log_past_log_limit_keeps_its_head_and_tail_and_says_what_was_dropped(proj: Proj) -> None:
    """SPEC 9: a job's stored log is capped; the middle goes, with a line saying how much."""
    proj.write("sluice.yaml", "name: test\ncapacity: 4\nlog_limit: 256KiB\n")
    line = "x" * 40
    proj.write(
        "workflows/w.yaml",
        f"name: w\njobs: {{loud: {{steps: [{{run: \"seq -f 'line %06g {line}' 0 39999\"}}]}}}}\n",
    )
    proj.ok("workflow", "run", "w", "--detach")
    assert proj.service().wait_run(1)["status"] == "succeeded"
    chunks = proj.ok("run", "logs", "1", "--json").json
    text = "".join(c["text"] for c in chunks)
    stored = sum(len(c["text"].encode()) for c in chunks if c["stream"] == "out")
    printed = 40_000 * len(f"line 000000 {line}\n")  # about 2 MB
    assert stored <= 256 * 1024 + 64 * 1024  # the limit, give or take one chunk
    markers = [c["text"] for c in chunks if "of output dropped here" in c["text"]]
    assert len(markers) == 1, markers
    assert "this job's log is capped at 256.0 KiB (log_limit); its head and its tail are kept" in markers[0]
    head, tail = text.index("line 000000 "), text.index("line 039999 ")
    assert head < text.index(markers[0]) < tail  # head, the line, tail: in the order they happened
    dropped = printed - stored
    assert f"--- {dropped / 1024 / 1024:.1f} MiB of output dropped here" in markers[0]


def test_log_limit_must_be_a_size_within_bounds(defs_proj: Proj) -> None:
    for value, message in (
        ("lots", "log_limit must be a size such as 100MiB, 512KiB or a number of bytes"),
        ("1KiB", "log_limit must be between 64KiB and 64GiB"),
    ):
        defs_proj.write("sluice.yaml", f"name: t\nlog_limit: {value}\n")
        r = defs_proj.sluice("validate")
        assert r.code == 2
        assert f"sluice.yaml:2:12: {message}" in r.err
