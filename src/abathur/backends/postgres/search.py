"""PostgreSQL's :class:`~abathur.stores.search.SearchIndex` (issue 14): tsvector + pgvector.

**Keyword index of memories.** ``memories_fts`` (migration 020) is a plain
table the store maintains in :meth:`~PgSearchIndex.add_memory_text`,
:meth:`~PgSearchIndex.remove_memory_text` and
:meth:`~PgSearchIndex.rebuild_memory_text`, as the SQLite store maintains
its contentless FTS5 table: one row per memory version, with its namespace
(btree: the tenant prefix is an index range), its token count ``dl`` and a
``tsvector`` of its key and text (GIN).

* *Tokenizer.* SQLite's FTS5 uses ``porter unicode61 remove_diacritics 2``:
  Porter's stemmer and no stop words. PostgreSQL's ``'english'`` config
  drops stop words (a query of only ``"the"``, which
  :func:`abathur.search.query_words` keeps when nothing else is left, would
  find nothing) and stems with Porter2. So migration 020 makes
  ``abathur_words``: every word type through snowball's original ``porter``
  stemmer, no stop words. Before PostgreSQL sees a text (and each query
  word), :func:`index_text` does what unicode61 does: lower case, accents
  of Latin letters folded, every character that is not a letter, digit or
  mark a separator. So PostgreSQL's parser never sees an e-mail, URL, path
  or hyphenated word (tokens unicode61 does not make), and a NUL or a lone
  surrogate (which PostgreSQL text cannot hold) never reaches it.
* *Query.* Each word becomes a ``tsquery`` in SQL, ``phraseto_tsquery``
  of the word bound as one element of a ``text[]`` parameter: a word that
  splits into several tokens (``"e-mail"``) is a phrase, as FTS5 reads a
  quoted term. The words are ORed with the ``abathur_tsquery_or``
  aggregate (migration 020). No tsquery syntax is ever built from user
  text, so ``&|!():*'\\`` are only separators.
* *Score.* BM25, computed in SQL exactly as FTS5's ``bm25()`` does (k1 =
  1.2, b = 0.75; idf ``ln((N - n + 0.5) / (n + 0.5))``, floored at 1e-6;
  a row's length counts one token per namespace segment, FTS5's scope
  column), not ``ts_rank_cd``: ``ts_rank_cd`` has no IDF, so a word common
  to every memory would weigh as much as a rare one and rankings would
  differ from SQLite's on the same data.
* *From an index, not a scan* (migration 050). Triggers on ``memories_fts``
  keep ``memories_fts_stats`` (N and the summed length: one row, read by
  primary key) and ``memories_fts_terms``, an inverted index: one row per
  (lexeme, namespace, memory) with the lexeme's count in the row (tf) and
  the row's length (dl), its primary key ``(lexeme, namespace, memory_id)
  INCLUDE (tf, dl)``. A search reads, per query word, the count of the
  lexeme's range (its document frequency, over the whole index as FTS5's)
  and the rows of the lexeme in the tenant's namespace range (both
  index-only scans); scores those rows from tf and dl alone; and only then
  joins ``memories`` (live, current, unexpired, type, metadata) in score
  order, so the LIMIT stops the lookups after the best rows. A word that
  is several tokens (``"e-mail"``) is a phrase, as FTS5 reads a quoted
  term: its rows hold every token and match ``phraseto_tsquery`` (the GIN
  index of ``memories_fts``), its frequency the smallest of its tokens'
  counts (FTS5 counts the phrase's occurrences; the same for a one-token
  word). Previously each candidate's whole tsvector was unnested per word
  and the statistics scanned per search: 40-100 ms at 30k memories.
* *Stemmer: close, not identical.* Snowball's ``porter`` is Porter's 1980
  algorithm; FTS5's is Porter's later C version, which leaves tokens of one
  or two characters alone (``is``, ``as``, ``us``, ``vs``; snowball makes
  them ``i``, ``a``, ``u``, ``v``) and has its departures (``-logi`` ->
  ``-log``, ``-bli`` -> ``-ble``: FTS5 ``technolog``, ``possibl``; snowball
  ``technologi``, ``possibli``). Measured on SciFact's 5,183 abstracts,
  4,638 hold at least one token stemmed differently, nearly all ``is`` /
  ``as`` (stop words: a query keeps them only when it has nothing else);
  nDCG@10 differs by 0.0008 (benchmarks/results/scifact_postgres.md). Exact
  parity needs FTS5's stemmer in Python (then PostgreSQL's ``simple``
  config over pre-stemmed tokens, and a rebuild of the keyword rows).
* *Limits.* A tsvector holds at most 1 MB: a text of more than ~100k
  distinct words keeps only its first ones (:func:`bounded_tokens`); it
  records at most 256 positions of a lexeme, so a word repeated more than
  256 times in one memory counts 256 times in its tf (FTS5 counts all).
* *word_coverage* tokenizes with the same function and config, so it
  means what it means on SQLite: the share of the query's tokens a text holds.

**Keyword index of chunks.** The same BM25 as memories and as SQLite's
``bm25(chunks_fts, 2.0, 1.0)`` (migration 050). ``chunks_fts`` holds a
chunk's keyword row, written by the document store with the chunk
(:func:`chunk_fts_params`: the same tokenizer as memories, ``dl`` the
heading's and text's tokens), its heading's tokens weighted ``'A'``;
deleting the chunk cascades to it. Triggers keep ``chunks_fts_stats`` and
``chunks_fts_terms``, whose tf counts a heading token twice and a text
token once (FTS5's column weights: tf is the weighted sum, the length is
not weighted). :meth:`~PgSearchIndex.chunk_keyword_ranking` scores as
memories are scored, then applies the root and path filters in score
order. (Migration 030's ``chunks.tsv``, ``'english'`` + ``ts_rank_cd``,
dropped stop words and had no IDF: rankings differed from SQLite's.)

**Vectors.** One table per kind (``memories_vec``, ``chunks_vec``, listed in
``vector_tables``), made by :meth:`~PgSearchIndex.create_vector_table`:
``item_id`` (primary key), ``scope`` (the partition,
:func:`abathur.search.partition_of`; a btree, so a tenant's search can be an
index range), ``embedding halfvec(dims)`` with an HNSW index
(``halfvec_cosine_ops``), ``type``, ``expires`` and ``cache_id`` (the
``embedding_cache`` row of the exact float32 vector).

* *halfvec, not vector:* HNSW indexes ``vector`` up to 2000 dims and
  ``halfvec`` up to 4000 (common embedders have 3072); the index is only the
  first pass, so half precision costs nothing in the answer. Above 4000 dims
  there is no HNSW index (an exact scan).
* *Search* (:meth:`~PgSearchIndex.vector_search`) mirrors SQLite's two
  passes: the first pass asks PostgreSQL for the ``max(n, candidates)``
  nearest rows that pass every filter (``SET LOCAL hnsw.iterative_scan =
  relaxed_order``, pgvector >= 0.8, so a narrow filter never starves it;
  ``hnsw.ef_search`` at least that many, up to pgvector's 1000), then the
  exact float32 vectors are read from ``embedding_cache`` and rescored in
  float64 as on SQLite: the scores and the order (ties by smaller id) are
  SQLite's. On the small tables tested, HNSW's first pass is exact; there
  is no row threshold below which an exact scan is forced (the planner
  picks the ``scope`` btree and a sort for a narrow tenant by itself).
  ``VectorFilter.accept`` is asked in growing windows of that ranking, as
  on SQLite.
* *Dead rows.* vec0 leaves a dead slot per delete until the table is
  rebuilt; PostgreSQL leaves a dead tuple (and a deleted HNSW entry) until
  VACUUM. ``vector_tables.dead_rows`` counts deletes as on SQLite;
  :meth:`~PgSearchIndex.compact_vector_table` applies the pending deletes,
  ``REINDEX``es the HNSW index (VACUUM cannot run in a transaction;
  autovacuum reclaims the heap) and resets the count.
* *No process-side state.* SQLite keeps a numpy mirror of vec0's chunks per
  process; here PostgreSQL ranks, so
  :meth:`~PgSearchIndex.forget_cached_vectors` has nothing to drop.

Example:
    >>> from abathur.backends.postgres.search import index_text
    >>> index_text("Crème-Brûlée & e-mail: user@example.com!")
    'creme brulee   e mail  user example com '
"""

