"""Faults with real processes (issue 10, items 1-7): killed agents, a full disk, a locked store,
bytes the store cannot hold, a timer that cannot fire, an engine that does not stop, and a secret
written in two pieces. Each test asserts what a user would notice."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Proj, gone

SETTINGS = "name: t\nenvironments: {qa: {}}\n"
# the engine's own agent gets a name of its own: engines of other projects on this host (other test
# runs) kill their leftover jobs by job id and agent name, and older ones do not look at the store
OWN_AGENT = "name: test\nagents: {faults-agent: {}}\n"


def jobs(view: dict) -> dict[str, dict]:
    return {j["name"]: j for j in view["jobs"]}


def processes_with(*env_items: str) -> list[int]:
    """Live processes whose environment holds every one of env_items (e.g. SLUICE_AGENT=qa-1)."""
    found = []
    wanted = {item.encode() for item in env_items}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if wanted <= set(f.read().split(b"\0")) and not gone(int(pid)):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def engine_log(proj: Proj) -> str:
    try:
        return (proj.root / ".sluice" / "engine.log").read_text(errors="replace")
    except OSError:
        return ""


def finished(proj: Proj, run_id: int, timeout: float) -> dict:
    """The run's view once it reached a final status (fails the test after timeout seconds)."""
    svc = proj.service()
    final = ("succeeded", "failed", "cancelled")
    return proj.wait_for(  # type: ignore[return-value]
        lambda: (v := svc.run_view(run_id))["status"] in final and v,
        timeout=timeout,
        what=f"run #{run_id} to end",
    )


def log_text(proj: Proj, run_id: int = 1) -> str:
    return "".join(c["text"] for c in proj.ok("run", "logs", str(run_id), "--json").json)


# ---------------------------------------------------------------- 1. a lost agent's job never runs beside its retry


def test_lost_agents_job_is_killed_before_its_retry_starts(proj: Proj) -> None:
    env = {"SLUICE_AGENT_TIMEOUT": "2"}
    proj.write("sluice.yaml", SETTINGS)
    # every ~50 ms the job appends "<agent> <time>"; the first copy would go on for well over 20 s
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        environment: qa
        jobs:
          long:
            retry: {limit: 1}
            steps:
              - run: |
                  n=400; [ "$SLUICE_AGENT" = qa-2 ] && n=10
                  i=0
                  while [ $i -lt $n ]; do
                    echo "$SLUICE_AGENT $(date +%s.%N)" >> "$SLUICE_PROJECT/marks"
                    i=$((i+1)); sleep 0.05
                  done
        """,
    )
    proj.ok("engine", "start", env=env)
    first = proj.popen("agent", "start", "--name", "qa-1", "--env", "qa", env=env)
    second: subprocess.Popen[str] | None = None
    try:
        proj.ok("workflow", "run", "w", "--detach", env=env)
        marks = proj.root / "marks"
        proj.wait_for(lambda: marks.exists() and marks.read_text().count("qa-1 ") >= 3, what="first copy")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = proj.popen("agent", "start", "--name", "qa-2", "--env", "qa", env=env)
        view = finished(proj, 1, 60)
        assert view["status"] == "succeeded"
        job = jobs(view)["long"]
        assert (job["status"], job["agent"]) == ("succeeded", "qa-2")
        lines = [ln.split() for ln in marks.read_text().splitlines()]
        first_copy = [float(t) for a, t in lines if a == "qa-1"]
        retry = [float(t) for a, t in lines if a == "qa-2"]
        assert len(retry) == 10
        # the first copy had stopped for good before the retry wrote its first mark: no overlap
        assert max(first_copy) < min(retry)
        assert [a for a, _ in lines] == sorted((a for a, _ in lines), key=lambda a: a != "qa-1")
        assert processes_with("SLUICE_AGENT=qa-1", f"SLUICE_PROJECT={proj.root}") == []
        history = proj.ok("history", "--json").json
        assert any(e["kind"] == "job.retry" and "agent qa-1 lost" in e["message"] for e in history)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)


# ---------------------------------------------------------------- 2. a full disk never loses a log silently


@pytest.fixture
def small_disk(proj: Proj) -> Iterator[Path]:
    """A real file system that can fill up: a 32 MiB tmpfs (mounting needs root, as in CI). Outside
    pytest's private tmp dir, so that the PostgreSQL server's account can reach it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="sluice-disk-"))
    where.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        (where / "filler").unlink(missing_ok=True)
        proj.kill_engine()
        if proj.db_url is not None:  # the server outlives this test: take the table back off this disk
            import psycopg

            with psycopg.connect(_conninfo(proj), autocommit=True) as cx:
                cx.execute("ALTER TABLE log_chunks SET TABLESPACE pg_default")
                cx.execute(f"DROP TABLESPACE IF EXISTS {_tablespace(proj)}")
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def _conninfo(proj: Proj) -> str:
    assert proj.db_url is not None
    return "postgresql://" + proj.db_url.split("://", 1)[1]


