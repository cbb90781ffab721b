"""SQLite's :class:`~abathur.stores.search.SearchIndex`: FTS5 for keywords, vec0 for vectors.

**Keyword.** ``memories_fts`` (migration 003) is a contentless FTS5 table
with columns ``key``, ``text`` and ``scope``, tokenized ``porter unicode61
remove_diacritics 2``. Words reach FTS5 only through :func:`fts_match`,
which quotes every term (``"AND"``, ``*``, ``NEAR(`` are words, never
syntax). A namespace prefix is itself an FTS term: the ``scope`` column holds
:func:`scope_tokens` of the item's namespace, one digits-only token per
prefix, and :func:`scope_match` names the one for the prefix searched, so
FTS5 intersects postings instead of ranking every tenant's matches.

**Vector.** vec0 tables and a numpy first pass over their chunks:
:mod:`abathur.backends.sqlite.vectors`.

Example:
    >>> from abathur.backends.sqlite.search import fts_match, scope_token, scope_tokens
    >>> fts_match(["tea", "NEAR(x"], columns=("key", "text"))
    '{key text} : ("tea" OR "NEAR(x")'
    >>> scope_tokens("a:b").split() == [scope_token("a"), scope_token("a:b")]
    True
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apsw
import numpy as np
from numpy.typing import NDArray

from abathur.backends.ranges import range_params
from abathur.backends.sqlite import vectors
from abathur.backends.sqlite.connection import table_exists
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.memories import metadata_match
from abathur.stores.memories import MetadataValue
from abathur.stores.search import (
    IndexItem,
    MemoryText,
    VectorFilter,
    VectorIndexState,
    VectorTableStats,
    known_vector_table,
)

__all__ = [
    "SQL_CHUNK_KEYWORD_SEARCH",
    "SQL_FTS_DELETE",
    "SQL_FTS_INSERT",
    "SQL_INDEX_STATE",
    "SQL_KEYWORD_SEARCH",
    "SqliteSearchIndex",
    "chunk_keyword_params",
    "fts_match",
    "keyword_params",
    "scope_match",
    "scope_token",
    "scope_tokens",
]

_SEP = ":"

# The FTS5 tokenizer of memories_fts and chunks_fts (migrations 003, 004):
# keyword relevance must see words exactly as the index does.
_TOKENIZER = ("porter", ["unicode61", "remove_diacritics", "2"])

SQL_FTS_INSERT = "INSERT INTO memories_fts (rowid, key, text, scope) VALUES (?, ?, ?, ?)"
SQL_FTS_DELETE = "DELETE FROM memories_fts WHERE rowid = ?"
_SQL_FTS_DELETE_ALL = "INSERT INTO memories_fts (memories_fts) VALUES ('delete-all')"
# Written once memories_fts holds every current live memory (abathur.memory.build_keyword_index).
_SQL_FTS_BUILT = "SELECT 1 FROM meta WHERE key = 'search.memories_fts'"
_SQL_FTS_MARK_BUILT = (
    "INSERT INTO meta (key, value) VALUES ('search.memories_fts', 'built') "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# Per write: the recorded embedder, and whether the vector table exists yet
# (meta's primary key, then vector_tables' primary key).
SQL_INDEX_STATE = (
    "SELECT (SELECT value FROM meta WHERE key = 'embedder.name'), "
    "EXISTS (SELECT 1 FROM vector_tables WHERE name = :table)"
)

# memory.search, keyword ranking: FTS5 finds the prefix (scope_match) and the
# words, the join keeps live, unexpired current versions of the right type and
# metadata (the primary key of memories per match). No window: every match
# passing the filters is ranked. A metadata filter adds one metadata_match
# group per entry before the end.
_SQL_KEYWORD_WHERE = (
    "SELECT m.id, -bm25(memories_fts, 1.0, 1.0, 0.0) AS score "
    "FROM memories_fts JOIN memories AS m ON m.id = memories_fts.rowid "
    "WHERE memories_fts MATCH :match AND m.is_current = 1 AND m.status = 'live' "
    "AND (m.expires_at IS NULL OR m.expires_at > :now) "
    "AND m.namespace >= :prefix AND m.namespace < :after "
    "AND (m.namespace = :prefix OR m.namespace >= :below) "
    "AND (:type IS NULL OR m.type = :type)"
)
_SQL_KEYWORD_END = " ORDER BY score DESC, m.id LIMIT :limit"
SQL_KEYWORD_SEARCH = _SQL_KEYWORD_WHERE + _SQL_KEYWORD_END

# documents.search, keyword ranking: FTS5 finds the words, the joins apply the
# root and path-prefix filters; no window, every match passing them is ranked.
# The heading counts twice: it names what the chunk is about. ':upper' is the
# prefix + '0' ('0' is the character after '/'). See chunk_keyword_params.
SQL_CHUNK_KEYWORD_SEARCH = (
    "SELECT c.id, -bm25(chunks_fts, 2.0, 1.0) AS score "
    "FROM chunks_fts JOIN chunks AS c ON c.id = chunks_fts.rowid "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE chunks_fts MATCH :match AND (:root_id IS NULL OR d.root_id = :root_id) "
    "AND (:prefix IS NULL OR d.path = :prefix OR (d.path >= :lower AND d.path < :upper)) "
    "ORDER BY score DESC, c.id LIMIT :limit"
)

# Every registered vector table (vector_tables' primary key).
SQL_VECTOR_TABLE_NAMES = "SELECT name FROM vector_tables"


def fts_match(words: Sequence[str], *, columns: Sequence[str] = ()) -> str | None:
    """The FTS5 query of ``words``: every word quoted (``"`` doubled), words ORed.

    ``columns`` restricts the words to these FTS columns (our own names).
    ``None`` when there is no word: search nothing.
    """
    terms = ['"' + word.replace('"', '""') + '"' for word in words]
    if not terms:
        return None
    expression = " OR ".join(terms)
    if columns:
        expression = "{" + " ".join(columns) + "} : (" + expression + ")"
    return expression


def scope_token(prefix: str) -> str:
    """The FTS token standing for one namespace prefix: 19-20 decimal digits.

    Digits only, so neither the porter stemmer nor case folding changes it.

    Example:
        >>> from abathur.backends.sqlite.search import scope_token
        >>> scope_token("user:alice").isdigit()
        True
    """
    digest = hashlib.blake2b(prefix.encode("utf-8"), digest_size=8).digest()
    # Ten or more digits, so a token never looks like a small number a user might type.
    return str(int.from_bytes(digest, "big") | (1 << 63))


def scope_tokens(namespace: str) -> str:
    """The ``scope`` column text of an item in ``namespace``: a token per prefix."""
    segments = namespace.split(_SEP)
    return " ".join(scope_token(_SEP.join(segments[: i + 1])) for i in range(len(segments)))


def scope_match(prefix: str) -> str:
    """The FTS5 term that keeps items in ``prefix`` or below it (whole segments).

    Example:
        >>> from abathur.backends.sqlite.search import scope_match, scope_token
        >>> scope_match("user:al") == f'scope : "{scope_token("user:al")}"'
        True
    """
    return f'scope : "{scope_token(prefix)}"'


def keyword_params(
    words: Sequence[str],
    prefix: str,
    *,
    now: float,
    type: str | None = None,
    limit: int = 10,
) -> dict[str, Any] | None:
    """The parameters :data:`SQL_KEYWORD_SEARCH` binds (no metadata filter); None: no word.

    So a test can ``EXPLAIN QUERY PLAN`` the exact keyword query that ships.

    Example:
        >>> from abathur.backends.sqlite.search import keyword_params
        >>> keyword_params(["tea", "time"], "user:al", now=0.0)["match"][:18]
        '{key text} : ("tea'
    """
    words_match = fts_match(words, columns=("key", "text"))
    if words_match is None:
        return None
    return {
        "match": f"{words_match} AND {scope_match(prefix)}",
        "now": now,
        **range_params(prefix),
        "type": type,
        "limit": limit,
    }


def tokens(conn: apsw.Connection, text: str) -> set[str]:
    """The tokens the keyword index makes of ``text``."""
    tokenizer = conn.fts5_tokenizer(*_TOKENIZER)
    found = tokenizer(
        text.encode("utf-8"),
        apsw.FTS5_TOKENIZE_DOCUMENT,
        None,
        include_offsets=False,
        include_colocated=False,
    )
    return {token for token in found if isinstance(token, str)}


def chunk_keyword_params(
    words: Sequence[str], *, root_id: int | None, path_prefix: str | None, limit: int
) -> dict[str, Any] | None:
    """The parameters :data:`SQL_CHUNK_KEYWORD_SEARCH` binds; None: no word.

    So a test can ``EXPLAIN QUERY PLAN`` the exact keyword query that ships.

    Example:
        >>> from abathur.backends.sqlite.search import chunk_keyword_params
        >>> params = chunk_keyword_params(
        ...     ["restore", "backup"], root_id=None, path_prefix="runbooks", limit=3)
        >>> params["match"], params["lower"], params["upper"]
        ('"restore" OR "backup"', 'runbooks/', 'runbooks0')
    """
    match = fts_match(words)
    if match is None:
        return None
    return {
        "match": match,
        "root_id": root_id,
        "prefix": path_prefix,
        "lower": None if path_prefix is None else path_prefix + "/",
        "upper": None if path_prefix is None else path_prefix + "0",
        "limit": limit,
    }


class SqliteSearchIndex:
    """:class:`~abathur.stores.search.SearchIndex` on one apsw connection, in its transaction."""

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    # -- keyword index of memories -------------------------------------------

    def add_memory_text(self, item: MemoryText) -> None:
        """Index one memory version's words and namespace."""
        self._conn.execute(
            SQL_FTS_INSERT, (item.id, item.key, item.text, scope_tokens(item.namespace))
        )

    def remove_memory_text(self, item_id: int) -> None:
        """Take one memory version out of the keyword index."""
        self._conn.execute(SQL_FTS_DELETE, (item_id,))

    def rebuild_memory_text(self, items: Iterable[MemoryText]) -> int:
        """Replace the keyword index of memories with ``items``; return how many."""
        self._conn.execute(_SQL_FTS_DELETE_ALL)
        count = 0
        found = iter(items)
        while batch := list(itertools.islice(found, 1000)):
            self._conn.executemany(
                SQL_FTS_INSERT,
                [(i.id, i.key, i.text, scope_tokens(i.namespace)) for i in batch],
            )
            count += len(batch)
        self._conn.execute(_SQL_FTS_MARK_BUILT)
        return count

    def memory_text_built(self) -> bool:
        """True once the keyword index of memories was built for this file."""
        return bool(self._conn.execute(_SQL_FTS_BUILT).fetchall())

    def memory_keyword_ranking(
        self,
        words: Sequence[str],
        prefix: str,
        *,
        now: float,
        type: str | None,
        metadata: Mapping[str, MetadataValue],
        limit: int,
    ) -> list[tuple[int, float]]:
        """Live, unexpired current memories under ``prefix`` matching any word, best first."""
        params = keyword_params(words, prefix, now=now, type=type, limit=limit)
        if params is None:
            return []
        match, match_params = metadata_match(metadata)
        sql = _SQL_KEYWORD_WHERE + match + _SQL_KEYWORD_END
        return [(int(i), float(s)) for i, s in self._conn.execute(sql, params | match_params)]

    def chunk_keyword_ranking(
        self, words: Sequence[str], *, root_id: int | None, path_prefix: str | None, limit: int
    ) -> list[tuple[int, float]]:
        """Chunks (of root ``root_id``, under ``path_prefix``) matching any word, best first."""
        params = chunk_keyword_params(words, root_id=root_id, path_prefix=path_prefix, limit=limit)
        if params is None:
            return []
        rows = self._conn.execute(SQL_CHUNK_KEYWORD_SEARCH, params)
        return [(int(i), float(s)) for i, s in rows]

    def word_coverage(self, words: Sequence[str], texts: Sequence[str]) -> list[float]:
        """For each text, the share of ``words`` it contains (FTS5's tokens: case, accents
        and English endings do not count)."""
        wanted = tokens(self._conn, " ".join(words))
        if not wanted:
            return [0.0 for _ in texts]
        return [len(wanted & tokens(self._conn, text)) / len(wanted) for text in texts]

    # -- vectors ---------------------------------------------------------------

    def vector_index_state(self, table: str) -> VectorIndexState:
        """The recorded embedder and whether vector table ``table`` exists."""
        ((model, has_table),) = self._conn.execute(SQL_INDEX_STATE, {"table": table}).fetchall()
        recorded = None if model is None else str(model)
        return VectorIndexState(model=recorded, has_table=bool(has_table))

    def vector_dims(self, table: str) -> int | None:
        """The dims of vector table ``table``; None when nothing was embedded yet."""
        return vectors.vector_dims(self._conn, table)

    def create_vector_table(
        self, table: str, kind: str, dims: int, chunk_size: int, *, now: float
    ) -> None:
        """Create vec0 table ``table`` for items of ``kind`` (if missing)."""
        vectors.create_vector_table(self._conn, table, kind, dims, chunk_size, now=now)

    def drop_vector_table(self, table: str) -> None:
        """Drop vec0 table ``table`` and everything pending for it."""
        vectors.drop_vector_table(self._conn, table)

    def drop_vector_tables(self) -> None:
        """Drop every vec0 table in the ``vector_tables`` registry and everything pending for it.

        A registered name that is not one abathur makes raises
        :class:`~abathur.errors.SchemaError` (nothing is dropped under it).
        """
        for (name,) in self._conn.execute(SQL_VECTOR_TABLE_NAMES).fetchall():
            vectors.drop_vector_table(self._conn, known_vector_table(name))

    def drop_empty_partition(self, table: str, partition: str, *, dead: int) -> int:
        """vec0 chunks of ``partition`` freed (see :func:`vectors.drop_empty_partition`)."""
        if not table_exists(self._conn, table):
            return 0
        return vectors.drop_empty_partition(self._conn, table, partition, dead=dead)

    def insert_vector(self, table: str, item: IndexItem, *, model: str, content_hash: str) -> bool:
        """Add ``item``'s vector from the embedding cache; False if the cache has none yet."""
        return vectors.insert_vector(
            self._conn, table, item, model=model, content_hash=content_hash
        )

    def delete_vector(self, table: str, item_id: int) -> bool:
        """Remove an item's vector now; False if it had none."""
        return vectors.delete_vector(self._conn, table, item_id)

    def defer_vector_delete(self, table: str, item_id: int) -> None:
        """Note that ``item_id``'s vector must go; search skips it from now on."""
        vectors.defer_vector_delete(self._conn, table, item_id)

    def apply_vector_deletes(self, table: str | None = None) -> int:
        """Carry out the deferred deletes of ``table`` (all if None); return how many."""
        return vectors.apply_vector_deletes(self._conn, table)

    def vector_table_stats(self) -> list[VectorTableStats]:
        """Every vector table with its row counts."""
        return vectors.vector_table_stats(self._conn)

    def compact_vector_table(self, table: str, kind: str, chunk_size: int) -> int:
        """Rebuild ``table`` from its live rows, reclaiming dead slots; return the live rows."""
        return vectors.compact_vector_table(self._conn, table, kind, chunk_size)

    def vector_search(
        self,
        table: str,
        query: NDArray[np.float32],
        *,
        n: int,
        candidates: int,
        where: VectorFilter,
    ) -> list[tuple[int, float]]:
        """The ``n`` items most similar to ``query`` (cosine), best first."""
        return vectors.vector_search(
            self._conn, table, query, n=n, candidates=candidates, where=where
        )

    def cached_similarity(
        self, model: str, query: NDArray[np.float32], hashes: Sequence[str]
    ) -> dict[str, float]:
        """Cosine similarity of ``query`` with the cached vectors of texts, by content hash."""
        return vectors.cached_similarity(self._conn, model, query, hashes)

    def forget_cached_vectors(self) -> None:
        """Drop this process's parsed chunks of the file's vec0 tables."""
        vectors.forget_mirrors(self._context.path)
