"""Move a project's state to another database (SQLite to PostgreSQL) without losing history."""

from __future__ import annotations

from typing import Any

from ..errors import Refused
from .db import Database

# parents before children; ids are kept, so every reference stays right
TABLES = [
    "runs",
    "jobs",
    "log_chunks",
    "events",
    "agents",
    "leases",
    "queue_items",
    "workflow_states",
    "timer_fires",
    "materials",
    "group_slots",
]
BATCH = 1000


def copy(source: Database, target: Database) -> dict[str, int]:
    """Copy every row; the target must be empty. Returns rows copied per table."""
    target.ensure_schema()
    for table in ("runs", "events", "queue_items"):
        if target.scalar(f"SELECT COUNT(*) FROM {table}"):
            raise Refused(f"the target database already has {table}; copy only into an empty database")
    counts: dict[str, int] = {}
    with target.write() as tx:
        for table in TABLES:
            cols = [c for c in source.one(f"SELECT * FROM {table} LIMIT 1") or {}]
            if not cols:
                counts[table] = 0
                continue
            order = "id" if "id" in cols else cols[0]
            marks = ", ".join(f":{c}" for c in cols)
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"
            n = 0
            last: Any = None
            while True:
                if "id" in cols:
                    rows = source.all(
                        f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT {BATCH}", (last or 0,)
                    )
                else:
                    rows = source.all(f"SELECT * FROM {table} ORDER BY {order} LIMIT {BATCH} OFFSET {n}")
                if not rows:
                    break
                tx.executemany(sql, rows)
                n += len(rows)
                last = rows[-1].get("id")
                if len(rows) < BATCH:
                    break
            counts[table] = n
        if target.dialect == "postgresql":  # new rows continue after the copied ids
            for table in TABLES:
                has_id = tx.one(
                    "SELECT 1 AS x FROM information_schema.columns WHERE table_name = ? "
                    "AND column_name = 'id'",
                    (table,),
                )
                if has_id:
                    tx.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                    )
    return counts
