"""Long-term memory: LangGraph's AsyncSqliteStore (with an index) vs abathur's MemoryService.

Same data on both sides (:mod:`benchmarks.peers.data`): ``n`` SciFact texts,
value ``{"text": ..., "group": "g0".."g9"}``, 50 keys per namespace, all in
one tenant (abathur partition ``bench:all``), the same precomputed 384-dim
vectors (LangGraph: ``index={"dims": 384, "embed": lookup, "fields": ["text"]}``;
abathur: an embedder that looks the same vectors up). Operations, timed
alternately: put (new key), get, prefix search of 50 (one namespace), vector
search k=10, vector search k=10 filtered to one group (a tenth). Recall@10 is
against exact cosine search over the same vectors (numpy).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import langgraph.store.sqlite.aio as lg_aio
import sqlite_vec
from langgraph.store.base import PutOp
from langgraph.store.sqlite.aio import AsyncSqliteStore

from abathur import Abathur

from .data import Corpus, LookupEmbedder
from .harness import Timings, alternate, table, write

PER_NS = 50


def ns_of(i: int) -> str:
    return f"ns{i // PER_NS:05d}"


def _id(key: str) -> int:
    return int(key[1:])


def _separate_sqlite_vec(directory: Path) -> None:
    """Make LangGraph's sqlite3 use its own instance of the sqlite-vec library.

    sqlite-vec keeps the SQLite API table it was loaded with in an exported
    global (``sqlite3_api``), and SQLite dlopens extensions RTLD_GLOBAL, so
    every later load binds to the first instance's global: loading it into
    the stdlib sqlite3 (LangGraph) repoints abathur's apsw-loaded instance at
    the other SQLite library, and vec0 fails on whichever side loaded first
    ("vec0 constructor error: could not declare virtual table, 'bad parameter
    or other API misuse'"), even from a copy of the .so. A copy preloaded with
    RTLD_DEEPBIND binds to its own global; then SQLite's dlopen of that path
    reuses it. Call after abathur has opened (its instance is then bound).
    """
    src = Path(sqlite_vec.loadable_path() + ".so")
    copy = directory / src.name
    shutil.copy(src, copy)
    ctypes.CDLL(str(copy), mode=os.RTLD_NOW | os.RTLD_LOCAL | os.RTLD_DEEPBIND)
    lg_aio.sqlite_vec = types.SimpleNamespace(  # type: ignore[assignment]
        loadable_path=lambda: str(copy.with_suffix("")),
        serialize_float32=sqlite_vec.serialize_float32,
    )


async def fill_abathur(ab: Abathur, c: Corpus) -> float:
    t0 = time.perf_counter()
    for start in range(0, c.n, 500):
        await asyncio.gather(
            *(
                ab.memory.put(
                    f"bench:all:{ns_of(i)}",
                    f"d{i}",
                    {"text": c.text(i), "group": c.group(i)},
                    metadata={"group": c.group(i)},
                )
                for i in range(start, min(c.n, start + 500))
            )
        )
    await ab.embeddings.drain()
    return time.perf_counter() - t0


async def fill_langgraph(store: AsyncSqliteStore, c: Corpus) -> float:
    t0 = time.perf_counter()
    for start in range(0, c.n, 500):
        await store.abatch(
            [
                PutOp(("bench", "all", ns_of(i)), f"d{i}", {"text": c.text(i), "group": c.group(i)})
                for i in range(start, min(c.n, start + 500))
            ]
        )
    return time.perf_counter() - t0


async def run(*, n: int, quick: bool) -> list[dict[str, Any]]:
    c = Corpus(n)
    rounds = 30 if quick else 100
    nq = min(rounds, len(c.queries))

    def embed(texts: list[str]) -> list[list[float]]:
        return [c.lookup(t).tolist() for t in texts]

    recall: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="abathur-peers-") as tmp:
        d = Path(tmp)
        ab = await Abathur.open(d / "abathur.db", embedder=LookupEmbedder(c))
        _separate_sqlite_vec(d)
        async with AsyncSqliteStore.from_conn_string(
            str(d / "langgraph.db"),
            index={"dims": 384, "embed": embed, "fields": ["text"]},
        ) as store:
            await store.setup()
            fill = {
                "abathur": await fill_abathur(ab, c),
                "langgraph": await fill_langgraph(store, c),
            }
            t = Timings()
            extra = n  # new keys for put, beyond the corpus

            async def ab_put(i: int) -> None:
                j = (i * 7919) % n
                await ab.memory.put(
                    f"bench:new:{ns_of(i)}",
                    f"p{extra + i}",
                    {"text": c.text(j), "group": c.group(j)},
                    metadata={"group": c.group(j)},
                )

            async def lg_put(i: int) -> None:
                j = (i * 7919) % n
                await store.aput(
                    ("bench", "new", ns_of(i)),
                    f"p{extra + i}",
                    {"text": c.text(j), "group": c.group(j)},
                )

            await alternate(
                t, "put (new key, embedded)", {"abathur": ab_put, "langgraph": lg_put}, rounds
            )
            # abathur embeds after commit (queue); count that work in the put too.
            t0 = time.perf_counter()
            await ab.embeddings.drain()
            drain = time.perf_counter() - t0
            vals = t.rows[("put (new key, embedded)", "abathur")]
            t.rows[("put (new key, embedded)", "abathur")] = [v + drain / len(vals) for v in vals]
            t.notes[("put (new key, embedded)", "abathur")] = (
                f"includes the queued embedding, {drain / len(vals) * 1e3:.3f} ms/put amortised"
            )

            def key(i: int) -> int:
                return (i * 104729) % n

            async def ab_get(i: int) -> None:
                assert await ab.memory.get(f"bench:all:{ns_of(key(i))}", f"d{key(i)}") is not None

            async def lg_get(i: int) -> None:
                assert await store.aget(("bench", "all", ns_of(key(i))), f"d{key(i)}") is not None

            await alternate(t, "get", {"abathur": ab_get, "langgraph": lg_get}, rounds)

            async def ab_list(i: int) -> None:
                ns = ns_of(key(i))
                assert len(await ab.memory.list(f"bench:all:{ns}", limit=50)) == PER_NS or n < 50

            async def lg_list(i: int) -> None:
                ns = ns_of(key(i))
                assert len(await store.asearch(("bench", "all", ns), limit=50)) == PER_NS or n < 50

            await alternate(
                t,
                "prefix search, 50 of one namespace",
                {"abathur": ab_list, "langgraph": lg_list},
                rounds,
            )

            found: list[tuple[str, str, int, list[int], str | None]] = []

            def record(op: str, backend: str, q: int, ids: list[int], group: str | None) -> None:
                # Scored after the timing: exact search is not part of either side.
                found.append((op, backend, q, ids, group))

            for op, group_of in (
                ("vector search k=10", lambda q: None),
                ("vector search k=10, filtered (1/10)", lambda q: f"g{q % 10}"),
            ):

                async def ab_vec(i: int, op: str = op, group_of: Any = group_of) -> None:
                    q = i % nq
                    g = group_of(q)
                    r = await ab.memory.search(
                        c.query(q),
                        prefix="bench:all",
                        k=10,
                        mode="vector",
                        filter={"group": g} if g else None,
                    )
                    assert r.mode == "vector", r.degraded_reason
                    record(op, "abathur", q, [_id(h.key) for h in r.hits], g)

                async def lg_vec(i: int, op: str = op, group_of: Any = group_of) -> None:
                    q = i % nq
                    g = group_of(q)
                    hits = await store.asearch(
                        ("bench", "all"),
                        query=c.query(q),
                        limit=10,
                        filter={"group": g} if g else None,
                    )
                    record(op, "langgraph", q, [_id(h.key) for h in hits], g)

                await alternate(t, op, {"abathur": ab_vec, "langgraph": lg_vec}, rounds)
            size = (d / "langgraph.db").stat().st_size, (d / "abathur.db").stat().st_size
            truths: dict[tuple[int, str | None], set[int]] = {}
            for op, backend, q, ids, group in found:
                truth = truths.get((q, group))
                if truth is None:
                    truth = truths[(q, group)] = set(c.exact_top(q, 10, group))
                recall.setdefault((op, backend), []).append(len(truth & set(ids)) / 10)
        await ab.close()
    for (op, backend), values in recall.items():
        note = f"recall@10 {sum(values) / len(values):.3f}"
        t.notes[(op, backend)] = note
    rows = table(t, "abathur")
    write(
        f"peers_memory_{n}",
        rows,
        {
            "memories": n,
            "rounds per op": rounds,
            "fill seconds": {k: round(v, 1) for k, v in fill.items()},
            "file MB (langgraph, abathur)": [round(s / 1e6) for s in size],
        },
    )
    return rows
