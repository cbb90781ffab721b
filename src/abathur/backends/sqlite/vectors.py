"""vec0 vector tables and the numpy first pass over their chunks: SQLite's vector index.

* one vec0 table per kind (:func:`create_vector_table`), with

  - ``scope`` as the PARTITION KEY: the first two namespace segments
    (:func:`abathur.search.partition_of`, ``user:alice:prefs`` ->
    ``user:alice``), so one tenant's vectors sit in their own chunks and a
    tenant-scoped search reads only those;
  - ``embedding bit[dims]``: the sign bits of the vector, the binary code of
    the first pass;
  - metadata columns ``type`` (an integer code), ``expires`` (epoch seconds,
    ``inf`` for never) and ``cache_id``, the row of ``embedding_cache`` that
    holds the exact float32 vector.

* :func:`vector_search` ranks every candidate that passes the filters by
  Hamming distance, keeps the best ``k x oversample`` and rescores those
  exactly (cosine on the float vectors). Filters (partition, type, expiry,
  an id set for deeper prefixes and metadata) are applied before the ranking,
  so a filter never starves the result.

  The Hamming ranking is done with numpy over vec0's own chunk storage rather
  than by vec0's KNN: vec0 selects its top k with a cost that grows with
  k x rows (k=200 over 100k rows takes ~20 ms here), while a numpy pass over
  the same chunks takes ~3 ms for any k. Each process keeps a parsed copy of
  the chunks (:class:`_Mirror`, ~80 bytes per vector) and re-reads only the
  chunks whose validity bitmap changed since, which vec0's append-only slots
  make exact. :func:`check_vector_layout` verifies the chunk layout of the
  pinned sqlite-vec when a table is created, and tests/unit/test_search.py
  proves the pass returns what vec0's own KNN returns.

vec0 never reuses the slot of a deleted row... except right after a delete
(see :class:`_Mirror`); :func:`delete_vector` counts the dead rows in
``vector_tables`` and :func:`compact_vector_table` rebuilds a table from its
live rows. These functions take the apsw connection, for the ops kit's own
connections; services reach them through
:class:`~abathur.backends.sqlite.search.SqliteSearchIndex`.

Example:
    >>> from abathur.backends.sqlite.vectors import vector_table_statements
    >>> vector_table_statements("memories_vec", 384, 256)[1]
    'CREATE INDEX "memories_vec_by_partition" ON "memories_vec_chunks" (partition00)'
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw
import numpy as np
from numpy.typing import NDArray

from abathur.backends.sqlite.connection import table_exists
from abathur.errors import SchemaError
from abathur.stores.search import (
    IndexItem,
    VectorFilter,
    VectorTableStats,
    known_vector_table,
)

__all__ = [
    "PENDING_DELETES_MAX",
    "SQL_CHUNKS_OF_PARTITION",
    "SQL_CHUNKS_OF_PARTITION_RANGE",
    "apply_vector_deletes",
    "cached_similarity",
    "check_vector_layout",
    "compact_vector_table",
    "create_vector_table",
    "defer_vector_delete",
    "delete_vector",
    "drop_empty_partition",
    "drop_vector_table",
    "forget_mirrors",
    "insert_vector",
    "vector_candidates",
    "vector_dims",
    "vector_search",
    "vector_table_statements",
    "vector_table_stats",
]

_SEP = ":"
# A predicate over candidate ids, run in the search's transaction.
Accept = Callable[[list[int]], set[int]]


def _execute(conn: apsw.Connection, sql: str, params: apsw.Bindings | None = None) -> Any:
    """``conn.execute``, its rows typed as the schema makes them (the caller knows)."""
    return conn.execute(sql, params)


def vector_dims(conn: apsw.Connection, table: str) -> int | None:
    """The dims of vector table ``table``, or None when it does not exist yet."""
    rows = _execute(conn, "SELECT dims FROM vector_tables WHERE name = ?", (table,)).fetchall()
    return int(rows[0][0]) if rows else None


def cached_similarity(
    conn: apsw.Connection, model: str, query: NDArray[np.float32], hashes: Sequence[str]
) -> dict[str, float]:
    """Cosine similarity of ``query`` with the cached vectors of texts, by content hash.

    For hybrid relevance: an item the keyword side found but the vector side
    did not rank still has its vector in ``embedding_cache`` (or, when not
    embedded yet, is missing from the answer).
    """
    if not hashes:
        return {}
    rows = _execute(
        conn,
        "SELECT content_hash, vector FROM embedding_cache "
        "WHERE model = ? AND content_hash IN (SELECT value FROM json_each(?))",
        (model, json.dumps(sorted(set(hashes)))),
    ).fetchall()
    target = np.asarray(query, dtype=np.float64)
    target_norm = float(np.linalg.norm(target)) or 1.0
    out: dict[str, float] = {}
    for text_hash, blob in rows:
        vector = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        if vector.shape != target.shape:
            continue
        norm = float(np.linalg.norm(vector)) or 1.0
        out[text_hash] = float(vector @ target) / (norm * target_norm)
    return out


# Names are our own constants (IndexKind.vec_table), never from a caller.
_SQL_CREATE_VECTOR_TABLE = (
    'CREATE VIRTUAL TABLE "{table}" USING vec0('
    "item_id INTEGER PRIMARY KEY, "
    "scope TEXT PARTITION KEY, "
    "embedding BIT[{dims}], "
    "type INTEGER, "
    "expires FLOAT, "
    "cache_id INTEGER, "
    "chunk_size={chunk_size})"
)
# vec0 finds a partition's chunks with 'WHERE partition00 = ?' on its chunks
# table, which has no index: without this one every insert and every scoped
# search scans all chunks (4 minutes to insert 100k rows over 10k tenants).
_SQL_PARTITION_INDEX = 'CREATE INDEX "{table}_by_partition" ON "{table}_chunks" (partition00)'

_SQL_INSERT_FROM_CACHE = (
    'INSERT INTO "{table}" (item_id, scope, embedding, type, expires, cache_id) '
    "SELECT ?, ?, vec_quantize_binary(vector), ?, ?, id FROM embedding_cache "
    "WHERE model = ? AND content_hash = ?"
)
_SQL_DELETE = 'DELETE FROM "{table}" WHERE item_id = ?'
_SQL_COUNT_DEAD = "UPDATE vector_tables SET dead_rows = dead_rows + 1 WHERE name = ?"

# The shadow tables and columns the first pass reads, as sqlite-vec 0.1.9 makes them.
_LAYOUT = {
    "{table}_chunks": {"chunk_id", "size", "partition00", "validity", "rowids"},
    "{table}_vector_chunks00": {"rowid", "vectors"},
    "{table}_metadatachunks00": {"rowid", "data"},
    "{table}_metadatachunks01": {"rowid", "data"},
    "{table}_metadatachunks02": {"rowid", "data"},
}


def vector_table_statements(table: str, dims: int, chunk_size: int) -> list[str]:
    """The statements that create ``table`` (a vec0 table and its partition index)."""
    table = known_vector_table(table)
    return [
        _SQL_CREATE_VECTOR_TABLE.format(table=table, dims=int(dims), chunk_size=int(chunk_size)),
        _SQL_PARTITION_INDEX.format(table=table),
    ]


def create_vector_table(
    conn: apsw.Connection, table: str, kind: str, dims: int, chunk_size: int, *, now: float
) -> None:
    """Create vec0 table ``table`` of items of ``kind`` (if missing) and register it."""
    if table_exists(conn, table):
        return
    for statement in vector_table_statements(table, dims, chunk_size):
        _execute(conn, statement)
    check_vector_layout(conn, table)
    _execute(
        conn,
        "INSERT INTO vector_tables (name, kind, dims, chunk_size, generation, dead_rows, "
        "created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
        (table, kind, dims, chunk_size, secrets.randbits(62), now),
    )


def drop_vector_table(conn: apsw.Connection, table: str) -> None:
    """Drop vec0 table ``table`` (its shadow tables go with it) and unregister it."""
    table = known_vector_table(table)
    _execute(conn, f'DROP TABLE IF EXISTS "{table}"')
    _execute(conn, "DELETE FROM vector_tables WHERE name = ?", (table,))
    _execute(conn, "DELETE FROM vector_deletes WHERE vec_table = ?", (table,))


def check_vector_layout(conn: apsw.Connection, table: str) -> None:
    """Assert vec0's shadow tables look as the first pass expects.

    Raises:
        SchemaError: a table or column is missing (another sqlite-vec version).
    """
    for pattern, wanted in _LAYOUT.items():
        name = pattern.format(table=table)
        # PRAGMA table_info takes no placeholder; the name is our own.
        have = {row[1] for row in _execute(conn, f'PRAGMA main.table_info("{name}")')}
        if not wanted <= have:
            raise SchemaError(
                f"vector table {table!r}: shadow table {name!r} lacks {sorted(wanted - have)}; "
                "this abathur reads sqlite-vec 0.1.9's storage layout: install the pinned "
                "sqlite-vec, or run `abathur reindex` to rebuild the table"
            )


def insert_vector(
    conn: apsw.Connection, table: str, item: IndexItem, *, model: str, content_hash: str
) -> bool:
    """Add ``item``'s vector from ``embedding_cache``; False if the cache has none yet."""
    # An id can come back (rows archived at the top of a table): settle its old
    # vector first, or the insert would collide with it.
    _execute(conn, SQL_PENDING_DELETE_DONE, (table, item.id))
    if conn.changes():
        delete_vector(conn, table, item.id)
    _execute(
        conn,
        _SQL_INSERT_FROM_CACHE.format(table=table),
        (item.id, item.scope, item.type_code, float(item.expires), model, content_hash),
    )
    return conn.changes() > 0


