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

from abathur.errors import SchemaError

__all__ = [
    "LOCK_KEY",
    "Migration",
    "available",
    "check_not_newer",
    "current_version",
    "latest_version",
    "migrate",
    "pending",
]

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
SQL_HAS_VERSIONS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
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


def latest_version() -> int:
    """The number of the last migration this abathur ships."""
    return available()[-1].version


def _applied(conn: psycopg.Connection[tuple[Any, ...]]) -> set[int]:
    row = conn.execute(SQL_HAS_VERSIONS).fetchone()
    if row is None or not row[0]:
        return set()
    return {int(r[0]) for r in conn.execute(SQL_APPLIED)}


def current_version(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The highest migration applied to the database (0: none, or no ``schema_migrations``)."""
    return max(_applied(conn), default=0)


def check_not_newer(done: set[int]) -> None:
    """Refuse a database migrated by a newer abathur, as the SQLite backend does.

    Raises:
        SchemaError: ``done`` holds a version this abathur does not ship.

    Example:
        >>> check_not_newer({1, 10})
        >>> check_not_newer({1, 999})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abathur.errors.SchemaError: the database is at schema version 999 but this abathur ...
    """
    unknown = done - {m.version for m in available()}
    if unknown:
        raise SchemaError(
            f"the database is at schema version {max(done)} but this abathur knows only up to "
            f"{latest_version()} (unknown: {sorted(unknown)}): upgrade abathur, do not "
            "downgrade the database"
        )


def pending(conn: psycopg.Connection[tuple[Any, ...]]) -> list[Migration]:
    """Migrations not yet applied, in order (read only: takes no lock).

    Raises:
        SchemaError: the database is newer than this abathur.
    """
    done = _applied(conn)
    check_not_newer(done)
    return [m for m in available() if m.version not in done]


def migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> list[int]:
    """Apply the pending migrations in one transaction; return their versions.

    ``conn`` must be in autocommit mode or idle: this opens its own transaction.

    Raises:
        SchemaError: the database holds a migration this abathur does not
            know (a newer abathur migrated it); nothing is applied.
    """
    with conn.transaction():
        conn.execute(SQL_LOCK, {"key": LOCK_KEY})
        conn.execute(SQL_CREATE_VERSIONS)
        done = {int(row[0]) for row in conn.execute(SQL_APPLIED)}
        check_not_newer(done)
        applied: list[int] = []
        for m in available():
            if m.version in done:
                continue
            # The file is ours (shipped in the package), never user input.
            conn.execute(m.sql.encode("utf-8"))
            conn.execute(SQL_RECORD, {"version": m.version, "name": m.name, "at": time.time()})
            applied.append(m.version)
    return applied
