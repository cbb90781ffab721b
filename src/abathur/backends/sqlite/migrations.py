"""Numbered SQL migrations tracked by ``PRAGMA user_version``.

``migrations/NNN_name.sql`` are applied in order, each in its own
``BEGIN IMMEDIATE`` transaction together with the ``user_version`` bump, so a
failed migration leaves the file at the previous version. Before migrating a
file that already holds a schema, a copy is taken with SQLite's online backup
API (``<file>.pre-v<N>-<timestamp>.bak``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import apsw

from abathur.backends.sqlite.connection import scalar_int, translate_errors
from abathur.errors import SchemaError

__all__ = ["Migration", "apply", "available", "backup_copy", "current_version", "pending"]

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with this abathur, in order."""
    found = []
    for entry in resources.files("abathur.backends.sqlite").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise SchemaError(f"migration files are not numbered 1..N: {[m.version for m in found]}")
    return found


def current_version(conn: apsw.Connection) -> int:
    """The file's ``PRAGMA user_version``: the last migration applied."""
    return scalar_int(conn, "PRAGMA user_version")


def pending(conn: apsw.Connection, *, target: int | None = None) -> list[Migration]:
    """Migrations not yet applied (up to ``target``).

    Raises:
        SchemaError: the file is newer than this abathur knows.
    """
    known = available()
    latest = known[-1].version
    current = current_version(conn)
    if current > latest:
        raise SchemaError(
            f"the database is at schema version {current} but this abathur knows only up to "
            f"{latest}: upgrade abathur, do not downgrade the file"
        )
    stop = latest if target is None else target
    return [m for m in known if current < m.version <= stop]


def apply(conn: apsw.Connection, migrations: list[Migration]) -> None:
    """Apply migrations in order, each atomically with its ``user_version``."""
    for migration in migrations:
        with translate_errors(f"applying migration {migration.version:03d}_{migration.name}"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(migration.sql)
                # user_version takes no placeholder; the value is our own integer.
                conn.execute(f"PRAGMA user_version = {int(migration.version)}")
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema.migrated_at', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (repr(time.time()),),
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def backup_copy(conn: apsw.Connection, db_path: Path, *, from_version: int) -> Path:
    """Copy the live database aside with the online backup API; return the copy's path."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest_path = db_path.with_name(f"{db_path.name}.pre-v{from_version}-{stamp}.bak")
    with translate_errors(f"backing up {db_path} before migrating"):
        dest = apsw.Connection(str(dest_path))
        try:
            with dest.backup("main", conn, "main") as backup:
                backup.step(
                    -1
                )  # one step: a single snapshot, never restarted by a concurrent writer
        finally:
            dest.close()
    return dest_path
