"""The database door: plain DB-API with short transactions.

Everything dialect-specific lives in this file (connection set-up and PostgreSQL's pool, the
write transaction, narrow locks, placeholders), so that the rest of core writes one portable SQL.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The Alembic revision this code expects; tests check it equals the migrations' head.
SCHEMA_HEAD = "0010"
BUSY_TIMEOUT_S = float(os.environ.get("SLUICE_BUSY_TIMEOUT", "30"))
# PostgreSQL connections one process keeps open at most (threads borrow one per statement or
# per write transaction): 4 agents and 2 engines stay far below the server's default 100
PG_POOL_DEFAULT = 4
PG_POOL_MAX = 64
# taken shared by every write of an engine that checks its lease (Database.fence), exclusive by an
# engine taking the lease over: no write of the engine it replaces is still on its way when it starts
FENCE_LOCK = "lease:scheduler"


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
    """One per process and URL. SQLite: each thread has its own connection. PostgreSQL: a small
    pool (SLUICE_PG_POOL, default 4): a thread borrows a connection for one read statement or
    for one write transaction, so a process with many threads still holds a handful."""

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
        self._writers = threading.RLock()  # SQLite: this process's writers, one at a time
        self._pool = _Pool(self.conninfo, pool_size()) if self.dialect == "postgresql" else None
        self._checked = False
        self.fence: Fence | None = None  # set by the engine: a check run first in every write transaction

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
            if _sqlite_busy(e):  # another process is creating it (WAL needs it alone a moment)
                raise StoreUnavailable(f"database busy ({self.path}): {e}") from None
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        return cx

    @property
    def cx(self) -> sqlite3.Connection:
        """SQLite: this thread's connection. PostgreSQL: the connection of the write transaction this
        thread is in (outside one there is none of its own: see connection())."""
        if self._pool is not None:
            bound = getattr(self._local, "tx_cx", None)
            if bound is None:
                raise StoreError("no PostgreSQL connection is bound to this thread outside a write")
            return bound
        cx = getattr(self._local, "cx", None)
        if cx is None:
            cx = self._local.cx = self._connect()
        return cx

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for one statement: SQLite's of this thread; on PostgreSQL the one of the
        write transaction this thread is in (its reads see its own writes, as on SQLite), else one
        borrowed from the pool and given back at once."""
        if self._pool is None:
            yield self.cx
            return
        bound = getattr(self._local, "tx_cx", None)
        if bound is not None:
            yield bound
            return
        cx = self._pool.get()
        try:
            yield cx
        finally:
            self._pool.put(cx)

    def close(self) -> None:
        """SQLite: close this thread's connection. PostgreSQL: close the pool's idle connections."""
        if self._pool is not None:
            self._pool.close_idle()
            return
        cx = getattr(self._local, "cx", None)
        if cx is not None:
            cx.close()
            self._local.cx = None

    # ------------------------------------------------------------ schema

    def ensure_schema(self) -> None:
        """Create or upgrade the schema when it is not at SCHEMA_HEAD (cheap when it is)."""
        if self._checked:
            return
        try:
            current = self.schema_revision() == SCHEMA_HEAD
        except StoreUnavailable:
            # busy: another process is creating or migrating the database right now; the
            # migrator's lock below waits for it, then the schema is read again
            current = False
        if not current:
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
            if _sqlite_busy(e):
                raise StoreUnavailable(f"database busy ({self.path}): {e}") from None
            raise StoreError(f"cannot read database {self.path}: {e}") from None
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read database {self.path}: {e}") from None
        return row[0] if row else None

    def _upgrade(self) -> None:
        import fcntl

        from .migrate import upgrade

        if self.dialect == "postgresql":
            # one migrator at a time across hosts: a session advisory lock on this database, held by
            # a connection of its own (pooled statements may each go out on another connection)
            holder = _pg_connect(self.conninfo)
            try:
                try:
                    holder.execute("SELECT pg_advisory_lock(74210)")
                except Exception as e:
                    raise _translate(e, self) from None
                if self.schema_revision() != SCHEMA_HEAD:
                    try:
                        upgrade(self.url)
                    except Exception as e:
                        raise StoreError(f"cannot migrate database: {e}") from None
            finally:
                holder.close()  # ends the session, and with it the lock
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

    def _fetch(self, sql: str, params: Any, many: bool) -> Any:
        """Run one statement and fetch its rows (all, or the first) before the connection goes back."""
        text = self.sql(sql)
        for attempt in (1, 2):
            with self.connection() as cx:
                try:
                    cur = cx.execute(text, params)
                    return cur.fetchall() if many else cur.fetchone()
                except Exception as e:  # driver errors become one line for the user
                    # a pooled connection that the server closed while it sat idle (a restart, an
                    # idle timeout): a read outside a transaction is tried once more on a new one
                    if attempt == 1 and self._pool is not None and _pg_gone(cx) and not self.in_write:
                        continue
                    raise _translate(e, self) from None
        raise AssertionError("unreachable")

    def all(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        return [dict(r) for r in self._fetch(sql, params, True)]

    def one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> Row | None:
        r = self._fetch(sql, params, False)
        return dict(r) if r is not None else None

    def scalar(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> Any:
        r = self._fetch(sql, params, False)
        if r is None:
            return None
        return next(iter(r.values())) if isinstance(r, dict) else r[0]

    @property
    def in_write(self) -> bool:
        """Whether this thread is inside a write transaction of this database (PostgreSQL)."""
        return getattr(self._local, "tx_cx", None) is not None

    @contextmanager
    def write(self, *, fenced: bool = True) -> Iterator[Tx]:
        """A short write transaction (see _write). On SQLite the threads of this process take turns on
        a lock of their own first: they wait on it, woken the moment it is free, rather than in
        SQLite's busy handler, which sleeps for milliseconds between tries.

        Inside without_waiting(), a SQLite write that cannot start at once raises StoreUnavailable
        instead of waiting."""
        if self.dialect != "sqlite":
            with self._write(fenced=fenced) as tx:
                yield tx
            return
        if self.not_waiting:
            if not self._writers.acquire(blocking=False):
                raise StoreUnavailable(f"database busy ({self.path}): another writer of this process")
            try:
                with self._write(fenced=fenced) as tx:
                    yield tx
            finally:
                self._writers.release()
            return
        with self._writers, self._write(fenced=fenced) as tx:
            yield tx

    @contextmanager
    def without_waiting(self) -> Iterator[bool]:
        """SQLite: this thread's writes in the block start at once or raise StoreUnavailable (the
        write lock taken, by this process or another). Yields False on PostgreSQL, where it does
        nothing: the caller should not count on it there."""
        if self.dialect != "sqlite":
            yield False
            return
        self._local.no_wait = True
        try:
            yield True
        finally:
            self._local.no_wait = False

    @property
    def not_waiting(self) -> bool:
        return bool(getattr(self._local, "no_wait", False))

    @contextmanager
    def _write(self, *, fenced: bool = True) -> Iterator[Tx]:
        """A short write transaction. SQLite: BEGIN IMMEDIATE, one writer at a time. PostgreSQL:
        writers run side by side (READ COMMITTED); each rule is kept where it lives: unique
        constraints, conditional UPDATEs, row locks, and Tx.lock where a rule spans rows."""
        if self._pool is not None:
            if self.in_write:  # it would wait for a second connection while holding the first
                raise StoreError("a write transaction inside another one on the same thread")
            cx = self._pool.get()
            self._local.tx_cx = cx
            try:
                with self._transaction(cx, fenced) as tx:
                    yield tx
            finally:
                self._local.tx_cx = None
                self._pool.put(cx)
            return
        with self._transaction(self.cx, fenced) as tx:
            yield tx

    @contextmanager
    def _transaction(self, cx: Any, fenced: bool) -> Iterator[Tx]:
        fence = self.fence if fenced else None
        no_wait = self.dialect == "sqlite" and self.not_waiting
        if self.dialect == "sqlite":
            begin = "BEGIN IMMEDIATE"
        elif fence is not None:
            # An engine writes only while it holds the scheduler lease (the fence's query, read in
            # this transaction). This lock, shared by its writes, keeps an engine taking the lease
            # over waiting until each of them is committed or undone. BEGIN, the lock and the
            # fence's query go in one round trip.
            begin = f"BEGIN; SELECT pg_advisory_xact_lock_shared({lock_id(FENCE_LOCK)}); {fence.query}"
        else:
            begin = "BEGIN"
        try:
            if no_wait:
                cx.execute("PRAGMA busy_timeout=0")
                try:
                    cur = cx.execute(begin)
                finally:
                    cx.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            else:
                cur = cx.execute(begin)
        except Exception as e:
            if self.dialect == "postgresql":
                _pg_rollback(cx)
            raise StoreUnavailable(f"database is busy or locked ({self.where}): {e}") from None
        tx = Tx(cx, self)
        try:
            if fence is not None:
                if self.dialect == "postgresql":
                    cur.nextset()  # past BEGIN and the lock, to the fence's row
                    cur.nextset()
                    row = cur.fetchone()
                    fence.check(dict(row) if row is not None else None)
                else:
                    fence.check(tx.one(fence.query))
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
                if self.dialect == "postgresql":
                    _pg_rollback(cx)
                raise _translate(e, self) from None

    # ------------------------------------------------------------ following the events

    def event_cursor(self) -> EventCursor:
        """A cursor at "now": events_since() from it returns only events committed after this call."""
        if self.dialect == "sqlite":
            return EventCursor(int(self.scalar("SELECT COALESCE(MAX(id), 0) FROM events") or 0))
        xmax, xip = self._pg_snapshot()
        return EventCursor(xmax, tuple(xip))

    def events_since(
        self,
        cursor: EventCursor,
        where: str = "",
        params: tuple[Any, ...] | list[Any] = (),
        columns: str = "*",
    ) -> tuple[list[Row], EventCursor]:
        """The events committed since `cursor` (and matching `where`, an SQL condition), in id order,
        and the cursor to pass next time. No event is returned twice and none is passed over.

        On SQLite one writer at a time commits, so ids come in commit order and the cursor is
        the last id. On PostgreSQL writers commit side by side, so an event with a smaller id
        can commit after one with a larger id: the cursor is a transaction snapshot instead,
        and each call takes the events of the transactions that finished between the two
        snapshots (by the `tx` column every event carries), watching the ones still running."""
        cond = f" AND ({where})" if where else ""
        if self.dialect == "sqlite":
            top = int(self.scalar("SELECT COALESCE(MAX(id), 0) FROM events") or 0)
            if top <= cursor.lo:
                return [], cursor
            rows = self.all(
                f"SELECT {columns} FROM events WHERE id > ? AND id <= ?{cond} ORDER BY id",
                (cursor.lo, top, *params),
            )
            return rows, EventCursor(top)
        xmax, xip = self._pg_snapshot()
        rows = self.all(
            f"SELECT {columns} FROM events WHERE ((tx >= ? AND tx < ?) OR tx = ANY(?::bigint[])) "
            f"AND NOT (tx = ANY(?::bigint[])){cond} ORDER BY id",
            (cursor.lo, xmax, list(cursor.watch), xip, *params),
        )
        running = set(xip)
        watch = tuple(sorted(x for x in running if x >= cursor.lo or x in cursor.watch))
        return rows, EventCursor(xmax, watch)

    def _pg_snapshot(self) -> tuple[int, list[int]]:
        row = self.one(
            "SELECT pg_snapshot_xmax(s)::text::bigint AS xmax, "
            "ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x) AS xip FROM pg_current_snapshot() AS s"
        )
        assert row is not None
        return int(row["xmax"]), [int(x) for x in row["xip"] or []]

    def notify(self, agent: str | None = None) -> None:
        """Wake the engine (or one agent) now: a datagram on this host; on PostgreSQL also NOTIFY,
        which reaches engines and agents on every host."""
        if self.notifier is not None:
            self.notifier(self.url + (f"#agent:{agent}" if agent else ""))
        if self.dialect == "postgresql":
            try:
                with self.connection() as cx:
                    cx.execute("NOTIFY sluice")
            except Exception:
                pass

    @property
    def where(self) -> str:
        return str(self.path) if self.dialect == "sqlite" else self.conninfo.split("@")[-1]


@dataclass(frozen=True)
class EventCursor:
    """Where a reader of the events stands (Database.events_since). SQLite: the last id read.
    PostgreSQL: the snapshot's xmax, and the transactions that were still running then."""

    lo: int
    watch: tuple[int, ...] = ()


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

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows that all have the same columns, in one round trip.

        A few rows on PostgreSQL go as one INSERT with a row of VALUES each: psycopg's
        executemany goes through pipeline mode, which for the one to few events of a job cost
        an agent on PostgreSQL an eighth of its time. Many rows (a run's jobs) go through it."""
        if not rows:
            return
        names = list(rows[0])
        cols = ", ".join(names)
        if len(rows) == 1 or (self.db.dialect != "sqlite" and len(rows) <= 32):
            values = ", ".join("(" + ", ".join(f":{k}_{i}" for k in names) + ")" for i in range(len(rows)))
            params = {f"{k}_{i}": row[k] for i, row in enumerate(rows) for k in names}
            self._run(f"INSERT INTO {table} ({cols}) VALUES {values}", params)
            return
        marks = ", ".join(f":{k}" for k in names)
        self.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)

    def all(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        return [dict(r) for r in self._run(sql, params).fetchall()]

    def one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | list[Any] = ()) -> Row | None:
        r = self._run(sql, params).fetchone()
        return dict(r) if r is not None else None

    # ------------------------------------------------------------ narrow locks (PostgreSQL)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that an exception undoes alone (then re-raised)."""
        self._savepoints = getattr(self, "_savepoints", 0) + 1
        name = f"sluice_sp{self._savepoints}"
        self._run(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._run(f"ROLLBACK TO SAVEPOINT {name}")
            self._run(f"RELEASE SAVEPOINT {name}")
            raise
        self._run(f"RELEASE SAVEPOINT {name}")

    @property
    def for_update(self) -> str:
        """` FOR UPDATE` on PostgreSQL, to end a SELECT that locks the rows it reads until the
        transaction ends; nothing on SQLite, where the transaction already has the one write lock."""
        return " FOR UPDATE" if self.db.dialect == "postgresql" else ""

    def lock(self, *keys: str, shared: bool = False) -> None:
        """Serialize the transactions that check a rule spanning rows and then write by it (a
        workflow's lock and pause, a concurrency group's order): until this transaction ends, no
        other takes the same key. PostgreSQL: a transaction-level advisory lock on a stable 64-bit
        hash of each key, taken in one order (sorted) so two callers never wait for each other.
        SQLite: nothing to do, BEGIN IMMEDIATE already makes one writer at a time.

        A transaction that takes several keys over its life must take them in the house's order
        (lease, then rows, then workflow, then run order, then group) to stay free of deadlocks."""
        if self.db.dialect != "postgresql" or not keys:
            return
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        for k in sorted({lock_id(key) for key in keys}):
            self._run(f"SELECT {fn}(?)", (k,))

    def wait_for(self, key: str) -> None:
        """Wait until no other transaction holds `key` (taken by lock()), without keeping it: the
        transactions under way with it end first; the ones that come later are not waited for.
        SQLite: nothing to wait for (one writer at a time)."""
        if self.db.dialect != "postgresql":
            return
        # A session-level lock, let go by the same statement once held (the subquery runs first; a
        # wait is bounded by lock_timeout). Should the statement fail anyway, the connection is
        # closed: ending the session is the one sure way not to leave the lock held in the pool.
        try:
            self.cx.execute(
                "SELECT pg_advisory_unlock(%(k)s) AS b FROM (SELECT pg_advisory_lock(%(k)s) AS a OFFSET 0) AS s",
                {"k": lock_id(key)},
            )
        except BaseException as e:
            error = _translate(e, self.db) if isinstance(e, Exception) else e
            try:
                self.cx.close()
            except Exception:
                pass
            raise error from None


@dataclass(frozen=True)
class Fence:
    """A check every write transaction of a process makes first (the engine's lease): `query`, a
    statement without parameters (on PostgreSQL sent with BEGIN), and `check`, which judges its
    row and raises to refuse the transaction."""

    query: str
    check: Callable[[Row | None], None]


def lock_id(key: str) -> int:
    """A key's advisory lock id: the same in every process, host and version (not Python's hash())."""
    digest = hashlib.blake2b(f"sluice:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def pool_size() -> int:
    """SLUICE_PG_POOL: the PostgreSQL connections one process keeps at most (1 to 64, default 4)."""
    text = os.environ.get("SLUICE_PG_POOL", "").strip()
    if not text:
        return PG_POOL_DEFAULT
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= PG_POOL_MAX:
        raise StoreError(f"SLUICE_PG_POOL must be a whole number from 1 to {PG_POOL_MAX}, not '{text}'")
    return size


class _Pool:
    """At most `size` PostgreSQL connections for one process, opened when first needed.

    A thread takes one for one statement or one write transaction and gives it back; when all
    are out it waits (up to the busy timeout, like a lock). A connection that comes back broken
    or inside a transaction is closed, and a new one is opened next time. Not psycopg_pool: that
    opens connections in background threads and, with the server unreachable, says so only as a
    timeout after the wait, where the CLI must exit 75 at once with the driver's reason."""

    def __init__(self, conninfo: str, size: int):
        self.conninfo = conninfo
        self.size = size
        self.idle: list[Any] = []
        self.opened = 0  # connections open or being opened, idle or out
        self.out: set[int] = set()  # id() of the connections lent out
        self.cond = threading.Condition()
        self.pid = os.getpid()
        me = weakref.ref(self)

        def forget() -> None:
            pool = me()
            if pool is not None:
                pool._forget()

        os.register_at_fork(after_in_child=forget)

    def _forget(self) -> None:
        """In a child process the parent's connections are not ours: forget them (never close
        them, that would end the parent's sessions). Called in the child after a fork (asking
        os.getpid() at every get and put cost the engine 2% on PostgreSQL)."""
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.idle = []
        self.out = set()
        self.opened = 0

    def get(self) -> Any:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        with self.cond:
            while True:
                if self.idle:
                    cx = self.idle.pop()
                    self.out.add(id(cx))
                    return cx
                if self.opened < self.size:
                    self.opened += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"all {self.size} database connections of this process stayed busy for "
                        f"{BUSY_TIMEOUT_S:g}s (SLUICE_PG_POOL)"
                    )
                self.cond.wait(left)
        try:
            cx = _pg_connect(self.conninfo)
        except BaseException:
            with self.cond:
                self.opened -= 1
                self.cond.notify()
            raise
        with self.cond:
            self.out.add(id(cx))
        return cx

    def put(self, cx: Any) -> None:
        from psycopg.pq import TransactionStatus

        with self.cond:
            if id(cx) not in self.out:
                return  # lent out before a fork: the parent's session, never closed from here
            self.out.discard(id(cx))
        keep = not _pg_gone(cx) and cx.info.transaction_status == TransactionStatus.IDLE
        if not keep:
            try:
                cx.close()
            except Exception:
                pass
        with self.cond:
            if keep:
                self.idle.append(cx)
            else:
                self.opened -= 1
            self.cond.notify()

    def close_idle(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.opened -= len(idle)
            self.cond.notify_all()
        for cx in idle:
            try:
                cx.close()
            except Exception:
                pass


def _pg_gone(cx: Any) -> bool:
    return bool(cx.closed or cx.broken)


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
        if isinstance(e, psycopg.errors.TransactionRollback):
            # a deadlock or serialization failure: PostgreSQL undid the transaction, nothing changed
            return StoreUnavailable(f"database conflict, nothing was changed ({db.where}): {first}")
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


def _sqlite_busy(e: sqlite3.Error) -> bool:
    """Another connection holds the lock it needs (SQLITE_BUSY, SQLITE_LOCKED)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return any(w in str(e).lower() for w in ("database is locked", "database is busy"))


def _sqlite_temporary_text(text: str) -> bool:
    text = text.lower()
    return any(
        w in text for w in ("database is locked", "database is busy", "disk is full", "disk i/o error")
    )