def _tablespace(proj: Proj) -> str:
    assert proj.db_url is not None
    return "ts_" + proj.db_url.rsplit("/", 1)[1]


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the filler (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1024 * 1024, 4096, 512):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def put_log_on(proj: Proj, disk: Path) -> None:
    """SQLite: the whole store on the small disk. PostgreSQL: the log table in a tablespace there."""
    proj.write("sluice.yaml", OWN_AGENT)
    if proj.db_url is None:
        shutil.copy(proj.root / ".sluice" / "state.db", disk / "state.db")
        proj.write("sluice.yaml", OWN_AGENT + f"database: sqlite:///{disk / 'state.db'}\n")
        return
    import pwd

    import psycopg

    pg = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
    space = disk / "pg"
    space.mkdir()
    os.chown(space, pg.pw_uid, pg.pw_gid)
    with psycopg.connect(_conninfo(proj), autocommit=True) as cx:
        cx.execute(f"CREATE TABLESPACE {_tablespace(proj)} LOCATION '{space}'")
        cx.execute(f"ALTER TABLE log_chunks SET TABLESPACE {_tablespace(proj)}")


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# the job prints 300 KB that cannot be compressed (base64 of random bytes) while the disk is full
FULL_DISK_JOB = """\
name: w
jobs:
  talk:
    steps:
      - run: |
          echo begin
          while [ ! -e "$SLUICE_PROJECT/go" ]; do sleep 0.05; done
          head -c 230000 /dev/urandom | base64 > "$SLUICE_PROJECT/expected"
          cat "$SLUICE_PROJECT/expected"
          touch "$SLUICE_PROJECT/printed"
          while [ ! -e "$SLUICE_PROJECT/finish" ]; do sleep 0.05; done
          echo end
"""


def run_while_disk_full(proj: Proj, disk: Path, env: dict[str, str]) -> str:
    """Run the job, fill the disk while it prints, free it, and return the stored log."""
    put_log_on(proj, disk)
    proj.write("workflows/w.yaml", FULL_DISK_JOB)
    proj.ok("engine", "start", env=env)
    proj.ok("workflow", "run", "w", "--detach", env=env)
    proj.wait_for(lambda: "begin\n" in log_text(proj), what="the job's first line stored")
    filler = fill(disk)
    (proj.root / "go").touch()
    # the job's 300 KB went through a 64 KB pipe: the agent read it and tried to store it, in vain
    proj.wait_for((proj.root / "printed").exists, timeout=60, what="output printed")
    filler.unlink()
    (proj.root / "finish").touch()
    view = finished(proj, 1, 60)
    assert view["status"] == "succeeded"
    return log_text(proj)


def test_output_written_while_the_disk_is_full_is_kept_until_the_store_recovers(
    proj: Proj, small_disk: Path
) -> None:
    text = run_while_disk_full(proj, small_disk, {})
    expected = (proj.root / "expected").read_text()
    assert text.endswith(f"\nbegin\n{expected}end\n")  # every byte, in order
    assert "lost" not in text


