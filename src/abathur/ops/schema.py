"""What a database file holds, and how it compares with what the migrations build.

The expected schema is not a list kept by hand: it is built by applying the
shipped migration files to a fresh in-memory database, so it can never drift
from them. Objects that abathur creates at run time rather than in a
migration (a sqlite-vec ``vec0`` table sized by the embedder's dims, and its
shadow tables) are reported as such, not as findings.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops import schema
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none"):
    ...         pass
    >>> asyncio.run(create())
    >>> conn = schema.open_existing(path)
    >>> schema.compare(conn).problems, "memories" in schema.row_counts(conn)
    ([], True)
    >>> conn.close()
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import sqlite_vec

from abathur.config import Settings
from abathur.db import migrations
from abathur.db.connection import connect, translate_errors
from abathur.errors import DatabaseError

__all__ = [
    "SchemaDiff",
    "SchemaObject",
    "compare",
    "describe",
    "expected",
    "has_sqlite_header",
    "open_existing",
    "row_counts",
    "table_exists",
    "user_tables",
    "wal_path",
]

# Modules whose tables abathur creates at run time, not in a migration: a vec0
# table's dimensions come from the embedder the file was created with.
RUNTIME_MODULES = frozenset({"vec0"})

_SQLITE_HEADER = b"SQLite format 3\x00"

_USING = re.compile(r"^CREATE\s+VIRTUAL\s+TABLE\s+.*?\bUSING\s+(\w+)", re.IGNORECASE | re.DOTALL)


def wal_path(path: Path) -> Path:
    """The ``-wal`` file beside a database file."""
    return path.with_name(path.name + "-wal")


def open_existing(
    path: Path, settings: Settings | None = None, *, readonly: bool = True
) -> apsw.Connection:
    """Open an isolated, prepared connection to a file that must already exist.

    Raises:
        DatabaseError: there is no file at ``path``, or it is not a database.
    """
    if not path.is_file():
        raise DatabaseError(f"no database at {str(path)!r}")
    # An empty file is a database SQLite has not written yet; anything else must say so.
    if path.stat().st_size and not has_sqlite_header(path):
        raise DatabaseError(f"{str(path)!r} is not an SQLite database (its header is wrong)")
    return connect(path, settings or Settings(), readonly=readonly)


def has_sqlite_header(path: Path) -> bool:
    """True when the file starts with SQLite's magic string."""
    with open(path, "rb") as f:
        return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


@dataclass(frozen=True)
class SchemaObject:
    """One table, virtual table, index, trigger or view, in comparable form."""

    type: str
    name: str
    table: str
    sql: str
    columns: tuple[tuple[object, ...], ...] = ()
    module: str | None = None


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").split())


def describe(conn: apsw.Connection) -> dict[str, SchemaObject]:
    """Every schema object of the main database, by name, except SQLite's own.

    Shadow tables of virtual tables (FTS5's ``x_data``, vec0's ``x_chunks``...)
    are left out: they are implied by their virtual table, which is compared.
    """
    kinds = {name: kind for _s, name, kind, *_ in conn.execute("PRAGMA main.table_list")}
    virtual = [name for name, kind in kinds.items() if kind == "virtual"]
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    objects: dict[str, SchemaObject] = {}
    for kind, name, table, sql in rows:
        if kinds.get(name) == "shadow" or kinds.get(table) == "shadow":
            continue
        # vec0 declares only some of its tables as shadow; the rest share its prefix.
        if any(table.startswith(v + "_") for v in virtual):
            continue
        module = None
        columns: tuple[tuple[object, ...], ...] = ()
        if kinds.get(name) == "virtual":
            match = _USING.search(sql or "")
            module = match[1].lower() if match else None
        elif kind == "table":
            # Names come from sqlite_schema, not from a caller.
            columns = tuple(
                tuple(row) for row in conn.execute(f'PRAGMA main.table_xinfo("{name}")')
            )
        objects[name] = SchemaObject(kind, name, table, _normal(sql), columns, module)
    return objects