from __future__ import annotations

import itertools
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.memories import metadata_match
from abathur.backends.ranges import range_params
from abathur.stores.memories import MetadataValue
from abathur.stores.search import (
    VECTOR_TABLE_NAMES,
    IndexItem,
    MemoryText,
    VectorFilter,
    VectorIndexState,
    VectorTableStats,
    known_vector_table,
)

__all__ = [
    "HNSW_MAX_DIMS",
    "PENDING_DELETES_MAX",
    "SQL_CHUNK_FTS_INSERT",
    "SQL_CHUNK_KEYWORD_SEARCH",
    "SQL_FTS_DELETE",
    "SQL_FTS_INSERT",
    "SQL_INDEX_STATE",
    "SQL_KEYWORD_SEARCH",
    "TSVECTOR_BUDGET",
    "PgSearchIndex",
    "bounded_tokens",
    "chunk_fts_params",
    "index_text",
    "nearest_query",
    "row_length",
]

_SEP = ":"

#: The most dims a ``halfvec`` HNSW index takes (pgvector 0.8).
HNSW_MAX_DIMS = 4000
#: Past this many pending deletes of a table, a write applies them all (as SQLite).
PENDING_DELETES_MAX = 256
# pgvector refuses an hnsw.ef_search above this.
_EF_SEARCH_MAX = 1000
_EF_SEARCH_MIN = 40  # pgvector's default

# -- keyword index of memories ------------------------------------------------

