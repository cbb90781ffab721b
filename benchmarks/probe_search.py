"""Where a search's time goes at 100k memories: the figures behind benchmarks/README.md "Search".

On the corpus of benchmarks/build_corpus.py (build it first), prints the p50 of:

* the vector search in parts, on one read connection: the binary first pass
  alone (``vectors.vector_candidates``) and the whole ``vectors.vector_search``
  (first pass + reading 200 float32 vectors + exact rescoring), unfiltered and
  within one tenant;
* the keyword query of one tenant as it ships (stop words left out) and with
  every word of the claim kept;
* one tenant's vector search through the API for 200 claims, then the same
  200 again: the difference is the first touch of the data.

Run::

    .venv/bin/python -m benchmarks.probe_search
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from abathur import Abathur, logs
from abathur.backends.sqlite.connection import connect
from abathur.backends.sqlite.search import SQL_KEYWORD_SEARCH, keyword_params
from abathur.backends.sqlite.vectors import vector_candidates, vector_search
from abathur.config import Settings
from abathur.search import VectorFilter, query_words
from benchmarks import build_corpus
from benchmarks.build_corpus import USERS, CachedEmbedder, namespace

ROUNDS = 200
CANDIDATES = 200  # k=10 x the default search_oversample


def p50_ms(fn: Callable[[int], object], rounds: int = ROUNDS) -> float:
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e3, 3)


def every_word(query: str) -> str:
    """The claim as an FTS5 query keeping every word (what fts_query did before stop words)."""
    words = dict.fromkeys(w for w in query.split() if any(c.isalnum() for c in w))
    quoted = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
    return "{key text} : (" + quoted + ")"


def parts(path: str, claims: list[str], vectors: np.ndarray) -> None:
    # A reader as abathur opens one (its pragmas: page cache, mmap, sqlite-vec).
    conn = connect(Path(path), Settings(), readonly=True)
    conn.execute("BEGIN")
    now = time.time()
    scopes = {
        "unfiltered": lambda i: VectorFilter(now=now, partition_prefix="user"),
        "one tenant": lambda i: VectorFilter(now=now, partition=namespace(i % USERS)),
    }
    vector_search(conn, "memories_vec", vectors[0], n=10, candidates=CANDIDATES,
                  where=scopes["unfiltered"](0))  # parses the chunks once  # fmt: skip
    bits = [
        conn.execute("SELECT vec_quantize_binary(?)", (v.tobytes(),)).fetchall()[0][0]
        for v in vectors[:ROUNDS]
    ]
    for scope, where in scopes.items():

        def first_pass(i: int, w: Callable[[int], VectorFilter] = where) -> object:
            return vector_candidates(conn, "memories_vec", bits[i], CANDIDATES, w(i))

        def with_rescoring(i: int, w: Callable[[int], VectorFilter] = where) -> object:
            return vector_search(
                conn, "memories_vec", vectors[i], n=10, candidates=CANDIDATES, where=w(i)
            )

        first, whole = p50_ms(first_pass), p50_ms(with_rescoring)
        print(f"vector, {scope}: first pass {first} ms, first pass + rescoring {whole} ms")
    shipped = p50_ms(
        lambda i: conn.execute(
            SQL_KEYWORD_SEARCH,
            keyword_params(query_words(claims[i]), namespace(i % USERS), limit=100, now=now),
        ).fetchall()
    )

    def all_words(i: int) -> object:
        params = keyword_params(query_words(claims[i]), namespace(i % USERS), limit=100, now=now)
        assert params is not None
        params["match"] = every_word(claims[i]) + " AND " + params["match"].split(" AND ", 1)[1]
        return conn.execute(SQL_KEYWORD_SEARCH, params).fetchall()

    print(f"keyword, one tenant, depth 100: {shipped} ms as shipped, "
          f"{p50_ms(all_words)} ms with stop words kept")  # fmt: skip
    conn.close()


async def twice(path: str, claims: list[str], vectors: np.ndarray) -> None:
    embedder = CachedEmbedder(claims, vectors)
    async with Abathur.open(path, embedder=embedder, embed_worker=False) as ab:
        await ab.memory.search(claims[0], prefix="user", k=10, mode="vector")
        for label in ("first time", "same claims again"):
            times = []
            for i in range(ROUNDS):
                started = time.perf_counter()
                await ab.memory.search(claims[i], prefix=namespace(i % USERS), k=10, mode="vector")
                times.append(time.perf_counter() - started)
            print(f"memory.search, one tenant, {label}: "
                  f"{statistics.median(times) * 1e3:.2f} ms")  # fmt: skip


def main() -> None:
    logs.configure(level="WARNING")
    path = str(build_corpus.build_db())
    qs, vectors = build_corpus.query_vectors()
    claims = [text for _, text in qs]
    parts(path, claims, vectors)
    asyncio.run(twice(path, claims, vectors))


if __name__ == "__main__":
    main()
