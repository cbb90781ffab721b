"""SQLite's :class:`~abathur.stores.memories.MemoryStore`.

Every version is a row of ``memories``; ``is_current = 1`` marks the current
one, and the partial index ``memories_current (namespace, key) WHERE
is_current = 1`` serves every read of current versions. A namespace prefix
is the index range ``[prefix, prefix + ';')`` (``';'`` is the character right
after ``':'``), narrowed to whole segments by ``namespace = :prefix OR
namespace >= :below`` (``below`` = ``prefix + ':'``).

Example:
    >>> from abathur.backends.sqlite.memories import list_params
    >>> list_params("user:al", now=0.0)["after"]
    'user:al;'
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apsw

from abathur.backends.ranges import purge_range, range_params
from abathur.backends.sqlite import vectors
from abathur.backends.sqlite.connection import scalar_int, table_exists
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.memories import MemoryRow, MemoryVersion, MetadataValue, PurgeCounts

__all__ = [
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
    "SqliteMemoryStore",
    "list_params",
    "metadata_match",
]


# Column order of every SELECT matches MemoryRow.
_COLUMNS = (
    "namespace, key, version, type, value, metadata, status, superseded_by_namespace, "
    "superseded_by_key, first_created_at, created_at, expires_at, id"
)

# memory.get and every write's read of the current version: index memories_current.
SQL_CURRENT_MEMORY = (
    f"SELECT {_COLUMNS} FROM memories WHERE namespace = ? AND key = ? AND is_current = 1"
)

# memory.history: the UNIQUE (namespace, key, version) index, oldest first.
SQL_HISTORY = f"SELECT {_COLUMNS} FROM memories WHERE namespace = ? AND key = ? ORDER BY version"

SQL_RETIRE_CURRENT = (
    "UPDATE memories SET is_current = 0 WHERE namespace = ? AND key = ? AND is_current = 1"
)

SQL_INSERT_VERSION = (
    "INSERT INTO memories (namespace, key, version, type, value, metadata, status, "
    "superseded_by_namespace, superseded_by_key, first_created_at, created_at, expires_at, "
    "is_current, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)"
)

# One prefix range of index memories_current (see the module docstring).
_RANGE = (
    "namespace >= :prefix AND namespace < :after AND (namespace = :prefix OR namespace >= :below)"
)

# memory.list / consolidate: live, unexpired current versions under a prefix,
# then one metadata_match group per filter entry.
_SQL_LIST_WHERE = (
    f"SELECT {_COLUMNS} FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND status = 'live' AND (expires_at IS NULL OR expires_at > :now) "
    "AND (:type IS NULL OR type = :type)"
)
# memory.list(include_deleted=True): the same, whatever the current version's
# status (live, deleted, superseded); expired ones still never.
_SQL_LIST_ANY_STATUS_WHERE = (
    f"SELECT {_COLUMNS} FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND (expires_at IS NULL OR expires_at > :now) "
    "AND (:type IS NULL OR type = :type)"
)
_SQL_LIST_END = " ORDER BY namespace, key LIMIT :limit OFFSET :offset"
SQL_LIST_PREFIX = _SQL_LIST_WHERE + _SQL_LIST_END
SQL_LIST_PREFIX_ANY_STATUS = _SQL_LIST_ANY_STATUS_WHERE + _SQL_LIST_END

# memory.namespaces: index memories_current gives the range and the order.
SQL_NAMESPACES_PREFIX = (
    "SELECT DISTINCT namespace FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND status = 'live' AND (expires_at IS NULL OR expires_at > :now) "
    "ORDER BY namespace LIMIT :limit"
)
SQL_NAMESPACES_ALL = (
    "SELECT DISTINCT namespace FROM memories "
    "WHERE is_current = 1 AND status = 'live' AND (expires_at IS NULL OR expires_at > :now) "
    "ORDER BY namespace LIMIT :limit"
)

# memory.namespace_counts: live, unexpired memories per namespace. Index
# memories_current gives the range and the namespace order, so the GROUP BY
# needs no sort.
SQL_NAMESPACE_COUNTS_PREFIX = (
    "SELECT namespace, count(*) FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND status = 'live' AND (expires_at IS NULL OR expires_at > :now) "
    "GROUP BY namespace ORDER BY namespace LIMIT :limit"
)
SQL_NAMESPACE_COUNTS_ALL = (
    "SELECT namespace, count(*) FROM memories "
    "WHERE is_current = 1 AND status = 'live' AND (expires_at IS NULL OR expires_at > :now) "
    "GROUP BY namespace ORDER BY namespace LIMIT :limit"
)

# memory.get_version: one version, through the UNIQUE (namespace, key, version) index.
SQL_MEMORY_VERSION = (
    f"SELECT {_COLUMNS} FROM memories WHERE namespace = ? AND key = ? AND version = ?"
)

# Search hits by row id (the primary key).
SQL_MEMORIES_BY_ID = f"SELECT {_COLUMNS} FROM memories WHERE id IN (SELECT value FROM json_each(?))"

# memory.search, vector ranking: the ids a namespace deeper than its partition
# allows (index memories_current).
SQL_IDS_UNDER = (
    "SELECT id FROM memories "
    f"WHERE is_current = 1 AND {_RANGE} "
    "AND status = 'live' AND (expires_at IS NULL OR expires_at > :now) "
    "AND (:type IS NULL OR type = :type)"
)

# memory.search, vector ranking: the candidates that pass a metadata filter
# (primary key), then one metadata_match group per entry.
# The versions the search indexes hold (primary key order): all of them for a
# rebuild, those of some ids for the embedding queue and a restore.
_SQL_CURRENT_LIVE = (
    f"SELECT {_COLUMNS} FROM memories WHERE is_current = 1 AND status = 'live' "
    "AND (:now IS NULL OR expires_at IS NULL OR expires_at > :now)"
)
SQL_CURRENT_LIVE_BY_ID = _SQL_CURRENT_LIVE + " AND id IN (SELECT value FROM json_each(:ids))"
SQL_CURRENT_LIVE = _SQL_CURRENT_LIVE + " ORDER BY id"

# memory.search: how many current versions under a prefix wait for their
# vector (SearchResult.pending). The queue is read through its (kind, ref_id)
# key, each memory by its id.
SQL_AWAITING_VECTORS = (
    "SELECT count(*) "
    # CROSS JOIN keeps the queue outside: it is small when the worker keeps
    # up, while a tenant's range of memories may be 100k rows.
    "FROM embedding_queue AS q CROSS JOIN memories AS m ON m.id = q.ref_id "
    "WHERE q.kind = 'memory' AND q.failed_at IS NULL AND m.is_current = 1 "
    "AND m.status = 'live' AND m.namespace >= :prefix AND m.namespace < :after "
    "AND (m.namespace = :prefix OR m.namespace >= :below)"
)

SQL_IDS_MATCHING = "SELECT id FROM memories WHERE id IN (SELECT value FROM json_each(:ids))"


# ---------------------------------------------------------------------------
# Purge (issue 11): every version under a prefix, and everything naming it.
# :prefix, :after, :below as everywhere (range_params); purge everything:
# purge_range(None) with below = '' (every name is >= '').
# ---------------------------------------------------------------------------

_PURGE_RANGE = "{col} >= :prefix AND {col} < :after AND ({col} = :prefix OR {col} >= :below)"
# Every version, through the UNIQUE (namespace, key, version) index.
SQL_PURGE_ROWS = f"SELECT {_COLUMNS} FROM memories WHERE " + _PURGE_RANGE.format(col="namespace")
_SQL_PURGE_DELETE = "DELETE FROM memories WHERE id IN (SELECT value FROM json_each(:ids))"
_SQL_PURGE_ARCHIVE = "FROM archive WHERE kind IN ('memory', 'versions') AND " + _PURGE_RANGE.format(
    col="namespace"
)
# stats' top namespaces name them: the metrics rows of reads and writes.
_SQL_PURGE_METRICS = "FROM metrics WHERE kind IN ('reads', 'writes') AND " + _PURGE_RANGE.format(
    col="name"
)
# Versions outside the prefix superseded by a memory inside it (consolidate
# across tenants): their superseded_by names what is purged. No index: a scan.
SQL_PURGE_POINTING_IN = (
    f"SELECT {_COLUMNS} FROM memories WHERE "
    + _PURGE_RANGE.format(col="superseded_by_namespace")
    + " AND NOT ("
    + _PURGE_RANGE.format(col="namespace")
    + ")"
)
_SQL_PURGE_UNPOINT = (
    "UPDATE memories SET superseded_by_namespace = NULL, superseded_by_key = NULL, "
    "audit_seq = :seq WHERE id = :id"
)
# The versions the keyword index holds (its docsize shadow table: one row each).
_SQL_PURGE_FTS_IDS = (
    "SELECT id FROM memories_fts_docsize WHERE id IN (SELECT value FROM json_each(:ids))"
)
_SQL_FTS_DELETE = "DELETE FROM memories_fts WHERE rowid = ?"
# Deleted rows of a contentless FTS5 table leave their words in the index
# segments until a merge: 'optimize' rewrites them without.
_SQL_FTS_OPTIMIZE = "INSERT INTO memories_fts (memories_fts) VALUES ('optimize')"
_SQL_PURGE_JOBS = (
    "FROM embedding_queue WHERE kind = 'memory' AND ref_id IN (SELECT value FROM json_each(:ids))"
)
_SQL_PURGE_PENDING = (
    "DELETE FROM vector_deletes WHERE vec_table = :table "
    "AND item_id IN (SELECT value FROM json_each(:ids))"
)
_VEC_TABLE = "memories_vec"
# The vec0 tables whose rows point at embedding_cache (ours: memories and chunks).
_VECTOR_TABLES = (_VEC_TABLE, "chunks_vec")
_SQL_PURGE_CACHE = (
    "FROM embedding_cache WHERE content_hash IN (SELECT value FROM json_each(:hashes)) "
    "AND id NOT IN (SELECT value FROM json_each(:used)) "
    "AND content_hash NOT IN (SELECT content_hash FROM embedding_queue)"
)
_SQL_SEQS_IN_USE = (
    "SELECT audit_seq FROM memories WHERE audit_seq IN (SELECT value FROM json_each(:seqs))"
)


def metadata_match(
    metadata: Mapping[str, MetadataValue] | None, column: str = "metadata"
) -> tuple[str, dict[str, Any]]:
    """The SQL ANDed to a query for a metadata filter, and its named parameters.

    One group per entry. ``json_type`` tells JSON null from a missing key and
    true from 1, which ``json_extract`` alone cannot; a number matches a
    number (``1`` finds ``1`` and ``1.0``, like ``==``). The key becomes a
    quoted JSON-path label, escaped the JSON way, so ``.``, ``[`` or ``$``
    in a key are literal, never path syntax (:mod:`abathur.memory` refuses a
    key holding ``"``).

    Example:
        >>> from abathur.backends.sqlite.memories import metadata_match
        >>> sql, params = metadata_match({"a.b": True})
        >>> params
        {'m0_path': '$."a.b"', 'm0_type': 'true', 'm0_other': 'true', 'm0_value': True}
    """
    sql: list[str] = []
    params: dict[str, Any] = {}
    for n, (key, value) in enumerate((metadata or {}).items()):
        if value is None:
            types = ("null", "null")
        elif isinstance(value, bool):
            types = ("true", "true") if value else ("false", "false")
        elif isinstance(value, str):
            types = ("text", "text")
        else:
            types = ("integer", "real")
        name = f"m{n}"
        sql.append(
            f" AND json_type({column}, :{name}_path) IN (:{name}_type, :{name}_other)"
            f" AND json_extract({column}, :{name}_path) IS :{name}_value"
        )
        params |= {
            f"{name}_path": '$."' + json.dumps(key, ensure_ascii=False)[1:-1] + '"',
            f"{name}_type": types[0],
            f"{name}_other": types[1],
            f"{name}_value": value,
        }
    return "".join(sql), params


def list_params(
    prefix: str,
    *,
    now: float,
    type: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """The parameters :data:`SQL_LIST_PREFIX` binds for a listing without metadata filter.

    So a test can ``EXPLAIN QUERY PLAN`` the exact query that ships.
    """
    return {
        **range_params(prefix),
        "now": now,
        "type": type,
        "limit": -1 if limit is None else limit,
        "offset": offset,
    }


class SqliteMemoryStore:
    """:class:`~abathur.stores.memories.MemoryStore` on one apsw connection, in its transaction."""

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def _rows(self, sql: str, params: apsw.Bindings) -> list[MemoryRow]:
        return [MemoryRow(*row) for row in self._conn.execute(sql, params)]

    def current(self, namespace: str, key: str) -> MemoryRow | None:
        """The current version of ``(namespace, key)``, whatever its status or expiry."""
        rows = self._rows(SQL_CURRENT_MEMORY, (namespace, key))
        return rows[0] if rows else None

    def history(self, namespace: str, key: str) -> list[MemoryRow]:
        """Every version of ``(namespace, key)``, oldest first."""
        return self._rows(SQL_HISTORY, (namespace, key))

    def version(self, namespace: str, key: str, version: int) -> MemoryRow | None:
        """One version of ``(namespace, key)``, or None."""
        rows = self._rows(SQL_MEMORY_VERSION, (namespace, key, version))
        return rows[0] if rows else None

    def retire_current(self, namespace: str, key: str) -> None:
        """Make the current version of ``(namespace, key)`` no longer current."""
        self._conn.execute(SQL_RETIRE_CURRENT, (namespace, key))

    def insert_current(self, row: MemoryVersion, *, audit_seq: int) -> int:
        """Store ``row`` as the current version; return its id."""
        self._conn.execute(SQL_INSERT_VERSION, (*row, audit_seq))
        # Read before any other statement: FTS5 and vec0 writes move last_insert_rowid.
        return int(self._conn.last_insert_rowid())

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
        params: dict[str, Any] = {"now": now, "limit": -1 if limit is None else limit}
        if prefix is None:
            rows = self._conn.execute(SQL_NAMESPACES_ALL, params)
        else:
            rows = self._conn.execute(SQL_NAMESPACES_PREFIX, params | range_params(prefix))
        return [name for (name,) in rows]

    def namespace_counts(
        self, prefix: str | None, *, now: float, limit: int
    ) -> list[tuple[str, int]]:
        """:meth:`namespaces` with each one's count of live, unexpired memories."""
        params: dict[str, Any] = {"now": now, "limit": limit}
        if prefix is None:
            rows = self._conn.execute(SQL_NAMESPACE_COUNTS_ALL, params)
        else:
            rows = self._conn.execute(SQL_NAMESPACE_COUNTS_PREFIX, params | range_params(prefix))
        return [(name, int(count)) for name, count in rows]

    def rows_by_id(self, ids: Sequence[int]) -> list[MemoryRow]:
        """The versions with these row ids (those that exist)."""
        return self._rows(SQL_MEMORIES_BY_ID, (json.dumps(list(ids)),))

    def ids_under(self, prefix: str, *, now: float, type: str | None = None) -> list[int]:
        """Ids of the live, unexpired current versions under ``prefix`` (of ``type``)."""
        params = {**range_params(prefix), "now": now, "type": type}
        return [item for (item,) in self._conn.execute(SQL_IDS_UNDER, params)]

    def ids_matching(self, ids: Sequence[int], metadata: Mapping[str, MetadataValue]) -> set[int]:
        """The ids among ``ids`` whose metadata matches every entry of ``metadata``."""
        match, params = metadata_match(metadata)
        params["ids"] = json.dumps(list(ids))
        return {item for (item,) in self._conn.execute(SQL_IDS_MATCHING + match, params)}

    def current_live(
        self, *, now: float | None = None, ids: Sequence[int] | None = None
    ) -> Iterator[MemoryRow]:
        """Current live versions by id: unexpired at ``now`` if given, among ``ids`` if given."""
        if ids is not None:
            params = {"now": now, "ids": json.dumps(list(ids))}
            yield from self._rows(SQL_CURRENT_LIVE_BY_ID, params)
            return
        cursor = self._conn.execute(SQL_CURRENT_LIVE, {"now": now})
        while rows := list(itertools.islice(cursor, 1000)):
            yield from (MemoryRow(*row) for row in rows)

    def awaiting_vectors(self, prefix: str) -> int:
        """Current live versions under ``prefix`` still waiting for their vector."""
        return scalar_int(self._conn, SQL_AWAITING_VECTORS, range_params(prefix))

    # -- purge -------------------------------------------------------------------

    def versions_under(self, prefix: str | None) -> list[MemoryRow]:
        """Every version (any status, current or not) under ``prefix``; None: all."""
        return self._rows(SQL_PURGE_ROWS, purge_range(prefix))

    def pointing_into(self, prefix: str | None) -> list[MemoryRow]:
        """Versions outside ``prefix`` whose ``superseded_by`` names a memory inside it."""
        return self._rows(SQL_PURGE_POINTING_IN, purge_range(prefix))

    def _cache_in_use(self, purged: set[int]) -> list[int]:
        """Cache rows a vector other than the purged memories' points at."""
        used: set[int] = set()
        for table in _VECTOR_TABLES:
            if table_exists(self._conn, table):
                # Our own constant names; vec0 gives no index on a metadata column.
                for item_id, cache_id in self._conn.execute(
                    f'SELECT item_id, cache_id FROM "{table}"'
                ):
                    if table != _VEC_TABLE or item_id not in purged:
                        used.add(cache_id)
        return sorted(used)

    def _purge_params(
        self, ids: Sequence[int], text_hashes: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        cache = {
            "hashes": json.dumps(sorted(set(text_hashes))),
            "used": json.dumps(self._cache_in_use(set(ids))),
        }
        return {"ids": json.dumps(list(ids))}, cache

    def purge_counts(
        self, prefix: str | None, ids: Sequence[int], text_hashes: Sequence[str]
    ) -> PurgeCounts:
        """What :meth:`erase` would remove besides versions ``ids``."""
        by_id, cache = self._purge_params(ids, text_hashes)
        ranges = purge_range(prefix)
        vector_ids = 0
        if table_exists(self._conn, _VEC_TABLE):
            vector_ids = sum(
                len(
                    self._conn.execute(
                        f'SELECT 1 FROM "{_VEC_TABLE}" WHERE item_id = ?', (i,)
                    ).fetchall()
                )
                for i in ids
            )
        return PurgeCounts(
            keyword_rows=len(self._conn.execute(_SQL_PURGE_FTS_IDS, by_id).fetchall()),
            vectors=vector_ids,
            embedding_jobs=scalar_int(self._conn, "SELECT count(*) " + _SQL_PURGE_JOBS, by_id),
            cached_vectors=scalar_int(self._conn, "SELECT count(*) " + _SQL_PURGE_CACHE, cache),
            archived=scalar_int(self._conn, "SELECT count(*) " + _SQL_PURGE_ARCHIVE, ranges),
            metrics=scalar_int(self._conn, "SELECT count(*) " + _SQL_PURGE_METRICS, ranges),
        )

    def erase(self, prefix: str | None, ids: Sequence[int], text_hashes: Sequence[str]) -> None:
        """Remove versions ``ids`` and what :meth:`purge_counts` counts."""
        by_id, cache = self._purge_params(ids, text_hashes)
        ranges = purge_range(prefix)
        fts_ids = [i for (i,) in self._conn.execute(_SQL_PURGE_FTS_IDS, by_id)]
        for item_id in fts_ids:
            self._conn.execute(_SQL_FTS_DELETE, (item_id,))
        if table_exists(self._conn, _VEC_TABLE):
            for item_id in ids:
                vectors.delete_vector(self._conn, _VEC_TABLE, item_id)
            self._conn.execute(_SQL_PURGE_PENDING, {"table": _VEC_TABLE, **by_id})
        self._conn.execute("DELETE " + _SQL_PURGE_JOBS, by_id)
        self._conn.execute(_SQL_PURGE_DELETE, by_id)
        self._conn.execute("DELETE " + _SQL_PURGE_ARCHIVE, ranges)
        self._conn.execute("DELETE " + _SQL_PURGE_METRICS, ranges)
        self._conn.execute("DELETE " + _SQL_PURGE_CACHE, cache)
        if fts_ids:
            self._conn.execute(_SQL_FTS_OPTIMIZE)

    def unlink(self, item_id: int, *, audit_seq: int) -> None:
        """Clear the ``superseded_by`` of version ``item_id``, now covered by ``audit_seq``."""
        self._conn.execute(_SQL_PURGE_UNPOINT, {"seq": audit_seq, "id": item_id})

    def audit_seqs_in_use(self, seqs: Iterable[int]) -> set[int]:
        """The audit records among ``seqs`` that a stored version still names."""
        params = {"seqs": json.dumps(sorted(seqs))}
        return {int(seq) for (seq,) in self._conn.execute(_SQL_SEQS_IN_USE, params)}