# The key's and the text's tokens (both index_text'ed by the caller).
SQL_FTS_INSERT = (
    "INSERT INTO memories_fts (memory_id, namespace, dl, tsv) "
    "VALUES (%(id)s, %(namespace)s, %(dl)s, "
    "to_tsvector('abathur_words', %(key)s) || to_tsvector('abathur_words', %(text)s))"
)
SQL_FTS_DELETE = "DELETE FROM memories_fts WHERE memory_id = %(id)s"
# DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe (a concurrent REPEATABLE
# READ search would see an empty index) and locks out every reader.
_SQL_FTS_DELETE_ALL = "DELETE FROM memories_fts"
_SQL_FTS_BUILT = "SELECT 1 FROM meta WHERE key = 'search.memories_fts'"
_SQL_FTS_MARK_BUILT = (
    "INSERT INTO meta (key, value) VALUES ('search.memories_fts', 'built') "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# BM25 as FTS5's bm25() computes it (module docstring), from the tables
# migration 050 keeps: {stats} (N, total length) and {terms} (the inverted
# index: lexeme -> rows with tf and dl).
# * words: one phrase per query word (duplicates kept: FTS5 scores each
#   phrase of its query);
# * df: each word's document frequency, the count of its lexeme's range of
#   {terms} (an index-only scan); a word of several tokens ("e-mail"): the
#   rows its phrase matches, by the GIN index of {fts};
# * hits: each word's rows in the scope ({range}, a range of {terms}' key),
#   with tf and dl; a phrase's rows hold all its tokens (tf: the smallest)
#   and match the phrase (@@);
# * scored: each row's BM25, summed over the words it holds.
# Each ranking then joins its filters to the scored rows, best first, so a
# filtered-out row costs a lookup only when it would have been in the top.
_SQL_BM25_WITH = (
    "WITH words AS MATERIALIZED ("
    " SELECT w.ord, phraseto_tsquery('abathur_words', w.word) AS query,"
    " tsvector_to_array(to_tsvector('abathur_words', w.word)) AS lexemes"
    " FROM unnest(%(words)s::text[]) WITH ORDINALITY AS w(word, ord)),"
    " stats AS MATERIALIZED (SELECT n_rows::float8 AS n_rows,"
    " CASE WHEN n_rows > 0 THEN total_dl::float8 / n_rows ELSE 0 END AS avgdl"
    " FROM {stats} WHERE id = 1),"
    " df AS MATERIALIZED (SELECT w.ord, w.query, w.lexemes, cardinality(w.lexemes) AS ntok,"
    " CASE WHEN cardinality(w.lexemes) = 1"
    " THEN (SELECT count(*) FROM {terms} AS t WHERE t.lexeme = w.lexemes[1])"
    " ELSE (SELECT count(*) FROM {fts} AS f WHERE f.tsv @@ w.query) END::float8 AS n_hit"
    " FROM words AS w WHERE cardinality(w.lexemes) > 0),"
    " idf AS MATERIALIZED (SELECT d.ord, d.query, d.lexemes, d.ntok,"
    " CASE WHEN ln((s.n_rows - d.n_hit + 0.5) / (d.n_hit + 0.5)) <= 0 THEN 1e-6"
    " ELSE ln((s.n_rows - d.n_hit + 0.5) / (d.n_hit + 0.5)) END AS idf"
    " FROM df AS d CROSS JOIN stats AS s),"
    " hits AS ("
    "SELECT i.ord, i.idf, t.{id} AS id, t.tf::float8 AS tf, t.dl::float8 AS dl"
    " FROM idf AS i JOIN {terms} AS t ON t.lexeme = i.lexemes[1]{range} WHERE i.ntok = 1"
    " UNION ALL "
    "SELECT i.ord, i.idf, t.{id}, min(t.tf)::float8, min(t.dl)::float8"
    " FROM idf AS i CROSS JOIN LATERAL unnest(i.lexemes) AS l(lexeme)"
    " JOIN {terms} AS t ON t.lexeme = l.lexeme{range} WHERE i.ntok > 1"
    " GROUP BY i.ord, i.idf, t.{id}, i.query HAVING count(*) = min(i.ntok)"
    " AND EXISTS (SELECT 1 FROM {fts} AS f WHERE f.{id} = t.{id} AND f.tsv @@ i.query)),"
    " scored AS MATERIALIZED (SELECT h.id,"
    " sum(h.idf * (h.tf * 2.2) / (h.tf + 1.2 * (0.25 + 0.75 * h.dl / s.avgdl))) AS score"
    " FROM hits AS h CROSS JOIN stats AS s GROUP BY h.id) "
    # Best first, then the filters row by row (OFFSET 0: the order is
    # settled before the join, so LIMIT stops the lookups early).
    "SELECT sc.id, sc.score FROM"
    " (SELECT id, score FROM scored ORDER BY score DESC, id OFFSET 0) AS sc "
)

# memory.search, keyword ranking. The tenant prefix is a range of
# memories_fts_terms' primary key (lexeme, namespace, ...); the join keeps
# live, unexpired current versions of the type. A metadata filter adds one
# metadata_match group per entry before the ORDER BY.
_SQL_KEYWORD_WHERE = (
    _SQL_BM25_WITH.format(
        stats="memories_fts_stats",
        terms="memories_fts_terms",
        fts="memories_fts",
        id="memory_id",
        range=(
            " AND t.namespace >= %(prefix)s AND t.namespace < %(after)s"
            " AND (t.namespace = %(prefix)s OR t.namespace >= %(below)s)"
        ),
    )
    + "JOIN memories AS m ON m.id = sc.id "
    "WHERE m.is_current = 1 AND m.status = 'live'"
    " AND (m.expires_at IS NULL OR m.expires_at > %(now)s)"
    " AND (%(type)s::text IS NULL OR m.type = %(type)s::text)"
)
_SQL_KEYWORD_END = " ORDER BY sc.score DESC, sc.id LIMIT %(limit)s"
SQL_KEYWORD_SEARCH = _SQL_KEYWORD_WHERE + _SQL_KEYWORD_END

# documents.search, keyword ranking: the same BM25 over chunks_fts (migration
# 050; FTS5's bm25(chunks_fts, 2.0, 1.0): a heading token counts twice in
# tf), the joins apply the root and path-prefix filters. ':upper' is the
# prefix + '0' ('0' is the character after '/').
SQL_CHUNK_KEYWORD_SEARCH = (
    _SQL_BM25_WITH.format(
        stats="chunks_fts_stats",
        terms="chunks_fts_terms",
        fts="chunks_fts",
        id="chunk_id",
        range="",
    )
    + "JOIN chunks AS c ON c.id = sc.id JOIN documents AS d ON d.id = c.document_id "
    "WHERE (%(root_id)s::bigint IS NULL OR d.root_id = %(root_id)s::bigint) "
    "AND (%(prefix)s::text IS NULL OR d.path = %(prefix)s::text "
    "OR (d.path >= %(lower)s::text AND d.path < %(upper)s::text)) "
    "ORDER BY sc.score DESC, sc.id LIMIT %(limit)s"
)

# A chunk's keyword row (documents.py writes it with the chunk): the heading's
# tokens weighted 'A' (tf 2 each), the text's 'D'.
SQL_CHUNK_FTS_INSERT = (
    "INSERT INTO chunks_fts (chunk_id, dl, tsv) VALUES (%(id)s, %(dl)s, "
    "setweight(to_tsvector('abathur_words', %(heading)s), 'A') "
    "|| to_tsvector('abathur_words', %(text)s))"
)

# Every text word_coverage compares, as the index's lexemes.
_SQL_LEXEMES = (
    "SELECT tsvector_to_array(to_tsvector('abathur_words', t.text)) "
    "FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS t(text, ord) ORDER BY t.ord"
)

# -- vectors --------------------------------------------------------------------

SQL_INDEX_STATE = (
    "SELECT (SELECT value FROM meta WHERE key = 'embedder.name'), "
    "EXISTS (SELECT 1 FROM vector_tables WHERE name = %(table)s)"
)
SQL_VECTOR_TABLE_NAMES = "SELECT name FROM vector_tables ORDER BY name"
_SQL_DIMS = "SELECT dims FROM vector_tables WHERE name = %(table)s"
_SQL_TABLE_EXISTS = "SELECT to_regclass(%(name)s) IS NOT NULL"
# Two workers creating the same table at once: the second waits, then finds it.
_SQL_CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('abathur.vector_tables'))"
_SQL_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS {table} ("
    "item_id bigint PRIMARY KEY, "
    'scope text COLLATE "C" NOT NULL, '
    "embedding halfvec({dims}) NOT NULL, "
    "type integer NOT NULL, "
    "expires double precision NOT NULL, "
    "cache_id bigint NOT NULL)"
)
_SQL_CREATE_SCOPE_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (scope)"
_SQL_CREATE_HNSW_INDEX = (
    "CREATE INDEX IF NOT EXISTS {index} ON {table} USING hnsw (embedding halfvec_cosine_ops)"
)
_SQL_REGISTER = (
    "INSERT INTO vector_tables (name, kind, dims, chunk_size, generation, dead_rows, created_at) "
    "VALUES (%(name)s, %(kind)s, %(dims)s, %(chunk_size)s, %(generation)s, 0, %(now)s) "
    "ON CONFLICT (name) DO NOTHING"
)
_SQL_UNREGISTER = "DELETE FROM vector_tables WHERE name = %(table)s"
_SQL_PENDING_DROP = "DELETE FROM vector_deletes WHERE vec_table = %(table)s"
_SQL_CACHED = (
    "SELECT id, vector FROM embedding_cache WHERE model = %(model)s AND content_hash = %(hash)s"
)
_SQL_INSERT_VECTOR = (
    "INSERT INTO {table} (item_id, scope, embedding, type, expires, cache_id) "
    "VALUES (%(id)s, %(scope)s, %(embedding)s::real[]::halfvec, %(type)s, %(expires)s, "
    "%(cache_id)s)"
)
_SQL_DELETE_VECTOR = "DELETE FROM {table} WHERE item_id = ANY(%(ids)s::bigint[])"
_SQL_COUNT_DEAD = "UPDATE vector_tables SET dead_rows = dead_rows + %(n)s WHERE name = %(table)s"
SQL_PENDING_DELETE = (
    "INSERT INTO vector_deletes (vec_table, item_id) VALUES (%(table)s, %(id)s) "
    "ON CONFLICT (vec_table, item_id) DO NOTHING"
)
SQL_PENDING_DELETE_DONE = (
    "DELETE FROM vector_deletes WHERE vec_table = %(table)s AND item_id = %(id)s"
)
_SQL_PENDING_COUNT = "SELECT count(*) FROM vector_deletes WHERE vec_table = %(table)s"
_SQL_PENDING_ALL = "SELECT vec_table, item_id FROM vector_deletes ORDER BY vec_table, item_id"
_SQL_PENDING_OF = (
    "SELECT vec_table, item_id FROM vector_deletes WHERE vec_table = %(table)s ORDER BY item_id"
)
_SQL_PENDING_DONE_MANY = (
    "DELETE FROM vector_deletes WHERE vec_table = %(table)s AND item_id = ANY(%(ids)s::bigint[])"
)
_SQL_STATS = "SELECT name, kind, dims, dead_rows FROM vector_tables ORDER BY name"
_SQL_COUNT_ROWS = "SELECT count(*) FROM {table}"
_SQL_REINDEX = "REINDEX INDEX {index}"
_SQL_COMPACTED = (
    "UPDATE vector_tables SET kind = %(kind)s, chunk_size = %(chunk_size)s, dead_rows = 0, "
    "generation = %(generation)s WHERE name = %(table)s"
)
_SQL_PARTITION_ANY = "SELECT 1 FROM {table} WHERE scope = %(partition)s LIMIT 1"
_SQL_FORGET_DEAD = (
    "UPDATE vector_tables SET dead_rows = greatest(0, dead_rows - %(dead)s), "
    "generation = %(generation)s WHERE name = %(table)s"
)
_SQL_CACHED_VECTORS = (
    "SELECT content_hash, vector FROM embedding_cache "
    "WHERE model = %(model)s AND content_hash = ANY(%(hashes)s::text[])"
)
_SQL_CACHE_BY_ID = "SELECT id, vector FROM embedding_cache WHERE id = ANY(%(ids)s::bigint[])"
# Per search: the first pass may look at this many rows, and keep going past
# filtered ones (pgvector >= 0.8).
_SQL_SEARCH_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %(ef)s, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true)"
)
# The first pass: ordered by pgvector's distance in the subquery (the HNSW
# index, or the scope btree and a sort), then by exact distance and id outside
# (relaxed_order may return the rows slightly out of order).
_SQL_NEAREST = (
    "SELECT item_id, cache_id FROM ("
    "SELECT v.item_id, v.cache_id, v.embedding <=> %(query)s::real[]::halfvec AS distance "
    "FROM {table} AS v WHERE {where} "
    "ORDER BY v.embedding <=> %(query)s::real[]::halfvec LIMIT %(limit)s) AS nearest "
    "ORDER BY distance, item_id"
)
_WHERE_LIVE = (
    "v.expires > %(now)s AND NOT EXISTS (SELECT 1 FROM vector_deletes AS d "
    "WHERE d.vec_table = %(table)s AND d.item_id = v.item_id)"
)
_WHERE_TYPE = "v.type = %(type)s"
_WHERE_PARTITION = "v.scope = %(partition)s"
_WHERE_PARTITION_PREFIX = (
    "v.scope >= %(prefix)s AND v.scope < %(after)s "
    "AND (v.scope = %(prefix)s OR v.scope >= %(below)s)"
)
_WHERE_ALLOWED = "v.item_id = ANY(%(allowed)s::bigint[])"