def test_output_beyond_the_buffer_while_the_disk_is_full_is_announced(proj: Proj, small_disk: Path) -> None:
    text = run_while_disk_full(proj, small_disk, {"SLUICE_LOG_BUFFER": str(64 * 1024)})
    expected = (proj.root / "expected").read_text()
    lines = text.splitlines(keepends=True)
    notes = [ln for ln in lines if " of output lost: the store could not be written" in ln]
    assert len(notes) == 1, text[:2000]
    kept = text.split(notes[0], 1)[1]
    assert kept.endswith("end\n")
    kept = kept[: -len("end\n")]
    assert expected.endswith(kept) and len(kept) >= 32 * 1024  # the newest output was kept
    lost_kib = (len(expected) - len(kept)) / 1024
    assert notes[0].startswith(f"--- {lost_kib:.1f} KiB of output lost")  # says exactly how much


# ---------------------------------------------------------------- 3. a locked store delays the engine, nothing more


def test_a_store_locked_past_the_lease_delays_the_engine_and_the_job_finishes_once(proj: Proj) -> None:
    proj.write("sluice.yaml", OWN_AGENT)
    env = {"SLUICE_LEASE_SECONDS": "2", "SLUICE_BUSY_TIMEOUT": "0.5"}
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          wait:
            steps:
              - run: |
                  echo ran >> "$SLUICE_PROJECT/count"
                  while [ ! -e "$SLUICE_PROJECT/finish" ]; do sleep 0.05; done
        """,
    )
    proj.ok("engine", "start", env=env)
    pid = proj.engine_info()["pid"]
    proj.ok("workflow", "run", "w", "--detach", env=env)
    proj.wait_for((proj.root / "count").exists, what="job started")
    svc = proj.service()

    def expires() -> float:
        return float(svc.db.scalar("SELECT expires_at FROM leases WHERE name = 'scheduler'"))

    release = hold_write_lock(proj)
    try:
        # locked for two whole leases past the end of the engine's lease
        lease_end = expires()
        proj.wait_for(lambda: time.time() > lease_end + 4, timeout=30, what="the lease to run out")
        assert expires() == lease_end  # nobody could write meanwhile
    finally:
        release()
    proj.wait_for(lambda: expires() > time.time(), what="the engine to renew its lease")
    (proj.root / "finish").touch()
    view = finished(proj, 1, 30)
    assert view["status"] == "succeeded"
    assert jobs(view)["wait"]["status"] == "succeeded"
    assert (proj.root / "count").read_text() == "ran\n"
    assert proj.engine_info()["pid"] == pid and not gone(pid)  # the same engine, still running
    kinds = [e["kind"] for e in proj.ok("history", "--json", "--limit", "200").json]
    assert kinds.count("job.succeeded") == 1 and kinds.count("job.started") == 1
    assert "job.retry" not in kinds and "engine.stopped" not in kinds


def test_a_job_times_out_while_the_store_is_locked(proj: Proj) -> None:
    """An agent reads its jobs' output and acts on their timeouts apart from the store: a store
    locked for longer than its busy timeout holds up only the writes (the chatty job's log), which
    follow once it is free; the job is stopped on time meanwhile."""
    proj.write("sluice.yaml", OWN_AGENT)
    env = {"SLUICE_BUSY_TIMEOUT": "60"}
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          chatty:
            timeout: 2s
            steps:
              - run: 'echo $$ > "$SLUICE_PROJECT/pid"; while :; do echo tick; sleep 0.02; done'
        """,
    )
    proj.ok("engine", "start", env=env)
    proj.ok("workflow", "run", "w", "--detach", env=env)
    pid_file = proj.root / "pid"
    proj.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the job to start")
    pid = int(pid_file.read_text())
    release = hold_write_lock(proj)
    try:
        # before, the agent's loop waited in the log's write and the job ran on for the whole lock
        proj.wait_for(lambda: gone(pid), timeout=20, what="the job stopped by its timeout, store locked")
    finally:
        release()
    view = finished(proj, 1, 60)
    job = jobs(view)["chatty"]
    assert (job["status"], job["reason"]) == ("failed", "timed out after 2.0s")
    logs = proj.ok("run", "logs", "1").out
    assert "tick" in logs and "timed out after 2.0s: sending SIGTERM" in logs


