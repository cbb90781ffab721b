"""SQLite's :class:`~abathur.stores.audit.AuditStore`.

The log is ``audit_log`` (primary key ``seq``) and its head the one row of
``audit_head``. The purge lookups scan the log: a purge is rare, an index on
every record would cost every write.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence

import apsw

from abathur.backends.sqlite.connection import scalar_int
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.audit import (
    AuditHead,
    AuditRow,
    ChainRow,
    CoveredRow,
    MemoryBounds,
    RecordRow,
    Rehash,
)

__all__ = ["SqliteAuditStore"]

# The head's one row, by its primary key.
SQL_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
SQL_INSERT = (
    "INSERT INTO audit_log (seq, at, action, entity, entity_id, detail, prev_hash, hash, "
    "format, salt, body_hash, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 2, ?, ?, ?)"
)
SQL_SET_HEAD = (
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
)
_CHAIN_COLUMNS = (
    "seq, at, action, entity, entity_id, detail, prev_hash, hash, format, salt, "
    "body_hash, content_hash, redacted"
)
# The whole log in seq order: the primary key.
SQL_WALK = f"SELECT {_CHAIN_COLUMNS} FROM audit_log ORDER BY seq"
# A page of the log after a seq (the format-1 upgrade): the primary key.
SQL_PAGE = f"SELECT {_CHAIN_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"
# Records after :after_seq, optionally of one entity kind and id: the primary key.
SQL_RECORDS = (
    "SELECT seq, at, action, entity, entity_id, detail FROM audit_log "
    "WHERE seq > :after_seq AND (:entity IS NULL OR entity = :entity) "
    "AND (:entity_id IS NULL OR entity_id = :entity_id) ORDER BY seq LIMIT :limit"
)
# :seqs is a JSON array of seqs; the primary key finds each.
SQL_REDACT = (
    "UPDATE audit_log SET entity_id = '', detail = '{}', salt = NULL, redacted = 1 "
    "WHERE seq IN (SELECT value FROM json_each(?)) AND format = 2 AND redacted = 0"
)
SQL_REHASH = (
    "UPDATE audit_log SET format = 2, salt = ?, body_hash = ?, prev_hash = ?, hash = ? "
    "WHERE seq = ?"
)
SQL_FIRST_FORMAT = "SELECT format FROM audit_log ORDER BY seq LIMIT 1"

# Records naming memories under a prefix: their entity_id 'namespace/key', a
# supersede's winner, an archive restore's ref. :eq_lo/:eq_hi bound the ids of
# the prefix's own namespace ('p/' .. 'p0'), :sub_lo/:sub_hi those under it
# ('p:' .. 'p;'). A full scan of the log.
SQL_MEMORY_RECORDS = (
    "SELECT seq FROM audit_log WHERE redacted = 0 AND ("
    "(entity = 'memory' AND ((entity_id >= :eq_lo AND entity_id < :eq_hi) "
    "OR (entity_id >= :sub_lo AND entity_id < :sub_hi))) "
    "OR (action = 'memory.supersede' AND ("
    "(json_extract(detail, '$.winner') >= :eq_lo AND json_extract(detail, '$.winner') < :eq_hi) "
    "OR (json_extract(detail, '$.winner') >= :sub_lo "
    "AND json_extract(detail, '$.winner') < :sub_hi))) "
    "OR (action = 'archive.restore' AND json_extract(detail, '$.kind') IN ('memory', 'versions') "
    "AND ((json_extract(detail, '$.ref') >= :eq_lo AND json_extract(detail, '$.ref') < :eq_hi) "
    "OR (json_extract(detail, '$.ref') >= :sub_lo AND json_extract(detail, '$.ref') < :sub_hi))))"
)
# Sessions of (app, user) the log knows, including deleted ones. A full scan.
SQL_USER_SESSIONS = (
    "SELECT DISTINCT entity_id FROM audit_log WHERE entity = 'session' "
    "AND action IN ('session.create', 'session.delete') "
    "AND json_extract(detail, '$.app') = :app AND json_extract(detail, '$.user') = :user"
)
# :sessions is a JSON array of session ids. A full scan.
SQL_SESSION_TASKS = (
    "SELECT DISTINCT entity_id FROM audit_log WHERE action = 'task.create' "
    "AND json_extract(detail, '$.session_id') IN (SELECT value FROM json_each(:sessions))"
)
# :sessions and :tasks are JSON arrays of ids. A full scan.
SQL_SESSION_RECORDS = (
    "SELECT seq FROM audit_log WHERE redacted = 0 AND ("
    "(entity IN ('session', 'event') AND entity_id IN (SELECT value FROM json_each(:sessions))) "
    "OR (entity = 'task' AND entity_id IN (SELECT value FROM json_each(:tasks))) "
    "OR (action = 'archive.restore' AND json_extract(detail, '$.kind') = 'session' "
    "AND json_extract(detail, '$.ref') IN (SELECT value FROM json_each(:sessions))))"
)
# Records of one document root (add_root, sync, forget): entity_id is its path. A full scan.
SQL_ROOT_RECORDS = (
    "SELECT seq FROM audit_log WHERE redacted = 0 AND entity = 'document_root' AND entity_id = ?"
)

# How a finding names a row of each covered table (identifiers are ours).
_LABELS: dict[str, str] = {
    "memories": "'memory ' || t.namespace || '/' || t.key || ' v' || t.version",
    "events": "'event ' || t.session_id || ' #' || t.seq",
    "tasks": "'task ' || t.id",
    "sessions": "'session ' || t.id",
}

# The current version of each memory must be its newest: flipping is_current
# back to an older version would roll a value back without changing any row's
# covered columns. Uses the UNIQUE (namespace, key, version) index.
SQL_CURRENT_NOT_NEWEST = (
    "SELECT namespace, key, max(version), sum(is_current), "
    "max(CASE WHEN is_current = 1 THEN version END) FROM memories "
    "GROUP BY namespace, key HAVING sum(is_current) != 1 "
    "OR max(CASE WHEN is_current = 1 THEN version END) != max(version) LIMIT ?"
)
SQL_ARCHIVED_ROWS = "SELECT kind, total(rows) FROM archive GROUP BY kind"
SQL_ARCHIVED_SESSIONS = "SELECT count(*) FROM archive WHERE kind = 'session'"

_REDACT_BATCH = 10_000


class SqliteAuditStore:
    """:class:`~abathur.stores.audit.AuditStore` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends import open_backend
        >>> from abathur.config import Settings
        >>> from abathur.stores.audit import AuditHead
        >>> def write(tx):
        ...     tx.audit.set_head(AuditHead(0, "0" * 64))
        ...     return tx.audit.head().seq, tx.audit.first_format()
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
        ...     backend = await open_backend(Settings(db=path))
        ...     try:
        ...         return await backend.write(write)
        ...     finally:
        ...         await backend.close()
        >>> asyncio.run(demo())
        (0, None)
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    # -- the chain -------------------------------------------------------------

    def head(self) -> AuditHead | None:
        """The newest record's (seq, hash); None before the first record."""
        for seq, digest in self._conn.execute(SQL_HEAD):
            return AuditHead(seq, digest)
        return None

    def set_head(self, head: AuditHead, /) -> None:
        """Make ``head`` the newest record's (seq, hash)."""
        self._conn.execute(SQL_SET_HEAD, head)

    def insert(self, record: AuditRow, /) -> None:
        """Add one format-2 record."""
        self._conn.execute(SQL_INSERT, record)

    def chain(self) -> Iterator[ChainRow]:
        """Every record, oldest first (streamed: a long log is never held whole)."""
        return map(ChainRow._make, self._conn.execute(SQL_WALK))

    def records(
        self, *, entity: str | None, entity_id: str | None, after_seq: int, limit: int
    ) -> list[RecordRow]:
        """Records after ``after_seq`` in order; ``None`` for entity or entity_id means any."""
        params = {"after_seq": after_seq, "entity": entity, "entity_id": entity_id,
                  "limit": limit}
        return list(map(RecordRow._make, self._conn.execute(SQL_RECORDS, params)))

    # -- purges --------------------------------------------------------------

    def redact(self, seqs: Sequence[int], /) -> int:
        """Blank names, detail and salt of these unredacted format-2 records; return how many."""
        redacted = 0
        for start in range(0, len(seqs), _REDACT_BATCH):
            batch = list(seqs[start : start + _REDACT_BATCH])
            self._conn.execute(SQL_REDACT, (json.dumps(batch),))
            redacted += self._conn.changes()
        return redacted

    def memory_record_seqs(self, bounds: MemoryBounds, /) -> set[int]:
        """Seqs of unredacted records naming a memory whose ``namespace/key`` is in ``bounds``."""
        return {seq for (seq,) in self._conn.execute(SQL_MEMORY_RECORDS, bounds._asdict())}

    def user_session_ids(self, app: str, user: str, /) -> set[str]:
        """Ids of sessions of (app, user) the log has a create or delete record of."""
        params = {"app": app, "user": user}
        return {sid for (sid,) in self._conn.execute(SQL_USER_SESSIONS, params)}

    def session_task_ids(self, sessions: Collection[str], /) -> set[str]:
        """Ids of tasks the log says were created in one of ``sessions``."""
        params = {"sessions": json.dumps(sorted(sessions))}
        return {tid for (tid,) in self._conn.execute(SQL_SESSION_TASKS, params)}

    def session_record_seqs(
        self, sessions: Collection[str], tasks: Collection[str], /
    ) -> set[int]:
        """Seqs of unredacted records of these sessions, their events and these tasks."""
        params = {"sessions": json.dumps(sorted(sessions)), "tasks": json.dumps(sorted(tasks))}
        return {seq for (seq,) in self._conn.execute(SQL_SESSION_RECORDS, params)}

    def root_record_seqs(self, root: str, /) -> set[int]:
        """Seqs of unredacted records of the document root at path ``root``."""
        return {seq for (seq,) in self._conn.execute(SQL_ROOT_RECORDS, (root,))}

    # -- content coverage and the format-1 upgrade ------------------------------

    def has_column(self, table: str, column: str, /) -> bool:
        """True when ``table`` has ``column`` (files before a migration lack some)."""
        # PRAGMA takes no placeholder; the table name is one of our constants.
        return any(
            r[1] == column for r in self._conn.execute(f'PRAGMA main.table_info("{table}")')
        )

    def covered_rows(self, table: str, columns: Sequence[str], /) -> Iterator[CoveredRow]:
        """Each row of ``table`` with ``columns`` and the record its ``audit_seq`` names."""
        cols = ", ".join(f"t.{c}" for c in columns)
        sql = (
            f"SELECT {_LABELS[table]}, t.audit_seq, a.seq, a.content_hash, a.salt, a.redacted, "
            f"{cols} FROM main.{table} AS t LEFT JOIN main.audit_log AS a ON a.seq = t.audit_seq"
        )
        for label, pointer, found, covered, salt, redacted, *values in self._conn.execute(sql):
            yield CoveredRow(label, pointer, found, covered, salt, redacted, tuple(values))

    def memories_not_at_newest(self, limit: int, /) -> list[tuple[str, str, int, int, int | None]]:
        """Up to ``limit`` memories whose current version is not exactly one, the newest."""
        return [
            (ns, key, newest, flagged, current)
            for ns, key, newest, flagged, current in self._conn.execute(
                SQL_CURRENT_NOT_NEWEST, (limit,)
            )
        ]

    def first_format(self) -> int | None:
        """The format of the oldest record; None when the log is empty."""
        for (fmt,) in self._conn.execute(SQL_FIRST_FORMAT):
            return int(fmt)
        return None

    def has_rows_without_record(self, tables: Iterable[str], /) -> bool:
        """True when a row of one of ``tables`` has no ``audit_seq``."""
        return any(
            self._conn.execute(
                f"SELECT 1 FROM main.{table} WHERE audit_seq IS NULL LIMIT 1"
            ).fetchall()
            for table in tables
        )

    def rows_without_record(self, tables: Iterable[str], /) -> dict[str, int]:
        """Per table, how many rows have no ``audit_seq``."""
        return {
            table: scalar_int(
                self._conn, f"SELECT count(*) FROM main.{table} WHERE audit_seq IS NULL"
            )
            for table in tables
        }

    def archived_rows(self) -> tuple[dict[str, float], int]:
        """Rows held in archive entries, per kind, and how many session entries there are."""
        per_kind = {str(k): float(n) for k, n in self._conn.execute(SQL_ARCHIVED_ROWS)}
        sessions = scalar_int(self._conn, SQL_ARCHIVED_SESSIONS)
        return per_kind, sessions

    def records_after(self, seq: int, limit: int, /) -> list[ChainRow]:
        """Up to ``limit`` records after ``seq``, oldest first."""
        return list(map(ChainRow._make, self._conn.execute(SQL_PAGE, (seq, limit))))

    def rehash(self, updates: Sequence[Rehash], /) -> None:
        """Make these records format 2 with their new salt and hashes."""
        self._conn.executemany(
            SQL_REHASH, [(u.salt, u.body_hash, u.prev_hash, u.hash, u.seq) for u in updates]
        )
