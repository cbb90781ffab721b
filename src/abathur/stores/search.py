"""``SearchIndex``: keyword and vector indexes over memories and chunks.

The protocol every backend implements; reach it inside a transaction as
``tx.search`` (see :mod:`abathur.stores`).

The service decides *what* is searched (the words of a query,
:func:`abathur.search.query_words`; the namespace prefix; filters); the index
decides *how* (a SQLite backend quotes the words into an FTS5 query and ranks
with BM25). Keyword relevance is measured with the index's own tokenizer, so
it sees words exactly as the index does.

Example:
    >>> from abathur.stores.search import VectorIndexState
    >>> VectorIndexState(model=None, has_table=False).keeps_vectors
    False
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from abathur.errors import SchemaError
from abathur.stores.memories import MetadataValue

__all__ = [
    "VECTOR_TABLE_NAMES",
    "Accept",
    "IndexItem",
    "MemoryText",
    "SearchIndex",
    "VectorFilter",
    "VectorIndexState",
    "VectorTableStats",
    "known_vector_table",
]

# Every vector index abathur keeps, one per kind of item. A name read back
# from the file (a registry of tables) reaches SQL only if it is one of these.
VECTOR_TABLE_NAMES = frozenset({"memories_vec", "chunks_vec"})


def known_vector_table(name: object) -> str:
    """``name`` if it is one of :data:`VECTOR_TABLE_NAMES`, else a :class:`SchemaError`.

    Example:
        >>> from abathur.stores.search import known_vector_table
        >>> known_vector_table("memories_vec")
        'memories_vec'
        >>> known_vector_table('x"; DROP TABLE memories; --')
        Traceback (most recent call last):
        ...
        abathur.errors.SchemaError: ...is not a vector table abathur makes...
    """
    if not isinstance(name, str) or name not in VECTOR_TABLE_NAMES:
        raise SchemaError(
            f"{name!r} is not a vector table abathur makes "
            f"({', '.join(sorted(VECTOR_TABLE_NAMES))}): the vector_tables registry of this "
            "file was edited; run 'abathur check'"
        )
    return name


class IndexItem(NamedTuple):
    """One live item as the vector index sees it."""

    id: int  # the item's row id (e.g. memories.id of its current version)
    text: str  # what is embedded
    scope: str  # its partition (abathur.search.partition_of)
    type_code: int
    expires: float  # epoch seconds; math.inf for never


class VectorTableStats(NamedTuple):
    """Live, dead and pending-delete rows of one vector table."""

    name: str
    kind: str
    dims: int
    live_rows: int  # vectors search can return
    dead_rows: int  # deleted slots kept until compaction
    pending_deletes: int  # vectors of replaced versions not yet deleted


# A predicate over candidate ids, run in the search's transaction.
Accept = Callable[[list[int]], set[int]]


@dataclass(frozen=True)
class VectorFilter:
    """What a vector search may return; all of it applies before ranking.

    Attributes:
        now: items with ``expires <= now`` are out.
        partition: only this partition (a namespace of two or more segments).
        partition_prefix: only partitions equal to it or under it (a
            one-segment namespace such as ``"user"``).
        type_code: only this type.
        allowed_ids: only these item ids (deeper namespace prefixes).
        accept: ``accept(ids)`` -> the ids among ``ids`` that pass a
            predicate the index cannot hold (metadata filters). It is asked
            about candidates in rank order, in growing windows, until enough
            pass or none are left, so a filter never starves the result and
            costs in proportion to how selective it is, not to the scope's size.
    """

    now: float
    partition: str | None = None
    partition_prefix: str | None = None
    type_code: int | None = None
    allowed_ids: Sequence[int] | None = None
    accept: Accept | None = None


class MemoryText(NamedTuple):
    """What the keyword index holds of one memory version."""

    id: int  # the version's row id
    namespace: str
    key: str
    text: str  # the words of its value (abathur.memory.memory_text)


class VectorIndexState(NamedTuple):
    """What a write needs to know about a kind's vectors, read once per write."""

    model: str | None  # the embedder recorded in the file, if any
    has_table: bool  # its vector table exists (something was embedded)

    @property
    def keeps_vectors(self) -> bool:
        """True when the file records an embedder: writes keep vectors in step."""
        return self.model is not None


