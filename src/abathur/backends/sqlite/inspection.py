"""``SqliteCheckStore``: the answers ``abathur smoke`` needs that only SQLite can give.

Engine versions (``sqlite_version()``, ``vec_version()``), the schema against
the migrations (:mod:`abathur.backends.sqlite.schema`), ``PRAGMA
integrity_check`` and ``foreign_key_check``, the query plans of
:data:`HOT_QUERIES`, and what a smoke run left behind. The smoke run judges.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
    ...         return await ab.db.read(lambda tx: tx.checks.integrity())
    >>> asyncio.run(demo())
    ([], 'integrity_check: ok')
"""

from __future__ import annotations

from typing import Literal

import apsw

from abathur.backends.ranges import range_params
from abathur.backends.sqlite import migrations, schema
from abathur.backends.sqlite.connection import scalar_int, table_exists
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.documents import (
    SQL_CHUNKS_OF_DOCUMENT,
    SQL_DOCUMENT_BY_PATH,
    SQL_ROOT_BY_PATH,
)
from abathur.backends.sqlite.memories import SQL_CURRENT_MEMORY, SQL_LIST_PREFIX
from abathur.backends.sqlite.plans import HotQuery, plan_problems
from abathur.backends.sqlite.queue import SQL_READY_JOBS
from abathur.backends.sqlite.search import SQL_KEYWORD_SEARCH
from abathur.backends.sqlite.sessions import (
    SQL_EVENTS_AFTER,
    SQL_LAST_EVENTS,
    SQL_LIST_SESSIONS,
    SQL_SESSION_BY_ID,
)
from abathur.backends.sqlite.tasks import SQL_TASKS_OF_SESSION
from abathur.backends.sqlite.usage import (
    SQL_REPORT_BY,
    SQL_SPEND_ALL,
    SQL_SPEND_APP,
    SQL_SPEND_USER,
)
from abathur.backends.sqlite.vectors import vector_table_statements
from abathur.stores.checks import EngineInfo, ObjectCheck, RunLeftovers
from abathur.stores.search import VECTOR_TABLE_NAMES

__all__ = ["HOT_QUERIES", "SqliteCheckStore"]

# The queries that must use an index, each the SQL constant that ships (imported,
# never copied) and a step its plan must show. abathur smoke checks them on a
# live file, tests/unit/test_query_plans.py on a fresh one. When a constant
# moves, its import moves.
HOT_QUERIES: tuple[HotQuery, ...] = (
    HotQuery(
        "session by id",
        SQL_SESSION_BY_ID,
        "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (id=?)",
    ),
    HotQuery("last N events", SQL_LAST_EVENTS, "SEARCH events USING PRIMARY KEY (session_id=?)"),
    HotQuery(
        "events after a time",
        SQL_EVENTS_AFTER,
        "USING INDEX events_by_time (session_id=? AND timestamp>?)",
    ),
    HotQuery(
        "sessions of a user",
        SQL_LIST_SESSIONS,
        "USING INDEX sessions_by_app_user (app=? AND user=?)",
    ),
    HotQuery(
        "memory current version",
        SQL_CURRENT_MEMORY,
        "USING INDEX memories_current (namespace=? AND key=?)",
    ),
    HotQuery(
        "namespace prefix listing",
        SQL_LIST_PREFIX,
        "USING INDEX memories_current (namespace>? AND namespace<?)",
    ),
    HotQuery("keyword search", SQL_KEYWORD_SEARCH, "SCAN memories_fts VIRTUAL TABLE INDEX 0:M"),
    HotQuery(
        "tasks of a session",
        SQL_TASKS_OF_SESSION,
        "USING INDEX tasks_by_session (session_id=?)",
    ),
    HotQuery("embedding jobs ready", SQL_READY_JOBS, "USING INDEX embedding_queue_ready"),
    HotQuery(
        "document root by path",
        SQL_ROOT_BY_PATH,
        "USING COVERING INDEX sqlite_autoindex_document_roots_1 (path=?)",
    ),
    HotQuery(
        "document by path",
        SQL_DOCUMENT_BY_PATH,
        "USING INDEX sqlite_autoindex_documents_1 (root_id=? AND path=?)",
    ),
    HotQuery(
        "chunks of a document",
        SQL_CHUNKS_OF_DOCUMENT,
        "USING INDEX chunks_by_document (document_id=?)",
    ),
    # The usage ledger (migration 005): budgets read one period's spend of
    # everyone, one app or one user; cost report reads a time range.
    HotQuery("spend since", SQL_SPEND_ALL, "USING INDEX usage_by_time (at>?)"),
    HotQuery("spend of an app", SQL_SPEND_APP, "USING INDEX usage_by_app (app=? AND at>?)"),
    HotQuery("spend of a user", SQL_SPEND_USER, "USING INDEX usage_by_user (user=? AND at>?)"),
    *(
        HotQuery(f"cost report by {by}", sql, "USING INDEX usage_by_time (at>? AND at<?)")
        for by, sql in sorted(SQL_REPORT_BY.items())
    ),
)