def hold_write_lock(proj: Proj):  # type: ignore[no-untyped-def]
    """Take the store's write lock from this process; returns the function that lets it go."""
    if proj.db_url is None:
        cx = sqlite3.connect(proj.root / ".sluice" / "state.db", isolation_level=None)
        cx.execute("BEGIN IMMEDIATE")

        def release() -> None:
            cx.execute("ROLLBACK")
            cx.close()

        return release
    import psycopg

    # no lock for the whole store exists on PostgreSQL: lock the tables every write of sluice touches
    pg = psycopg.connect(_conninfo(proj))
    pg.execute("LOCK TABLE leases, agents, runs, jobs, events, log_chunks IN EXCLUSIVE MODE")

    def release_pg() -> None:
        pg.rollback()
        pg.close()

    return release_pg


# ---------------------------------------------------------------- 4. bytes the store cannot hold


def test_a_nul_byte_in_the_output_is_stored_the_same_on_both_backends(proj: Proj) -> None:
    proj.write("sluice.yaml", OWN_AGENT)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs: {j: {steps: [{run: "printf 'a\\\\000b\\\\n'; echo after"}]}}
        """,
    )
    proj.ok("workflow", "run", "w", "--detach")
    view = finished(proj, 1, 30)
    assert view["status"] == "succeeded"
    assert "a\ufffdb\nafter\n" in log_text(proj)


def test_a_chunk_the_store_refuses_for_good_is_announced_and_the_job_ends(proj: Proj) -> None:
    """A check in the database (here a trigger a DBA added) refuses one piece of output for good."""
    proj.write("sluice.yaml", OWN_AGENT)
    if proj.db_url is None:
        cx = sqlite3.connect(proj.root / ".sluice" / "state.db", isolation_level=None)
        cx.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON log_chunks WHEN NEW.data GLOB '*FORBIDDEN*' "
            "BEGIN SELECT RAISE(ABORT, 'no such words here'); END"
        )
        cx.close()
    else:
        import psycopg

        with psycopg.connect(_conninfo(proj), autocommit=True) as pg:
            pg.execute(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.data LIKE '%FORBIDDEN%' "
                "THEN RAISE EXCEPTION 'no such words here'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            pg.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON log_chunks FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs:
          j:
            steps:
              - run: |
                  printf 'FORBID''DEN\\n'
                  while [ ! -e "$SLUICE_PROJECT/go" ]; do sleep 0.05; done
                  echo after
        """,
    )
    proj.ok("workflow", "run", "w", "--detach")
    announced = "--- 10 bytes of output lost: refused by the store ("
    proj.wait_for(lambda: announced in log_text(proj), what="the refusal announced")
    (proj.root / "go").touch()
    view = finished(proj, 1, 30)
    assert view["status"] == "succeeded"
    text = log_text(proj)
    assert "FORBIDDEN" not in text
    line, rest = text.split(announced, 1)[1].split("\n", 1)
    assert line.endswith("no such words here)") and rest == "after\n"  # in its place, then the job went on


# ---------------------------------------------------------------- 5. a timer that cannot fire


