"""Direct timings of hot calls, for comparing two source trees without pytest-benchmark.

Run it once per tree, alternating, pinned to one core (issue 13's checks)::

    for src in /work/bench-before/src src; do
        PYTHONPATH=$src taskset -c 0 .venv/bin/python benchmarks/direct_timing.py
    done

Each case: 100 warm-up calls, then the best of 5 medians of 200 calls, in µs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pathlib
import statistics
import tempfile
import time

from abathur import Abathur, Event


async def _time(call) -> float:
    for _ in range(100):
        await call()
    medians = []
    for _ in range(5):
        took = []
        for _ in range(200):
            start = time.perf_counter()
            await call()
            took.append(time.perf_counter() - start)
        medians.append(statistics.median(took))
    return round(min(medians) * 1e6, 1)


async def main() -> None:
    path = pathlib.Path(tempfile.mkdtemp()) / "a.db"
    async with Abathur.open(path, embedder="none", embed_worker=False) as ab:
        s = await ab.sessions.create(app="bench", user="reader")
        for i in range(50):
            s = await ab.sessions.append_event(
                s.id, Event(author="user", content={"text": f"message {i} " * 8},
                            state_delta={"turn": i}))
        for n in range(40):
            await asyncio.gather(*(
                ab.memory.put(f"bench:ns{n:03d}", f"key{k:03d}", {"text": f"fact {n}/{k}"},
                              metadata={"source": "bench"})
                for k in range(50)))
        counter = itertools.count()
        cases = {
            "session_get_50": lambda: ab.sessions.get(s.id, last_n=50),
            "memory_get": lambda: ab.memory.get("bench:ns023", "key042"),
            "memory_put": lambda: ab.memory.put("scratch:put", f"key{next(counter)}", {"t": 1}),
            "memory_list_50": lambda: ab.memory.list("bench:ns023", limit=50),
            "keyword_search": lambda: ab.memory.search(
                "fact 23", prefix="bench:ns023", k=10, mode="keyword"),
        }
        results = {name: await _time(call) for name, call in cases.items()}
    print(os.environ.get("PYTHONPATH", "installed abathur"), results)


if __name__ == "__main__":
    asyncio.run(main())
