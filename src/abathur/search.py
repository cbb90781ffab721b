"""Keyword, vector and hybrid retrieval: the rules every kind of item shares.

What stays here is backend-neutral; how the indexes are kept is the
backend's (:class:`abathur.stores.SearchIndex`, for SQLite FTS5 and vec0 in
:mod:`abathur.backends.sqlite.search`).

* **Queries**: :func:`check_query` refuses what cannot be searched;
  :func:`query_words` picks the words searched for (stop words left out
  unless nothing else is left); :func:`check_min_score` checks a relevance floor.
* **Partitions**: :func:`partition_of`, the first two namespace segments (the
  tenant): a vector index keeps one tenant's vectors together.
* **Hybrid**: reciprocal rank fusion (:func:`rrf`) of the two rankings, and
  :func:`resolve_mode`, which falls back to keyword when vectors cannot serve.
* **Kinds**: :class:`IndexKind`, how the embedding queue reaches one kind of item.

Example:
    >>> from abathur.search import fts_query, partition_of, rrf
    >>> fts_query("tea NEAR(x* -milk")
    '"tea" OR "NEAR(x*" OR "-milk"'
    >>> partition_of("user:alice:preferences")
    'user:alice'
    >>> rrf([[1, 2, 3], [3, 1]], k=60)[0][0]
    1
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, get_args

import numpy as np
from numpy.typing import NDArray

from abathur.errors import InvalidInputError
from abathur.models import SearchMode
from abathur.stores import Transaction
from abathur.stores.search import (
    VECTOR_TABLE_NAMES,
    Accept,
    IndexItem,
    VectorFilter,
    VectorTableStats,
    known_vector_table,
)
from abathur.values import check_int, check_text

__all__ = [
    "HYBRID_DEPTH",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "SEARCH_MODES",
    "STOP_WORDS",
    "VECTOR_TABLE_NAMES",
    "Accept",
    "IndexItem",
    "IndexKind",
    "Ranking",
    "SearchMode",
    "VectorFilter",
    "VectorTableStats",
    "cached_similarity",
    "check_min_score",
    "check_query",
    "fts_query",
    "known_vector_table",
    "partition_of",
    "query_words",
    "rank",
    "relevance",
    "resolve_mode",
    "rrf",
    "term_coverage",
    "vector_search",
]

SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)

# FTS5 ORs the terms; past this many a query is a document, not a question.
MAX_QUERY_TERMS = 64
MAX_QUERY_CHARS = 8192
# The most hits one search returns (memory and document search alike).
MAX_SEARCH_K = 1000
_SEP = ":"


# ---------------------------------------------------------------------------
# What every search checks, and how it embeds its query
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchArgs:
    """The arguments memory and document search check alike, checked."""

    query: str
    k: int
    mode: SearchMode
    floor: float | None
    fresh: bool


def check_search_args(
    query: object, *, k: object, mode: object, min_score: object, fresh: object
) -> SearchArgs:
    """The arguments every search takes, checked (:class:`InvalidInputError` on a bad one).

    Example:
        >>> from abathur.search import check_search_args
        >>> check_search_args("tea", k=5, mode="hybrid", min_score=None, fresh=False).k
        5
        >>> check_search_args("tea", k=5, mode="fuzzy", min_score=None, fresh=False)
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: mode 'fuzzy' is not one of keyword, vector, hybrid
    """
    text = check_query(query)
    count = check_int(k, "k", minimum=1, maximum=MAX_SEARCH_K)
    if not isinstance(mode, str) or mode not in SEARCH_MODES:
        raise InvalidInputError(f"mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")
    floor = check_min_score(min_score)
    if not isinstance(fresh, bool):
        raise InvalidInputError(f"fresh must be a bool, got {type(fresh).__name__}")
    return SearchArgs(text, count, cast(SearchMode, mode), floor, fresh)


class QueryEmbedder(Protocol):
    """What a search needs of :class:`~abathur.embeddings.queue.EmbeddingService`."""

    @property
    def is_configured(self) -> bool: ...

    async def embed_query(
        self, text: str, *, namespace: str | None = None
    ) -> tuple[NDArray[np.float32] | None, str | None]: ...


E = TypeVar("E", bound=QueryEmbedder)


async def query_vector(
    args: SearchArgs,
    embeddings: E | None,
    *,
    owner: str,
    embed_scope: Callable[[E], Awaitable[None]],
    namespace: str | None = None,
) -> tuple[NDArray[np.float32] | None, str | None]:
    """The query's vector for a vector or hybrid search, or ``(None, why)``.

    With ``fresh``, ``embed_scope(embeddings)`` first embeds what waits in
    the search's scope. ``owner`` names the service in the fallback reason.
    """
    if args.mode == "keyword":
        return None, None
    if embeddings is None:
        return None, f"no embedder is attached to this {owner}"
    if args.fresh and embeddings.is_configured:
        await embed_scope(embeddings)
    return await embeddings.embed_query(args.query, namespace=namespace)


def outcome(args: SearchArgs, used: SearchMode, why: str | None) -> dict[str, Any]:
    """The fields every search result shares: the query, the mode used and why it fell back."""
    degraded = used != args.mode
    return {
        "query": args.query,
        "mode": used,
        "requested_mode": args.mode,
        "is_degraded": degraded,
        "degraded_reason": why if degraded else None,
    }


# ---------------------------------------------------------------------------
# Keyword
# ---------------------------------------------------------------------------


def check_query(query: object) -> str:
    """Return ``query`` if it is searchable text, else raise :class:`InvalidInputError`.

    A non-blank ``str`` of at most :data:`MAX_QUERY_CHARS` characters, valid
    Unicode; shared by memory and document search so both refuse alike.

    Example:
        >>> from abathur.search import check_query
        >>> check_query("rollback procedure")
        'rollback procedure'
        >>> check_query("  ")
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: query must not be blank
    """
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("query must not be blank")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInputError(
            f"query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}"
        )
    return check_text(query, "query")


def fts_query(text: str, *, columns: Sequence[str] = ()) -> str | None:
    """The one way user text becomes an FTS5 query: every term quoted, terms ORed.

    A keyword index quotes :func:`query_words` the same way (SQLite:
    :func:`abathur.backends.sqlite.search.fts_match`).

    Terms are the whitespace-separated words of ``text`` (control characters
    count as spaces); a term without any letter or digit is dropped, as the
    tokenizer would find nothing in it. Inside a term a ``"`` is doubled, so
    nothing the user types is FTS5 syntax. English stop words (:data:`STOP_WORDS`)
    are left out unless the query has nothing else. BM25 then ranks documents
    matching more (and rarer) terms first.

    Args:
        text: what the user typed.
        columns: restrict the terms to these FTS columns (our own names).

    Returns:
        The MATCH expression, or ``None`` when no term is left (search nothing).

    Example:
        >>> from abathur.search import fts_query
        >>> fts_query("café au lait")
        '"café" OR "au" OR "lait"'
        >>> fts_query("The cat, and the hat")
        '"cat," OR "hat"'
        >>> fts_query("to be or not to be")
        '"to" OR "be" OR "or" OR "not"'
        >>> fts_query('"*"') is None
        True
        >>> fts_query("tea", columns=("key", "text"))
        '{key text} : ("tea")'
    """
    terms = ['"' + word.replace('"', '""') + '"' for word in query_words(text)]
    if not terms:
        return None
    expression = " OR ".join(terms)
    if columns:
        expression = "{" + " ".join(columns) + "} : (" + expression + ")"
    return expression


def query_words(text: str) -> list[str]:
    """The words of a query that search looks for: :func:`fts_query`'s terms, unquoted.

    Whitespace-separated, each once, with a letter or digit; stop words left
    out unless nothing else is left; at most :data:`MAX_QUERY_TERMS`.

    Example:
        >>> from abathur.search import query_words
        >>> query_words("the stock price of NVIDIA, the stock")
        ['stock', 'price', 'NVIDIA,']
    """
    cleaned = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    words = [word for word in dict.fromkeys(cleaned.split()) if any(c.isalnum() for c in word)]
    # Stop words go unless nothing else is left: their BM25 weight is close to
    # nothing, but ranking needs each term's document count over the whole
    # index, and "the" is in nearly every document (4x the cost of a tenant's
    # search at 100k memories).
    kept = [word for word in words if _bare(word) not in STOP_WORDS] or words
    return kept[:MAX_QUERY_TERMS]


def term_coverage(tx: Transaction, query: str, texts: Sequence[str]) -> list[float]:
    """Keyword relevance: the share of the query's words each text contains, in [0, 1].

    Words are :func:`query_words` of the query, cut into tokens as the keyword
    index cuts them (SQLite: ``porter unicode61 remove_diacritics 2``: case,
    accents and English endings do not count). ``1.0``: the text has every
    word searched for; ``0.5``: half of them. Unlike BM25 it does not depend
    on the other items indexed or on the query's length, so one floor means
    the same thing for every query. Runs in the caller's transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends import open_backend
        >>> from abathur.config import Settings
        >>> from abathur.search import term_coverage
        >>> async def demo():
        ...     backend = await open_backend(Settings(db=pathlib.Path(tempfile.mkdtemp()) / "x.db"))
        ...     try:
        ...         return await backend.read(lambda tx: term_coverage(
        ...             tx, "stock price of nvidia", ["NVIDIA stocks fell", "tea"]))
        ...     finally:
        ...         await backend.close()
        >>> asyncio.run(demo())
        [0.6666666666666666, 0.0]
    """
    return tx.search.word_coverage(query_words(query), texts)


def cached_similarity(
    tx: Transaction, model: str, query: NDArray[np.float32], hashes: Sequence[str]
) -> dict[str, float]:
    """Cosine similarity of ``query`` with the cached vectors of texts, by content hash.

    For hybrid relevance: an item the keyword side found but the vector side
    did not rank still has its vector in the embedding cache (or, when not
    embedded yet, is missing from the answer).
    """
    return tx.search.cached_similarity(model, query, hashes)


def check_min_score(value: object) -> float | None:
    """Return ``value`` as a float if it is a usable relevance floor, else raise.

    A floor is ``None`` (no floor) or a finite number in [-1, 1]: relevance
    is a cosine similarity (vector, hybrid) or a share of words (keyword).

    Example:
        >>> from abathur.search import check_min_score
        >>> check_min_score(0.3), check_min_score(None)
        (0.3, None)
        >>> check_min_score(2)
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: min_score must be between -1 and 1, got 2
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"min_score must be a number or None, got {type(value).__name__}")
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise InvalidInputError(f"min_score must be between -1 and 1, got {value!r}")
    return float(value)