@functools.cache
def expected(version: int) -> Mapping[str, SchemaObject]:
    """The schema the migrations 1..``version`` build, from a fresh in-memory database."""
    with translate_errors("building the expected schema from the migrations"):
        conn = apsw.Connection(":memory:")
        try:
            # A migration may create FTS5 or vec0 tables: load sqlite-vec as connect() does.
            conn.enable_load_extension(True)
            conn.load_extension(sqlite_vec.loadable_path())
            migrations.apply(conn, [m for m in migrations.available() if m.version <= version])
            return describe(conn)
        finally:
            conn.close()


@dataclass(frozen=True)
class SchemaDiff:
    """How a file's schema differs from its migrations; empty ``problems`` means it matches."""

    user_version: int
    latest_version: int
    problems: list[str] = field(default_factory=list)
    runtime_objects: list[str] = field(default_factory=list)


def compare(conn: apsw.Connection) -> SchemaDiff:
    """Compare tables, columns, indexes, triggers, views and ``user_version`` with the migrations.

    A file behind the latest migration is compared with the schema of its own
    version, and the pending migrations are reported, so the message says
    "run abathur migrate" rather than listing every missing table.
    """
    version = migrations.current_version(conn)
    latest = migrations.available()[-1].version
    diff = SchemaDiff(version, latest)
    if version == 0:
        diff.problems.append("user_version is 0: this file holds no abathur schema")
        return diff
    if version > latest:
        diff.problems.append(
            f"user_version is {version} but this abathur knows migrations up to {latest}: "
            "upgrade abathur"
        )
    elif version < latest:
        diff.problems.append(
            f"user_version is {version}: {latest - version} migration(s) pending "
            "(run 'abathur migrate')"
        )
    want = expected(min(version, latest))
    have = describe(conn)
    for name in sorted(want.keys() - have.keys()):
        diff.problems.append(f"{want[name].type} {name!r} is missing")
    for name in sorted(have.keys() - want.keys()):
        obj = have[name]
        if obj.module in RUNTIME_MODULES:
            diff.runtime_objects.append(name)
        else:
            diff.problems.append(f"{obj.type} {name!r} is not in the migrations")
    for name in sorted(want.keys() & have.keys()):
        w, h = want[name], have[name]
        if w.type != h.type:
            diff.problems.append(f"{name!r} is a {h.type}, the migrations make a {w.type}")
        elif w.columns != h.columns:
            diff.problems.append(
                f"table {name!r} columns differ: expected {_columns(w)}, found {_columns(h)}"
            )
        elif w.sql != h.sql:
            diff.problems.append(f"{w.type} {name!r} differs: expected {w.sql!r}, found {h.sql!r}")
    return diff


def _columns(obj: SchemaObject) -> str:
    # table_xinfo rows: cid, name, type, notnull, dflt_value, pk, hidden.
    return ", ".join(f"{c[1]} {c[2]}".strip() for c in obj.columns)


def table_exists(conn: apsw.Connection, name: str) -> bool:
    """True when the main database has a table (real or virtual) called ``name``."""
    rows = conn.execute(
        "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = ?", (name,)
    ).fetchall()
    return bool(rows)


def user_tables(conn: apsw.Connection) -> list[str]:
    """Real tables holding data, sorted: no SQLite, FTS5 or vec0 internals."""
    listing = list(conn.execute("PRAGMA main.table_list"))
    virtual = [name for _s, name, kind, *_ in listing if kind == "virtual"]
    return sorted(
        name
        for _s, name, kind, *_ in listing
        if kind == "table"
        and not name.startswith("sqlite_")
        and not any(name.startswith(v + "_") for v in virtual)
    )


def row_counts(conn: apsw.Connection) -> dict[str, int]:
    """Rows in each of :func:`user_tables`."""
    # Table names come from sqlite_schema, never from a caller.
    return {
        t: int(conn.execute(f'SELECT count(*) FROM main."{t}"').fetchall()[0][0])
        for t in user_tables(conn)
    }
