"""``memory_search`` through the MCP server over stdio (issue 15): not part of ``make test``.

::

    .venv/bin/python -m benchmarks.mcp_stdio                       # 10k memories, 200 calls
    .venv/bin/python -m benchmarks.mcp_stdio --memories 1000 --calls 50 --embedder none

Builds a database of ``--memories`` memories in one scope (``user:bench``, so
every search ranks all of them) through the public API and embeds them
(``embeddings.drain()``; the bundled MiniLM by default). Then starts ``abathur
mcp --db FILE --scope user:bench`` as a subprocess, connects with the SDK's
``stdio_client`` as Claude Desktop would, warms up (the first vector search
loads the model), and times ``--calls`` calls of ``memory_search`` per mode,
round trip as the client sees it: JSON-RPC over the pipes, validation, the
search, the result's JSON. Prints one JSON document: p50, p95, mean per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from abathur import Abathur

SCOPE = "user:bench"
TOPICS = ["coffee", "hiking", "python", "jazz", "gardening", "chess", "sailing", "baking",
          "astronomy", "cycling", "poetry", "kubernetes", "tennis", "photography", "sushi",
          "climbing", "opera", "databases", "pottery", "running"]  # fmt: skip
PLACES = ["Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Lima", "Perth", "Quebec"]


def text(i: int) -> str:
    topic, other = TOPICS[i % len(TOPICS)], TOPICS[(i * 7 + 3) % len(TOPICS)]
    place = PLACES[(i // len(TOPICS)) % len(PLACES)]
    return f"Fact {i}: likes {topic} more than {other}, learned it in {place} in {1990 + i % 35}."


async def build(path: Path, memories: int, embedder: str) -> float:
    started = time.perf_counter()
    async with Abathur.open(path, embedder=embedder, embed_worker=False) as ab:
        for i in range(memories):
            await ab.memory.put(f"{SCOPE}:facts:{i % 50:02d}", f"fact-{i:05d}", text(i))
        if embedder != "none":
            await ab.embeddings.drain()
    return time.perf_counter() - started


async def measure(path: Path, calls: int, embedder: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    env["ABATHUR_EMBEDDER"] = embedder
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "abathur", "mcp", "--db", str(path), "--scope", SCOPE, "--log-level",
              "warning"],
        env=env,
    )  # fmt: skip
    modes = ["keyword"] if embedder == "none" else ["hybrid", "vector", "keyword"]
    results: dict[str, object] = {}
    async with Client(params) as client:
        for mode in modes:
            for i in range(5):  # warm-up: the model loads on the first vector search
                await client.call_tool("memory_search", {"query": text(i), "mode": mode})
            times: list[float] = []
            for i in range(calls):
                # Each query distinct: the embedding cache would answer a repeated one.
                topic, place = TOPICS[i % len(TOPICS)], PLACES[i % len(PLACES)]
                query = f"who likes {topic} from {place}, call {i}"
                started = time.perf_counter()
                reply = await client.call_tool(
                    "memory_search", {"query": query, "mode": mode, "k": 10}
                )
                times.append((time.perf_counter() - started) * 1000)
                assert not reply.is_error, reply.content
                assert reply.structured_content and reply.structured_content["hits"], query
                assert reply.structured_content["mode"] == mode, reply.structured_content
            times.sort()
            results[mode] = {
                "calls": calls,
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                "mean_ms": round(statistics.fmean(times), 2),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--embedder", default="bundled", choices=["bundled", "none"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        built_s = asyncio.run(build(path, args.memories, args.embedder))
        searches = asyncio.run(measure(path, args.calls, args.embedder))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"memories": args.memories, "scope": SCOPE, "embedder": args.embedder,
                      "build_s": round(built_s, 1), "load_average_1m": load,
                      "memory_search": searches}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