def test_a_timer_that_cannot_fire_again_is_skipped_and_the_engine_goes_on(proj: Proj) -> None:
    """A one-off timer (croniter's seconds and year fields): valid, it fires once, and then has no
    next fire. No validation can refuse it; the engine must not fall over when it asks for the next."""
    proj.write("sluice.yaml", OWN_AGENT + "timezone: UTC\n")
    proj.write("workflows/other.yaml", "name: other\njobs: {j: {steps: [{run: 'echo fine'}]}}\n")
    proj.ok("engine", "start")
    pid = proj.engine_info()["pid"]
    at = datetime.fromtimestamp(time.time() + 6, UTC)
    cron = f"{at.minute} {at.hour} {at.day} {at.month} * {at.second} {at.year}"
    # added while the engine runs, as in the report
    proj.write(
        "workflows/once.yaml", f"name: once\ntimer: '{cron}'\njobs: {{j: {{steps: [{{run: 'true'}}]}}}}\n"
    )

    def broken() -> list[dict]:
        return [e for e in proj.ok("history", "--json").json if e["kind"] == "timer.broken"]

    (event,) = proj.wait_for(broken, timeout=30, what="the timer reported as broken")  # type: ignore[misc]
    assert event["message"].startswith(f"once: timer '{cron}' skipped: cannot compute its next fire")
    runs = proj.ok("run", "list", "--json").json
    assert [(r["target"], r["trigger"], r["status"]) for r in runs] == [("once", "timer", "succeeded")]
    proj.ok("workflow", "run", "other")  # the scheduler goes on
    assert proj.engine_info()["pid"] == pid and not gone(pid)
    assert len(broken()) == 1  # said once, not on every tick
    assert [r["target"] for r in proj.ok("run", "list", "--json").json] == ["other", "once"]


# ---------------------------------------------------------------- 6. `engine stop` says stopped only when it is


def test_engine_stop_says_stopped_only_when_the_engine_is_gone(proj: Proj) -> None:
    proj.write("sluice.yaml", OWN_AGENT)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        jobs: {j: {steps: [{run: 'touch "$SLUICE_PROJECT/started"; while true; do sleep 0.05; done'}]}}
        """,
    )
    proj.ok("engine", "start")
    pid = proj.engine_info()["pid"]
    proj.ok("workflow", "run", "w", "--detach")
    proj.wait_for((proj.root / "started").exists, what="job started")
    quick = {"SLUICE_STOP_WAIT": "1"}
    r = proj.sluice("engine", "stop", env=quick)
    assert r.code == 1 and r.out == ""
    assert r.err == (
        f"sluice: engine (pid {pid}) is still running: draining 1 running job; "
        "'sluice engine stop --now' cancels them\n"
    )
    assert not gone(pid)
    r = proj.sluice("engine", "stop", "--json", env=quick)
    assert r.code == 1
    assert r.json == {"stopped": False, "state": "draining", "pid": pid, "running_jobs": 1}
    r = proj.sluice("engine", "stop", "--now")
    assert (r.code, r.out) == (0, "engine stopped\n")
    assert gone(pid)
    view = proj.service().run_view(1)
    assert view["status"] == "cancelled"
    r = proj.sluice("engine", "stop")
    assert (r.code, r.out) == (0, "engine was not running\n")


# ---------------------------------------------------------------- 7. a secret written in two pieces


def test_a_secret_printed_in_two_writes_is_masked(proj: Proj) -> None:
    proj.write("sluice.yaml", OWN_AGENT)
    proj.write(
        "workflows/w.yaml",
        """\
        name: w
        inputs: {token: {secret: true, required: true}}
        jobs:
          j:
            steps:
              - name: talk
                run: "printf 'hunter'; sleep 0.7; printf '2xyz\\\\n'; echo next"
        """,
    )
    followed = proj.ok("workflow", "run", "w", "--input", "token=hunter2xyz")
    assert "hunter" not in followed.out + followed.err
    text = proj.ok("run", "logs", "1").out
    assert "***\nnext" in text and "hunter" not in text
    chunks = proj.ok("run", "logs", "1", "--json").json
    assert len([c for c in chunks if c["stream"] == "out"]) >= 1
    assert all("hunter" not in c["text"] and "2xyz" not in c["text"] for c in chunks)