def delete_vector(conn: apsw.Connection, table: str, item_id: int) -> bool:
    """Remove an item's vector now (if it has one); count the slot vec0 leaves dead."""
    _execute(conn, _SQL_DELETE.format(table=table), (item_id,))
    if conn.changes() == 0:
        return False
    _execute(conn, _SQL_COUNT_DEAD, (table,))
    return True


# Pending deletes (vector_deletes): writes note them, search skips them, the
# worker (or a write, past PENDING_DELETES_MAX) applies them in bulk.
PENDING_DELETES_MAX = 256
SQL_PENDING_DELETE = (
    "INSERT INTO vector_deletes (vec_table, item_id) VALUES (?, ?) "
    "ON CONFLICT (vec_table, item_id) DO NOTHING"
)
SQL_PENDING_DELETE_DONE = "DELETE FROM vector_deletes WHERE vec_table = ? AND item_id = ?"
SQL_PENDING_IDS = "SELECT item_id FROM vector_deletes WHERE vec_table = ?"


def defer_vector_delete(conn: apsw.Connection, table: str, item_id: int) -> None:
    """Note that ``item_id``'s vector must go; search skips it from now on.

    A delete in vec0 costs ~130 µs inside a write but ~40 µs in a batch, so
    writes defer it. Past :data:`PENDING_DELETES_MAX` pending ids (no worker
    running) the write applies them all, so the list search reads stays short.
    """
    _execute(conn, SQL_PENDING_DELETE, (table, item_id))
    (pending,) = _execute(
        conn, "SELECT count(*) FROM vector_deletes WHERE vec_table = ?", (table,)
    ).fetchall()[0]
    if pending > PENDING_DELETES_MAX:
        apply_vector_deletes(conn, table)


