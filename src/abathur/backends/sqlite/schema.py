"""What a database file holds, read from ``sqlite_schema``, and what the migrations build.

The expected schema is not a list kept by hand: :func:`expected_objects`
applies the shipped migration files to a fresh in-memory database, so it can
never drift from them. Objects that abathur creates at run time rather than in
a migration (a sqlite-vec ``vec0`` table sized by the embedder's dims, and its
shadow tables) are reported as such, not as findings; which those are, and the
statements that make them, come in as :class:`VectorTables`.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import apsw
import sqlite_vec

from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.connection import scalar_int, table_exists, translate_errors

__all__ = [
    "RuntimeTable",
    "SchemaDiff",
    "SchemaObject",
    "VectorTables",
    "compare",
    "describe",
    "expected",
    "expected_objects",
    "normal_sql",
    "object_problems",
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


# Modules whose tables abathur creates at run time, not in a migration: a vec0
# table's dimensions come from the embedder the file was created with.
RUNTIME_MODULES = frozenset({"vec0"})


@dataclass(frozen=True)
class VectorTables:
    """The vec0 tables abathur creates at run time: their names, and the statements making one.

    ``statements(name, dims, chunk_size)`` returns the SQL that creates the
    table ``name`` (its first statement is the ``CREATE VIRTUAL TABLE``).
    """

    names: frozenset[str]
    statements: Callable[[str, int, int], list[str]]


@dataclass(frozen=True)
class RuntimeTable:
    """A vec0 table abathur creates at run time, as a file declares it."""

    name: str
    dims: int
    chunk_size: int


def _runtime_tables(
    have: Mapping[str, SchemaObject], vectors: VectorTables
) -> tuple[list[RuntimeTable], list[str]]:
    """The file's vec0 tables that abathur would have made, and problems with the others.

    A vec0 table is accepted only under one of our names and with exactly the
    statement ``vectors.statements`` writes, so the
    reference schema can be rebuilt from our own SQL, never from the file's.
    """
    tables, problems = [], []
    for name, obj in sorted(have.items()):
        if obj.module not in RUNTIME_MODULES:
            continue
        dims = re.search(r"\bBIT\[(\d{1,5})\]", obj.sql)
        chunk = re.search(r"\bchunk_size=(\d{1,6})\b", obj.sql)
        if name in vectors.names and dims and chunk:
            table = RuntimeTable(name, int(dims[1]), int(chunk[1]))
            ours = vectors.statements(table.name, table.dims, table.chunk_size)[0]
            if normal_sql(ours) == obj.sql:
                tables.append(table)
                continue
        problems.append(f"{obj.module} table {name!r} is not one abathur creates")
    return tables, problems


def expected(
    version: int, runtime: tuple[RuntimeTable, ...], vectors: VectorTables
) -> Mapping[str, SchemaObject]:
    """The schema the migrations 1..``version`` build, plus the ``runtime`` vec0 tables.

    Built from our own migration files and our own statements, so nothing read
    from a file under inspection shapes it.
    """
    statements = tuple(
        statement
        for table in runtime
        for statement in vectors.statements(table.name, table.dims, table.chunk_size)
    )
    return expected_objects(version, statements)


@dataclass(frozen=True)
class SchemaDiff:
    """How a file's schema differs from its migrations; empty ``problems`` means it matches."""

    user_version: int
    latest_version: int
    problems: list[str] = field(default_factory=list)
    runtime_objects: list[str] = field(default_factory=list)


def compare(conn: apsw.Connection, vectors: VectorTables) -> SchemaDiff:
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
    problems, runtime = _object_problems(conn, min(version, latest), vectors)
    diff.problems.extend(problems)
    diff.runtime_objects.extend(runtime)
    return diff


def object_problems(conn: apsw.Connection, vectors: VectorTables) -> list[str]:
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
    return _object_problems(conn, version, vectors)[0]


def _object_problems(
    conn: apsw.Connection, version: int, vectors: VectorTables
) -> tuple[list[str], list[str]]:
    """(problems, names of the runtime vec0 tables) of the file against migrations 1..version."""
    have = describe(conn)
    runtime, problems = _runtime_tables(have, vectors)
    want = expected(version, tuple(runtime), vectors)
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
