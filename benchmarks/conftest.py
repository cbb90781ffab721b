"""Shared set-up for the benchmarks: one event loop and one filled database per module.

The API is async, but pytest-benchmark times plain callables: each case wraps
one call in ``loop.run_until_complete``, on a loop kept for the whole module
so that no case pays for creating one. The baseline cases pay the same
wrapping, so ratios against them cancel it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from abathur import Abathur, Event

# 10k memories under one root, in 200 namespaces of 50 keys each.
ROOT = "bench"
NAMESPACES = 200
KEYS_PER_NAMESPACE = 50
SESSION_EVENTS = 50


@dataclass
class Bench:
    """What the cases run against."""

    loop: asyncio.AbstractEventLoop
    ab: Abathur
    path: Path
    session_id: str  # holds SESSION_EVENTS events

    def run(self, coro):
        return self.loop.run_until_complete(coro)


def namespace(i: int) -> str:
    return f"{ROOT}:ns{i:03d}"


async def _fill(ab: Abathur) -> str:
    session = await ab.sessions.create(app="bench", user="reader")
    for i in range(SESSION_EVENTS):
        session = await ab.sessions.append_event(
            session.id,
            Event(
                author="user" if i % 2 else "agent",
                content={"text": f"message {i} " * 8},
                state_delta={"turn": i},
            ),
        )
    # Writes queue on the one writer; a batch of concurrent puts just keeps it busy.
    for n in range(NAMESPACES):
        await asyncio.gather(
            *(
                ab.memory.put(
                    namespace(n),
                    f"key{k:03d}",
                    {"text": f"fact {n}/{k}", "n": k},
                    metadata={"source": "bench"},
                )
                for k in range(KEYS_PER_NAMESPACE)
            )
        )
    return session.id


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    loop = asyncio.new_event_loop()
    path = tmp_path_factory.mktemp("bench") / "bench.db"
    ab = loop.run_until_complete(Abathur.open(path))
    try:
        session_id = loop.run_until_complete(_fill(ab))
        yield Bench(loop=loop, ab=ab, path=path, session_id=session_id)
    finally:
        loop.run_until_complete(ab.close())
        loop.close()
