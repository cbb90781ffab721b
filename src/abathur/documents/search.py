"""Documents and the search index: chunk vectors, embedding jobs, rankings, relevance.

TRANSITION (issue 13): :mod:`abathur.search` and
:mod:`abathur.embeddings.queue` still take the raw connection, and the
chunks' keyword query and embedding-job queries are SQL of theirs. This
module is the one place where documents hands them its transaction; it goes
(or shrinks to the ``SearchIndex`` calls) when lane "memory"'s
:class:`~abathur.stores.search.SearchIndex` and lane "usage"'s queue store
land. Everything else in :mod:`abathur.documents` reaches storage through
``tx.documents``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from abathur.backends.sqlite.documents import (
    SQL_CHUNK_KEYWORD_SEARCH,
    SQL_INDEX_STATE,
    SQL_PENDING_CHUNK_JOBS,
    SQL_PENDING_CHUNKS,
)
from abathur.documents.chunking import Chunk, embedded_text
from abathur.embeddings.queue import cancel, content_hash, enqueue
from abathur.errors import InvalidInputError
from abathur.models import SearchMode
from abathur.search import (
    IndexItem,
    IndexKind,
    VectorFilter,
    cached_similarity,
    fts_query,
    resolve_mode,
    term_coverage,
)
from abathur.stores import Transaction
from abathur.stores.documents import ChunkEntry, ChunkHit

__all__ = [
    "CHUNK_KIND",
    "KIND_NAME",
    "VEC_TABLE",
    "ChunkIndexing",
    "keyword_ranking",
    "keyword_search_params",
    "pending_chunk_jobs",
    "pending_chunks",
    "relevance",
    "search_mode",
    "vector_ranking",
]

KIND_NAME = "chunk"
VEC_TABLE = "chunks_vec"


class ChunkIndexing:
    """Keeps the embedding queue and chunks_vec in step with one write's chunks.

    As for memories (abathur.memory): whether vectors are kept at all (an
    embedder configured in this process, or one recorded in the file) is read
    inside the write, so a write from any process keeps them right.
    chunks_fts needs nothing here: triggers on chunks keep it.
    """

    def __init__(self, tx: Transaction, *, configured: bool, held: bool = False) -> None:
        ((model, has_table),) = tx.execute(SQL_INDEX_STATE).fetchall()
        self.model: str | None = model
        self.has_table = bool(has_table) and model is not None
        self.vectors = configured or model is not None
        self.held = held  # a probe's write: its jobs wait for the probe's own drain

    def added(
        self, tx: Transaction, chunk_id: int, root_id: int, chunk: Chunk, text_hash: str, now: float
    ) -> bool:
        """Index a chunk just stored: True if it was queued for embedding."""
        if not self.vectors:
            return False
        item = _item(chunk_id, chunk.heading, chunk.text, root_id)
        # A text embedded before (a renamed file, an edit undone) needs no job.
        if self.has_table and tx.search.insert_vector(
            VEC_TABLE, item, model=self.model or "", content_hash=text_hash
        ):
            return False
        enqueue(tx, KIND_NAME, chunk_id, text_hash, now, held=self.held)
        return True

    def removing(self, tx: Transaction, chunk_id: int) -> None:
        """Drop the job or the vector of a chunk about to be deleted."""
        # A chunk has a queued job or a vector, never both.
        if self.vectors and not cancel(tx, KIND_NAME, chunk_id) and self.has_table:
            tx.search.defer_vector_delete(VEC_TABLE, chunk_id)


def _item(chunk_id: int, heading: str, text: str, root_id: int) -> IndexItem:
    # One vec0 partition per root: a search within a root reads only its chunks.
    return IndexItem(
        id=chunk_id,
        text=embedded_text(heading, text),
        scope=str(root_id),
        type_code=0,
        expires=math.inf,
    )


def _entry_item(entry: ChunkEntry) -> IndexItem:
    return _item(entry.id, entry.heading, entry.text, entry.root_id)


def _load_items(tx: Transaction, ids: Sequence[int], now: float) -> list[IndexItem]:
    return [_entry_item(entry) for entry in tx.documents.chunk_entries(ids)]


def _live_items(tx: Transaction) -> Iterator[IndexItem]:
    # A file not migrated yet (opened with auto_migrate=False) has no chunks.
    return (_entry_item(entry) for entry in tx.documents.live_chunk_entries())


CHUNK_KIND = IndexKind(name=KIND_NAME, vec_table=VEC_TABLE, load=_load_items, live=_live_items)


def search_mode(
    tx: Transaction, mode: SearchMode, vector: np.ndarray | None, reason: str | None
) -> tuple[SearchMode, str | None]:
    """The mode a chunk search runs in, and why if it is not the one asked for."""
    return resolve_mode(tx, VEC_TABLE, mode, vector, reason)


def pending_chunks(tx: Transaction, root_id: int | None) -> int:
    """Chunks (of one root, or of all) still waiting to be embedded."""
    return int(
        tx.execute(SQL_PENDING_CHUNKS, {"kind": KIND_NAME, "root_id": root_id}).fetchall()[0][0]
    )


def pending_chunk_jobs(root_id: int | None) -> tuple[str, dict[str, Any]]:
    """The embedding jobs of chunks (of one root, or all) as the queue selects them inline."""
    return SQL_PENDING_CHUNK_JOBS, {"kind": KIND_NAME, "root_id": root_id}


def keyword_ranking(
    tx: Transaction, query: str, root_id: int | None, prefix: str | None, depth: int
) -> list[tuple[int, float]]:
    """Chunk ids and BM25 scores, best first, for ``query`` (keyword mode)."""
    words = fts_query(query)
    if words is None:
        return []
    return [
        (int(chunk_id), float(score))
        for chunk_id, score in tx.execute(
            SQL_CHUNK_KEYWORD_SEARCH, (words, root_id, root_id, *_prefix_params(prefix), depth)
        ).fetchall()
    ]


def vector_ranking(
    tx: Transaction,
    vector: np.ndarray,
    *,
    root_id: int | None,
    allowed: list[int] | None,
    now: float,
    depth: int,
    candidates: int,
) -> list[tuple[int, float]]:
    """Chunk ids and cosines, best first (vector mode)."""
    where = VectorFilter(
        now=now,
        partition=None if root_id is None else str(root_id),
        allowed_ids=allowed,
    )
    return tx.search.vector_search(VEC_TABLE, vector, n=depth, candidates=candidates, where=where)


def relevance(
    tx: Transaction,
    used: SearchMode,
    query: str,
    vector: np.ndarray | None,
    model: str | None,
    found: list[ChunkHit],
    cosine: dict[int, float],
) -> list[float]:
    """Each hit's ``relevance``, as :func:`abathur.memory._relevance` does for memories.

    Vector: the cosine. Hybrid: the cosine from the vector ranking or the
    embedding cache, else (not embedded yet) the keyword relevance. Keyword:
    the share of the query's words in the chunk's heading and text.
    """
    texts = [f"{hit.heading} {hit.text}" for hit in found]
    if used == "keyword":
        return term_coverage(tx, query, texts)
    out: list[float | None] = [cosine.get(hit.id) for hit in found]
    missing = [i for i, value in enumerate(out) if value is None]
    if missing and vector is not None and model is not None:
        hashes = {i: content_hash(embedded_text(found[i].heading, found[i].text)) for i in missing}
        similar = cached_similarity(tx, model, vector, list(hashes.values()))
        for i, text_hash in hashes.items():
            out[i] = similar.get(text_hash)
    missing = [i for i, value in enumerate(out) if value is None]
    if missing:
        coverage = term_coverage(tx, query, [texts[i] for i in missing])
        for i, value in zip(missing, coverage, strict=True):
            out[i] = value
    return [0.0 if value is None else value for value in out]


def _prefix_params(prefix: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    if prefix is None:
        return None, None, None, None
    return prefix, prefix, prefix + "/", prefix + "0"


def keyword_search_params(
    query: str, *, root_id: int | None = None, path_prefix: str | None = None, k: int = 5
) -> tuple[Any, ...]:
    """The parameters :meth:`DocumentService.search` binds to :data:`SQL_CHUNK_KEYWORD_SEARCH`.

    So a test can ``EXPLAIN QUERY PLAN`` the exact keyword query that ships.

    Example:
        >>> from abathur.documents import keyword_search_params
        >>> keyword_search_params("restore backup", path_prefix="runbooks", k=3)
        ('"restore" OR "backup"', None, None, 'runbooks', 'runbooks', 'runbooks/', 'runbooks0', 3)
    """
    words = fts_query(query)
    if words is None:
        raise InvalidInputError(f"query {query!r} has no word to search for")
    return (words, root_id, root_id, *_prefix_params(path_prefix), k)