def index_text(text: str) -> str:
    """``text`` as the keyword index reads it, unicode61's way: tokens and spaces.

    Lower case; accents of Latin letters folded (NFD, combining marks
    U+0300-U+036F dropped: ``remove_diacritics 2``); every character that is
    not a letter, digit or mark becomes a space (``_``, ``-``, ``'``, ``@``,
    NUL and lone surrogates included). PostgreSQL's parser then only sees
    whitespace-separated words, one token each.

    Example:
        >>> from abathur.backends.postgres.search import index_text
        >>> index_text("Ünïcode_words & NEAR(x)*")
        'unicode words   near x  '
    """
    decomposed = unicodedata.normalize("NFD", text.lower())
    kept = "".join(
        " " if not (ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc")) else ch
        for ch in decomposed
        if not 0x300 <= ord(ch) <= 0x36F
    )
    return unicodedata.normalize("NFC", kept)


def row_length(item: MemoryText) -> int:
    """BM25's length of one memory's row: its key's and text's tokens, one per namespace segment.

    FTS5 counts every column of a row, its scope column (one token per
    namespace prefix) included.

    Example:
        >>> from abathur.backends.postgres.search import row_length
        >>> from abathur.stores.search import MemoryText
        >>> row_length(MemoryText(1, "user:alice", "tea_pref", "likes green tea"))
        7
    """
    return (
        len(index_text(item.key).split())
        + len(index_text(item.text).split())
        + item.namespace.count(_SEP)
        + 1
    )


# A tsvector holds at most 1 MB (1048575 bytes). Each token costs at most its
# UTF-8 bytes plus 9 (a 4-byte entry, alignment, a position count and one
# position); a text whose tokens would cost more keeps only its first ones.
TSVECTOR_BUDGET = 1_000_000
_TOKEN_OVERHEAD = 9


def bounded_tokens(*texts: str) -> list[str]:
    """``texts`` (already :func:`index_text`'ed), cut so their tsvectors fit in one.

    Tokens are kept in order, across the texts, while their worst-case cost
    stays within :data:`TSVECTOR_BUDGET`; FTS5 has no such limit, so only a
    text of more than ~100k distinct words (a 1 MiB value of UUIDs) loses
    its tail here.

    Example:
        >>> from abathur.backends.postgres.search import bounded_tokens
        >>> bounded_tokens("key", "a b")
        ['key', 'a b']
    """
    out: list[str] = []
    spent = 0
    for text in texts:
        if spent + len(text.encode("utf-8")) + _TOKEN_OVERHEAD * len(text) <= TSVECTOR_BUDGET:
            # Cheap common case: even if every character were a token, it fits.
            spent += len(text.encode("utf-8")) + _TOKEN_OVERHEAD * len(text)
            out.append(text)
            continue
        kept: list[str] = []
        for token in text.split():
            spent += len(token.encode("utf-8")) + _TOKEN_OVERHEAD
            if spent > TSVECTOR_BUDGET:
                break
            kept.append(token)
        out.append(" ".join(kept))
    return out


def _fts_params(item: MemoryText) -> dict[str, Any]:
    key, text = bounded_tokens(index_text(item.key), index_text(item.text))
    return {
        "id": item.id,
        "namespace": item.namespace,
        "dl": row_length(item),
        "key": key,
        "text": text,
    }


def chunk_fts_params(chunk_id: int, heading: str, text: str) -> dict[str, Any]:
    """The parameters of :data:`SQL_CHUNK_FTS_INSERT` for one chunk.

    Tokenized as memories are (:func:`index_text`); ``dl`` counts the
    heading's and the text's tokens, as FTS5 counts every column of a row.

    Example:
        >>> from abathur.backends.postgres.search import chunk_fts_params
        >>> chunk_fts_params(7, "Backups", "Restoring databases")["dl"]
        3
    """
    folded_heading, folded_text = index_text(heading), index_text(text)
    kept_heading, kept_text = bounded_tokens(folded_heading, folded_text)
    return {
        "id": chunk_id,
        "dl": len(folded_heading.split()) + len(folded_text.split()),
        "heading": kept_heading,
        "text": kept_text,
    }


def _ident(table: str) -> sql.Identifier:
    """The identifier of one of our vector tables (a :class:`SchemaError` for any other name)."""
    return sql.Identifier(known_vector_table(table))


def _vector(blob: bytes) -> NDArray[np.float64]:
    return np.frombuffer(blob, dtype="<f4").astype(np.float64)


def nearest_query(
    table: str, query: list[float], limit: int, where: VectorFilter
) -> tuple[sql.Composed, dict[str, Any]]:
    """The first pass of a vector search and its parameters (``where.accept`` aside).

    So a test can ``EXPLAIN`` the exact query that ships. Each filter adds
    its condition only when set, so the planner sees the filters that apply
    (and can pick the ``scope`` btree for a tenant).
    """
    conditions = [_WHERE_LIVE]
    params: dict[str, Any] = {"now": where.now, "table": table, "query": query, "limit": limit}
    if where.type_code is not None:
        conditions.append(_WHERE_TYPE)
        params["type"] = where.type_code
    if where.partition is not None:
        conditions.append(_WHERE_PARTITION)
        params["partition"] = where.partition
    elif where.partition_prefix is not None:
        conditions.append(_WHERE_PARTITION_PREFIX)
        params |= range_params(where.partition_prefix)
    if where.allowed_ids is not None:
        conditions.append(_WHERE_ALLOWED)
        params["allowed"] = list(where.allowed_ids)
    query_sql = sql.SQL(_SQL_NEAREST).format(
        table=_ident(table), where=sql.SQL(" AND ").join(map(sql.SQL, conditions))
    )
    return query_sql, params


class PgSearchIndex:
    """:class:`~abathur.stores.search.SearchIndex` on one psycopg connection, in its transaction.

    Never commits or rolls back: the backend owns the transaction.
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def _int(self, query: str | sql.Composed, params: Mapping[str, Any]) -> int:
        row = self._conn.execute(query, params).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def _table_exists(self, name: str) -> bool:
        row = self._conn.execute(_SQL_TABLE_EXISTS, {"name": name}).fetchone()
        return bool(row and row[0])

    # -- keyword index of memories -------------------------------------------

    def add_memory_text(self, item: MemoryText) -> None:
        """Index one memory version's words and namespace."""
        self._conn.execute(SQL_FTS_INSERT, _fts_params(item))

    def remove_memory_text(self, item_id: int) -> None:
        """Take one memory version out of the keyword index."""
        self._conn.execute(SQL_FTS_DELETE, {"id": item_id})

    def rebuild_memory_text(self, items: Iterable[MemoryText]) -> int:
        """Replace the keyword index of memories with ``items``; return how many."""
        self._conn.execute(_SQL_FTS_DELETE_ALL)
        count = 0
        found = iter(items)
        with self._conn.cursor() as cursor:
            while batch := list(itertools.islice(found, 1000)):
                cursor.executemany(SQL_FTS_INSERT, [_fts_params(item) for item in batch])
                count += len(batch)
        self._conn.execute(_SQL_FTS_MARK_BUILT)
        return count

    def memory_text_built(self) -> bool:
        """True once the keyword index of memories was built for this database."""
        return self._conn.execute(_SQL_FTS_BUILT).fetchone() is not None

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
        if not words:
            return []
        match, match_params = metadata_match(metadata, column="m.metadata")
        params: dict[str, Any] = {
            "words": [index_text(word) for word in words],
            "now": now,
            "type": type,
            "limit": limit,
            **range_params(prefix),
        }
        rows = self._conn.execute(
            _SQL_KEYWORD_WHERE + match + _SQL_KEYWORD_END, params | match_params
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    # -- keyword index of document chunks ---------------------------------------

    def chunk_keyword_ranking(
        self, words: Sequence[str], *, root_id: int | None, path_prefix: str | None, limit: int
    ) -> list[tuple[int, float]]:
        """Chunks (of root ``root_id``, under ``path_prefix``) matching any word, best first."""
        if not words:
            return []
        params: dict[str, Any] = {
            "words": [index_text(word) for word in words],
            "root_id": root_id,
            "prefix": path_prefix,
            "lower": None if path_prefix is None else path_prefix + "/",
            "upper": None if path_prefix is None else path_prefix + "0",
            "limit": limit,
        }
        rows = self._conn.execute(SQL_CHUNK_KEYWORD_SEARCH, params).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def word_coverage(self, words: Sequence[str], texts: Sequence[str]) -> list[float]:
        """For each text, the share of ``words`` it contains, as the memory index tokenizes."""
        if not texts:
            return []
        wanted_text = index_text(" ".join(words))
        if not wanted_text.strip():
            return [0.0 for _ in texts]
        found = self._conn.execute(
            _SQL_LEXEMES, {"texts": [wanted_text, *(index_text(text) for text in texts)]}
        ).fetchall()
        wanted = set(found[0][0])
        if not wanted:
            return [0.0 for _ in texts]
        return [len(wanted & set(lexemes)) / len(wanted) for (lexemes,) in found[1:]]

    # -- vectors ---------------------------------------------------------------

    def vector_index_state(self, table: str) -> VectorIndexState:
        """The recorded embedder and whether vector table ``table`` exists."""
        row = self._conn.execute(SQL_INDEX_STATE, {"table": table}).fetchone()
        assert row is not None  # a SELECT of two scalar subqueries gives one row
        model, has_table = row
        recorded = None if model is None else str(model)
        return VectorIndexState(model=recorded, has_table=bool(has_table))

    def vector_dims(self, table: str) -> int | None:
        """The dims of vector table ``table``; None when nothing was embedded yet."""
        row = self._conn.execute(_SQL_DIMS, {"table": table}).fetchone()
        return None if row is None else int(row[0])

    def create_vector_table(
        self, table: str, kind: str, dims: int, chunk_size: int, *, now: float
    ) -> None:
        """Create vector table ``table`` for items of ``kind`` (if missing), with its indexes.

        ``chunk_size`` is only recorded (vec0's chunks have no PostgreSQL equivalent).
        """
        name = known_vector_table(table)
        self._conn.execute(_SQL_CREATE_LOCK)
        if self._table_exists(name):
            return
        ident = sql.Identifier(name)
        self._conn.execute(
            sql.SQL(_SQL_CREATE_TABLE).format(table=ident, dims=sql.Literal(int(dims)))
        )
        self._conn.execute(
            sql.SQL(_SQL_CREATE_SCOPE_INDEX).format(
                index=sql.Identifier(f"{name}_by_scope"), table=ident
            )
        )
        if dims <= HNSW_MAX_DIMS:
            self._conn.execute(
                sql.SQL(_SQL_CREATE_HNSW_INDEX).format(
                    index=sql.Identifier(f"{name}_hnsw"), table=ident
                )
            )
        self._conn.execute(
            _SQL_REGISTER,
            {
                "name": name,
                "kind": kind,
                "dims": dims,
                "chunk_size": chunk_size,
                "generation": secrets.randbits(62),
                "now": now,
            },
        )

    def drop_vector_table(self, table: str) -> None:
        """Drop vector table ``table`` and everything pending for it."""
        ident = _ident(table)
        self._conn.execute(sql.SQL("DROP TABLE IF EXISTS {table}").format(table=ident))
        self._conn.execute(_SQL_UNREGISTER, {"table": table})
        self._conn.execute(_SQL_PENDING_DROP, {"table": table})

    def drop_vector_tables(self) -> None:
        """Drop every registered vector table and everything pending for it.

        A registered name that is not one abathur makes raises
        :class:`~abathur.errors.SchemaError` (nothing is dropped under it).
        """
        for (name,) in self._conn.execute(SQL_VECTOR_TABLE_NAMES).fetchall():
            self.drop_vector_table(known_vector_table(name))

    def drop_empty_partition(self, table: str, partition: str, *, dead: int) -> int:
        """Forget the deletes counted against an emptied ``partition``; return 0.

        (main's newer protocol method, ahead of the merge.) There are no
        partition chunks to free here: the dead tuples are autovacuum's. Once
        no vector of ``partition`` is left, ``dead`` comes off ``dead_rows``
        (as SQLite takes it off when it deletes the chunks); with a vector
        still there, nothing changes. Always 0: no storage unit was freed.
        """
        name = known_vector_table(table)
        if not self._table_exists(name):
            return 0
        left = self._conn.execute(
            sql.SQL(_SQL_PARTITION_ANY).format(table=sql.Identifier(name)),
            {"partition": partition},
        ).fetchone()
        if left is None and dead > 0:
            self._conn.execute(
                _SQL_FORGET_DEAD,
                {"dead": int(dead), "table": name, "generation": secrets.randbits(62)},
            )
        return 0

    def insert_vector(self, table: str, item: IndexItem, *, model: str, content_hash: str) -> bool:
        """Add ``item``'s vector from the embedding cache; False if the cache has none yet."""
        # An id can come back (rows archived at the top of a table): settle its
        # old vector first, or the insert would collide with it.
        done = self._conn.execute(SQL_PENDING_DELETE_DONE, {"table": table, "id": item.id})
        if done.rowcount:
            self.delete_vector(table, item.id)
        cached = self._conn.execute(_SQL_CACHED, {"model": model, "hash": content_hash}).fetchone()
        if cached is None:
            return False
        cache_id, blob = cached
        self._conn.execute(
            sql.SQL(_SQL_INSERT_VECTOR).format(table=_ident(table)),
            {
                "id": item.id,
                "scope": item.scope,
                # float32 values are exact as float8: the cast back to real loses nothing.
                "embedding": np.frombuffer(blob, dtype="<f4").tolist(),
                "type": item.type_code,
                "expires": float(item.expires),
                "cache_id": cache_id,
            },
        )
        return True

    def _delete_vectors(self, table: str, ids: Sequence[int]) -> int:
        """Delete the vectors of ``ids`` now; count each in ``dead_rows`` as SQLite does."""
        deleted = self._conn.execute(
            sql.SQL(_SQL_DELETE_VECTOR).format(table=_ident(table)), {"ids": list(ids)}
        ).rowcount
        if deleted > 0:
            self._conn.execute(_SQL_COUNT_DEAD, {"n": deleted, "table": table})
        return max(deleted, 0)

    def delete_vector(self, table: str, item_id: int) -> bool:
        """Remove an item's vector now; False if it had none."""
        return self._delete_vectors(table, [item_id]) > 0

    def defer_vector_delete(self, table: str, item_id: int) -> None:
        """Note that ``item_id``'s vector must go; search skips it from now on.

        Past :data:`PENDING_DELETES_MAX` pending ids the write applies them all.
        """
        self._conn.execute(SQL_PENDING_DELETE, {"table": table, "id": item_id})
        if self._int(_SQL_PENDING_COUNT, {"table": table}) > PENDING_DELETES_MAX:
            self.apply_vector_deletes(table)

    def apply_vector_deletes(self, table: str | None = None) -> int:
        """Carry out the deferred deletes of ``table`` (all if None); return how many."""
        if table is None:
            rows = self._conn.execute(_SQL_PENDING_ALL).fetchall()
        else:
            rows = self._conn.execute(_SQL_PENDING_OF, {"table": table}).fetchall()
        by_table: dict[str, list[int]] = {}
        for name, item_id in rows:
            by_table.setdefault(str(name), []).append(int(item_id))
        for name, ids in by_table.items():
            # A name that is not ours never reaches SQL as an identifier; its
            # pending rows just go (as SQLite finds no such table).
            if name in VECTOR_TABLE_NAMES and self._table_exists(name):
                self._delete_vectors(name, ids)
            self._conn.execute(_SQL_PENDING_DONE_MANY, {"table": name, "ids": ids})
        return len(rows)

    def vector_table_stats(self) -> list[VectorTableStats]:
        """Every vector table with its row counts."""
        stats = []
        for name, kind, dims, dead in self._conn.execute(_SQL_STATS).fetchall():
            ident = _ident(name)
            stored = self._int(sql.SQL(_SQL_COUNT_ROWS).format(table=ident), {})
            pending = self._int(_SQL_PENDING_COUNT, {"table": name})
            live = stored - pending
            row = VectorTableStats(str(name), str(kind), int(dims), live, int(dead), pending)
            stats.append(row)
        return stats

    def compact_vector_table(self, table: str, kind: str, chunk_size: int) -> int:
        """Apply ``table``'s pending deletes, rebuild its HNSW index; return the live rows.

        The heap's dead tuples are autovacuum's (VACUUM cannot run in a
        transaction); ``dead_rows`` goes back to 0 as on SQLite.
        """
        name = known_vector_table(table)
        self.apply_vector_deletes(name)
        index = f"{name}_hnsw"
        if self._table_exists(index):
            self._conn.execute(sql.SQL(_SQL_REINDEX).format(index=sql.Identifier(index)))
        self._conn.execute(
            _SQL_COMPACTED,
            {
                "kind": kind,
                "chunk_size": chunk_size,
                "generation": secrets.randbits(62),
                "table": name,
            },
        )
        return self._int(sql.SQL(_SQL_COUNT_ROWS).format(table=sql.Identifier(name)), {})

    def _nearest(
        self, table: str, query: list[float], limit: int, where: VectorFilter
    ) -> list[tuple[int, int]]:
        """The first pass: up to ``limit`` ``(item_id, cache_id)`` nearest first."""
        self._conn.execute(
            _SQL_SEARCH_SETTINGS,
            {"ef": str(min(_EF_SEARCH_MAX, max(_EF_SEARCH_MIN, limit)))},
        )
        query_sql, params = nearest_query(table, query, limit, where)
        return [(int(i), int(c)) for i, c in self._conn.execute(query_sql, params)]

    def vector_search(
        self,
        table: str,
        query: NDArray[np.float32],
        *,
        n: int,
        candidates: int,
        where: VectorFilter,
    ) -> list[tuple[int, float]]:
        """The ``n`` items most similar to ``query`` (cosine), best first, ties by smaller id.

        A first pass of ``max(n, candidates)`` rows by pgvector, then an exact
        float64 rescoring from ``embedding_cache`` (module docstring).
        """
        if where.allowed_ids is not None and len(where.allowed_ids) == 0:
            return []
        if self.vector_dims(table) is None:
            return []
        target = np.asarray(query, dtype=np.float32)
        as_list = target.tolist()
        want = max(n, candidates)
        if where.accept is None:
            found = self._nearest(table, as_list, want, where)
        else:
            found = self._walk_accepted(table, as_list, want, where)
        if not found:
            return []
        rows = self._conn.execute(
            _SQL_CACHE_BY_ID, {"ids": sorted({cache_id for _, cache_id in found})}
        ).fetchall()
        vectors = {int(cache_id): _vector(blob) for cache_id, blob in rows}
        exact = target.astype(np.float64)
        target_norm = float(np.linalg.norm(exact)) or 1.0
        scored = []
        for item_id, cache_id in found:
            vector = vectors.get(cache_id)
            if vector is None or vector.shape != exact.shape:
                continue
            norm = float(np.linalg.norm(vector)) * target_norm
            scored.append((item_id, float(vector @ exact) / (norm if norm != 0 else 1.0)))
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return scored[:n]

    def _walk_accepted(
        self, table: str, query: list[float], want: int, where: VectorFilter
    ) -> list[tuple[int, int]]:
        """The first ``want`` rows, nearest first, that ``where.accept`` passes.

        Asked in growing windows of the first pass (4 x ``want`` first, then
        sized from the share accepted so far, at least doubling), as SQLite's
        walk does; each window is a new first pass of that many rows, and
        only rows not asked about before are asked.
        """
        assert where.accept is not None
        chosen: list[tuple[int, int]] = []
        asked: set[int] = set()
        window = 4 * want
        while True:
            ranked = self._nearest(table, query, window, where)
            fresh = [pair for pair in ranked if pair[0] not in asked]
            passed = where.accept([item_id for item_id, _ in fresh]) if fresh else set()
            asked.update(item_id for item_id, _ in fresh)
            chosen.extend(pair for pair in fresh if pair[0] in passed)
            if len(chosen) >= want or len(ranked) < window:
                return chosen[:want]
            share = max(len(chosen), 1) / len(asked)
            window = max(2 * window, window + int(1.5 * (want - len(chosen)) / share))

    def cached_similarity(
        self, model: str, query: NDArray[np.float32], hashes: Sequence[str]
    ) -> dict[str, float]:
        """Cosine similarity of ``query`` with the cached vectors of texts, by content hash."""
        if not hashes:
            return {}
        rows = self._conn.execute(
            _SQL_CACHED_VECTORS, {"model": model, "hashes": sorted(set(hashes))}
        ).fetchall()
        target = np.asarray(query, dtype=np.float64)
        target_norm = float(np.linalg.norm(target)) or 1.0
        out: dict[str, float] = {}
        for text_hash, blob in rows:
            vector = _vector(blob)
            if vector.shape != target.shape:
                continue
            norm = float(np.linalg.norm(vector)) or 1.0
            out[str(text_hash)] = float(vector @ target) / (norm * target_norm)
        return out

    def forget_cached_vectors(self) -> None:
        """Nothing to drop: this backend keeps no per-process copy of the vector tables."""
