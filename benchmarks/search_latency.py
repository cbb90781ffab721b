"""Search latency at 30k memories, PostgreSQL against SQLite in the same run (issue 14).

Both backends get the same memories through the public API (``memory.put``,
``embeddings.drain``): the first ``--memories`` sentences of a BEIR corpus
(SciFact's abstracts cut at ". ": real vocabulary, memory-sized texts) spread
over ``--tenants`` tenants ``t:0000`` .. (round robin), vectors from
:class:`benchmarks.build_100k.HashEmbedder` (the bundled model would take an
hour on 2 cores; latency does not depend on which vectors). Then each query
of the corpus runs in each mode on both backends, alternately (SQLite, then
PostgreSQL, query by query, so the machine's noise falls on both), in two
scopes:

* ``all``: prefix ``t``, every memory in scope (30k across the tenants);
* ``tenant``: prefix ``t:0007``, one tenant's memories (the narrow filter).

and p50 / p95 of each (milliseconds, one ``memory.search`` call through the
API, k = 10) with the ratio PostgreSQL / SQLite of the p50s::

    .venv/bin/python -m benchmarks.search_latency ../shared/eval/scifact \\
        --markdown benchmarks/results/pg_search_latency.md

PostgreSQL is an embedded server started for the run (``--pg-url`` for
another), its database kept as ``search_latency`` for benchmarks.pg_vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abathur import Abathur
from benchmarks.beir import CACHE, fresh_pg_database, load_jsonl, pg_server
from benchmarks.build_100k import HashEmbedder

MODES = ("keyword", "vector", "hybrid")
SCOPES = {"all": "t", "tenant": "t:0007"}


def sentences(corpus: list[dict[str, Any]], n: int) -> list[str]:
    """The first ``n`` sentences (of 4 words or more) of the corpus, in order."""
    out: list[str] = []
    for doc in corpus:
        for part in f"{doc.get('title', '')}. {doc['text']}".split(". "):
            if len(part.split()) >= 4:
                out.append(part.strip())
                if len(out) == n:
                    return out
    return out


async def fill(ab: Abathur, texts: Sequence[str], tenants: int) -> dict[str, float]:
    started = time.perf_counter()
    for start in range(0, len(texts), 500):
        await asyncio.gather(
            *(
                ab.memory.put(f"t:{i % tenants:04d}", f"m{i:06d}", texts[i])
                for i in range(start, min(len(texts), start + 500))
            )
        )
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    await ab.embeddings.drain()
    return {"put_s": round(put_s, 1), "drain_s": round(time.perf_counter() - started, 1)}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    targets: dict[str, Path | str], queries: Sequence[str], rounds: int
) -> dict[tuple[str, str, str], list[float]]:
    """Milliseconds per call, by (backend, scope, mode); backends alternate query by query."""
    times: dict[tuple[str, str, str], list[float]] = {}
    opened = {}
    try:
        for backend, target in targets.items():
            opened[backend] = await Abathur.open(
                target, embedder=HashEmbedder(), embed_worker=False
            ).__aenter__()
        for ab in opened.values():  # warm up: connections, plans, the embedder's rows
            for query in queries[:20]:
                for mode in MODES:
                    await ab.memory.search(query, prefix="t", k=10, mode=mode)
        for _ in range(rounds):
            for scope, prefix in SCOPES.items():
                for mode in MODES:
                    for query in queries:
                        for backend, ab in opened.items():
                            started = time.perf_counter()
                            await ab.memory.search(query, prefix=prefix, k=10, mode=mode)
                            elapsed = (time.perf_counter() - started) * 1e3
                            times.setdefault((backend, scope, mode), []).append(elapsed)
    finally:
        for ab in opened.values():
            await ab.__aexit__(None, None, None)
    return times


def report(times: dict[tuple[str, str, str], list[float]], header: str) -> str:
    lines = [
        header,
        "",
        "| scope | mode | SQLite p50 | SQLite p95 | PostgreSQL p50 | PostgreSQL p95 | p50 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scope in SCOPES:
        for mode in MODES:
            lite = times[("sqlite", scope, mode)]
            pg = times[("postgres", scope, mode)]
            lite_p50, pg_p50 = statistics.median(lite), statistics.median(pg)
            lines.append(
                f"| {scope} | {mode} | {lite_p50:.2f} | {percentile(lite, 0.95):.2f} "
                f"| {pg_p50:.2f} | {percentile(pg, 0.95):.2f} | {pg_p50 / lite_p50:.1f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="BEIR dataset directory (texts and queries)")
    parser.add_argument("--memories", type=int, default=30_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100, help="queries per mode and scope")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pg-url", help="PostgreSQL server URL (default: embedded)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the embedded server running (then Ctrl-C)"
    )
    args = parser.parse_args(argv)
    corpus = load_jsonl(args.dataset / "corpus.jsonl")
    texts = sentences(corpus, args.memories)
    queries = [q["text"] for q in load_jsonl(args.dataset / "queries.jsonl")][: args.queries]
    work = CACHE / f"latency-{len(texts)}-{args.tenants}"
    work.mkdir(parents=True, exist_ok=True)
    sqlite_path = work / "search.db"
    built: dict[str, Any] = {}

    async def build(target: Path | str) -> dict[str, float]:
        async with Abathur.open(target, embedder=HashEmbedder(), embed_worker=False) as ab:
            return await fill(ab, texts, args.tenants)

    if not (work / "built.json").exists():
        sqlite_path.unlink(missing_ok=True)
        built["sqlite"] = asyncio.run(build(sqlite_path))
        (work / "built.json").write_text(json.dumps(built["sqlite"]))
    with pg_server(args.pg_url) as server:
        url = fresh_pg_database(server, "search_latency")
        built["postgres"] = asyncio.run(build(url))
        # What autovacuum does some time after a bulk load: without it the
        # planner reads a root prefix as selective (pg_search_latency.md).
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        print(f"built: {built}", file=sys.stderr)
        times = asyncio.run(measure({"sqlite": sqlite_path, "postgres": url}, queries, args.rounds))
        command = "python -m benchmarks.search_latency " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        header = (
            f"{len(texts):,} memories in {args.tenants} tenants, {len(queries)} queries x "
            f"{args.rounds} round(s) per scope and mode, k = 10, milliseconds per "
            f"memory.search call.\n\nCommand: `{command}`"
        )
        table = report(times, header)
        print(table)
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(table)
        if args.keep:
            print(f"PostgreSQL: {url}", file=sys.stderr)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