# Lucene's English stop words (also Elasticsearch's and Anserini's, whose BM25
# runs are BEIR's published baselines).
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
    "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
    "there", "these", "they", "this", "to", "was", "will", "with",
})  # fmt: skip


def _bare(word: str) -> str:
    """``word`` lowercased, without the punctuation around it (``"The,"`` -> ``the``)."""
    start, end = 0, len(word)
    while start < end and not word[start].isalnum():
        start += 1
    while end > start and not word[end - 1].isalnum():
        end -= 1
    return word[start:end].lower()


def rrf(rankings: Iterable[Sequence[int]], *, k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each id scores the sum of ``1 / (k + rank)`` (rank from 1).

    Args:
        rankings: ids, best first, one sequence per ranker.
        k: the fusion constant (60 in the original paper).

    Returns:
        ``(id, score)`` best first; ties broken by the smaller id.

    Example:
        >>> from abathur.search import rrf
        >>> [i for i, _ in rrf([[10, 20], [20, 30]], k=60)]
        [20, 10, 30]
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def resolve_mode(
    tx: Transaction,
    table: str,
    requested: SearchMode,
    vector: NDArray[np.float32] | None,
    reason: str | None,
) -> tuple[SearchMode, str | None]:
    """The mode a search over ``table`` can run in, and why it is not ``requested``.

    Vector and hybrid need the query's vector (``None`` when it could not be
    embedded: ``reason`` says why) and a vector table of the same dims; when
    either is missing the search falls back to keyword. Runs in the caller's
    read transaction, so the answer holds for the queries that follow.

    Returns:
        ``(mode used, reason)``; the reason is ``None`` when no fallback happened.
    """
    if requested == "keyword":
        return requested, None
    if vector is None:
        return "keyword", reason
    dims = tx.search.vector_dims(table)
    if dims is None:
        return "keyword", "no vectors yet: nothing has been embedded in this file"
    if dims != vector.shape[0]:
        return "keyword", f"the query vector has {vector.shape[0]} dims, the index {dims}"
    return requested, None


# ---------------------------------------------------------------------------
# One search, for every kind of item (memories, document chunks)
# ---------------------------------------------------------------------------

#: Hybrid search fuses this many (or 2k) results of each ranking.
HYBRID_DEPTH = 50

# One ranking: (item id, score) best first.
Ranking = list[tuple[int, float]]


def rank(
    tx: Transaction,
    used: SearchMode,
    *,
    k: int,
    keyword: Callable[[int], Ranking],
    vector: NDArray[np.float32] | None,
    vec_table: str,
    where: Callable[[], VectorFilter],
    oversample: int,
    rrf_k: int,
) -> tuple[Ranking, dict[int, float]]:
    """The ``k`` best items of a search in mode ``used`` (see :func:`resolve_mode`).

    Keyword: ``keyword(depth)``, the kind's own keyword ranking (its filters
    are its own). Vector: ``tx.search.vector_search`` over ``vec_table``,
    filtered by ``where()``, with a first pass of ``k x oversample``.
    Hybrid: both, :data:`HYBRID_DEPTH` (or ``2k``) deep, fused by :func:`rrf`.

    Returns:
        ``(ranked, cosine)``: ``(id, score)`` best first, at most ``k``, and
        the cosine similarity of every item the vector side ranked.
    """
    depth = k if used != "hybrid" else max(HYBRID_DEPTH, 2 * k)
    rankings: list[Ranking] = []
    if used in ("keyword", "hybrid"):
        rankings.append(keyword(depth))
    if used in ("vector", "hybrid"):
        assert vector is not None
        rankings.append(
            vector_search(tx, vec_table, vector, n=depth, candidates=k * oversample, where=where())
        )
    if used == "hybrid":
        ranked = rrf([[item for item, _ in ranking] for ranking in rankings], k=rrf_k)[:k]
    else:
        ranked = rankings[0][:k]
    cosine = dict(rankings[-1]) if used != "keyword" else {}
    return ranked, cosine


def vector_search(
    tx: Transaction,
    table: str,
    query: NDArray[np.float32],
    *,
    n: int,
    candidates: int,
    where: VectorFilter,
) -> list[tuple[int, float]]:
    """The vector ranking: the ``n`` items of ``table`` most similar to ``query``, best first.

    ``(id, cosine)``, filtered by ``where`` before ranking; ``candidates``
    (>= n) sizes the index's approximate first pass
    (:meth:`~abathur.stores.search.SearchIndex.vector_search`).
    """
    return tx.search.vector_search(table, query, n=n, candidates=candidates, where=where)


def relevance(
    tx: Transaction,
    used: SearchMode,
    query: str,
    vector: NDArray[np.float32] | None,
    model: str | None,
    *,
    texts: Sequence[str],
    cosines: Sequence[float | None],
    embedded_hash: Callable[[int], str],
) -> list[float]:
    """The ``relevance`` of each hit (see :class:`~abathur.models.SearchHit`).

    Vector: its cosine (``cosines[i]``, from the vector ranking). Hybrid: that
    cosine, or for a hit only the keyword side ranked the cosine of its cached
    vector (``embedded_hash(i)``: the content hash of the text embedded for
    hit ``i``); a hit with no vector at all (not embedded yet) gets its
    keyword relevance. Keyword: :func:`term_coverage` of ``texts[i]``.
    """
    if used == "keyword":
        return term_coverage(tx, query, texts)
    out: list[float | None] = list(cosines)
    missing = [i for i, value in enumerate(out) if value is None]
    if missing and vector is not None and model is not None:
        hashes = {i: embedded_hash(i) for i in missing}
        similar = tx.search.cached_similarity(model, vector, list(hashes.values()))
        for i, text_hash in hashes.items():
            out[i] = similar.get(text_hash)
    missing = [i for i, value in enumerate(out) if value is None]
    if missing:
        coverage = term_coverage(tx, query, [texts[i] for i in missing])
        for i, value in zip(missing, coverage, strict=True):
            out[i] = value
    return [0.0 if value is None else value for value in out]


# ---------------------------------------------------------------------------
# Kinds of indexed items
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexKind:
    """How the embedding queue and the vector index reach one kind of item.

    Attributes:
        name: the ``kind`` of its jobs in ``embedding_queue`` (``"memory"``).
        vec_table: its vec0 table (a constant of ours, never user input).
        load: ``load(tx, ids, now)`` -> the items among ``ids`` that are still
            live (a job whose item is gone is dropped).
        live: ``live(tx)`` -> every live item (backfill and reindex).
    """

    name: str
    vec_table: str
    load: Callable[[Transaction, Sequence[int], float], list[IndexItem]]
    live: Callable[[Transaction], Iterable[IndexItem]]

    def __post_init__(self) -> None:
        known_vector_table(self.vec_table)


def partition_of(namespace: str) -> str:
    """The vector partition of a namespace: its first two segments (the tenant).

    Example:
        >>> from abathur.search import partition_of
        >>> partition_of("user:alice:prefs"), partition_of("user:alice"), partition_of("docs")
        ('user:alice', 'user:alice', 'docs')
    """
    return _SEP.join(namespace.split(_SEP, 2)[:2])
