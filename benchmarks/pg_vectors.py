"""PostgreSQL vector first pass: halfvec HNSW against binary-quantized HNSW (issue 14).

Both variants end as the backend's vector search ends: the first pass returns
``max(k, candidates)`` ids (``hnsw.ef_search`` at least that, iterative scan
on), their exact float32 vectors are read back and rescored in float64
(cosine), the best ``k`` kept. What differs is the first pass:

* ``halfvec``: ``embedding halfvec(dims)``, HNSW ``halfvec_cosine_ops``
  (what the backend ships);
* ``binary``: ``code bit(dims)`` = ``binary_quantize(embedding)``, HNSW
  ``bit_hamming_ops`` (32x smaller than float32, 16x smaller than halfvec).

On the same ``--memories`` vectors (the first sentences of a BEIR corpus,
embedded with :class:`benchmarks.build_100k.HashEmbedder`, or ``--real``: the
corpus's own vectors from benchmarks/beir.py's SciFact build with the
bundled model, queries embedded with it too), for each candidate count:
recall@10 against exact (numpy, float64 cosine over every vector) and the
p50 / p95 latency of the whole search (first pass + fetch + rescoring)::

    .venv/bin/python -m benchmarks.pg_vectors ../shared/eval/scifact \\
        --markdown benchmarks/results/pg_vectors.md
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.beir import CACHE, fresh_pg_database, load_jsonl, pg_server
from benchmarks.build_100k import HashEmbedder
from benchmarks.search_latency import percentile, sentences

K = 10
VARIANTS = ("halfvec", "binary")

_SQL_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %(ef)s, false), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', false)"
)
_SQL_FIRST_PASS = {
    "halfvec": (
        "SELECT id, exact FROM (SELECT id, exact, embedding <=> %(q)s::real[]::halfvec AS d "
        "FROM vec_half ORDER BY embedding <=> %(q)s::real[]::halfvec LIMIT %(n)s) AS x "
        "ORDER BY d, id"
    ),
    "binary": (
        "SELECT id, exact FROM (SELECT id, exact, code <~> binary_quantize(%(q)s::real[]::vector) "
        "AS d FROM vec_bit ORDER BY code <~> binary_quantize(%(q)s::real[]::vector) "
        "LIMIT %(n)s) AS x ORDER BY d, id"
    ),
}


def hash_vectors(texts: Sequence[str]) -> NDArray[np.float32]:
    vectors = asyncio.run(HashEmbedder().embed(list(texts)))
    return np.asarray(vectors, dtype=np.float32)


def real_vectors(dataset: Path) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """SciFact's corpus vectors from beir.py's memory build, and its queries embedded now."""
    from abathur.embeddings.bundled import BundledEmbedder

    db = CACHE / f"beir-{dataset.resolve().name}-memory" / "beir.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        blobs = [b for (b,) in conn.execute("SELECT vector FROM embedding_cache ORDER BY id")]
    finally:
        conn.close()
    corpus = np.stack([np.frombuffer(b, dtype="<f4") for b in blobs])
    queries = [q["text"] for q in load_jsonl(dataset / "queries.jsonl")]
    embedded = asyncio.run(BundledEmbedder().embed(queries))
    return corpus, np.asarray(embedded, dtype=np.float32)


def load(conn: Any, vectors: NDArray[np.float32]) -> dict[str, float]:
    dims = vectors.shape[1]
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(
        f"CREATE TABLE vec_half (id bigint PRIMARY KEY, embedding halfvec({dims}), exact bytea)"
    )
    conn.execute(f"CREATE TABLE vec_bit (id bigint PRIMARY KEY, code bit({dims}), exact bytea)")
    with conn.cursor() as cur, cur.copy("COPY vec_half (id, embedding, exact) FROM STDIN") as copy:
        for i, v in enumerate(vectors):
            copy.write_row((i, "[" + ",".join(map(repr, v.tolist())) + "]", v.tobytes()))
    conn.execute(
        "INSERT INTO vec_bit (id, code, exact) "
        "SELECT id, binary_quantize(embedding), exact FROM vec_half"
    )
    out = {}
    for name, ddl in (
        (
            "halfvec",
            "CREATE INDEX vec_half_hnsw ON vec_half USING hnsw (embedding halfvec_cosine_ops)",
        ),
        ("binary", "CREATE INDEX vec_bit_hnsw ON vec_bit USING hnsw (code bit_hamming_ops)"),
    ):
        started = time.perf_counter()
        conn.execute(ddl)
        out[f"{name}_build_s"] = time.perf_counter() - started
    conn.execute("VACUUM ANALYZE vec_half")
    conn.execute("VACUUM ANALYZE vec_bit")
    for name, index in (("halfvec", "vec_half_hnsw"), ("binary", "vec_bit_hnsw")):
        row = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()
        out[f"{name}_index_mb"] = row[0] / 2**20
    return out


def search(conn: Any, variant: str, query: NDArray[np.float32], candidates: int) -> list[int]:
    n = max(K, candidates)
    conn.execute(_SQL_SETTINGS, {"ef": str(min(1000, max(40, n)))})
    rows = conn.execute(_SQL_FIRST_PASS[variant], {"q": query.tolist(), "n": n}).fetchall()
    exact = query.astype(np.float64)
    scored = []
    for item_id, blob in rows:
        v = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        scored.append((-float(v @ exact) / (np.linalg.norm(v) * np.linalg.norm(exact)), item_id))
    scored.sort()
    return [item_id for _, item_id in scored[:K]]


def exact_top(vectors: NDArray[np.float32], query: NDArray[np.float32]) -> set[int]:
    m = vectors.astype(np.float64)
    sims = (m @ query.astype(np.float64)) / (np.linalg.norm(m, axis=1) * np.linalg.norm(query))
    return set(np.argsort(-sims, kind="stable")[:K].tolist())


def main(argv: Sequence[str] | None = None) -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--memories", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, nargs="*", default=[40, 100, 200])
    parser.add_argument("--real", action="store_true", help="SciFact's bundled-model vectors")
    parser.add_argument("--pg-url")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.real:
        vectors, queries = real_vectors(args.dataset)
        what = (
            f"{len(vectors):,} SciFact abstracts, bundled model (MiniLM, {vectors.shape[1]} dims)"
        )
    else:
        corpus = load_jsonl(args.dataset / "corpus.jsonl")
        vectors = hash_vectors(sentences(corpus, args.memories))
        texts = [q["text"] for q in load_jsonl(args.dataset / "queries.jsonl")]
        queries = hash_vectors(texts)
        what = f"{len(vectors):,} SciFact sentences, HashEmbedder ({vectors.shape[1]} dims)"
    queries = queries[: args.queries]
    truth = [exact_top(vectors, q) for q in queries]
    rows = []
    with pg_server(args.pg_url) as server:
        url = fresh_pg_database(server, "pg_vectors")
        with psycopg.connect(url, autocommit=True) as conn:
            built = load(conn, vectors)
            for q in queries[:20]:  # warm up
                for variant in VARIANTS:
                    search(conn, variant, q, 200)
            for candidates in args.candidates:
                times: dict[str, list[float]] = {v: [] for v in VARIANTS}
                recall: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for q, want in zip(queries, truth, strict=True):
                    for variant in VARIANTS:  # alternating: the machine's noise falls on both
                        started = time.perf_counter()
                        got = search(conn, variant, q, candidates)
                        times[variant].append((time.perf_counter() - started) * 1e3)
                        recall[variant].append(len(want & set(got)) / K)
                for variant in VARIANTS:
                    rows.append(
                        (
                            variant,
                            candidates,
                            statistics.fmean(recall[variant]),
                            statistics.median(times[variant]),
                            percentile(times[variant], 0.95),
                        )
                    )
    command = "python -m benchmarks.pg_vectors " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"{what}; {len(queries)} queries, k = {K}. Index build: halfvec "
        f"{built['halfvec_build_s']:.1f} s / {built['halfvec_index_mb']:.1f} MiB, binary "
        f"{built['binary_build_s']:.1f} s / {built['binary_index_mb']:.1f} MiB.",
        "",
        "| first pass | candidates | recall@10 | p50 ms | p95 ms |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {v} | {c} | {r:.4f} | {p50:.2f} | {p95:.2f} |" for v, c, r, p50, p95 in rows),
        "",
        f"Command: `{command}`",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        with args.markdown.open("a", encoding="utf-8") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
