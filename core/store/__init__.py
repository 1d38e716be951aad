"""The store: schema (SQLModel + Alembic migrations) and the portable DB-API door."""

from .db import Database, StoreError, dumps, loads, now, resolve_url

__all__ = ["Database", "StoreError", "dumps", "loads", "now", "resolve_url"]