def apply_vector_deletes(conn: apsw.Connection, table: str | None = None) -> int:
    """Delete the pending vectors of ``table`` (all tables if None); return how many."""
    if table is None:
        rows = _execute(conn, "SELECT vec_table, item_id FROM vector_deletes").fetchall()
    else:
        rows = [(table, i) for (i,) in _execute(conn, SQL_PENDING_IDS, (table,)).fetchall()]
    for name, item_id in rows:
        if table_exists(conn, name):
            delete_vector(conn, name, item_id)
        _execute(conn, SQL_PENDING_DELETE_DONE, (name, item_id))
    return len(rows)


def vector_table_stats(conn: apsw.Connection) -> list[VectorTableStats]:
    """Every registered vector table with its row counts."""
    stats = []
    for name, kind, dims, dead in _execute(
        conn, "SELECT name, kind, dims, dead_rows FROM vector_tables ORDER BY name"
    ).fetchall():
        # vec0 keeps one row per stored vector in its rowids shadow table.
        table = known_vector_table(name)
        (stored,) = _execute(conn, f'SELECT count(*) FROM "{table}_rowids"').fetchall()[0]
        (pending,) = _execute(
            conn, "SELECT count(*) FROM vector_deletes WHERE vec_table = ?", (name,)
        ).fetchall()[0]
        stats.append(VectorTableStats(name, kind, dims, stored - pending, dead, pending))
    return stats


