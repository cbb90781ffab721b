"""Numbered SQL migrations for PostgreSQL, applied once under an advisory lock.

``migrations/NNN_name.sql`` files, applied in order of ``NNN``. The
``schema_migrations`` table records each applied version. Two servers that
start at once both call :func:`migrate`: the transaction-scoped advisory
lock makes the second wait for the first, then find nothing left to do.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

__all__ = ["LOCK_KEY", "Migration", "available", "migrate"]

#: The advisory lock every abathur migration takes (any constant bigint: "abathur").
LOCK_KEY = 0x616261746875

_NAME = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")

SQL_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  double precision NOT NULL
)
"""
SQL_LOCK = "SELECT pg_advisory_xact_lock(%(key)s)"
SQL_APPLIED = "SELECT version FROM schema_migrations"
SQL_RECORD = (
    "INSERT INTO schema_migrations (version, name, applied_at) "
    "VALUES (%(version)s, %(name)s, %(at)s)"
)


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with this abathur, in order."""
    found: list[Migration] = []
    for entry in resources.files("abathur.backends.postgres").joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> list[int]:
    """Apply the pending migrations in one transaction; return their versions.

    ``conn`` must be in autocommit mode or idle: this opens its own transaction.
    """
    with conn.transaction():
        conn.execute(SQL_LOCK, {"key": LOCK_KEY})
        conn.execute(SQL_CREATE_VERSIONS)
        done = {int(row[0]) for row in conn.execute(SQL_APPLIED)}
        applied: list[int] = []
        for m in available():
            if m.version in done:
                continue
            # The file is ours (shipped in the package), never user input.
            conn.execute(m.sql.encode("utf-8"))
            conn.execute(SQL_RECORD, {"version": m.version, "name": m.name, "at": time.time()})
            applied.append(m.version)
    return applied
