"""Export and import speed (issue 11, "Erase and export"): not part of ``make test``.

::

    .venv/bin/python -m benchmarks.transfer                      # 10k memories, 100 x 50 events
    .venv/bin/python -m benchmarks.transfer --memories 2000 --sessions 20 --events 10

Builds a database through the public API (no embedder: export and import do
not embed), then times ``ab.transfer.export_to`` to a file, ``import_from``
into an empty file, a second ``import_from`` of the same file (everything
skipped), and checks the re-export is byte-identical. Rates are rows per
second, where a row is a memory version, a session, an event or a task (the
rows of the hot tables that move).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from abathur import Abathur, Event, logs


async def build(path: Path, memories: int, sessions: int, events: int) -> None:
    async with Abathur.open(path, embedder="none", embed_worker=False) as ab:
        for i in range(memories):
            await ab.memory.put(
                f"user:u{i % 100:03d}:facts",
                f"fact-{i}",
                {"text": f"fact number {i} about topic {i % 37}", "n": i},
                metadata={"source": "bench"},
            )
            if i % 10 == 0:  # a tenth of them have a second version
                await ab.memory.put(f"user:u{i % 100:03d}:facts", f"fact-{i}", {"n": -i})
        for s in range(sessions):
            session = await ab.sessions.create(app="bench", user=f"u{s % 100:03d}")
            for e in range(events):
                session = await ab.sessions.append_event(
                    session.id,
                    Event(author="user", content={"text": f"turn {e}"}, state_delta={"turn": e}),
                )
            await ab.tasks.create(session_id=session.id, prompt="summarise")


async def measure(folder: Path, memories: int, sessions: int, events: int) -> dict[str, object]:
    source, target, data = folder / "a.db", folder / "b.db", folder / "data.jsonl"
    started = time.perf_counter()
    await build(source, memories, sessions, events)
    built_s = time.perf_counter() - started
    async with Abathur.open(source, embedder="none", embed_worker=False) as ab:
        exported = await ab.transfer.export_to(data)
    counts = exported.counts
    rows = counts.versions + counts.sessions + counts.events + counts.tasks
    async with Abathur.open(target, embedder="none", embed_worker=False) as ab:
        imported = await ab.transfer.import_from(data)
        again = await ab.transfer.import_from(data)
        await ab.transfer.export_to(folder / "again.jsonl")
    identical = (folder / "again.jsonl").read_bytes() == data.read_bytes()
    return {
        "rows": rows,
        "counts": counts.model_dump(),
        "file_bytes": data.stat().st_size,
        "build_s": round(built_s, 2),
        "export_s": exported.seconds,
        "export_rows_per_s": round(rows / exported.seconds),
        "import_s": imported.seconds,
        "import_rows_per_s": round(rows / imported.seconds),
        "reimport_skipped_s": again.seconds,
        "reimport_rows_per_s": round(rows / again.seconds),
        "round_trip_identical": identical,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--events", type=int, default=50)
    args = parser.parse_args(argv)
    logs.configure(level="WARNING")  # stdout carries the result only
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(Path(tmp), args.memories, args.sessions, args.events))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
