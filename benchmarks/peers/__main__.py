"""Run the peer comparison: ``python -m benchmarks.peers [--quick] [--memories N ...]``.

Needs the ``bench`` extra in an interpreter whose ``sqlite3`` can load
extensions (see benchmarks/README.md, "Peers"). Set ABATHUR_BENCH_QUICK=1 or
pass --quick for the short run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3

from .harness import markdown


def _check_sqlite3() -> None:
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        raise SystemExit(
            "this Python's sqlite3 cannot load extensions, so LangGraph's AsyncSqliteStore "
            "with an index cannot load sqlite-vec. Use a venv made from Debian's python3 "
            "(make bench-peers does), see benchmarks/README.md."
        )


async def main(quick: bool, sizes: list[int], parts: set[str]) -> None:
    if "sessions" in parts:
        from . import sessions

        print(markdown(await sessions.run(quick=quick)), flush=True)
    if "memory" in parts:
        _check_sqlite3()
        from . import memory

        for n in sizes:
            print(markdown(await memory.run(n=n, quick=quick)), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument(
        "--quick", action="store_true", default=os.environ.get("ABATHUR_BENCH_QUICK") == "1"
    )
    p.add_argument("--memories", type=int, nargs="*")
    p.add_argument("--only", choices=["sessions", "memory"])
    a = p.parse_args()
    sizes = a.memories or ([5000] if a.quick else [10_000, 100_000])
    asyncio.run(main(a.quick, sizes, {a.only} if a.only else {"sessions", "memory"}))
