"""Recall@10 of abathur's vector search against exact search, and its cost, at 100k memories.

The corpus is benchmarks/build_corpus.py's: 100,000 real SciFact texts as
memories of 100 tenants, with their bundled-MiniLM vectors. The queries are
the 1,109 SciFact claims. Exact search is numpy: the cosine of the query with
every float32 vector (all 100k, or the 1,000 of one tenant), top 10.
abathur's answer is ``ab.memory.search(claim, prefix=..., k=10, mode="vector")``:
a binary first pass over every vector in scope keeps ``10 x search_oversample``
candidates, rescored exactly.

``recall@10`` = |abathur's top 10 ∩ exact top 10| / 10, averaged over queries.
Unfiltered searches use ``prefix="user"`` (every tenant: all 100k); partitioned
ones put query i in tenant ``i % 100``.

Run the curve over ``search_oversample`` (writes
``benchmarks/results/search_oversample.{csv,md}``)::

    .venv/bin/python -m benchmarks.search_quality            # 2 5 10 20 40 80
    .venv/bin/python -m benchmarks.search_quality 10 20 30

Latencies here are the median of one ``memory.search`` call each (the query's
vector comes from a precomputed table, so no model runs); they include the
event loop, thread hop and building the hits, as the pytest-benchmark cases do.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abathur import Abathur
from benchmarks.build_corpus import (
    USERS,
    CachedEmbedder,
    assignment,
    build_db,
    corpus_vectors,
    index_of,
    namespace,
    query_vectors,
)

RESULTS = Path(__file__).resolve().parent / "results"
K = 10


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row indices of the k most similar corpus vectors per query (cosine), best first."""
    unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 128):
        q = queries[start : start + 128]
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        sims = q @ unit.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + len(q)] = np.take_along_axis(top, order, axis=1)
    return out


def exact_top_in_partitions(
    corpus: np.ndarray, queries: np.ndarray, owner: np.ndarray, users: Sequence[int], k: int = K
) -> np.ndarray:
    """Like :func:`exact_top`, query i searching only the rows of tenant ``users[i]``."""
    out = np.empty((len(queries), k), dtype=np.int64)
    members = {u: np.flatnonzero(owner == u) for u in set(users)}
    for i, user in enumerate(users):
        rows = members[user]
        out[i] = rows[exact_top(corpus[rows], queries[i : i + 1], k)[0]]
    return out


def recall(found: Sequence[Sequence[int]], exact: np.ndarray) -> float:
    """Mean |found_i ∩ exact_i| / k."""
    k = exact.shape[1]
    hits = [len(set(f[:k]) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / k


@dataclass
class Truth:
    """Everything a recall measurement compares against, computed once."""

    texts: list[str]
    query_texts: list[str]
    query_vectors: np.ndarray
    users: list[int]
    exact: np.ndarray  # (queries, K) over all 100k
    exact_partition: np.ndarray  # (queries, K) within tenant users[i]


def truth() -> Truth:
    texts, vectors = corpus_vectors()
    qs, qvecs = query_vectors()
    owner = assignment(len(texts))
    users = [i % USERS for i in range(len(qs))]
    query_texts = [text for _, text in qs]
    return Truth(
        texts=texts,
        query_texts=query_texts,
        query_vectors=qvecs,
        users=users,
        exact=exact_top(vectors, qvecs),
        exact_partition=exact_top_in_partitions(vectors, qvecs, owner, users),
    )


@dataclass
class Point:
    oversample: int
    recall_unfiltered: float
    recall_partition: float
    p50_unfiltered_ms: float
    p50_partition_ms: float


async def measure(path: Path, t: Truth, oversample: int | None) -> Point:
    """Recall and median latency of vector search with one ``search_oversample``."""
    settings = {} if oversample is None else {"search_oversample": oversample}
    embedder = CachedEmbedder(t.query_texts, t.query_vectors)
    async with Abathur.open(path, embedder=embedder, embed_worker=False, **settings) as ab:
        await ab.memory.search(t.query_texts[0], prefix="user", k=K, mode="vector")  # warm
        found: dict[str, list[list[int]]] = {"unfiltered": [], "partition": []}
        times: dict[str, list[float]] = {"unfiltered": [], "partition": []}
        for i, query in enumerate(t.query_texts):
            for scope, prefix in (("unfiltered", "user"), ("partition", namespace(t.users[i]))):
                started = time.perf_counter()
                result = await ab.memory.search(query, prefix=prefix, k=K, mode="vector")
                times[scope].append(time.perf_counter() - started)
                assert result.mode == "vector", result.degraded_reason
                found[scope].append([index_of(hit.key) for hit in result.hits])
        used = ab.settings.search_oversample
    return Point(
        oversample=used,
        recall_unfiltered=recall(found["unfiltered"], t.exact),
        recall_partition=recall(found["partition"], t.exact_partition),
        p50_unfiltered_ms=statistics.median(times["unfiltered"]) * 1e3,
        p50_partition_ms=statistics.median(times["partition"]) * 1e3,
    )


def write_curve(points: Sequence[Point], stem: str = "search_oversample") -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    csv_path, md_path = RESULTS / f"{stem}.csv", RESULTS / f"{stem}.md"
    header = [
        "oversample",
        "candidates_k10",
        "recall@10_unfiltered",
        "p50_ms_unfiltered",
        "recall@10_partition",
        "p50_ms_partition",
    ]
    rows = [
        [
            p.oversample,
            p.oversample * K,
            f"{p.recall_unfiltered:.4f}",
            f"{p.p50_unfiltered_ms:.2f}",
            f"{p.recall_partition:.4f}",
            f"{p.p50_partition_ms:.2f}",
        ]
        for p in points
    ]
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---:|" * len(header),
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("oversample", type=int, nargs="*", default=[2, 5, 10, 20, 40, 80])
    args = parser.parse_args(argv)
    path = build_db()
    t = truth()
    points = []
    for oversample in args.oversample:
        point = asyncio.run(measure(path, t, oversample))
        points.append(point)
        print(point, file=sys.stderr)
    for out in write_curve(points):
        print(out)
    print(Path(RESULTS / "search_oversample.md").read_text())


if __name__ == "__main__":
    main()
