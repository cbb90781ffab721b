"""Instructions per hot call, counted by callgrind: a before/after check that noise cannot move.

Wall-clock medians on a shared machine move by more than 10% between runs
(benchmarks/results/seam_compare.md). Instruction counts do not: callgrind
counts what the CPU executes, whatever else runs beside it. This script runs
the hot calls of ``direct_timing.py``; around each batch of calls it calls
``os.getppid()``, and callgrind (``--dump-before=getppid``) writes the count
since the previous dump, so each batch is measured alone, every thread
included (the SQLite work runs on the connection's own thread).

    python -m benchmarks.instructions /work/bench-before/src src

runs both trees under valgrind (about two minutes each) and prints
instructions per call and the ratio after/before.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import pathlib
import re
import subprocess
import sys
import tempfile

CASES = ("append_event", "session_get_50", "memory_get", "memory_put", "memory_list_50",
         "keyword_search")
BATCH = 200
WARMUP = 50


async def workload() -> None:
    from abathur import Abathur, Event

    path = pathlib.Path(tempfile.mkdtemp()) / "a.db"
    async with Abathur.open(path, embedder="none", embed_worker=False) as ab:
        s = await ab.sessions.create(app="bench", user="reader")
        for i in range(50):
            s = await ab.sessions.append_event(
                s.id, Event(author="user", content={"text": f"message {i} " * 8},
                            state_delta={"turn": i}))
        for n in range(40):
            for k in range(50):
                await ab.memory.put(f"bench:ns{n:03d}", f"key{k:03d}",
                                    {"text": f"fact {n}/{k}"}, metadata={"source": "bench"})
        counter = itertools.count()
        appender = await ab.sessions.create(app="bench", user="writer")

        async def append() -> None:
            await ab.sessions.append_event(
                appender.id, Event(author="user", content={"text": "hello " * 8}))

        cases = {
            "append_event": append,
            "session_get_50": lambda: ab.sessions.get(s.id, last_n=50),
            "memory_get": lambda: ab.memory.get("bench:ns023", "key042"),
            "memory_put": lambda: ab.memory.put("scratch:put", f"key{next(counter)}", {"t": 1}),
            "memory_list_50": lambda: ab.memory.list("bench:ns023", limit=50),
            "keyword_search": lambda: ab.memory.search(
                "fact 23", prefix="bench:ns023", k=10, mode="keyword"),
        }
        for name in CASES:
            call = cases[name]
            for _ in range(WARMUP):
                await call()
            os.getppid()  # callgrind dumps: the batch starts
            for _ in range(BATCH):
                await call()
            os.getppid()  # the batch ends


def _batches(out_dir: pathlib.Path) -> list[int]:
    """Instructions of each dump, in order (dump files are NAME.1, NAME.2, ...)."""
    dumps = sorted(out_dir.glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
    counts = []
    for dump in dumps:
        match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
        counts.append(int(match[1]) if match else 0)
    # Dumps: [start..mark 1], [batch 1], [mark 2..mark 3 (warm-up)], [batch 2], ...
    return counts[1::2][: len(CASES)]


def measure(src: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{pathlib.Path.cwd()}",
               "ABATHUR_EMBEDDER": "none"}
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-before=getppid",
             f"--callgrind-out-file={out}/cg.out", sys.executable, "-m",
             "benchmarks.instructions", "--run"],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        counts = _batches(out)
    return {name: n / BATCH for name, n in zip(CASES, counts, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", help="source trees (their src/): before, after")
    parser.add_argument("--run", action="store_true", help="run the workload (under valgrind)")
    args = parser.parse_args(argv)
    if args.run:
        asyncio.run(workload())
        return 0
    results = {src: measure(src) for src in args.trees}
    print(f"{'case':<20}" + "".join(f"{s[-16:]:>16}" for s in args.trees)
          + ("     ratio" if len(args.trees) == 2 else ""))
    for name in CASES:
        row = [results[s][name] for s in args.trees]
        line = f"{name:<20}" + "".join(f"{v:>16,.0f}" for v in row)
        if len(row) == 2:
            line += f"{row[1] / row[0]:>10.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