def drop_empty_partition(conn: apsw.Connection, table: str, partition: str, *, dead: int) -> int:
    """Reclaim a partition known to be gone for good (a smoke run's own, after its purge).

    vec0 (0.1.9) drops a chunk with its last vector, but :func:`delete_vector`
    counted each of its slots in ``vector_tables.dead_rows``, which only
    compaction resets. Here, once no slot of ``partition`` holds a vector,
    any chunk of it still stored is deleted with its blobs, ``dead`` (the
    deletes counted for the partition) is taken off ``dead_rows``, and the
    table gets a new ``generation``, so every process re-reads its chunks
    rather than trust a dead-row count that went down. Runs in the caller's
    write transaction. Returns the chunks deleted here; with a vector still
    in the partition it changes nothing and returns 0.
    """
    table = known_vector_table(table)
    rows = _execute(conn, SQL_CHUNKS_OF_PARTITION.format(table=table), (partition,)).fetchall()
    if any(any(valid) for _, _, valid in rows):
        return 0
    ids = json.dumps([chunk_id for chunk_id, _, _ in rows])
    (pointing,) = _execute(
        conn,
        f'SELECT count(*) FROM "{table}_rowids" WHERE chunk_id IN (SELECT value FROM json_each(?))',
        (ids,),
    ).fetchall()[0]
    if pointing:
        return 0
    for shadow in ("vector_chunks00", "metadatachunks00", "metadatachunks01", "metadatachunks02"):
        _execute(
            conn,
            f'DELETE FROM "{table}_{shadow}" WHERE rowid IN (SELECT value FROM json_each(?))',
            (ids,),
        )
    _execute(
        conn,
        f'DELETE FROM "{table}_chunks" WHERE chunk_id IN (SELECT value FROM json_each(?))',
        (ids,),
    )
    if dead > 0:
        _execute(
            conn,
            "UPDATE vector_tables SET dead_rows = max(0, dead_rows - ?), generation = ? "
            "WHERE name = ?",
            (int(dead), secrets.randbits(62), table),
        )
    return len(rows)


def compact_vector_table(conn: apsw.Connection, table: str, kind: str, chunk_size: int) -> int:
    """Rebuild vec0 table ``table`` (of items of ``kind``) from its live rows, reclaiming
    dead slots.

    The binary codes are re-derived from ``embedding_cache``; nothing is
    re-embedded. Runs in the caller's write transaction. Returns the live rows.
    """
    table = known_vector_table(table)
    apply_vector_deletes(conn, table)
    (dims,) = _execute(conn, "SELECT dims FROM vector_tables WHERE name = ?", (table,)).fetchall()[
        0
    ]
    created = _execute(
        conn, "SELECT created_at FROM vector_tables WHERE name = ?", (table,)
    ).fetchall()[0][0]
    _execute(
        conn,
        "CREATE TEMP TABLE abathur_compact AS "
        f'SELECT item_id, scope, type, expires, cache_id FROM "{table}"',
    )
    try:
        drop_vector_table(conn, table)
        create_vector_table(conn, table, kind, dims, chunk_size, now=created)
        rows = _execute(
            conn,
            "SELECT k.item_id, k.scope, c.vector, k.type, k.expires, k.cache_id "
            "FROM temp.abathur_compact AS k JOIN embedding_cache AS c ON c.id = k.cache_id "
            "ORDER BY k.scope, k.item_id",
        )
        # Row by row: a multi-row INSERT ... SELECT loses the bit subtype of
        # vec_quantize_binary on the way through the sorter.
        conn.executemany(
            f'INSERT INTO "{table}" (item_id, scope, embedding, type, expires, cache_id) '
            "VALUES (?, ?, vec_quantize_binary(?), ?, ?, ?)",
            rows,
        )
        (live,) = _execute(conn, f'SELECT count(*) FROM "{table}_rowids"').fetchall()[0]
    finally:
        _execute(conn, "DROP TABLE IF EXISTS temp.abathur_compact")
    return int(live)


