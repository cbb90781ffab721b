"""PostgreSQL's :class:`~abathur.stores.audit.AuditStore` (issue 14).

The SQL of :mod:`abathur.backends.sqlite.audit`, in PostgreSQL's words. The
chain's hashing is :mod:`abathur.audit`'s (the service): this store hands back
the stored values with the types SQLite gives them (``at`` a float, ``salt``
bytes, seqs ints), so the digests are byte-identical on both backends.

What differs from SQLite, and why:

- One chain, one head row (``audit_head``), as on SQLite. Every audited write
  updates that row, so audited writes are serialized by its row lock; see
  :meth:`PgAuditStore.insert` for how a concurrent writer gets a retryable
  serialization failure rather than a duplicate-key error.
- ``json_extract(detail, '$.x')`` is ``detail::json ->> 'x'`` (with a
  ``\\u0000`` escape neutralised first: see ``_JSON``). The extracted text
  gets ``COLLATE "C"`` where it is compared by range, as every column is.
- Lists of ids or seqs travel as one array parameter (``= ANY(...)``) where
  SQLite passes JSON arrays to ``json_each``.
- ``chain`` and ``covered_rows`` stream by keyset pages (a query per page on
  the transaction's snapshot) instead of one open cursor: nothing is left on
  the server if the caller stops early.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors, sql

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.sessions import limit_param
from abathur.stores.audit import (
    AuditHead,
    AuditRow,
    ChainRow,
    CoveredRow,
    MemoryBounds,
    RecordRow,
    Rehash,
)

__all__ = ["PgAuditStore"]

# The head's one row, by its primary key.
SQL_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
SQL_INSERT = (
    "INSERT INTO audit_log (seq, at, action, entity, entity_id, detail, prev_hash, hash, "
    "format, salt, body_hash, content_hash) VALUES (%(seq)s, %(at)s, %(action)s, %(entity)s, "
    "%(entity_id)s, %(detail)s, %(prev_hash)s, %(hash)s, 2, %(salt)s, %(body_hash)s, "
    "%(content_hash)s) ON CONFLICT (seq) DO NOTHING"
)
SQL_SET_HEAD = (
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, %(seq)s, %(hash)s) "
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
)
_CHAIN_COLUMNS = (
    "seq, at, action, entity, entity_id, detail, prev_hash, hash, format, salt, "
    "body_hash, content_hash, redacted"
)
# A page of the log after a seq, by the primary key: the chain walk and the
# format-1 upgrade.
SQL_PAGE = (
    f"SELECT {_CHAIN_COLUMNS} FROM audit_log WHERE seq > %(after)s ORDER BY seq LIMIT %(limit)s"
)
# Records after %(after_seq)s, optionally of one entity kind and id: the primary key.
SQL_RECORDS = (
    "SELECT seq, at, action, entity, entity_id, detail FROM audit_log "
    "WHERE seq > %(after_seq)s AND (%(entity)s::text IS NULL OR entity = %(entity)s) "
    "AND (%(entity_id)s::text IS NULL OR entity_id = %(entity_id)s) ORDER BY seq LIMIT %(limit)s"
)
SQL_REDACT = (
    "UPDATE audit_log SET entity_id = '', detail = '{}', salt = NULL, redacted = 1 "
    "WHERE seq = ANY(%(seqs)s::bigint[]) AND format = 2 AND redacted = 0"
)
SQL_REHASH = (
    "UPDATE audit_log SET format = 2, salt = %(salt)s, body_hash = %(body_hash)s, "
    "prev_hash = %(prev_hash)s, hash = %(hash)s WHERE seq = %(seq)s"
)
SQL_FIRST_FORMAT = "SELECT format FROM audit_log ORDER BY seq LIMIT 1"

# A record's detail as json. PostgreSQL's json functions refuse a \u0000
# escape anywhere in the object they read (its text type cannot hold NUL),
# where SQLite's json_extract reads it; the service's encoder writes one for a
# NUL in free text (a supersede's reason). The fields looked up here are ids,
# which never hold NUL, so an unescaped \u0000 (one not preceded by an odd
# run of backslashes) is read as U+FFFD instead; a detail without one is
# parsed as it is.
_JSON = (
    r"(CASE WHEN strpos(detail, '\u0000') = 0 THEN detail "
    r"ELSE regexp_replace(detail, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g') END)::json"
)
# Parsed only for the actions that need it (a CASE fixes the order: the other
# records' detail is never parsed).
_WINNER = f"(CASE WHEN action = 'memory.supersede' THEN {_JSON} ->> 'winner' END) COLLATE \"C\""
_RESTORE = f"CASE WHEN action = 'archive.restore' THEN {_JSON} END"
_RESTORE_KIND = f"(({_RESTORE}) ->> 'kind')"
_RESTORE_REF = f"(({_RESTORE}) ->> 'ref') COLLATE \"C\""

# Records naming memories under a prefix: their entity_id 'namespace/key', a
# supersede's winner, an archive restore's ref. eq_lo/eq_hi bound the ids of
# the prefix's own namespace ('p/' .. 'p0'), sub_lo/sub_hi those under it
# ('p:' .. 'p;'). A full scan of the log.
SQL_MEMORY_RECORDS = (
    "SELECT seq FROM audit_log WHERE redacted = 0 AND ("
    "(entity = 'memory' AND ((entity_id >= %(eq_lo)s AND entity_id < %(eq_hi)s) "
    "OR (entity_id >= %(sub_lo)s AND entity_id < %(sub_hi)s))) "
    f"OR (action = 'memory.supersede' AND (({_WINNER} >= %(eq_lo)s AND {_WINNER} < %(eq_hi)s) "
    f"OR ({_WINNER} >= %(sub_lo)s AND {_WINNER} < %(sub_hi)s))) "
    f"OR (action = 'archive.restore' AND {_RESTORE_KIND} IN ('memory', 'versions') "
    f"AND (({_RESTORE_REF} >= %(eq_lo)s AND {_RESTORE_REF} < %(eq_hi)s) "
    f"OR ({_RESTORE_REF} >= %(sub_lo)s AND {_RESTORE_REF} < %(sub_hi)s))))"
)
# Sessions of (app, user) the log knows, including deleted ones. A full scan.
_SESSION_RECORD = "entity = 'session' AND action IN ('session.create', 'session.delete')"
_SESSION_DETAIL = f"(CASE WHEN {_SESSION_RECORD} THEN {_JSON} END)"
SQL_USER_SESSIONS = (
    f"SELECT DISTINCT entity_id FROM audit_log WHERE {_SESSION_RECORD} "
    f"AND {_SESSION_DETAIL} ->> 'app' = %(app)s AND {_SESSION_DETAIL} ->> 'user' = %(user)s"
)
# %(sessions)s is a text[] of session ids. A full scan.
SQL_SESSION_TASKS = (
    "SELECT DISTINCT entity_id FROM audit_log WHERE action = 'task.create' "
    f"AND (CASE WHEN action = 'task.create' THEN {_JSON} END) ->> 'session_id' "
    "= ANY(%(sessions)s::text[])"
)
# %(sessions)s and %(tasks)s are text[] of ids. A full scan.
SQL_SESSION_RECORDS = (
    "SELECT seq FROM audit_log WHERE redacted = 0 AND ("
    "(entity IN ('session', 'event') AND entity_id = ANY(%(sessions)s::text[])) "
    "OR (entity = 'task' AND entity_id = ANY(%(tasks)s::text[])) "
    f"OR (action = 'archive.restore' AND {_RESTORE_KIND} = 'session' "
    f"AND {_RESTORE_REF} = ANY(%(sessions)s::text[])))"
)
# Records of one document root (add_root, sync, forget): entity_id is its path. A full scan.
SQL_ROOT_RECORDS = (
    "SELECT seq FROM audit_log WHERE redacted = 0 AND entity = 'document_root' "
    "AND entity_id = %(root)s"
)
# Whether a table of this database's search path has a column.
SQL_HAS_COLUMN = (
    "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%(table)s)) "
    "AND attname = %(column)s AND attnum > 0 AND NOT attisdropped"
)

# How a finding names a row of each covered table (SQL of ours).
_LABELS: dict[str, sql.SQL] = {
    "memories": sql.SQL("'memory ' || t.namespace || '/' || t.key || ' v' || t.version"),
    "events": sql.SQL("'event ' || t.session_id || ' #' || t.seq"),
    "tasks": sql.SQL("'task ' || t.id"),
    "sessions": sql.SQL("'session ' || t.id"),
}
# The order SQLite scans each covered table in (its rowid, or the primary key
# of a WITHOUT ROWID table), which is also the key the pages are cut on.
_KEYS: dict[str, tuple[str, ...]] = {
    "memories": ("id",),
    "events": ("session_id", "seq"),
    "tasks": ("rowid",),
    "sessions": ("rowid",),
}

# The current version of each memory must be its newest. In (namespace, key)
# order, as SQLite's walk of the UNIQUE (namespace, key, version) index gives
# them, so LIMIT keeps the same ones.
SQL_CURRENT_NOT_NEWEST = (
    "SELECT namespace, key, max(version), sum(is_current), "
    "max(CASE WHEN is_current = 1 THEN version END) FROM memories "
    "GROUP BY namespace, key HAVING sum(is_current) != 1 "
    "OR max(CASE WHEN is_current = 1 THEN version END) != max(version) "
    "ORDER BY namespace, key LIMIT %(limit)s"
)
# SQLite's total() is a float sum, 0.0 over no rows.
SQL_ARCHIVED_ROWS = (
    "SELECT kind, coalesce(sum(rows), 0)::double precision FROM archive GROUP BY kind "
    "ORDER BY kind"
)
SQL_ARCHIVED_SESSIONS = "SELECT count(*) FROM archive WHERE kind = 'session'"

_REDACT_BATCH = 10_000
_PAGE = 5_000


class PgAuditStore:
    """:class:`~abathur.stores.audit.AuditStore` on one psycopg connection, in its transaction.

    Example:
        >>> from abathur.stores.audit import AuditStore
        >>> [m for m in dir(AuditStore) if m[0] != "_" and not hasattr(PgAuditStore, m)]
        []
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    # -- the chain -------------------------------------------------------------

    def head(self) -> AuditHead | None:
        """The newest record's (seq, hash); None before the first record."""
        row = self._conn.execute(SQL_HEAD).fetchone()
        return None if row is None else AuditHead(int(row[0]), str(row[1]))

    def set_head(self, head: AuditHead, /) -> None:
        """Make ``head`` the newest record's (seq, hash)."""
        self._conn.execute(SQL_SET_HEAD, head._asdict())

    def insert(self, record: AuditRow, /) -> None:
        """Add one format-2 record.

        ``ON CONFLICT (seq) DO NOTHING`` is for concurrency, not to ignore a
        duplicate. Two writers that read the same head insert the same seq;
        the second waits for the first's uncommitted key. With a plain INSERT
        it would then fail with a unique violation, which the backend does not
        retry; with DO NOTHING, SERIALIZABLE reports the conflict with a row
        its snapshot cannot see as a serialization failure, which the backend
        retries (tests/unit/test_pg_audit.py shows both). A duplicate the
        snapshot does see (a head behind the log) inserts nothing: that is
        raised as the unique violation SQLite would raise.

        Raises:
            psycopg.errors.UniqueViolation: the log already has this seq.
        """
        with self._conn.cursor() as cur:
            cur.execute(SQL_INSERT, record._asdict())
            if cur.rowcount != 1:
                raise errors.UniqueViolation(f"audit_log already has a record {record.seq}")

    def chain(self) -> Iterator[ChainRow]:
        """Every record, oldest first (streamed: a long log is never held whole)."""
        after = 0
        while True:
            page = self.records_after(after, _PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].seq

    def records(
        self, *, entity: str | None, entity_id: str | None, after_seq: int, limit: int
    ) -> list[RecordRow]:
        """Records after ``after_seq`` in order; ``None`` for entity or entity_id means any."""
        params = {
            "after_seq": after_seq,
            "entity": entity,
            "entity_id": entity_id,
            "limit": limit_param(limit),
        }
        return list(map(RecordRow._make, self._conn.execute(SQL_RECORDS, params)))

    # -- purges --------------------------------------------------------------

    def redact(self, seqs: Sequence[int], /) -> int:
        """Blank names, detail and salt of these unredacted format-2 records; return how many.

        The old row versions keep the blanked values on disk until VACUUM
        (see :meth:`PgTransaction.erase_securely
        <abathur.backends.postgres.transaction.PgTransaction.erase_securely>`).
        """
        redacted = 0
        for start in range(0, len(seqs), _REDACT_BATCH):
            batch = list(seqs[start : start + _REDACT_BATCH])
            with self._conn.cursor() as cur:
                cur.execute(SQL_REDACT, {"seqs": batch})
                redacted += cur.rowcount
        return redacted

    def memory_record_seqs(self, bounds: MemoryBounds, /) -> set[int]:
        """Seqs of unredacted records naming a memory whose ``namespace/key`` is in ``bounds``."""
        rows = self._conn.execute(SQL_MEMORY_RECORDS, bounds._asdict())
        return {int(seq) for (seq,) in rows}

    def user_session_ids(self, app: str, user: str, /) -> set[str]:
        """Ids of sessions of (app, user) the log has a create or delete record of."""
        rows = self._conn.execute(SQL_USER_SESSIONS, {"app": app, "user": user})
        return {str(sid) for (sid,) in rows}

    def session_task_ids(self, sessions: Collection[str], /) -> set[str]:
        """Ids of tasks the log says were created in one of ``sessions``."""
        rows = self._conn.execute(SQL_SESSION_TASKS, {"sessions": sorted(sessions)})
        return {str(tid) for (tid,) in rows}

    def session_record_seqs(
        self, sessions: Collection[str], tasks: Collection[str], /
    ) -> set[int]:
        """Seqs of unredacted records of these sessions, their events and these tasks."""
        params = {"sessions": sorted(sessions), "tasks": sorted(tasks)}
        return {int(seq) for (seq,) in self._conn.execute(SQL_SESSION_RECORDS, params)}

    def root_record_seqs(self, root: str, /) -> set[int]:
        """Seqs of unredacted records of the document root at path ``root``."""
        return {int(seq) for (seq,) in self._conn.execute(SQL_ROOT_RECORDS, {"root": root})}

    # -- content coverage and the format-1 upgrade ------------------------------

    def has_column(self, table: str, column: str, /) -> bool:
        """True when ``table`` has ``column`` (files before a migration lack some)."""
        params = {"table": table, "column": column}
        return self._conn.execute(SQL_HAS_COLUMN, params).fetchone() is not None

    def covered_rows(self, table: str, columns: Sequence[str], /) -> Iterator[CoveredRow]:
        """Each row of ``table`` with ``columns`` and the record its ``audit_seq`` names.

        In SQLite's scan order (:data:`_KEYS`), a page at a time.
        """
        label, keys = _LABELS[table], _KEYS[table]
        key_sql = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in keys)
        head = sql.SQL(
            "SELECT {label}, t.audit_seq, a.seq, a.content_hash, a.salt, a.redacted, {cols}, "
            "{keys} FROM {table} AS t LEFT JOIN audit_log AS a ON a.seq = t.audit_seq "
        ).format(
            label=label,
            cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns),
            keys=key_sql,
            table=sql.Identifier(table),
        )
        tail = sql.SQL(" ORDER BY {keys} LIMIT {page}").format(keys=key_sql, page=_PAGE)
        first = head + tail
        after = head + sql.SQL("WHERE ({keys}) > ({values})").format(
            keys=key_sql,
            values=sql.SQL(", ").join(sql.Placeholder(f"k{i}") for i in range(len(keys))),
        ) + tail
        n, last = len(columns), None
        while True:
            if last is None:
                page = self._conn.execute(first).fetchall()
            else:
                params = {f"k{i}": value for i, value in enumerate(last)}
                page = self._conn.execute(after, params).fetchall()
            for lab, pointer, found, covered, salt, redacted, *rest in page:
                yield CoveredRow(lab, pointer, found, covered, salt, redacted, tuple(rest[:n]))
            if len(page) < _PAGE:
                return
            last = page[-1][-len(keys) :]

    def memories_not_at_newest(self, limit: int, /) -> list[tuple[str, str, int, int, int | None]]:
        """Up to ``limit`` memories whose current version is not exactly one, the newest."""
        rows = self._conn.execute(SQL_CURRENT_NOT_NEWEST, {"limit": limit_param(limit)})
        return [
            (str(ns), str(key), int(newest), int(flagged), None if cur is None else int(cur))
            for ns, key, newest, flagged, cur in rows
        ]

    def first_format(self) -> int | None:
        """The format of the oldest record; None when the log is empty."""
        row = self._conn.execute(SQL_FIRST_FORMAT).fetchone()
        return None if row is None else int(row[0])

    def has_rows_without_record(self, tables: Iterable[str], /) -> bool:
        """True when a row of one of ``tables`` has no ``audit_seq``."""
        return any(
            self._conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE audit_seq IS NULL LIMIT 1").format(
                    sql.Identifier(table)
                )
            ).fetchone()
            is not None
            for table in tables
        )

    def rows_without_record(self, tables: Iterable[str], /) -> dict[str, int]:
        """Per table, how many rows have no ``audit_seq``."""
        counts: dict[str, int] = {}
        for table in tables:
            query = sql.SQL("SELECT count(*) FROM {} WHERE audit_seq IS NULL").format(
                sql.Identifier(table)
            )
            row = self._conn.execute(query).fetchone()
            counts[table] = 0 if row is None else int(row[0])
        return counts

    def archived_rows(self) -> tuple[dict[str, float], int]:
        """Rows held in archive entries, per kind, and how many session entries there are."""
        per_kind = {str(k): float(n) for k, n in self._conn.execute(SQL_ARCHIVED_ROWS)}
        row = self._conn.execute(SQL_ARCHIVED_SESSIONS).fetchone()
        return per_kind, 0 if row is None else int(row[0])

    def records_after(self, seq: int, limit: int, /) -> list[ChainRow]:
        """Up to ``limit`` records after ``seq``, oldest first."""
        rows = self._conn.execute(SQL_PAGE, {"after": seq, "limit": limit_param(limit)})
        return list(map(ChainRow._make, rows))

    def rehash(self, updates: Sequence[Rehash], /) -> None:
        """Make these records format 2 with their new salt and hashes."""
        if updates:
            with self._conn.cursor() as cur:
                cur.executemany(SQL_REHASH, [u._asdict() for u in updates])
