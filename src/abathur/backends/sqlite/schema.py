"""What a database file holds, read from ``sqlite_schema``, and what the migrations build.

The expected schema is not a list kept by hand: :func:`expected_objects`
applies the shipped migration files to a fresh in-memory database, so it can
never drift from them. The comparison with a file (and the vec0 tables abathur
creates at run time) is :mod:`abathur.ops.schema`'s.

Example:
    >>> import apsw
    >>> from abathur.backends.sqlite import schema
    >>> conn = apsw.Connection(":memory:")
    >>> _ = conn.execute("CREATE TABLE t(a INTEGER)")
    >>> sorted(schema.describe(conn)), schema.table_exists(conn, "t")
    (['t'], True)
    >>> "memories" in schema.expected_objects(1)
    True
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import apsw
import sqlite_vec

from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.connection import scalar_int, table_exists, translate_errors

__all__ = [
    "SchemaObject",
    "describe",
    "expected_objects",
    "normal_sql",
    "row_counts",
    "table_exists",
    "user_tables",
]

_USING = re.compile(r"^CREATE\s+VIRTUAL\s+TABLE\s+.*?\bUSING\s+(\w+)", re.IGNORECASE | re.DOTALL)

@dataclass(frozen=True)
class SchemaObject:
    """One table, virtual table, index, trigger or view, in comparable form.

    ``shadow_of`` names the virtual table a shadow table belongs to (FTS5's
    ``x_data``, vec0's ``x_chunks``...): those are compared by name only,
    since their exact SQL is the module's business, not the migrations'.
    """

    type: str
    name: str
    table: str
    sql: str
    columns: tuple[tuple[object, ...], ...] = ()
    module: str | None = None
    shadow_of: str | None = None


def normal_sql(sql: str | None) -> str:
    """``sql`` with its whitespace collapsed, for comparing statements."""
    return " ".join((sql or "").split())


# SQLite's own objects: automatic indexes (no SQL) and its bookkeeping tables.
# Anything else named sqlite_* in a file was put there by hand and is reported.
_SQLITE_TABLES = frozenset(
    {"sqlite_sequence", "sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"}
)

_SQL_SCHEMA = "SELECT type, name, tbl_name, sql FROM main.sqlite_schema"
_SQL_COLUMNS = (
    'SELECT cid, name, type, "notnull", dflt_value, pk, hidden '
    "FROM pragma_table_xinfo(:table, 'main')"
)


def _is_sqlite_internal(kind: str, name: str, sql: str | None) -> bool:
    if kind == "index" and sql is None and name.startswith("sqlite_autoindex_"):
        return True
    return kind == "table" and name in _SQLITE_TABLES


def describe(conn: apsw.Connection) -> dict[str, SchemaObject]:
    """Every schema object of the main database, by name, except SQLite's own.

    Safe on a hostile file (see :mod:`abathur.backends.sqlite.untrusted`): names are read
    from ``sqlite_schema`` and only ever bound as parameters, never put in SQL.
    A real table whose name starts with a virtual table's name and ``_`` is
    reported as that table's shadow.
    """
    rows = [
        (str(kind), str(name), str(table), None if sql is None else str(sql))
        for kind, name, table, sql in conn.execute(_SQL_SCHEMA).fetchall()
    ]
    virtual = [
        name
        for kind, name, _t, sql in rows
        if kind == "table" and normal_sql(sql).upper().startswith("CREATE VIRTUAL TABLE")
    ]
    objects: dict[str, SchemaObject] = {}
    for kind, name, table, sql in rows:
        if _is_sqlite_internal(kind, name, sql):
            continue
        module = None
        columns: tuple[tuple[object, ...], ...] = ()
        shadow_of = next((v for v in virtual if kind == "table" and name.startswith(v + "_")), None)
        if name in virtual:
            match = _USING.search(sql or "")
            module = match[1].lower() if match else None
        elif kind == "table" and shadow_of is None:
            columns = tuple(
                tuple(row) for row in conn.execute(_SQL_COLUMNS, {"table": name}).fetchall()
            )
        objects[name] = SchemaObject(kind, name, table, normal_sql(sql), columns, module, shadow_of)
    return objects


@functools.cache
def expected_objects(version: int, statements: tuple[str, ...] = ()) -> Mapping[str, SchemaObject]:
    """The schema the migrations 1..``version`` build, then ``statements`` (our own vec0 tables).

    Built on a fresh in-memory database from our own migration files and our
    own statements, so nothing read from a file under inspection shapes it.
    """
    with translate_errors("building the expected schema from the migrations"):
        conn = apsw.Connection(":memory:")
        try:
            # A migration may create FTS5 or vec0 tables: load sqlite-vec as connect() does.
            conn.enable_load_extension(True)
            conn.load_extension(sqlite_vec.loadable_path())
            migrations.apply(conn, [m for m in migrations.available() if m.version <= version])
            for statement in statements:
                conn.execute(statement)
            return describe(conn)
        finally:
            conn.close()


def user_tables(conn: apsw.Connection) -> list[str]:
    """The real tables holding data that the file's migrations made, sorted.

    Names come from :func:`expected_objects` (our own migration files), never from the
    file: a table the migrations do not make is a finding of :func:`abathur.ops.schema.compare`,
    not something to count.
    """
    version = min(migrations.current_version(conn), migrations.available()[-1].version)
    if version == 0:
        return []
    present = {name for name, obj in describe(conn).items() if obj.type == "table"}
    return sorted(
        name
        for name, obj in expected_objects(version).items()
        if obj.type == "table" and obj.module is None and obj.shadow_of is None and name in present
    )


def row_counts(conn: apsw.Connection) -> dict[str, int]:
    """Rows in each of :func:`user_tables`."""
    counts = {}
    for table in user_tables(conn):
        # An identifier of our own migrations (see user_tables), quoted all the same.
        quoted = '"' + table.replace('"', '""') + '"'
        counts[table] = scalar_int(conn, f"SELECT count(*) FROM main.{quoted}")
    return counts
