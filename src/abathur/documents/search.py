"""Documents and the search index: chunk vectors, embedding jobs, keyword ranking, relevance.

The rules of search are :mod:`abathur.search`'s (:func:`~abathur.search.rank`,
:func:`~abathur.search.relevance`); this module says how chunks look to it:
what is embedded for a chunk, its vector partition (its root), its keyword
ranking (``tx.search.chunk_keyword_ranking``) and its queued jobs
(``tx.queue.chunk_jobs``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from abathur.documents.chunking import Chunk, embedded_text
from abathur.embeddings.queue import JobSelect, cancel, content_hash, enqueue
from abathur.models import SearchMode
from abathur.search import (
    IndexItem,
    IndexKind,
    VectorFilter,
    query_words,
    resolve_mode,
)
from abathur.search import relevance as search_relevance
from abathur.stores import Transaction
from abathur.stores.documents import ChunkEntry, ChunkHit
from abathur.stores.queue import QueuedJob, QueueStore

__all__ = [
    "CHUNK_KIND",
    "KIND_NAME",
    "VEC_TABLE",
    "ChunkIndexing",
    "keyword_ranking",
    "pending_chunk_jobs",
    "pending_chunks",
    "relevance",
    "search_mode",
    "vector_filter",
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
        state = tx.search.vector_index_state(VEC_TABLE)
        self.model: str | None = state.model
        self.has_table = state.has_table and state.keeps_vectors
        self.vectors = configured or state.keeps_vectors
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
    return tx.queue.pending_chunks(KIND_NAME, root_id)


def pending_chunk_jobs(root_id: int | None) -> JobSelect:
    """The embedding jobs of chunks (of one root, or all), as the queue selects them inline."""

    def select(queue: QueueStore, limit: int) -> list[QueuedJob]:
        return queue.chunk_jobs(KIND_NAME, root_id, limit)

    return select


def keyword_ranking(
    tx: Transaction, query: str, root_id: int | None, prefix: str | None, depth: int
) -> list[tuple[int, float]]:
    """Chunk ids and BM25 scores, best first, for ``query`` (keyword mode)."""
    return tx.search.chunk_keyword_ranking(
        query_words(query), root_id=root_id, path_prefix=prefix, limit=depth
    )


def vector_filter(
    tx: Transaction, *, root_id: int | None, prefix: str | None, now: float
) -> VectorFilter:
    """What a vector ranking of chunks may return: one root's, under a path prefix."""
    allowed: list[int] | None = None
    if prefix is not None:
        allowed = tx.documents.chunk_ids_under(root_id, prefix)
    return VectorFilter(
        now=now,
        partition=None if root_id is None else str(root_id),
        allowed_ids=allowed,
    )


def relevance(
    tx: Transaction,
    used: SearchMode,
    query: str,
    vector: np.ndarray | None,
    model: str | None,
    found: list[ChunkHit],
    cosine: dict[int, float],
) -> list[float]:
    """Each hit's ``relevance`` (:func:`abathur.search.relevance`).

    Keyword relevance reads the chunk's heading and text; the text embedded
    for a chunk is :func:`~abathur.documents.chunking.embedded_text`.
    """

    def embedded_hash(i: int) -> str:
        return content_hash(embedded_text(found[i].heading, found[i].text))

    return search_relevance(
        tx,
        used,
        query,
        vector,
        model,
        texts=[f"{hit.heading} {hit.text}" for hit in found],
        cosines=[cosine.get(hit.id) for hit in found],
        embedded_hash=embedded_hash,
    )