_VECTOR_TABLES = schema.VectorTables(VECTOR_TABLE_NAMES, vector_table_statements)
# The memories' vec0 table: a smoke run's vectors live in a partition of it.
_MEMORY_VECTORS = "memories_vec"

SQL_ENGINE = "SELECT sqlite_version(), vec_version()"
SQL_VECTOR_TABLE_NAMES = "SELECT name FROM vector_tables"
# What is left of a run: its sessions, and the memories in its namespace or
# below it (the namespace range memory.list reads: ':' ends a segment, ';' follows it).
SQL_LEFT_SESSIONS = "SELECT count(*) FROM sessions WHERE app = :app AND user = :user"
SQL_LEFT_MEMORIES = (
    "SELECT count(*) FROM memories WHERE namespace >= :prefix AND namespace < :after "
    "AND (namespace = :prefix OR namespace >= :below)"
)
# Unredacted records written since the run began (none naming it once its purges ran).
SQL_LEFT_AUDIT = "SELECT entity_id FROM audit_log WHERE seq > :after AND redacted = 0"
SQL_LEFT_ROOTS = "SELECT count(*) FROM document_roots WHERE path = :root"
SQL_LEFT_ROOT_DOCUMENTS = (
    "SELECT count(*) FROM documents "
    "WHERE root_id IN (SELECT id FROM document_roots WHERE path = :root)"
)
# The table name is ours (_MEMORY_VECTORS), never a caller's.
SQL_LEFT_VECTOR_CHUNKS = 'SELECT count(*) FROM "{table}_chunks" WHERE partition00 = :partition'


class SqliteCheckStore:
    """The :class:`~abathur.stores.checks.CheckStore` of one apsw connection."""

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def engine(self) -> EngineInfo:
        (sqlite, vec) = self._conn.execute(SQL_ENGINE).fetchall()[0]
        return EngineInfo(
            description=f"SQLite {sqlite}, sqlite-vec {vec}",
            schema_version=migrations.current_version(self._conn),
        )

    def schema_objects(self, kind: Literal["table", "index"]) -> ObjectCheck:
        conn = self._conn
        version = migrations.current_version(conn)
        latest = migrations.available()[-1].version
        have = schema.describe(conn)
        # FTS5's shadow tables are the module's own: they are not counted as ours.
        want = {
            name: obj
            for name, obj in schema.expected(latest, (), _VECTOR_TABLES).items()
            if obj.type == kind and obj.shadow_of is None
        }
        if kind == "table":
            changed = sorted(n for n in want if n in have and have[n].columns != want[n].columns)
        else:
            changed = sorted(n for n in want if n in have and have[n].sql != want[n].sql)
        runtime: list[str] = []
        if kind == "table" and table_exists(conn, "vector_tables"):
            runtime = [str(name) for (name,) in conn.execute(SQL_VECTOR_TABLE_NAMES)]
        return ObjectCheck(
            version=version,
            latest=latest,
            expected=len(want),
            missing=tuple(sorted(set(want) - set(have))),
            changed=tuple(changed),
            runtime=len(runtime),
            runtime_missing=tuple(sorted(t for t in runtime if t not in have)),
        )

    def integrity(self) -> tuple[list[str], str]:
        # integrity_check(N) stops after N problems: enough for a smoke run's message.
        rows = [str(r[0]) for r in self._conn.execute("PRAGMA main.integrity_check(20)")]
        if rows == ["ok"]:
            return [], "integrity_check: ok"
        return rows, f"integrity_check: {'; '.join(rows[:3])}"

    def foreign_keys(self) -> tuple[list[str], str]:
        tables = [str(row[0]) for row in self._conn.execute("PRAGMA main.foreign_key_check")]
        if not tables:
            return [], "no violations"
        counts: dict[str, int] = {}
        for table in tables:
            counts[table] = counts.get(table, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: (-item[1], tables.index(item[0])))
        return tables, f"{len(tables)} violation(s): " + ", ".join(
            f"{table} {n}" for table, n in ranked
        )

    def plan_problems(self) -> tuple[int, list[str]]:
        return len(HOT_QUERIES), plan_problems(self._conn, HOT_QUERIES)

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
        roots = documents = chunks = 0
        if root is not None:
            roots = scalar_int(conn, SQL_LEFT_ROOTS, {"root": root})
            documents = scalar_int(conn, SQL_LEFT_ROOT_DOCUMENTS, {"root": root})
        if table_exists(conn, _MEMORY_VECTORS):
            sql = SQL_LEFT_VECTOR_CHUNKS.format(table=_MEMORY_VECTORS)
            chunks = scalar_int(conn, sql, {"partition": partition})
        return RunLeftovers(
            sessions=scalar_int(conn, SQL_LEFT_SESSIONS, {"app": app, "user": user}),
            memories=scalar_int(conn, SQL_LEFT_MEMORIES, range_params(namespace)),
            documents=documents,
            document_roots=roots,
            vector_chunks=chunks,
            audit_entities=tuple(
                str(e) for (e,) in conn.execute(SQL_LEFT_AUDIT, {"after": audit_after})
            ),
        )
