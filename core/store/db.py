"""The database door: plain DB-API with short transactions.

Everything dialect-specific lives in this file (connection set-up, the write transaction,
placeholders), so that the rest of core writes one portable SQL.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The Alembic revision this code expects; tests check it equals the migrations' head.
SCHEMA_HEAD = "0006"
BUSY_TIMEOUT_S = float(os.environ.get("SLUICE_BUSY_TIMEOUT", "30"))


class StoreError(Exception):
    """The database cannot be opened or used (one line for the user)."""


class StoreUnavailable(StoreError):
    """The store cannot be used right now (busy past the timeout, disk full, unreachable).

    Nothing was changed; trying again later may work (the CLI exits 75, EX_TEMPFAIL)."""


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
        rel = url[len("sqlite:///") :]
        url = "sqlite:///" + str((root / rel).resolve())
    return url


class Database:
    """One per process and URL; hands each thread its own connection."""

    def __init__(self, url: str, notifier: Callable[[str], object] | None = None):
        """`notifier(address)` wakes a process of this host waiting on `address` (core.wake.poke);
        the store takes it rather than importing the waker, so it stays at the bottom of the layers."""
        self.url = url
        self.notifier = notifier
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = Path(url[len("sqlite:///") :])
        elif url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            self.dialect = "postgresql"
            self.conninfo = "postgresql://" + url.split("://", 1)[1]
            self.url = "postgresql+psycopg://" + url.split("://", 1)[1]
            self.path = Path("/nonexistent")
        else:
            raise StoreError(
                f"unsupported database URL '{url}' (use sqlite:///PATH or postgresql+psycopg://…)"
            )
        self._local = threading.local()
        self._checked = False
        self.fence: Any = None  # set by the engine: a check run first in every write transaction

    # ------------------------------------------------------------ connections

    def _connect(self) -> Any:
        if self.dialect == "postgresql":
            return _pg_connect(self.conninfo)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            cx = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
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
        if self.dialect == "postgresql":
            row = self.one("SELECT to_regclass('alembic_version') AS t")
            if row is None or row["t"] is None:
                return None
            r = self.one("SELECT version_num FROM alembic_version")
            return r["version_num"] if r else None
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

        if self.dialect == "postgresql":
            # one migrator at a time across hosts: a session advisory lock on this database
            self.one("SELECT pg_advisory_lock(74210) AS x")
            try:
                if self.schema_revision() != SCHEMA_HEAD:
                    try:
                        upgrade(self.url)
                    except Exception as e:
                        raise StoreError(f"cannot migrate database: {e}") from None
            finally:
                self.one("SELECT pg_advisory_unlock(74210) AS x")
            return
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

    def sql(self, text: str) -> str:
        return text if self.dialect == "sqlite" else _pg_sql(text)

    def _run(self, sql: str, params: Any = ()) -> Any:
        try:
            return self.cx.execute(self.sql(sql), params)
        except Exception as e:  # driver errors become one line for the user
            raise _translate(e, self) from None

    def all(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        return [dict(r) for r in self._run(sql, params).fetchall()]

    def one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> Row | None:
        r = self._run(sql, params).fetchone()
        return dict(r) if r is not None else None

    def scalar(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> Any:
        r = self._run(sql, params).fetchone()
        if r is None:
            return None
        return next(iter(r.values())) if isinstance(r, dict) else r[0]

    @contextmanager
    def write(self, *, fenced: bool = True) -> Iterator[Tx]:
        """A short write transaction, one writer at a time: BEGIN IMMEDIATE on SQLite, a transaction-level
        advisory lock on PostgreSQL (so both backends give the same guarantees to every rule)."""
        cx = self.cx
        try:
            if self.dialect == "sqlite":
                cx.execute("BEGIN IMMEDIATE")
            else:
                cx.execute("BEGIN")
                cx.execute("SELECT pg_advisory_xact_lock(74211)")
        except Exception as e:
            if self.dialect == "postgresql":
                _pg_rollback(cx)
            raise StoreUnavailable(f"database is busy or locked ({self.where}): {e}") from None
        tx = Tx(cx, self)
        try:
            if fenced and self.fence is not None:
                self.fence(tx)  # an engine writes only while it holds the scheduler lease
            yield tx
        except BaseException:
            try:
                cx.execute("ROLLBACK")
            except Exception:
                pass
            raise
        else:
            try:
                cx.execute("COMMIT")
            except Exception as e:
                raise _translate(e, self) from None

    def notify(self, agent: str | None = None) -> None:
        """Wake the engine (or one agent) now: a datagram on this host; on PostgreSQL also NOTIFY,
        which reaches engines and agents on every host."""
        if self.notifier is not None:
            self.notifier(self.url + (f"#agent:{agent}" if agent else ""))
        if self.dialect == "postgresql":
            try:
                self.cx.execute("NOTIFY sluice")
            except Exception:
                pass

    @property
    def where(self) -> str:
        return str(self.path) if self.dialect == "sqlite" else self.conninfo.split("@")[-1]


class LostLease(StoreError):
    """This engine no longer holds the scheduler lease: it must not write."""


class IntegrityError(StoreError):
    """A unique constraint said no (the same queue item, the same timer fire)."""


class Tx:
    def __init__(self, cx: Any, db: Database):
        self.cx = cx
        self.db = db

    def _run(self, sql: str, params: Any = ()) -> Any:
        try:
            return self.cx.execute(self.db.sql(sql), params)
        except Exception as e:
            raise _translate(e, self.db) from None

    def execute(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        return self._run(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        try:
            if self.db.dialect == "sqlite":
                self.cx.executemany(self.db.sql(sql), rows)
            else:
                with self.cx.cursor() as cur:
                    cur.executemany(self.db.sql(sql), rows)
        except Exception as e:
            raise _translate(e, self.db) from None

    def insert(self, table: str, values: Mapping[str, Any]) -> int:
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        row = self._run(
            f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id", dict(values)
        ).fetchone()
        return int(row["id"] if isinstance(row, dict) else row[0])

    def all(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        return [dict(r) for r in self._run(sql, params).fetchall()]

    def one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> Row | None:
        r = self._run(sql, params).fetchone()
        return dict(r) if r is not None else None


# ---------------------------------------------------------------- dialect-specific pieces

# One token at a time, left to right: string literals, quoted identifiers and comments pass
# through untouched (a `?` or `:x` inside them is text), `::` is a cast, never a placeholder.
_PG_TOKEN = re.compile(
    r"""'(?:[^']|'')*'"""  # string literal
    r'|"(?:[^"]|"")*"'  # quoted identifier
    r"|--[^\n]*"  # line comment
    r"|/\*.*?\*/"  # block comment
    r"|::"  # cast
    r"|\?"  # positional placeholder
    r"|:([A-Za-z_]\w*)"  # named placeholder
    r"|%",  # a literal percent sign (psycopg would read it as a placeholder)
    re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def _pg_sql(text: str) -> str:
    """`?` and `:name` placeholders to psycopg's `%s` / `%(name)s`; a literal % doubled."""

    def one(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok[0] in "'\"-/":
            return tok.replace("%", "%%")
        if tok == "::":
            return tok
        if tok == "?":
            return "%s"
        if tok == "%":
            return "%%"
        return f"%({m.group(1)})s"

    return _PG_TOKEN.sub(one, text)


def _pg_connect(conninfo: str) -> Any:
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise StoreError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
    try:
        # a lock held elsewhere (the write lock, a row) waits at most the busy timeout, as on SQLite:
        # then the caller gets StoreUnavailable (exit 75 for the CLI), never an endless wait
        return psycopg.connect(
            conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=10,
            options=f"-c lock_timeout={int(BUSY_TIMEOUT_S * 1000)}",
        )
    except psycopg.Error as e:
        raise StoreUnavailable(
            f"cannot connect to {conninfo.split('@')[-1]}: {str(e).strip().splitlines()[0]}"
        ) from None


def _pg_rollback(cx: Any) -> None:
    try:
        cx.execute("ROLLBACK")
    except Exception:
        pass


# SQLite result codes that mean "not now" rather than "never": busy, locked, disk full, I/O
_SQLITE_TEMPORARY = {5, 6, 10, 13}  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL


def _translate(e: Exception, db: Database) -> Exception:
    if isinstance(e, StoreError):
        return e
    if isinstance(e, sqlite3.IntegrityError):
        return IntegrityError(str(e))
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF in _SQLITE_TEMPORARY) or _sqlite_temporary_text(str(e)):
            return StoreUnavailable(f"database unavailable ({db.where}): {e}")
        return StoreError(f"database error ({db.where}): {e}")
    name = type(e).__name__
    module = type(e).__module__
    if module.startswith("psycopg"):
        import psycopg

        first = str(e).strip().splitlines()[0] if str(e).strip() else name
        if isinstance(e, psycopg.errors.IntegrityError):
            return IntegrityError(first)
        if isinstance(
            e,
            psycopg.OperationalError
            | psycopg.errors.DiskFull
            | psycopg.errors.InsufficientResources
            | psycopg.errors.LockNotAvailable
            | psycopg.errors.QueryCanceled,
        ):
            return StoreUnavailable(f"database unavailable ({db.where}): {first}")
        if isinstance(e, psycopg.Error):
            return StoreError(f"database error ({db.where}): {first}")
    return e


def _sqlite_temporary_text(text: str) -> bool:
    text = text.lower()
    return any(
        w in text for w in ("database is locked", "database is busy", "disk is full", "disk i/o error")
    )