class _Mirror:
    """Parsed copies of one vec0 table's chunks, kept per process and refreshed per chunk.

    Copying every chunk's blobs out of SQLite costs ~12 ms per query at 100k
    vectors, more than the ranking itself. So each query reads only the
    chunks' validity bitmaps (a few bytes each) and re-parses the chunks whose
    bitmap changed. That alone is not enough: after a delete, vec0 may reuse
    the freed slot for the next insert, leaving the bitmap as it was (found by
    the LangGraph adapter's tests: rowids [1, 2] -> [3, 2], bitmap 03 both
    times). Every vec0 delete bumps ``vector_tables.dead_rows`` (in the same
    transaction), so a chunk last checked at an older count has its rowids and
    cache ids (two small blobs) compared with what we parsed, and is
    re-parsed if they differ. A rebuilt table has a new ``generation`` and a
    new mirror.
    """

    def __init__(self, generation: int, width: int, size: int) -> None:
        self.generation, self.width, self.size = generation, width, size
        self.block: dict[int, int] = {}  # chunk_id -> row of the arrays below
        self.validity: dict[int, bytes] = {}  # chunk_id -> the bitmap its block was parsed from
        self.checked: dict[int, int] = {}  # chunk_id -> dead_rows when its slots were last checked
        self.count = 0
        self._grow(64)

    ids: np.ndarray  # (blocks, size) item ids, 0 in empty slots
    codes: np.ndarray  # (blocks, size, width) binary codes
    types: np.ndarray
    expires: np.ndarray
    cache_ids: np.ndarray
    valid: np.ndarray  # (blocks, size) bool

    def _grow(self, capacity: int) -> None:
        size, width = self.size, self.width
        layout = {
            "ids": ((size,), np.int64),
            "codes": ((size, width), np.uint8),
            "types": ((size,), np.int64),
            "expires": ((size,), np.float64),
            "cache_ids": ((size,), np.int64),
            "valid": ((size,), np.bool_),
        }
        for name, (shape, dtype) in layout.items():
            grown: np.ndarray = np.zeros((capacity, *shape), dtype=dtype)
            if self.count:
                grown[: self.count] = getattr(self, name)[: self.count]
            setattr(self, name, grown)

    def refresh(
        self, conn: apsw.Connection, table: str, chunks: list[tuple[int, bytes]], dead_rows: int
    ) -> None:
        """Re-parse the chunks whose bitmap changed, or whose slots were reused since last seen."""
        stale = {chunk_id for chunk_id, valid in chunks if self.validity.get(chunk_id) != valid}
        unchecked = [
            chunk_id
            for chunk_id, _ in chunks
            if chunk_id not in stale and self.checked.get(chunk_id) != dead_rows
        ]
        if unchecked:
            size = self.size
            for chunk_id, rowids, cache_ids in _execute(
                conn, SQL_CHUNK_SLOTS.format(table=table), (json.dumps(unchecked),)
            ):
                block = self.block[chunk_id]
                if np.array_equal(
                    np.frombuffer(rowids, dtype="<i8", count=size), self.ids[block]
                ) and np.array_equal(
                    np.frombuffer(cache_ids, dtype="<i8", count=size), self.cache_ids[block]
                ):
                    self.checked[chunk_id] = dead_rows
                else:
                    stale.add(chunk_id)
        if not stale:
            return
        rows = _execute(
            conn, SQL_CHUNK_BLOBS.format(table=table), (json.dumps(sorted(stale)),)
        ).fetchall()
        size, width = self.size, self.width
        for chunk_id, valid, ids, codes, types, expires, cache_ids in rows:
            found = self.block.get(chunk_id)
            if found is None:
                if self.count == len(self.ids):
                    self._grow(2 * self.count)
                found = self.block[chunk_id] = self.count
                self.count += 1
            block = found
            self.valid[block] = np.unpackbits(
                np.frombuffer(valid, dtype=np.uint8), bitorder="little"
            )[:size].astype(bool)
            self.ids[block] = np.frombuffer(ids, dtype="<i8", count=size)
            self.codes[block] = np.frombuffer(codes, dtype=np.uint8, count=size * width).reshape(
                size, width
            )
            self.types[block] = np.frombuffer(types, dtype="<i8", count=size)
            self.expires[block] = np.frombuffer(expires, dtype="<f8", count=size)
            self.cache_ids[block] = np.frombuffer(cache_ids, dtype="<i8", count=size)
            self.validity[chunk_id] = valid
            self.checked[chunk_id] = dead_rows


