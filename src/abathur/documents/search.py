"""Search helpers of :meth:`DocumentService.search <abathur.documents.DocumentService.search>`."""

from __future__ import annotations

from typing import Any

import apsw
import numpy as np

from abathur.documents.chunking import _embedded
from abathur.embeddings.queue import content_hash
from abathur.errors import InvalidInputError
from abathur.models import SearchMode
from abathur.search import cached_similarity, fts_query, term_coverage


def _relevance(
    conn: apsw.Connection,
    used: SearchMode,
    query: str,
    vector: np.ndarray | None,
    model: str | None,
    found: list[tuple[tuple[Any, ...], float]],
    cosine: dict[int, float],
) -> list[float]:
    """Each hit's ``relevance``, as :func:`abathur.memory._relevance` does for memories.

    Vector: the cosine. Hybrid: the cosine from the vector ranking or the
    embedding cache, else (not embedded yet) the keyword relevance. Keyword:
    the share of the query's words in the chunk's heading and text.
    """
    texts = [f"{row[1]} {row[2]}" for row, _ in found]
    if used == "keyword":
        return term_coverage(conn, query, texts)
    out: list[float | None] = [cosine.get(row[0]) for row, _ in found]
    missing = [i for i, value in enumerate(out) if value is None]
    if missing and vector is not None and model is not None:
        hashes = {i: content_hash(_embedded(found[i][0][1], found[i][0][2])) for i in missing}
        similar = cached_similarity(conn, model, vector, list(hashes.values()))
        for i, text_hash in hashes.items():
            out[i] = similar.get(text_hash)
    missing = [i for i, value in enumerate(out) if value is None]
    if missing:
        coverage = term_coverage(conn, query, [texts[i] for i in missing])
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
