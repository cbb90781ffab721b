"""``PgCheckStore``: the answers ``abathur smoke`` needs from PostgreSQL.

The PostgreSQL side of :class:`abathur.stores.checks.CheckStore`; the smoke
run judges. Each answer and how it is read:

- **engine**: ``server_version``, pgvector's ``extversion``, and the newest
  version in ``schema_migrations``.
- **schema objects**: the tables and indexes the shipped migration files
  create (read from the files, ours, never from the database) against
  ``pg_tables``/``pg_indexes`` of the current schema; a table's columns are
  compared by name and order. Index definitions are not compared: PostgreSQL
  prints a normalised definition that differs from the migration's text.
- **integrity**: every table of ours is read end to end (``count(*)``): a
  damaged page or TOAST chunk raises on read. Page-level checks with
  ``amcheck`` belong to ``abathur check`` (it runs ``pg_amcheck``), which
  needs rights a smoke run should not hold.
- **foreign keys**: PostgreSQL enforces them, but a constraint can be left
  ``NOT VALID`` and enforcement can be bypassed (``session_replication_role``);
  so each of our foreign keys is checked with an anti-join, as SQLite's
  ``foreign_key_check`` does.
- **query plans**: each hot query is planned with ``EXPLAIN (GENERIC_PLAN)``
  (PostgreSQL 16+) and sequential scans off: its plan must name the index
  that exists for it. With sequential scans allowed, a small table is always
  scanned, which says nothing about the index.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import psycopg
from psycopg import sql

from abathur.backends.postgres import migrations
from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.documents import (
    SQL_CHUNKS_OF_DOCUMENT,
    SQL_DOCUMENT_BY_PATH,
    SQL_ROOT_BY_PATH,
)
from abathur.backends.postgres.memories import SQL_CURRENT_MEMORY, SQL_LIST_PREFIX
from abathur.backends.postgres.queue import SQL_READY_JOBS
from abathur.backends.postgres.sessions import (
    SQL_EVENTS_AFTER,
    SQL_LAST_EVENTS,
    SQL_LIST_SESSIONS,
    SQL_SESSION_BY_ID,
)
from abathur.backends.postgres.tasks import SQL_TASKS_OF_SESSION
from abathur.backends.postgres.usage import (
    SQL_REPORT_BY,
    SQL_SPEND_ALL,
    SQL_SPEND_APP,
    SQL_SPEND_USER,
)
from abathur.backends.ranges import range_params
from abathur.stores.checks import EngineInfo, ObjectCheck, RunLeftovers

__all__ = ["HOT_QUERIES", "PgCheckStore", "generic_sql"]

#: (name, SQL constant that ships, the index its plan must use).
HOT_QUERIES: tuple[tuple[str, str, str], ...] = (
    ("session by id", SQL_SESSION_BY_ID, "sessions_pkey"),
    ("last N events", SQL_LAST_EVENTS, "events_pkey"),
    ("events after a time", SQL_EVENTS_AFTER, "events_by_time"),
    ("sessions of a user", SQL_LIST_SESSIONS, "sessions_by_app_user"),
    ("memory current version", SQL_CURRENT_MEMORY, "memories_current"),
    ("namespace prefix listing", SQL_LIST_PREFIX, "memories_current"),
    ("tasks of a session", SQL_TASKS_OF_SESSION, "tasks_by_session"),
    ("embedding jobs ready", SQL_READY_JOBS, "embedding_queue_ready"),
    ("document root by path", SQL_ROOT_BY_PATH, "document_roots_path_key"),
    ("document by path", SQL_DOCUMENT_BY_PATH, "documents_root_id_path_key"),
    ("chunks of a document", SQL_CHUNKS_OF_DOCUMENT, "chunks_by_document"),
    ("spend since", SQL_SPEND_ALL, "usage_by_time"),
    ("spend of an app", SQL_SPEND_APP, "usage_by_app"),
    ("spend of a user", SQL_SPEND_USER, "usage_by_user"),
    *((f"cost report by {by}", q, "usage_by_time") for by, q in sorted(SQL_REPORT_BY.items())),
)

# Our foreign keys: (child table, child column, parent table, parent column).
_FOREIGN_KEYS = (
    ("events", "session_id", "sessions", "id"),
    ("tasks", "session_id", "sessions", "id"),
    ("documents", "root_id", "document_roots", "id"),
    ("chunks", "document_id", "documents", "id"),
    ("archive", "dict_id", "archive_dicts", "id"),
)
_SQL_ORPHANS = (
    "SELECT count(*) FROM {child} AS c WHERE c.{column} IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.{key} = c.{column})"
)
SQL_NOT_VALID = (
    "SELECT conrelid::regclass::text, conname FROM pg_constraint "
    "WHERE contype = 'f' AND NOT convalidated AND connamespace = current_schema()::regnamespace "
    "ORDER BY 1, 2"
)
SQL_ENGINE = (
    "SELECT current_setting('server_version'), "
    "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
    "(SELECT coalesce(max(version), 0) FROM schema_migrations)"
)
SQL_SERVER_VERSION = "SELECT current_setting('server_version_num')::int"
SQL_TABLES = (
    "SELECT c.relname, array_agg(a.attname ORDER BY a.attnum) FROM pg_class AS c "
    "JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace "
    "GROUP BY c.relname"
)
SQL_INDEXES = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
SQL_VECTOR_TABLE_NAMES = "SELECT name FROM vector_tables ORDER BY name"
SQL_LEFT_SESSIONS = 'SELECT count(*) FROM sessions WHERE app = %(app)s AND "user" = %(user)s'
SQL_LEFT_MEMORIES = (
    "SELECT count(*) FROM memories WHERE namespace >= %(prefix)s AND namespace < %(after)s "
    "AND (namespace = %(prefix)s OR namespace >= %(below)s)"
)
SQL_LEFT_AUDIT = "SELECT entity_id FROM audit_log WHERE seq > %(after)s AND redacted = 0"
SQL_LEFT_ROOTS = "SELECT count(*) FROM document_roots WHERE path = %(root)s"
SQL_LEFT_ROOT_DOCUMENTS = (
    "SELECT count(*) FROM documents "
    "WHERE root_id IN (SELECT id FROM document_roots WHERE path = %(root)s)"
)
SQL_TABLE_EXISTS = "SELECT to_regclass(%(name)s) IS NOT NULL"
_SQL_LEFT_VECTORS = "SELECT count(*) FROM {table} WHERE scope = %(partition)s"
_MEMORY_VECTORS = "memories_vec"

_CREATE_TABLE = re.compile(r"^CREATE TABLE (\w+) \((.*?)^\);", re.M | re.S)
_CREATE_INDEX = re.compile(r"^CREATE (?:UNIQUE )?INDEX (\w+)", re.M)
_COLUMN_LINE = re.compile(r'^ {4}("?\w+"?)\s')
_NOT_COLUMN = ("PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT", "EXCLUDE")
_PARAM = re.compile(r"%\((\w+)\)s")


def _expected_tables() -> dict[str, list[str]]:
    """Tables the migration files create, with their columns in order (ALTERs included)."""
    tables: dict[str, list[str]] = {}
    for m in migrations.available():
        for name, body in _CREATE_TABLE.findall(m.sql):
            # A column starts a line indented by four spaces (our DDL's style);
            # a generated column's expression continues on deeper lines.
            columns = []
            for line in body.splitlines():
                match = _COLUMN_LINE.match(line)
                if match and match[1] not in _NOT_COLUMN:
                    columns.append(match[1].strip('"'))
            tables[name] = columns
        for table, column in re.findall(r"^ALTER TABLE (\w+) ADD COLUMN (\w+)", m.sql, re.M):
            tables[table].append(column)
        for table, column in re.findall(r"^ALTER TABLE (\w+) DROP COLUMN (\w+)", m.sql, re.M):
            tables[table].remove(column)
    return tables


def _expected_indexes() -> set[str]:
    names: set[str] = set()
    for m in migrations.available():
        names |= set(_CREATE_INDEX.findall(m.sql))
        names -= set(re.findall(r"^DROP INDEX (\w+)", m.sql, re.M))
    return names


def generic_sql(query: str) -> str:
    """``query`` with psycopg's ``%(name)s`` turned into ``$n`` (one number per name).

    Example:
        >>> generic_sql("SELECT 1 WHERE a = %(x)s OR b = %(x)s AND c LIKE 'p%%' || %(y)s")
        "SELECT 1 WHERE a = $1 OR b = $1 AND c LIKE 'p%' || $2"
    """
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match[1], len(numbers) + 1)}"

    return _PARAM.sub(number, query).replace("%%", "%")


def _index_names(plan: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(plan, dict):
        if "Index Name" in plan:
            names.add(str(plan["Index Name"]))
        for value in plan.values():
            names |= _index_names(value)
    elif isinstance(plan, list):
        for value in plan:
            names |= _index_names(value)
    return names


class PgCheckStore:
    """The :class:`~abathur.stores.checks.CheckStore` of one psycopg connection."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def engine(self) -> EngineInfo:
        server, vector, version = self._conn.execute(SQL_ENGINE).fetchall()[0]
        return EngineInfo(
            description=f"PostgreSQL {server}, pgvector {vector}", schema_version=int(version)
        )

    def schema_objects(self, kind: Literal["table", "index"]) -> ObjectCheck:
        version = self.engine().schema_version
        latest = migrations.available()[-1].version
        if kind == "index":
            want = _expected_indexes()
            have = {str(name) for (name,) in self._conn.execute(SQL_INDEXES)}
            return ObjectCheck(
                version=version,
                latest=latest,
                expected=len(want),
                missing=tuple(sorted(want - have)),
                changed=(),
            )
        expected = _expected_tables()
        tables = {str(name): list(cols) for name, cols in self._conn.execute(SQL_TABLES)}
        runtime = [str(name) for (name,) in self._conn.execute(SQL_VECTOR_TABLE_NAMES)]
        return ObjectCheck(
            version=version,
            latest=latest,
            expected=len(expected),
            missing=tuple(sorted(set(expected) - set(tables))),
            changed=tuple(
                sorted(n for n, cols in expected.items() if n in tables and tables[n] != cols)
            ),
            runtime=len(runtime),
            runtime_missing=tuple(t for t in runtime if t not in tables),
        )

    def integrity(self) -> tuple[list[str], str]:
        findings = []
        tables = sorted(_expected_tables())
        for table in tables:
            try:
                with self._conn.transaction():  # a savepoint: one failure reads on
                    self._conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                    ).fetchall()
            except psycopg.Error as exc:
                findings.append(f"{table}: {type(exc).__name__}: {exc}".strip())
        if findings:
            return findings, f"table read: {'; '.join(findings[:3])}"
        return [], f"every table read: ok ({len(tables)} tables)"

    def foreign_keys(self) -> tuple[list[str], str]:
        findings = [
            f"{table}: constraint {name} is NOT VALID"
            for table, name in self._conn.execute(SQL_NOT_VALID)
        ]
        violations = 0
        for child, column, parent, key in _FOREIGN_KEYS:
            query = sql.SQL(_SQL_ORPHANS).format(
                child=sql.Identifier(child),
                column=sql.Identifier(column),
                parent=sql.Identifier(parent),
                key=sql.Identifier(key),
            )
            (orphans,) = self._conn.execute(query).fetchall()[0]
            if orphans:
                violations += int(orphans)
                findings.append(f"{child} {orphans}")
        if not findings:
            return [], "no violations"
        return findings, f"{violations} violation(s): {', '.join(findings)}"

    def plan_problems(self) -> tuple[int, list[str]]:
        (server,) = self._conn.execute(SQL_SERVER_VERSION).fetchall()[0]
        if int(server) < 160000:
            return 0, []  # EXPLAIN (GENERIC_PLAN) came in PostgreSQL 16
        problems = []
        with self._conn.transaction():  # a savepoint: the setting ends with it
            self._conn.execute("SET LOCAL enable_seqscan = off")
            for name, query, index in HOT_QUERIES:
                explain = "EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + generic_sql(query)
                # Our own SQL constants, made generic: no value is formatted in.
                (plan,) = self._conn.execute(explain.encode()).fetchall()[0]
                used = _index_names(plan if not isinstance(plan, str) else json.loads(plan))
                if index not in used:
                    problems.append(f"{name}: uses {', '.join(sorted(used)) or 'no index'}")
        return len(HOT_QUERIES), problems

    def run_leftovers(
        self,
        *,
        app: str,
        user: str,
        namespace: str,
        audit_after: int,
        root: str | None,
        partition: str,
    ) -> RunLeftovers:
        conn = self._conn

        def count(query: str | sql.Composed, params: dict[str, Any]) -> int:
            return int(conn.execute(query, params).fetchall()[0][0])

        roots = documents = vectors = 0
        if root is not None:
            roots = count(SQL_LEFT_ROOTS, {"root": root})
            documents = count(SQL_LEFT_ROOT_DOCUMENTS, {"root": root})
        if conn.execute(SQL_TABLE_EXISTS, {"name": _MEMORY_VECTORS}).fetchall()[0][0]:
            query = sql.SQL(_SQL_LEFT_VECTORS).format(table=sql.Identifier(_MEMORY_VECTORS))
            vectors = count(query, {"partition": partition})
        return RunLeftovers(
            sessions=count(SQL_LEFT_SESSIONS, {"app": app, "user": user}),
            memories=count(SQL_LEFT_MEMORIES, range_params(namespace)),
            documents=documents,
            document_roots=roots,
            vector_chunks=vectors,
            audit_entities=tuple(
                str(e) for (e,) in conn.execute(SQL_LEFT_AUDIT, {"after": audit_after})
            ),
        )