_MIRRORS: dict[tuple[str, str], _Mirror] = {}
# Reader threads search concurrently; a mirror is refreshed and read under this.
_MIRRORS_LOCK = threading.Lock()


def forget_mirrors(path: str | Path) -> None:
    """Drop this process's parsed chunks of the database at ``path`` (on close)."""
    target = os.path.realpath(path)
    with _MIRRORS_LOCK:
        for key in [key for key in _MIRRORS if os.path.realpath(key[0]) == target]:
            del _MIRRORS[key]


_SQL_CHUNK_LIST = 'SELECT chunk_id, partition00, validity FROM "{table}_chunks"'
SQL_CHUNKS_OF_PARTITION = _SQL_CHUNK_LIST + " WHERE partition00 = ?"
# A one-segment prefix: its own partition and every 'prefix:...' one. The range
# also holds 'prefix!x' and the like; those chunks are skipped in Python.
SQL_CHUNKS_OF_PARTITION_RANGE = _SQL_CHUNK_LIST + " WHERE partition00 >= ? AND partition00 < ?"
# The blobs of the chunks to parse. _rowid_ (the real rowid, which vec0 uses
# for blob I/O), not the declared "rowid" column, keeps the joins on the key.
SQL_CHUNK_BLOBS = (
    "SELECT c.chunk_id, c.validity, c.rowids, v.vectors, t.data, e.data, ca.data "
    'FROM "{table}_chunks" AS c '
    'JOIN "{table}_vector_chunks00" AS v ON v._rowid_ = c.chunk_id '
    'JOIN "{table}_metadatachunks00" AS t ON t._rowid_ = c.chunk_id '
    'JOIN "{table}_metadatachunks01" AS e ON e._rowid_ = c.chunk_id '
    'JOIN "{table}_metadatachunks02" AS ca ON ca._rowid_ = c.chunk_id '
    "WHERE c.chunk_id IN (SELECT value FROM json_each(?))"
)
# Just the slots' item ids and cache ids: enough to see whether a slot was reused.
SQL_CHUNK_SLOTS = (
    "SELECT c.chunk_id, c.rowids, ca.data "
    'FROM "{table}_chunks" AS c '
    'JOIN "{table}_metadatachunks02" AS ca ON ca._rowid_ = c.chunk_id '
    "WHERE c.chunk_id IN (SELECT value FROM json_each(?))"
)


