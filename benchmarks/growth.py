"""How abathur's cost grows with size: memories and sessions (issue 6).

    .venv/bin/python -m benchmarks.growth --quick          # 1k, 10k memories; 1, 10 sessions
    .venv/bin/python -m benchmarks.growth                  # 1k, 10k, 100k; 1, 10, 100 sessions
    .venv/bin/python -m benchmarks.growth --sizes 1000000  # the 1M point (hours here, see README)

Memories: SciFact texts (replicated) with precomputed vectors
(:mod:`benchmarks.peers.data`), spread over 100 tenants ``t:u000``..``t:u099``
(the vec0 partition key), 50 keys per namespace. Per size: put (new key),
get, prefix list of 50, vector search k=10 over everything (prefix ``t``),
vector search in one tenant's partition, hybrid search in one tenant, and one
online backup (create_backup: copy, integrity check, zstd). Sessions: 1, 10,
100 sessions x 1,000 events, then append_event and get (last 50) p50.
Writes ``benchmarks/results/growth_{memories,sessions}.{md,csv,json} and growth.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from abathur import Abathur, Event
from abathur.ops.backup import create_backup

from .peers.data import Corpus, LookupEmbedder
from .peers.harness import RESULTS, environment, markdown, pct, write

TENANTS = 100
PER_NS = 50


def ns_of(i: int) -> str:
    return f"t:u{i % TENANTS:03d}:ns{i // (TENANTS * PER_NS):05d}"


async def _time(rounds: int, fn: Any) -> list[float]:
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _row(kind: str, size: int, op: str, values: list[float], note: str = "") -> dict[str, Any]:
    return {
        "kind": kind,
        "size": size,
        "operation": op,
        "p50_ms": round(statistics.median(values) * 1e3, 3),
        "p95_ms": round(pct(values, 0.95) * 1e3, 3),
        "rounds": len(values),
        "note": note,
    }


async def memories(n: int, rounds: int) -> list[dict[str, Any]]:
    c = Corpus(n)
    rows = []
    with tempfile.TemporaryDirectory(prefix="abathur-growth-") as tmp:
        path = Path(tmp) / "g.db"
        ab = await Abathur.open(path, embedder=LookupEmbedder(c))
        try:
            t0 = time.perf_counter()
            for start in range(0, n, 500):
                await asyncio.gather(
                    *(
                        ab.memory.put(
                            ns_of(i),
                            f"d{i}",
                            {"text": c.text(i), "group": c.group(i)},
                            metadata={"group": c.group(i)},
                        )
                        for i in range(start, min(n, start + 500))
                    )
                )
            await ab.embeddings.drain()
            fill = time.perf_counter() - t0
            print(f"  {n:>9,} memories filled in {fill:.1f} s", flush=True)

            def key(i: int) -> int:
                return (i * 104729) % n

            async def put(i: int) -> None:
                await ab.memory.put(f"t:new:ns{i // PER_NS}", f"p{i}", {"text": c.text(key(i))})

            async def get(i: int) -> None:
                await ab.memory.get(ns_of(key(i)), f"d{key(i)}")

            async def lst(i: int) -> None:
                await ab.memory.list(ns_of(key(i)), limit=50)

            async def search(i: int, prefix: str, mode: str) -> None:
                r = await ab.memory.search(
                    c.query(i % len(c.queries)), prefix=prefix, k=10, mode=mode
                )
                assert r.mode == mode, r.degraded_reason

            rows.append(_row("memories", n, "put", await _time(rounds, put)))
            await ab.embeddings.drain()
            rows.append(_row("memories", n, "get", await _time(rounds, get)))
            rows.append(_row("memories", n, "prefix list 50", await _time(rounds, lst)))
            rows.append(
                _row(
                    "memories",
                    n,
                    "vector k=10, all tenants",
                    await _time(rounds, lambda i: search(i, "t", "vector")),
                )
            )
            rows.append(
                _row(
                    "memories",
                    n,
                    f"vector k=10, one tenant ({n // TENANTS})",
                    await _time(rounds, lambda i: search(i, f"t:u{i % TENANTS:03d}", "vector")),
                )
            )
            rows.append(
                _row(
                    "memories",
                    n,
                    "hybrid k=10, one tenant",
                    await _time(rounds, lambda i: search(i, f"t:u{i % TENANTS:03d}", "hybrid")),
                )
            )
            t0 = time.perf_counter()
            made = await asyncio.to_thread(create_backup, path, dest=Path(tmp) / "backups")
            rows.append(
                _row(
                    "memories",
                    n,
                    "backup (online, verified, zstd)",
                    [time.perf_counter() - t0],
                    f"{path.stat().st_size / 1e6:.0f} MB file -> "
                    f"{made.data_path.stat().st_size / 1e6:.0f} MB",
                )
            )
        finally:
            await ab.close()
    return rows


async def sessions(count: int, events: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="abathur-growth-") as tmp:
        ab = await Abathur.open(Path(tmp) / "s.db", embedder="none")
        try:
            sids = [(await ab.sessions.create(app="bench", user=f"u{s}")).id for s in range(count)]

            def ev(i: int) -> Event:
                return Event(
                    author="agent", content={"text": f"turn {i} " * 20}, state_delta={"turn": i}
                )

            t0 = time.perf_counter()
            for start in range(0, events, 50):
                await asyncio.gather(
                    *(
                        ab.sessions.append_event(s, ev(i))
                        for s in sids
                        for i in range(start, min(events, start + 50))
                    )
                )
            total = count * events
            print(
                f"  {count} sessions x {events} events in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            rows.append(
                _row(
                    "sessions",
                    total,
                    f"append_event ({count} x {events})",
                    await _time(rounds, lambda i: ab.sessions.append_event(sids[i % count], ev(i))),
                )
            )
            rows.append(
                _row(
                    "sessions",
                    total,
                    f"get last 50 ({count} x {events})",
                    await _time(rounds, lambda i: ab.sessions.get(sids[i % count], last_n=50)),
                )
            )
        finally:
            await ab.close()
    return rows


def plot(rows: list[dict[str, Any]], env: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, kind, xlabel in (
        (axes[0], "memories", "memories"),
        (axes[1], "sessions", "events stored (sessions x 1,000)"),
    ):
        ops: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["kind"] == kind:
                op = r["operation"].split(" (")[0] if kind == "sessions" else r["operation"]
                op = op.split(" (")[0] if "one tenant (" in op else op
                ops.setdefault(op, []).append((r["size"], r["p50_ms"]))
        for op, pts in ops.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=op)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"abathur: {kind}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    side = ", ".join(
        f"{k} {v}"
        for k, v in env.items()
        if k
        in (
            "date",
            "machine",
            "python",
            "abathur SQLite (apsw)",
            "sqlite-vec",
            "abathur",
            "load average (1/5/15 min)",
        )
    )
    fig.text(0.01, 0.01, side, fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)


async def main(sizes: list[int], session_counts: list[int], rounds: int) -> None:
    started_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rows += await memories(n, rounds)
    for s in session_counts:
        rows += await sessions(s, 1000, rounds)
    print(markdown(rows))
    # Memories and sessions are written apart, so either can be re-run alone;
    # the plot draws whatever both files hold.
    extra = {
        "rounds per op": rounds,
        "tenants": TENANTS,
        "load average (1/5/15 min) at the start": started_load,
    }
    for kind in ("memories", "sessions"):
        part = [r for r in rows if r["kind"] == kind]
        if part:
            write(f"growth_{kind}", part, extra)
    replot()


def replot() -> None:
    """Draw growth.png from both result files, with the memories run's machine and date."""
    every: list[dict[str, Any]] = []
    env = environment()
    for kind in ("sessions", "memories"):
        path = RESULTS / f"growth_{kind}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            every += saved["rows"]
            env = saved.get("env", env)
    try:
        plot(every, env, RESULTS / "growth.png")
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no PNG")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", type=int, nargs="*")
    p.add_argument("--sessions", type=int, nargs="*")
    p.add_argument("--rounds", type=int)
    a = p.parse_args()
    # An empty --sizes or --sessions skips that part.
    sizes = (
        a.sizes if a.sizes is not None else ([1000, 10_000] if a.quick else [1000, 10_000, 100_000])
    )
    counts = a.sessions if a.sessions is not None else ([1, 10] if a.quick else [1, 10, 100])
    asyncio.run(main(sizes, counts, a.rounds or (50 if a.quick else 200)))