class SearchIndex(Protocol):
    """Keyword and vector indexes over memories and chunks."""

    # -- keyword index of memories -------------------------------------------

    def add_memory_text(self, item: MemoryText) -> None:
        """Index one memory version's words (and its namespace, for prefix search)."""
        ...

    def remove_memory_text(self, item_id: int) -> None:
        """Take one memory version out of the keyword index (no-op if absent)."""
        ...

    def rebuild_memory_text(self, items: Iterable[MemoryText]) -> int:
        """Replace the whole keyword index of memories with ``items``; return how many.

        Also records that the index is built (:meth:`memory_text_built`).
        """
        ...

    def memory_text_built(self) -> bool:
        """True once the keyword index of memories was built for this file."""
        ...

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
        """Live, unexpired current memories under ``prefix`` matching any of ``words``.

        ``(id, score)`` best first (higher score: more relevant), at most
        ``limit``; ``type`` and ``metadata`` filter as
        :meth:`~abathur.stores.memories.MemoryStore.list_current` does.
        """
        ...

    # -- keyword index of document chunks ---------------------------------------

    def chunk_keyword_ranking(
        self, words: Sequence[str], *, root_id: int | None, path_prefix: str | None, limit: int
    ) -> list[tuple[int, float]]:
        """Document chunks matching any of ``words``: ``(id, score)`` best first, at most ``limit``.

        Only chunks of document root ``root_id`` (any root if None) whose
        document's path is ``path_prefix`` or under ``path_prefix/`` (any if None).
        A chunk's heading weighs more than its text.
        """
        ...

    def word_coverage(self, words: Sequence[str], texts: Sequence[str]) -> list[float]:
        """For each text, the share of ``words`` it contains, as the keyword index sees words."""
        ...

    # -- vectors ---------------------------------------------------------------

    def vector_index_state(self, table: str) -> VectorIndexState:
        """The recorded embedder and whether vector table ``table`` exists."""
        ...

    def vector_dims(self, table: str) -> int | None:
        """The dims of vector table ``table``; None when nothing was embedded yet."""
        ...

    def create_vector_table(
        self, table: str, kind: str, dims: int, chunk_size: int, *, now: float
    ) -> None:
        """Create vector table ``table`` for items of ``kind`` (if missing)."""
        ...

    def drop_vector_table(self, table: str) -> None:
        """Drop vector table ``table`` and everything pending for it."""
        ...

    def drop_vector_tables(self) -> None:
        """Drop every vector table, of whatever kind, and everything pending for them."""
        ...

    def drop_empty_partition(self, table: str, partition: str, *, dead: int) -> int:
        """Reclaim ``partition`` of ``table`` once it holds no vector (a smoke run's own).

        ``dead`` is how many deletes were counted against the partition.
        Returns the storage units (vec0 chunks on SQLite) freed; 0 when a
        vector remains, or when the backend keeps no partitions.
        """
        ...

    def insert_vector(self, table: str, item: IndexItem, *, model: str, content_hash: str) -> bool:
        """Add ``item``'s vector from the embedding cache; False if the cache has none yet."""
        ...

    def delete_vector(self, table: str, item_id: int) -> bool:
        """Remove an item's vector now; False if it had none."""
        ...

    def defer_vector_delete(self, table: str, item_id: int) -> None:
        """Note that ``item_id``'s vector must go; search skips it from now on."""
        ...

    def apply_vector_deletes(self, table: str | None = None) -> int:
        """Carry out the deferred deletes of ``table`` (all if None); return how many."""
        ...

    def vector_table_stats(self) -> list[VectorTableStats]:
        """Every vector table with its row counts."""
        ...

    def compact_vector_table(self, table: str, kind: str, chunk_size: int) -> int:
        """Rebuild ``table`` from its live rows, reclaiming dead slots; return the live rows."""
        ...

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

        ``candidates`` (>= n) is the size of an approximate first pass, if the
        index makes one: more is slower and closer to exact.
        """
        ...

    def cached_similarity(
        self, model: str, query: NDArray[np.float32], hashes: Sequence[str]
    ) -> dict[str, float]:
        """Cosine similarity of ``query`` with the cached vectors of texts, by content hash.

        A text with no cached vector of ``model`` is missing from the answer.
        """
        ...

    def forget_cached_vectors(self) -> None:
        """Drop what this process keeps in memory of the file's vector tables."""
        ...