def vector_candidates(
    conn: apsw.Connection, table: str, query_bits: bytes, n: int, where: VectorFilter
) -> list[tuple[int, int]]:
    """The ``n`` items nearest to ``query_bits`` by Hamming distance, nearest first.

    Ranks every row of the partitions in scope that passes ``where`` (valid
    slot, not pending deletion, unexpired, type, allowed ids), reading the
    vec0 chunks through the process's mirror of them. With ``where.accept``
    the rows are then walked in rank order: the first window is ``4 x n``
    rows, and each next one is sized from the share accepted so far, until
    ``n`` are accepted or every row was asked about.

    Returns:
        ``(item_id, cache_id)`` pairs.
    """
    if where.allowed_ids is not None and len(where.allowed_ids) == 0:
        return []
    ((generation, dims, chunk_size, dead_rows),) = _execute(
        conn,
        "SELECT generation, dims, chunk_size, dead_rows FROM vector_tables WHERE name = ?",
        (table,),
    ).fetchall()
    if where.partition is not None:
        listed = _execute(conn, SQL_CHUNKS_OF_PARTITION.format(table=table), (where.partition,))
    else:
        prefix = where.partition_prefix
        sql = _SQL_CHUNK_LIST if prefix is None else SQL_CHUNKS_OF_PARTITION_RANGE
        params = () if prefix is None else (prefix, prefix + chr(ord(_SEP) + 1))
        listed = _execute(conn, sql.format(table=table), params)
    prefix = where.partition_prefix
    chunks = [
        (chunk_id, valid)
        for chunk_id, partition, valid in listed
        if prefix is None or partition == prefix or partition.startswith(prefix + _SEP)
    ]
    pending = [item_id for (item_id,) in _execute(conn, SQL_PENDING_IDS, (table,))]
    if not chunks:
        return []
    with _MIRRORS_LOCK:
        key = (conn.filename, table)
        mirror = _MIRRORS.get(key)
        if mirror is None or mirror.generation != generation:
            mirror = _MIRRORS[key] = _Mirror(generation, dims // 8, chunk_size)
        mirror.refresh(conn, table, chunks, dead_rows)
        ids, cache_ids, rows, distance = _distances(
            mirror, [mirror.block[c] for c, _ in chunks], query_bits, where, pending
        )
        if where.accept is None:
            chosen = rows[_nearest(distance, lambda at: ids[rows[at]], n)]
            return list(zip(ids[chosen].tolist(), cache_ids[chosen].tolist(), strict=True))
        # Copies, so the walk may run SQL without holding the lock.
        ids, cache_ids = ids[rows], cache_ids[rows]
    if ids.size == 0:
        return []
    chosen = _walk_accepted(ids, distance, n, where.accept)
    return list(zip(ids[chosen].tolist(), cache_ids[chosen].tolist(), strict=True))


def _distances(
    mirror: _Mirror,
    blocks: list[int],
    query_bits: bytes,
    where: VectorFilter,
    pending: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hamming distances of the slots of ``blocks`` that pass ``where``.

    Returns:
        ``(ids, cache_ids, rows, distance)``: the slots' item and cache ids
        (views of the mirror when every block is in scope), the positions of
        the slots that pass, and their distances.
    """
    if len(blocks) == mirror.count:
        # Every chunk (blocks are distinct): views, no copies; order does not matter.
        pick: slice | np.ndarray = slice(0, mirror.count)
    else:
        pick = np.asarray(blocks)
    width = mirror.width
    ids = mirror.ids[pick].reshape(-1)
    cache_ids = mirror.cache_ids[pick].reshape(-1)
    keep = mirror.valid[pick].reshape(-1) & (mirror.expires[pick].reshape(-1) > where.now)
    if where.type_code is not None:
        keep &= mirror.types[pick].reshape(-1) == where.type_code
    if where.allowed_ids is not None:
        keep &= np.isin(ids, np.asarray(where.allowed_ids, dtype=np.int64))
    if pending:
        keep &= ~np.isin(ids, np.asarray(pending, dtype=np.int64))
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return ids, cache_ids, rows, np.zeros(0, dtype=np.uint16)
    codes = mirror.codes[pick].reshape(-1, width)
    # Most slots left: rank them all and skip the gather copy; otherwise copy the
    # rows out first (measured break-even: ~60% of the slots).
    whole = rows.size * 5 > ids.size * 3
    codes = codes if whole else codes[rows]
    query = np.frombuffer(query_bits, dtype=np.uint8)
    if width % 8 == 0:
        # Eight bytes at a time: one popcount per 64 bits.
        codes, query = codes.view(np.uint64), query.view(np.uint64)
    counts = np.bitwise_count(codes ^ query)
    # Adding columns beats counts.sum(axis=1) several times over on 100k rows.
    distance = counts[:, 0].astype(np.uint16)
    for column in range(1, counts.shape[1]):
        distance += counts[:, column]
    if whole:
        distance = distance[rows]
    return ids, cache_ids, rows, distance


def _nearest(
    distance: np.ndarray, ids_at: Callable[[np.ndarray], np.ndarray], count: int
) -> np.ndarray:
    """Positions of the ``count`` smallest distances, nearest first, ties by smaller id.

    Everything at the cut-off distance is sorted, not an arbitrary part of it,
    so the answer is deterministic and the nearest ``m`` for any ``m < count``
    are its first ``m`` (the windows of :func:`_walk_accepted` rely on it).
    """
    if count < distance.size:
        cut = np.partition(distance, count - 1)[count - 1]
        near = np.flatnonzero(distance <= cut)
    else:
        near = np.arange(distance.size)
    return near[np.lexsort((ids_at(near), distance[near]))][:count]


def _walk_accepted(ids: np.ndarray, distance: np.ndarray, n: int, accept: Accept) -> np.ndarray:
    """The first ``n`` rows, nearest first, that ``accept`` passes, asking window by window."""
    chosen: list[np.ndarray] = []
    found = asked = 0
    window = min(distance.size, 4 * n)
    while True:
        batch = _nearest(distance, ids.__getitem__, window)[asked:]
        passed = accept(ids[batch].tolist())
        chosen.append(batch[np.isin(ids[batch], np.fromiter(passed, np.int64, len(passed)))])
        found += chosen[-1].size
        asked = window
        if found >= n or asked == distance.size:
            break
        # Size the next window from the share accepted so far (with a margin),
        # at least doubling, so a rare filter reaches every row in a few rounds.
        share = max(found, 1) / asked
        window = min(distance.size, max(2 * asked, asked + int(1.5 * (n - found) / share)))
    return np.concatenate(chosen)[:n]


def vector_search(
    conn: apsw.Connection,
    table: str,
    query: np.ndarray,
    *,
    n: int,
    candidates: int,
    where: VectorFilter,
) -> list[tuple[int, float]]:
    """The ``n`` items most similar to ``query`` (cosine), best first.

    A binary first pass keeps ``candidates`` items (:func:`vector_candidates`),
    whose exact float32 vectors are then read from ``embedding_cache`` and
    rescored. Runs inside the caller's read transaction.

    Args:
        conn: a connection in a read (or write) transaction.
        table: the kind's vec0 table.
        query: the query vector (float32, the table's dims).
        n: results wanted.
        candidates: first-pass size (>= n); more is slower and closer to exact.
        where: the filters.

    Returns:
        ``(item_id, cosine similarity)`` pairs, best first, ties by smaller id.
    """
    query = np.asarray(query, dtype=np.float32)
    ((bits,),) = _execute(conn, "SELECT vec_quantize_binary(?)", (query.tobytes(),)).fetchall()
    found = vector_candidates(conn, table, bits, max(n, candidates), where)
    if not found:
        return []
    cache_ids = sorted({cache_id for _, cache_id in found})
    rows = _execute(
        conn,
        "SELECT id, vector FROM embedding_cache WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(cache_ids),),
    ).fetchall()
    position = {cache_id: i for i, (cache_id, _) in enumerate(rows)}
    matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4").reshape(len(rows), -1)
    matrix = matrix.astype(np.float64)
    target = query.astype(np.float64)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(target) or 1.0)
    similarity = (matrix @ target) / np.where(norms == 0, 1.0, norms)
    scored = [
        (item_id, float(similarity[position[cache_id]]))
        for item_id, cache_id in found
        if cache_id in position
    ]
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored[:n]
