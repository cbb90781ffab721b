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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import apsw

from abathur import search
from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.files import has_sqlite_header, open_existing, wal_path
from abathur.backends.sqlite.schema import (
    SchemaObject,
    describe,
    expected_objects,
    normal_sql,
    row_counts,
    table_exists,
    user_tables,
)

__all__ = [
    "RuntimeTable",
    "SchemaDiff",
    "SchemaObject",
    "compare",
    "describe",
    "expected",
    "has_sqlite_header",
    "object_problems",
    "open_existing",
    "row_counts",
    "table_exists",
    "user_tables",
    "wal_path",
]

# Modules whose tables abathur creates at run time, not in a migration: a vec0
# table's dimensions come from the embedder the file was created with.
RUNTIME_MODULES = frozenset({"vec0"})


@dataclass(frozen=True)
class RuntimeTable:
    """A vec0 table abathur creates at run time, as a file declares it."""

    name: str
    dims: int
    chunk_size: int


def _runtime_tables(have: Mapping[str, SchemaObject]) -> tuple[list[RuntimeTable], list[str]]:
    """The file's vec0 tables that abathur would have made, and problems with the others.

    A vec0 table is accepted only under one of our names and with exactly the
    statement :func:`abathur.search.vector_table_statements` writes, so the
    reference schema can be rebuilt from our own SQL, never from the file's.
    """
    tables, problems = [], []
    for name, obj in sorted(have.items()):
        if obj.module not in RUNTIME_MODULES:
            continue
        dims = re.search(r"\bBIT\[(\d{1,5})\]", obj.sql)
        chunk = re.search(r"\bchunk_size=(\d{1,6})\b", obj.sql)
        if name in search.VECTOR_TABLE_NAMES and dims and chunk:
            table = RuntimeTable(name, int(dims[1]), int(chunk[1]))
            ours = search.vector_table_statements(table.name, table.dims, table.chunk_size)[0]
            if normal_sql(ours) == obj.sql:
                tables.append(table)
                continue
        problems.append(f"{obj.module} table {name!r} is not one abathur creates")
    return tables, problems


def expected(version: int, runtime: tuple[RuntimeTable, ...] = ()) -> Mapping[str, SchemaObject]:
    """The schema the migrations 1..``version`` build, plus ``runtime`` vec0 tables.

    Built from our own migration files and our own statements, so nothing read
    from a file under inspection shapes it.
    """
    statements = tuple(
        statement
        for table in runtime
        for statement in search.vector_table_statements(table.name, table.dims, table.chunk_size)
    )
    return expected_objects(version, statements)


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
    problems, runtime = _object_problems(conn, min(version, latest))
    diff.problems.extend(problems)
    diff.runtime_objects.extend(runtime)
    return diff


def object_problems(conn: apsw.Connection) -> list[str]:
    """How the file's tables, indexes, triggers and views differ from its migrations.

    Unlike :func:`compare`, a file behind the latest migration is not a
    problem here (an older backup restores, then migrates), but a file ahead
    of this abathur's migrations is: there is nothing to compare it with.
    """
    version = migrations.current_version(conn)
    latest = migrations.available()[-1].version
    if version == 0:
        return ["user_version is 0: this file holds no abathur schema"]
    if version > latest:
        return [f"user_version is {version} but this abathur knows migrations up to {latest}"]
    return _object_problems(conn, version)[0]


def _object_problems(conn: apsw.Connection, version: int) -> tuple[list[str], list[str]]:
    """(problems, names of the runtime vec0 tables) of the file against migrations 1..version."""
    have = describe(conn)
    runtime, problems = _runtime_tables(have)
    want = expected(version, tuple(runtime))
    for name in sorted(want.keys() - have.keys()):
        problems.append(f"{want[name].type} {name!r} is missing")
    for name in sorted(have.keys() - want.keys()):
        obj = have[name]
        if obj.module in RUNTIME_MODULES:
            continue  # reported by _runtime_tables
        problems.append(f"{obj.type} {name!r} is not in the migrations")
    for name in sorted(want.keys() & have.keys()):
        w, h = want[name], have[name]
        if w.type != h.type or w.shadow_of != h.shadow_of:
            problems.append(f"{name!r} is a {h.type}, the migrations make a {w.type}")
        elif w.shadow_of is not None:
            continue  # the module's own table: its name is what we can vouch for
        elif w.columns != h.columns:
            problems.append(
                f"table {name!r} columns differ: expected {_columns(w)}, found {_columns(h)}"
            )
        elif w.sql != h.sql:
            problems.append(f"{w.type} {name!r} differs: expected {w.sql!r}, found {h.sql!r}")
    return problems, [t.name for t in runtime]


def _columns(obj: SchemaObject) -> str:
    # table_xinfo rows: cid, name, type, notnull, dflt_value, pk, hidden.
    return ", ".join(f"{c[1]} {c[2]}".strip() for c in obj.columns)


