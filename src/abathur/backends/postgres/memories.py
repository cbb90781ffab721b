"""PostgreSQL's :class:`~abathur.stores.memories.MemoryStore` (issue 14).

The same table as SQLite's (migration ``020_memories.sql``): every version
is a row of ``memories``; ``is_current = 1`` marks the current one, and the
partial index ``memories_current (namespace, key) WHERE is_current = 1``
serves every read of current versions. Every text column is ``COLLATE
"C"``, so a namespace prefix is the same byte range as on SQLite:
``[prefix, prefix + ';')`` narrowed to whole segments by ``namespace =
prefix OR namespace >= prefix + ':'`` (:func:`abathur.backends.ranges.range_params`).

What differs from SQLite, and why:

* **Metadata filters** compare ``metadata::jsonb -> key`` with the filter
  value as JSON (``=`` on jsonb): jsonb equality tells JSON null from a
  missing key (``->`` gives SQL NULL) and ``true`` from ``1``, and compares
  numbers as numbers (``1`` equals ``1.0``), which is what SQLite's
  ``json_type`` + ``json_extract`` pair does. The key is a parameter, so
  ``.``, ``[`` or ``$`` in it are literal.
* **Id lists** bind as ``bigint[]`` (``= ANY``), not JSON text.
* **current_live** streams by keyset pages of :data:`PAGE` ids (``id >
  last``), not with a server-side cursor: a generator the caller drops
  half-way leaves nothing open in the transaction.
* **Purge of cached vectors** asks the vector tables with ``NOT EXISTS``
  rather than reading every ``cache_id`` into Python (vec0 has no index for
  that; a PostgreSQL anti-join needs none).
* **Keyword rows** are plain rows of ``memories_fts`` (see
  :mod:`abathur.backends.postgres.search`): a delete needs no FTS5 'optimize'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from abathur.backends.postgres.context import PgContext
from abathur.backends.ranges import purge_range, range_params
from abathur.stores.memories import MemoryRow, MemoryVersion, MetadataValue, PurgeCounts

__all__ = [
    "PAGE",
    "SQL_CURRENT_MEMORY",
    "SQL_HISTORY",
    "SQL_INSERT_VERSION",
    "SQL_LIST_PREFIX",
    "SQL_LIST_PREFIX_ANY_STATUS",
    "SQL_MEMORIES_BY_ID",
    "SQL_MEMORY_VERSION",
    "SQL_NAMESPACES_ALL",
    "SQL_NAMESPACES_PREFIX",
    "SQL_NAMESPACE_COUNTS_ALL",
    "SQL_NAMESPACE_COUNTS_PREFIX",
    "SQL_RETIRE_CURRENT",
    "PgMemoryStore",
    "list_params",
    "metadata_match",
]


#: Rows per page of :meth:`PgMemoryStore.current_live` when it streams every memory.
PAGE = 1000

# Column order of every SELECT matches MemoryRow.
_COLUMNS = (
    "namespace, key, version, type, value, metadata, status, superseded_by_namespace, "
    "superseded_by_key, first_created_at, created_at, expires_at, id"
)

# memory.get and every write's read of the current version: index memories_current.
SQL_CURRENT_MEMORY = (
    f"SELECT {_COLUMNS} FROM memories "
    "WHERE namespace = %(namespace)s AND key = %(key)s AND is_current = 1"
)

# memory.history: the UNIQUE (namespace, key, version) index, oldest first.
SQL_HISTORY = (
    f"SELECT {_COLUMNS} FROM memories WHERE namespace = %(namespace)s AND key = %(key)s "
    "ORDER BY version"
)

SQL_RETIRE_CURRENT = (
    "UPDATE memories SET is_current = 0 "
    "WHERE namespace = %(namespace)s AND key = %(key)s AND is_current = 1"
)

SQL_INSERT_VERSION = (
    "INSERT INTO memories (namespace, key, version, type, value, metadata, status, "
    "superseded_by_namespace, superseded_by_key, first_created_at, created_at, expires_at, "
    "is_current, audit_seq) VALUES (%(namespace)s, %(key)s, %(version)s, %(type)s, %(value)s, "
    "%(metadata)s, %(status)s, %(superseded_by_namespace)s, %(superseded_by_key)s, "
    "%(first_created_at)s, %(created_at)s, %(expires_at)s, 1, %(audit_seq)s) RETURNING id"
)

# One prefix range of index memories_current (see the module docstring).
_RANGE = (
    "namespace >= %(prefix)s AND namespace < %(after)s "
    "AND (namespace = %(prefix)s OR namespace >= %(below)s)"
)
# An untyped NULL parameter cannot be compared: the casts name the type.
_TYPE_FILTER = "(%(type)s::text IS NULL OR type = %(type)s::text)"

# memory.list / consolidate: live, unexpired current versions under a prefix,
# then one metadata_match group per filter entry.
_SQL_LIST_WHERE = (
    f"SELECT {_COLUMNS} FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND status = 'live' AND (expires_at IS NULL OR expires_at > %(now)s) "
    f"AND {_TYPE_FILTER}"
)
# memory.list(include_deleted=True): whatever the current version's status;
# expired ones still never.
_SQL_LIST_ANY_STATUS_WHERE = (
    f"SELECT {_COLUMNS} FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND (expires_at IS NULL OR expires_at > %(now)s) "
    f"AND {_TYPE_FILTER}"
)
# LIMIT NULL is LIMIT ALL (SQLite's -1).
_SQL_LIST_END = " ORDER BY namespace, key LIMIT %(limit)s OFFSET %(offset)s"
SQL_LIST_PREFIX = _SQL_LIST_WHERE + _SQL_LIST_END
SQL_LIST_PREFIX_ANY_STATUS = _SQL_LIST_ANY_STATUS_WHERE + _SQL_LIST_END

_LIVE = "status = 'live' AND (expires_at IS NULL OR expires_at > %(now)s)"

# memory.namespaces: index memories_current gives the range and the order.
SQL_NAMESPACES_PREFIX = (
    "SELECT DISTINCT namespace FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} AND {_LIVE} "
    "ORDER BY namespace LIMIT %(limit)s"
)
SQL_NAMESPACES_ALL = (
    "SELECT DISTINCT namespace FROM memories "
    f"WHERE is_current = 1 AND {_LIVE} "
    "ORDER BY namespace LIMIT %(limit)s"
)

# memory.namespace_counts: live, unexpired memories per namespace.
SQL_NAMESPACE_COUNTS_PREFIX = (
    "SELECT namespace, count(*) FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} AND {_LIVE} "
    "GROUP BY namespace ORDER BY namespace LIMIT %(limit)s"
)
SQL_NAMESPACE_COUNTS_ALL = (
    "SELECT namespace, count(*) FROM memories "
    f"WHERE is_current = 1 AND {_LIVE} "
    "GROUP BY namespace ORDER BY namespace LIMIT %(limit)s"
)

# memory.get_version: one version, through the UNIQUE (namespace, key, version) index.
SQL_MEMORY_VERSION = (
    f"SELECT {_COLUMNS} FROM memories "
    "WHERE namespace = %(namespace)s AND key = %(key)s AND version = %(version)s"
)

# Search hits by row id (the primary key).
SQL_MEMORIES_BY_ID = f"SELECT {_COLUMNS} FROM memories WHERE id = ANY(%(ids)s::bigint[])"

# memory.search, vector ranking: the ids a namespace deeper than its partition
# allows (index memories_current).
SQL_IDS_UNDER = (
    f"SELECT id FROM memories WHERE is_current = 1 AND {_RANGE} AND {_LIVE} AND {_TYPE_FILTER}"
)

# The versions the search indexes hold (primary key order): all of them for a
# rebuild (page by page), those of some ids for the embedding queue and a restore.
_SQL_CURRENT_LIVE = (
    f"SELECT {_COLUMNS} FROM memories WHERE is_current = 1 AND status = 'live' "
    "AND (%(now)s::float8 IS NULL OR expires_at IS NULL OR expires_at > %(now)s::float8)"
)
SQL_CURRENT_LIVE_BY_ID = _SQL_CURRENT_LIVE + " AND id = ANY(%(ids)s::bigint[])"
SQL_CURRENT_LIVE_PAGE = _SQL_CURRENT_LIVE + " AND id > %(after)s ORDER BY id LIMIT %(page)s"

# memory.search: how many current versions under a prefix wait for their
# vector (SearchResult.pending): the queue by its (kind, ref_id) key.
SQL_AWAITING_VECTORS = (
    "SELECT count(*) "
    "FROM embedding_queue AS q JOIN memories AS m ON m.id = q.ref_id "
    "WHERE q.kind = 'memory' AND q.failed_at IS NULL AND m.is_current = 1 "
    "AND m.status = 'live' AND m.namespace >= %(prefix)s AND m.namespace < %(after)s "
    "AND (m.namespace = %(prefix)s OR m.namespace >= %(below)s)"
)

SQL_IDS_MATCHING = "SELECT id FROM memories WHERE id = ANY(%(ids)s::bigint[])"


# ---------------------------------------------------------------------------
# Purge (issue 11): every version under a prefix, and everything naming it.
# %(prefix)s, %(after)s, %(below)s as everywhere (range_params); purge
# everything: purge_range(None) with below = '' (every name is >= '').
# ---------------------------------------------------------------------------

_PURGE_RANGE = (
    "{col} >= %(prefix)s AND {col} < %(after)s AND ({col} = %(prefix)s OR {col} >= %(below)s)"
)
# Beyond every namespace (at most 512 characters): purge everything. U+10FFFF
# is valid UTF-8 (F4 8F BF BF), above every character under COLLATE "C".
SQL_PURGE_ROWS = f"SELECT {_COLUMNS} FROM memories WHERE " + _PURGE_RANGE.format(col="namespace")
_SQL_PURGE_DELETE = "DELETE FROM memories WHERE id = ANY(%(ids)s::bigint[])"
_SQL_PURGE_ARCHIVE = "FROM archive WHERE kind IN ('memory', 'versions') AND " + _PURGE_RANGE.format(
    col="namespace"
)
# stats' top namespaces name them: the metrics rows of reads and writes.
_SQL_PURGE_METRICS = "FROM metrics WHERE kind IN ('reads', 'writes') AND " + _PURGE_RANGE.format(
    col="name"
)
# Versions outside the prefix superseded by a memory inside it. No index: a scan.
SQL_PURGE_POINTING_IN = (
    f"SELECT {_COLUMNS} FROM memories WHERE "
    + _PURGE_RANGE.format(col="superseded_by_namespace")
    + " AND NOT ("
    + _PURGE_RANGE.format(col="namespace")
    + ")"
)
_SQL_PURGE_UNPOINT = (
    "UPDATE memories SET superseded_by_namespace = NULL, superseded_by_key = NULL, "
    "audit_seq = %(seq)s WHERE id = %(id)s"
)
_SQL_PURGE_FTS = "FROM memories_fts WHERE memory_id = ANY(%(ids)s::bigint[])"
_SQL_PURGE_JOBS = "FROM embedding_queue WHERE kind = 'memory' AND ref_id = ANY(%(ids)s::bigint[])"
_SQL_PURGE_PENDING = (
    "DELETE FROM vector_deletes WHERE vec_table = %(table)s AND item_id = ANY(%(ids)s::bigint[])"
)
_VEC_TABLE = "memories_vec"
# The vector tables whose rows point at embedding_cache (ours: memories and chunks).
_VECTOR_TABLES = (_VEC_TABLE, "chunks_vec")
_SQL_PURGE_CACHE_BASE = "FROM embedding_cache AS c WHERE c.content_hash = ANY(%(hashes)s::text[])"
# Nor while a queued job will embed its text again (read after the purged
# memories' own jobs are gone, as SQLite's DELETE reads it).
_SQL_CACHE_NOT_QUEUED = " AND c.content_hash NOT IN (SELECT content_hash FROM embedding_queue)"
# A cached vector stays while a vector row other than the purged memories' uses it.
_SQL_CACHE_USED_BY_MEMORY = (
    " AND NOT EXISTS (SELECT 1 FROM {table} AS v WHERE v.cache_id = c.id "
    "AND NOT (v.item_id = ANY(%(ids)s::bigint[])))"
)
_SQL_CACHE_USED_BY_OTHER = " AND NOT EXISTS (SELECT 1 FROM {table} AS v WHERE v.cache_id = c.id)"
_SQL_SEQS_IN_USE = (
    "SELECT DISTINCT audit_seq FROM memories WHERE audit_seq = ANY(%(seqs)s::bigint[])"
)
_SQL_TABLE_EXISTS = "SELECT to_regclass(%(name)s) IS NOT NULL"
_SQL_COUNT_VECTORS = "SELECT count(*) FROM {table} WHERE item_id = ANY(%(ids)s::bigint[])"
_SQL_DELETE_VECTORS = "DELETE FROM {table} WHERE item_id = ANY(%(ids)s::bigint[])"
_SQL_COUNT_DEAD = "UPDATE vector_tables SET dead_rows = dead_rows + %(n)s WHERE name = %(table)s"


# JSON's escape of NUL, which jsonb refuses, and what metadata_match reads instead.
_NUL_ESCAPE = "'\\u0000'"
_NUL_STANDIN = "'\\ufffd'"


def metadata_match(
    metadata: Mapping[str, MetadataValue] | None, column: str = "metadata"
) -> tuple[str, dict[str, Any]]:
    """The SQL ANDed to a query for a metadata filter, and its named parameters.

    One group per entry: ``(column::jsonb -> key) = value::jsonb``. jsonb
    equality compares numbers as numbers (``1`` finds ``1`` and ``1.0``),
    never a number with a boolean, and a missing key gives SQL NULL (no
    match) where JSON null is ``'null'::jsonb`` (a match for ``None``).
    ``column`` is our own column name, never user input.

    PostgreSQL's JSON types refuse the escape of NUL (``\\u0000``), which a
    stored document (or a filter value) may hold: both sides have it
    replaced by ``\\ufffd`` first, so a NUL matches only a NUL or U+FFFD
    (SQLite tells those apart).

    Example:
        >>> from abathur.backends.postgres.memories import metadata_match
        >>> sql, params = metadata_match({"a.b": True})
        >>> sql.endswith("::jsonb -> %(m0_key)s::text) = %(m0_value)s::jsonb")
        True
        >>> params
        {'m0_key': 'a.b', 'm0_value': 'true'}
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    for n, (key, value) in enumerate((metadata or {}).items()):
        name = f"m{n}"
        parts.append(
            f" AND (replace({column}, {_NUL_ESCAPE}, {_NUL_STANDIN})::jsonb"
            f" -> %({name}_key)s::text)"
            f" = %({name}_value)s::jsonb"
        )
        params[f"{name}_key"] = key
        params[f"{name}_value"] = json.dumps(value).replace("\\u0000", "\\ufffd")
    return "".join(parts), params


