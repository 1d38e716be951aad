"""The database door: plain DB-API with short transactions.

Everything dialect-specific lives in this file (connection set-up, the write transaction,
placeholders), so that the rest of core writes one portable SQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The Alembic revision this code expects; tests check it equals the migrations' head.
SCHEMA_HEAD = "0005"
BUSY_TIMEOUT_S = float(os.environ.get("SLUICE_BUSY_TIMEOUT", "30"))


class StoreError(Exception):
    """The database cannot be opened or used (one line for the user)."""


Row = dict[str, Any]


def now() -> float:
    return time.time()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    return json.loads(text)


def resolve_url(url: str | None, root: Path) -> str:
    """The project's database URL: env, then sluice.yaml, then the default SQLite file."""
    url = os.environ.get("SLUICE_DATABASE_URL") or url or "sqlite:///.sluice/state.db"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///"):]
        url = "sqlite:///" + str((root / rel).resolve())
    return url


class Database:
    """One per process and URL; hands each thread its own connection."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = Path(url[len("sqlite:///"):])
        else:
            raise StoreError(f"unsupported database URL '{url}' (only sqlite:/// is supported yet)")
        self._local = threading.local()
        self._checked = False

    # ------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            cx = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
            cx.row_factory = sqlite3.Row
            cx.execute("PRAGMA journal_mode=WAL")
            cx.execute("PRAGMA synchronous=NORMAL")
            cx.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cx.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        return cx

    @property
    def cx(self) -> sqlite3.Connection:
        cx = getattr(self._local, "cx", None)
        if cx is None:
            cx = self._local.cx = self._connect()
        return cx

    def close(self) -> None:
        cx = getattr(self._local, "cx", None)
        if cx is not None:
            cx.close()
            self._local.cx = None

    # ------------------------------------------------------------ schema

    def ensure_schema(self) -> None:
        """Create or upgrade the schema when it is not at SCHEMA_HEAD (cheap when it is)."""
        if self._checked:
            return
        if self.schema_revision() != SCHEMA_HEAD:
            self._upgrade()
        self._checked = True

    def schema_revision(self) -> str | None:
        try:
            row = self.cx.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None
            raise StoreError(f"cannot read database {self.path}: {e}") from None
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read database {self.path}: {e}") from None
        return row[0] if row else None

    def _upgrade(self) -> None:
        import fcntl

        from .migrate import upgrade

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one migrator at a time on this host; others wait and then find the schema current
        with open(self.path.parent / ".migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.schema_revision() != SCHEMA_HEAD:
                try:
                    upgrade(self.url)
                except Exception as e:  # alembic/sqlalchemy errors: one line for the user
                    raise StoreError(f"cannot migrate database {self.path}: {e}") from None

    # ------------------------------------------------------------ queries

    def all(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> list[Row]:
        try:
            return [dict(r) for r in self.cx.execute(sql, params).fetchall()]
        except sqlite3.OperationalError as e:
            raise StoreError(f"database error: {e}") from None

    def one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> Row | None:
        try:
            r = self.cx.execute(sql, params).fetchone()
        except sqlite3.OperationalError as e:
            raise StoreError(f"database error: {e}") from None
        return dict(r) if r is not None else None

    def scalar(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> Any:
        r = self.cx.execute(sql, params).fetchone()
        return r[0] if r is not None else None

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite: no deferred-lock upgrade failures)."""
        cx = self.cx
        try:
            cx.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"database is busy or locked ({self.path}): {e}") from None
        tx = Tx(cx)
        try:
            yield tx
        except BaseException:
            cx.execute("ROLLBACK")
            raise
        else:
            cx.execute("COMMIT")


class Tx:
    def __init__(self, cx: sqlite3.Connection):
        self.cx = cx

    def execute(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        return self.cx.execute(sql, params).rowcount

    def insert(self, table: str, values: Mapping[str, Any]) -> int:
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        cur = self.cx.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id", dict(values))
        return int(cur.fetchone()[0])

    def all(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> list[Row]:
        return [dict(r) for r in self.cx.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> Row | None:
        r = self.cx.execute(sql, params).fetchone()
        return dict(r) if r is not None else None

    def is_unique_violation(self, e: BaseException) -> bool:
        return isinstance(e, sqlite3.IntegrityError) and "UNIQUE" in str(e)


IntegrityError = sqlite3.IntegrityError
