"""The store: migrations create and upgrade in place, the schema matches the SQLModel tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import Proj

from core.store.db import SCHEMA_HEAD


def test_schema_head_constant_matches_migrations() -> None:
    from core.store.db import SCHEMA_HEAD
    from core.store.migrate import head_revision

    assert head_revision() == SCHEMA_HEAD


def test_migrated_schema_matches_tables(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from core.store.migrate import upgrade
    from core.store.tables import metadata

    url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url)
    with create_engine(url).connect() as c:
        assert compare_metadata(MigrationContext.configure(c), metadata) == []


def test_first_command_creates_the_database(fresh_proj: Proj) -> None:
    fresh_proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    assert not (fresh_proj.root / ".sluice" / "state.db").exists()
    assert fresh_proj.ok("run", "list", "--json").json == []
    db = sqlite3.connect(fresh_proj.root / ".sluice" / "state.db")
    assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_existing_database_upgrades_in_place_keeping_history(fresh_proj: Proj) -> None:
    """A user's database from the first release (revision 0001) upgrades on first use."""
    from core.store.migrate import upgrade

    fresh_proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    path = fresh_proj.root / ".sluice" / "state.db"
    path.parent.mkdir()
    upgrade(f"sqlite:///{path}", "0001")
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO runs (kind, target, status, trigger, created_by, created_at, inputs, plan, "
        "cancel_requested) VALUES ('workflow', 'w', 'succeeded', 'manual', 'old@host', 1700000000, '{}', "
        '\'{"kind": "workflow", "name": "w", "inputs": {}, "jobs": {}}\', 0)'
    )
    db.commit()
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'queue_items'").fetchone() is None
    db.close()
    runs = fresh_proj.ok("run", "list", "--json").json
    assert [(r["id"], r["created_by"]) for r in runs] == [(1, "old@host")]
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'queue_items'").fetchone() is not None


@pytest.mark.sqlite_only("the URL under test points at a SQLite file")
def test_database_url_from_environment(proj: Proj, tmp_path: Path) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    other = tmp_path / "elsewhere" / "x.db"
    env = {"SLUICE_DATABASE_URL": f"sqlite:///{other}"}
    proj.ok("workflow", "run", "w", env=env)
    proj.kill_engine()
    assert other.exists()
    assert len(proj.ok("run", "list", "--json", env=env).json) == 1
    assert proj.ok("run", "list", "--json").json == []  # the project's own database is untouched


@pytest.mark.sqlite_only("a database file that is not a database")
def test_unreadable_database_is_one_line(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    db = proj.root / ".sluice" / "state.db"
    db.write_bytes(b"this is not a database" * 100)
    r = proj.sluice("run", "list")
    assert r.code == 2
    assert r.err.startswith("sluice: cannot ") and len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err


def test_unsupported_url_is_one_line(proj: Proj) -> None:
    r = proj.sluice("run", "list", env={"SLUICE_DATABASE_URL": "mysql://x/y"})
    assert r.code == 2 and "unsupported database URL" in r.err


@pytest.mark.sqlite_only("holds SQLite's write lock")
def test_locked_database_is_one_line_and_changes_nothing(proj: Proj) -> None:
    proj.write("workflows/w.yaml", 'name: w\njobs: {j: {steps: [{run: "true"}]}}\n')
    holder = sqlite3.connect(proj.root / ".sluice" / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = proj.sluice("workflow", "queue", "w", env={"SLUICE_BUSY_TIMEOUT": "0.5"})
    finally:
        holder.execute("ROLLBACK")
    assert r.code == 75  # busy past the timeout: try again (SPEC 10)
    assert r.err.startswith("sluice: ") and "locked" in r.err and "try again" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert proj.ok("queue", "list", "--json").json == []


def test_a_command_started_while_another_creates_the_database_waits_for_it(fresh_proj: Proj) -> None:
    """Six terminals on a new project at once: one creates the database, the others wait for it
    (they must not fail on a database locked by its creator)."""
    import fcntl
    import os

    state = fresh_proj.root / ".sluice"
    state.mkdir()
    lock = open(state / ".migrate.lock", "w")  # the creator's lock...
    fcntl.flock(lock, fcntl.LOCK_EX)
    creator = sqlite3.connect(state / "state.db", isolation_level=None)
    creator.execute("BEGIN EXCLUSIVE")  # ...and the database it is writing, busy past the timeout
    p = fresh_proj.popen("run", "list", "--json", env={"SLUICE_BUSY_TIMEOUT": "0.3"})

    def waiting_for_the_creator() -> bool:
        assert p.poll() is None, p.communicate()  # it must not give up
        return any(
            "->" in line and f" {p.pid} " in line for line in Path("/proc/locks").read_text().splitlines()
        )

    try:
        fresh_proj.wait_for(waiting_for_the_creator, what="the command waiting on the migrator's lock")
    finally:
        creator.execute("ROLLBACK")
        creator.close()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.strip() == "[]" and os.path.exists(state / "state.db")
