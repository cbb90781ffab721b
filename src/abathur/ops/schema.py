"""What a database file holds, and how it compares with what the migrations build.

The expected schema is not a list kept by hand: it is built by applying the
shipped migration files to a fresh in-memory database, so it can never drift
from them. Objects that abathur creates at run time rather than in a
migration (a sqlite-vec ``vec0`` table sized by the embedder's dims, and its
shadow tables) are reported as such, not as findings.

The comparison lives in :mod:`abathur.backends.sqlite.schema`; this module
binds it to the vec0 tables :mod:`abathur.search` makes (:data:`VECTOR_TABLES`)
for the operations kit.

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

from collections.abc import Mapping

from abathur.backends.sqlite import schema as _schema
from abathur.backends.sqlite.files import Connection, has_sqlite_header, open_existing, wal_path
from abathur.backends.sqlite.schema import (
    RuntimeTable,
    SchemaDiff,
    SchemaObject,
    VectorTables,
    describe,
    row_counts,
    table_exists,
    user_tables,
)
from abathur.backends.sqlite.vectors import vector_table_statements
from abathur.stores.search import VECTOR_TABLE_NAMES

__all__ = [
    "VECTOR_TABLES",
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

#: The vec0 tables abathur creates at run time, and the statements that make them.
VECTOR_TABLES = VectorTables(VECTOR_TABLE_NAMES, vector_table_statements)


def expected(version: int, runtime: tuple[RuntimeTable, ...] = ()) -> Mapping[str, SchemaObject]:
    """The schema the migrations 1..``version`` build, plus ``runtime`` vec0 tables."""
    return _schema.expected(version, runtime, VECTOR_TABLES)


def compare(conn: Connection) -> SchemaDiff:
    """Compare tables, columns, indexes, triggers, views and ``user_version`` with the migrations.

    See :func:`abathur.backends.sqlite.schema.compare`.
    """
    return _schema.compare(conn, VECTOR_TABLES)


def object_problems(conn: Connection) -> list[str]:
    """How the file's tables, indexes, triggers and views differ from its migrations.

    See :func:`abathur.backends.sqlite.schema.object_problems`.
    """
    return _schema.object_problems(conn, VECTOR_TABLES)
