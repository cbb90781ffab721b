"""Core operations, each one call through the public API, against a filled file.

Run with ``make bench`` (or ``.venv/bin/python -m pytest benchmarks --benchmark-only``).
See benchmarks/README.md for what each case measures and the results.
"""

from __future__ import annotations

import itertools

from abathur import Event
from benchmarks.conftest import KEYS_PER_NAMESPACE, SESSION_EVENTS, Bench, namespace


def _select_one(tx) -> list:
    # tx.conn since the storage seam (issue 13); benchmarks/compare.py also runs
    # this file against older trees, whose reads were handed the connection itself.
    return getattr(tx, "conn", tx).execute("SELECT 1").fetchall()


def test_baseline_read_roundtrip(benchmark, bench: Bench) -> None:
    """A bare read: SELECT 1 on a pooled reader, through the same loop and thread hop."""
    rows = benchmark(lambda: bench.run(bench.ab.db.read(_select_one)))
    assert rows == [(1,)]


def test_baseline_write_roundtrip(benchmark, bench: Bench) -> None:
    """A bare write transaction: BEGIN IMMEDIATE + COMMIT with nothing in it."""
    benchmark(lambda: bench.run(bench.ab.db.write(lambda c: None)))


def test_session_get_last_50(benchmark, bench: Bench) -> None:
    """sessions.get(last_n=50) of a session holding 50 events, with its merged state."""
    session = benchmark(lambda: bench.run(bench.ab.sessions.get(bench.session_id, last_n=50)))
    assert len(session.events) == SESSION_EVENTS


def test_append_event(benchmark, bench: Bench) -> None:
    """sessions.append_event, sequential, to one session, with a one-key state delta."""
    session = bench.run(bench.ab.sessions.create(app="bench", user="writer"))
    counter = itertools.count()

    def append():
        i = next(counter)
        return bench.run(
            bench.ab.sessions.append_event(
                session.id,
                Event(author="user", content={"text": f"message {i}"}, state_delta={"turn": i}),
            )
        )

    last = benchmark(append)
    assert last.revision == next(counter)


def test_memory_put(benchmark, bench: Bench) -> None:
    """memory.put of a new key (version 1) with metadata: one write transaction + audit."""
    counter = itertools.count()

    def put():
        i = next(counter)
        return bench.run(
            bench.ab.memory.put(
                "scratch:put", f"key{i}", {"text": f"fact {i}"}, metadata={"source": "bench"}
            )
        )

    assert benchmark(put).version == 1


def test_memory_get(benchmark, bench: Bench) -> None:
    """memory.get of one current version among 10k memories."""
    m = benchmark(lambda: bench.run(bench.ab.memory.get(namespace(123), "key042")))
    assert m.value == {"text": "fact 123/42", "n": 42}


def test_memory_list_prefix_50_of_10k(benchmark, bench: Bench) -> None:
    """memory.list(prefix) returning one namespace's 50 memories out of 10k under the root."""
    found = benchmark(lambda: bench.run(bench.ab.memory.list(namespace(123), limit=50)))
    assert len(found) == KEYS_PER_NAMESPACE
    assert {m.namespace for m in found} == {namespace(123)}


def test_memory_search_keyword_10k(benchmark, bench: Bench) -> None:
    """memory.search(mode="keyword", k=10) inside one namespace of the 10k: FTS5 + BM25."""
    found = benchmark(
        lambda: bench.run(
            bench.ab.memory.search("fact 123", prefix=namespace(123), k=10, mode="keyword")
        )
    )
    assert len(found.hits) == 10
    assert {hit.namespace for hit in found.hits} == {namespace(123)}