def list_params(
    prefix: str,
    *,
    now: float,
    type: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """The parameters :data:`SQL_LIST_PREFIX` binds for a listing without metadata filter.

    ``limit`` None binds NULL: ``LIMIT NULL`` is ``LIMIT ALL``.
    """
    return {**range_params(prefix), "now": now, "type": type, "limit": limit, "offset": offset}


class PgMemoryStore:
    """:class:`~abathur.stores.memories.MemoryStore` on one psycopg connection, in its transaction.

    Never commits or rolls back: the backend owns the transaction.
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def _rows(self, query: str, params: Mapping[str, Any]) -> list[MemoryRow]:
        return [MemoryRow(*row) for row in self._conn.execute(query, params).fetchall()]

    def _int(self, query: str | sql.Composed, params: Mapping[str, Any]) -> int:
        row = self._conn.execute(query, params).fetchone()
        return 0 if row is None else int(row[0])

    def _table_exists(self, name: str) -> bool:
        row = self._conn.execute(_SQL_TABLE_EXISTS, {"name": name}).fetchone()
        return bool(row and row[0])

    def current(self, namespace: str, key: str) -> MemoryRow | None:
        """The current version of ``(namespace, key)``, whatever its status or expiry."""
        rows = self._rows(SQL_CURRENT_MEMORY, {"namespace": namespace, "key": key})
        return rows[0] if rows else None

    def history(self, namespace: str, key: str) -> list[MemoryRow]:
        """Every version of ``(namespace, key)``, oldest first."""
        return self._rows(SQL_HISTORY, {"namespace": namespace, "key": key})

    def version(self, namespace: str, key: str, version: int) -> MemoryRow | None:
        """One version of ``(namespace, key)``, or None."""
        params = {"namespace": namespace, "key": key, "version": version}
        rows = self._rows(SQL_MEMORY_VERSION, params)
        return rows[0] if rows else None

    def retire_current(self, namespace: str, key: str) -> None:
        """Make the current version of ``(namespace, key)`` no longer current."""
        self._conn.execute(SQL_RETIRE_CURRENT, {"namespace": namespace, "key": key})

    def insert_current(self, row: MemoryVersion, *, audit_seq: int) -> int:
        """Store ``row`` as the current version; return its id (``RETURNING id``)."""
        found = self._conn.execute(SQL_INSERT_VERSION, {**row._asdict(), "audit_seq": audit_seq})
        inserted = found.fetchone()
        assert inserted is not None  # INSERT ... RETURNING gives its row
        return int(inserted[0])

    def list_current(
        self,
        prefix: str,
        *,
        now: float,
        type: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_deleted: bool = False,
    ) -> list[MemoryRow]:
        """Unexpired current versions under ``prefix``, by (namespace, key)."""
        where = _SQL_LIST_ANY_STATUS_WHERE if include_deleted else _SQL_LIST_WHERE
        match, match_params = metadata_match(metadata)
        params = list_params(prefix, now=now, type=type, limit=limit, offset=offset)
        return self._rows(where + match + _SQL_LIST_END, params | match_params)

    def namespaces(self, prefix: str | None, *, now: float, limit: int | None) -> list[str]:
        """Namespaces (under ``prefix``; None: all) holding a live, unexpired memory."""
        params: dict[str, Any] = {"now": now, "limit": limit}
        if prefix is None:
            rows = self._conn.execute(SQL_NAMESPACES_ALL, params).fetchall()
        else:
            query = SQL_NAMESPACES_PREFIX
            rows = self._conn.execute(query, params | range_params(prefix)).fetchall()
        return [str(name) for (name,) in rows]

    def namespace_counts(
        self, prefix: str | None, *, now: float, limit: int
    ) -> list[tuple[str, int]]:
        """:meth:`namespaces` with each one's count of live, unexpired memories."""
        params: dict[str, Any] = {"now": now, "limit": limit}
        if prefix is None:
            rows = self._conn.execute(SQL_NAMESPACE_COUNTS_ALL, params).fetchall()
        else:
            query = SQL_NAMESPACE_COUNTS_PREFIX
            rows = self._conn.execute(query, params | range_params(prefix)).fetchall()
        return [(str(name), int(count)) for name, count in rows]

    def rows_by_id(self, ids: Sequence[int]) -> list[MemoryRow]:
        """The versions with these row ids (those that exist)."""
        return self._rows(SQL_MEMORIES_BY_ID, {"ids": list(ids)})

    def ids_under(self, prefix: str, *, now: float, type: str | None = None) -> list[int]:
        """Ids of the live, unexpired current versions under ``prefix`` (of ``type``)."""
        params = {**range_params(prefix), "now": now, "type": type}
        return [int(item) for (item,) in self._conn.execute(SQL_IDS_UNDER, params)]

    def ids_matching(self, ids: Sequence[int], metadata: Mapping[str, MetadataValue]) -> set[int]:
        """The ids among ``ids`` whose metadata matches every entry of ``metadata``."""
        match, params = metadata_match(metadata)
        params["ids"] = list(ids)
        return {int(item) for (item,) in self._conn.execute(SQL_IDS_MATCHING + match, params)}

    def current_live(
        self, *, now: float | None = None, ids: Sequence[int] | None = None
    ) -> Iterator[MemoryRow]:
        """Current live versions by id: unexpired at ``now`` if given, among ``ids`` if given."""
        if ids is not None:
            yield from self._rows(SQL_CURRENT_LIVE_BY_ID, {"now": now, "ids": list(ids)})
            return
        after = 0
        while rows := self._rows(SQL_CURRENT_LIVE_PAGE, {"now": now, "after": after, "page": PAGE}):
            yield from rows
            after = rows[-1].id

    def awaiting_vectors(self, prefix: str) -> int:
        """Current live versions under ``prefix`` still waiting for their vector."""
        return self._int(SQL_AWAITING_VECTORS, range_params(prefix))

    # -- purge -------------------------------------------------------------------

    def versions_under(self, prefix: str | None) -> list[MemoryRow]:
        """Every version (any status, current or not) under ``prefix``; None: all."""
        return self._rows(SQL_PURGE_ROWS, purge_range(prefix))

    def pointing_into(self, prefix: str | None) -> list[MemoryRow]:
        """Versions outside ``prefix`` whose ``superseded_by`` names a memory inside it."""
        return self._rows(SQL_PURGE_POINTING_IN, purge_range(prefix))

    def _cache_query(self) -> sql.Composed:
        """The FROM/WHERE of the cached vectors that no kept vector uses."""
        parts: list[sql.Composable] = [sql.SQL(_SQL_PURGE_CACHE_BASE)]
        for table in _VECTOR_TABLES:
            if self._table_exists(table):
                template = (
                    _SQL_CACHE_USED_BY_MEMORY if table == _VEC_TABLE else (_SQL_CACHE_USED_BY_OTHER)
                )
                parts.append(sql.SQL(template).format(table=sql.Identifier(table)))
        return sql.Composed(parts)

    def purge_counts(
        self, prefix: str | None, ids: Sequence[int], text_hashes: Sequence[str]
    ) -> PurgeCounts:
        """What :meth:`erase` would remove besides versions ``ids``."""
        by_id = {"ids": list(ids)}
        cache = {"ids": list(ids), "hashes": sorted(set(text_hashes))}
        ranges = purge_range(prefix)
        vector_ids = 0
        if self._table_exists(_VEC_TABLE):
            count = sql.SQL(_SQL_COUNT_VECTORS).format(table=sql.Identifier(_VEC_TABLE))
            vector_ids = self._int(count, by_id)
        cached = sql.SQL("SELECT count(*) ") + self._cache_query() + sql.SQL(_SQL_CACHE_NOT_QUEUED)
        return PurgeCounts(
            keyword_rows=self._int("SELECT count(*) " + _SQL_PURGE_FTS, by_id),
            vectors=vector_ids,
            embedding_jobs=self._int("SELECT count(*) " + _SQL_PURGE_JOBS, by_id),
            cached_vectors=self._int(cached, cache),
            archived=self._int("SELECT count(*) " + _SQL_PURGE_ARCHIVE, ranges),
            metrics=self._int("SELECT count(*) " + _SQL_PURGE_METRICS, ranges),
        )

    def erase(self, prefix: str | None, ids: Sequence[int], text_hashes: Sequence[str]) -> None:
        """Remove versions ``ids`` and what :meth:`purge_counts` counts."""
        by_id = {"ids": list(ids)}
        cache = {"ids": list(ids), "hashes": sorted(set(text_hashes))}
        ranges = purge_range(prefix)
        # Which cached vectors no other vector uses is decided before the
        # vectors go (as on SQLite, where the used cache ids are read first).
        doomed = [
            int(i)
            for (i,) in self._conn.execute(sql.SQL("SELECT c.id ") + self._cache_query(), cache)
        ]
        self._conn.execute("DELETE " + _SQL_PURGE_FTS, by_id)
        if self._table_exists(_VEC_TABLE):
            delete = sql.SQL(_SQL_DELETE_VECTORS).format(table=sql.Identifier(_VEC_TABLE))
            deleted = self._conn.execute(delete, by_id).rowcount
            if deleted > 0:
                # As SQLite counts each vec0 slot a delete leaves dead.
                self._conn.execute(_SQL_COUNT_DEAD, {"n": deleted, "table": _VEC_TABLE})
            self._conn.execute(_SQL_PURGE_PENDING, {"table": _VEC_TABLE, **by_id})
        self._conn.execute("DELETE " + _SQL_PURGE_JOBS, by_id)
        self._conn.execute(_SQL_PURGE_DELETE, by_id)
        self._conn.execute("DELETE " + _SQL_PURGE_ARCHIVE, ranges)
        self._conn.execute("DELETE " + _SQL_PURGE_METRICS, ranges)
        if doomed:
            self._conn.execute(
                "DELETE FROM embedding_cache AS c WHERE c.id = ANY(%(ids)s::bigint[])"
                + _SQL_CACHE_NOT_QUEUED,
                {"ids": doomed},
            )

    def unlink(self, item_id: int, *, audit_seq: int) -> None:
        """Clear the ``superseded_by`` of version ``item_id``, now covered by ``audit_seq``."""
        self._conn.execute(_SQL_PURGE_UNPOINT, {"seq": audit_seq, "id": item_id})

    def audit_seqs_in_use(self, seqs: Iterable[int]) -> set[int]:
        """The audit records among ``seqs`` that a stored version still names."""
        params = {"seqs": sorted(seqs)}
        return {int(seq) for (seq,) in self._conn.execute(_SQL_SEQS_IN_USE, params)}
