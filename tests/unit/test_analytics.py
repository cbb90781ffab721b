"""AnalyticsService: call latencies measured cheaply and merged exactly across windows and
processes, namespace access counted, and counts, growth and sizes read from the tables."""

from __future__ import annotations

import asyncio
import inspect
import random
import time

import numpy as np
import pytest

from abathur import Abathur, Event, InvalidInputError
from abathur.analytics import CallRecorder, recorded, sparkline
from abathur.backends.sqlite.metrics import SQL_METRICS_SINCE
from abathur.documents import DocumentService
from abathur.memory import MemoryService
from abathur.sessions import SessionService
from abathur.tasks import TaskService
from tests.backends import BackendHandle
from tests.helpers import assert_unchanged


async def rows(ab: Abathur, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of ``sql`` on the SQLite file (tests that use it are sqlite_only)."""
    return await ab.db.read(lambda tx: tx.conn.execute(sql, params).fetchall())


def test_percentiles_are_within_a_bucket_of_the_truth() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(-7, 1.0) for _ in range(20_000)]  # ~1 ms median, in seconds
    recorder = CallRecorder()
    for s in samples:
        recorder.record("memory.get", s, ok=True)
    stats = recorder.snapshot()["memory.get"].stats("memory.get")
    truth = np.percentile(np.array(samples) * 1000, [50, 95, 99])
    for got, want in zip((stats.p50_ms, stats.p95_ms, stats.p99_ms), truth, strict=True):
        assert abs(got - want) / want < 0.10, (got, want)
    assert stats.calls == 20_000 and stats.max_ms == pytest.approx(max(samples) * 1000, rel=1e-4)
    assert stats.mean_ms == pytest.approx(np.mean(samples) * 1000, rel=1e-3)


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▂▃▄▅▅▆▇█"


async def test_instrumented_calls_errors_and_namespaces(backend: BackendHandle) -> None:
    async with backend.open(embedder="none") as ab:
        await ab.memory.put("user:alice:prefs", "lang", "fr")
        await ab.memory.put("user:alice:prefs", "tea", "green")
        await ab.memory.get("user:alice:prefs", "lang")
        await ab.memory.search("fr", prefix="user:alice")
        with pytest.raises(InvalidInputError):
            await ab.memory.put("user:alice", "k", {1, 2})
        s = await ab.sessions.create(app="a", user="u")
        await ab.sessions.append_event(s.id, Event(author="user", content="hi"))
        stats = await ab.analytics.stats()
    calls = {c.name: c for c in stats.calls}
    assert (calls["memory.put"].calls, calls["memory.put"].errors) == (3, 1)
    assert calls["memory.search"].calls == 1 and calls["sessions.append_event"].calls == 1
    assert all(c.p50_ms <= c.p95_ms <= c.p99_ms <= c.max_ms for c in stats.calls)
    assert [(n.name, n.count) for n in stats.top_writes] == [
        ("user:alice:prefs", 2),
        ("user:alice", 1),
    ]
    assert [(n.name, n.count) for n in stats.top_reads] == [
        ("user:alice", 1),
        ("user:alice:prefs", 1),
    ]


@pytest.mark.sqlite_only("reads and writes the metrics table with SQL")
async def test_windows_flush_to_the_metrics_table_and_merge_across_processes(
    backend: BackendHandle,
) -> None:
    async with backend.open(embedder="none", metrics_flush_s=0.05) as ab:
        for i in range(20):
            await ab.memory.put("user:alice", f"k{i}", i)
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
        flushed = await rows(
            ab,
            "SELECT count(DISTINCT at), sum(count) FROM metrics "
            "WHERE kind = 'call' AND name = 'memory.put'",
        )
        assert flushed[0][0] >= 2, "the recorder flushed more than one window by itself"
    async with backend.open(embedder="none") as ab:
        await ab.memory.get("user:alice", "k1")
        stats = await ab.analytics.stats(since="1h")
        calls = {c.name: c.calls for c in stats.calls}
        assert calls == {"memory.put": 20, "memory.get": 1}  # flushed + this process's own
        assert stats.top_writes[0].count == 20


@pytest.mark.sqlite_only("reads and writes the metrics table with SQL")
async def test_old_windows_are_pruned(backend: BackendHandle) -> None:
    async with backend.open(embedder="none", metrics_retention_days=1) as ab:
        await ab.db.write(
            lambda tx: tx.conn.execute(
                "INSERT INTO metrics (at, seconds, kind, name, count) VALUES (?, 60, 'call', "
                "'memory.get', 5)",
                (time.time() - 3 * 86400,),
            )
        )
        await ab.memory.put("user:alice", "k", 1)
        await ab.analytics.flush()
        names = await rows(ab, "SELECT name FROM metrics ORDER BY id")
        assert names == [("memory.put",), ("user:alice",)]


async def test_the_wrapper_costs_microseconds(ab: Abathur) -> None:
    class Noop:
        def __init__(self, recorder: CallRecorder | None) -> None:
            self.recorder = recorder

        @recorded("noop.call")
        async def call(self) -> None:
            return None

    bare, wrapped = Noop(None), Noop(CallRecorder())

    async def timed(obj: Noop) -> float:
        started = time.perf_counter()
        for _ in range(20_000):
            await obj.call()
        return time.perf_counter() - started

    await timed(wrapped)
    extra = min([await timed(wrapped) - await timed(bare) for _ in range(3)]) / 20_000
    assert extra < 10e-6, f"{extra * 1e6:.1f} µs per call"
    assert list(wrapped.recorder.snapshot()) == ["noop.call"]


@pytest.mark.parametrize(
    ("service", "prefix"),
    [(SessionService, "sessions"), (TaskService, "tasks"), (MemoryService, "memory"),
     (DocumentService, "documents")],
)
def test_every_public_call_is_recorded_under_its_name(service: type, prefix: str) -> None:
    """A public coroutine method added without @recorded would be missing from stats."""
    methods = [
        (name, fn)
        for name, fn in inspect.getmembers(service, inspect.iscoroutinefunction)
        if not name.startswith("_") and name != "close"  # close runs after the last flush
    ]
    assert methods
    names = {name: getattr(fn, "__recorded__", None) for name, fn in methods}
    assert names == {name: f"{prefix}.{name}" for name, _ in methods}


async def test_a_probe_records_no_calls(backend: BackendHandle) -> None:
    async with backend.open(embed_worker=False, probe=True) as ab:
        await ab.memory.put("user:alice", "k", 1)
        await ab.sessions.create(app="a", user="u")
        assert ab.analytics.recorder.snapshot() == {}
        assert ab.memory.recorder is None


@pytest.mark.sqlite_only("reads and writes the metrics table with SQL")
async def test_counts_growth_and_sizes(backend: BackendHandle) -> None:
    async with backend.open(embedder="none") as ab:
        for i in range(6):
            await ab.memory.put(f"user:u{i % 2}:notes", f"k{i}", i)
        await ab.memory.put("user:u0:notes", "k0", "v2")
        await ab.memory.put("user:u0:eps", "e", "x", type="episodic")
        await ab.memory.put("app:demo", "p", "x", type="procedural")
        await ab.memory.delete("user:u1:notes", "k1")
        for n in (3, 1, 0):
            s = await ab.sessions.create(app="a", user="u")
            for j in range(n):
                await ab.sessions.append_event(s.id, Event(author="user", content=j))
        await ab.sessions.terminate(s.id)
        # Two memories and a session written 3 days ago, for the growth series.
        await ab.db.write(
            lambda tx: tx.conn.execute(
                "UPDATE memories SET first_created_at = first_created_at - 3 * 86400 "
                "WHERE key IN ('k2', 'k3')"
            )
        )
        await ab.memory.put("user:u0:notes", "gone", 1, ttl=0.01)
        await asyncio.sleep(0.02)
        async with assert_unchanged(ab):
            stats = await ab.analytics.stats(days=5, depth=2, top=2)
    assert stats.memories == 7  # 6 keys + episodic + procedural - deleted - expired
    assert stats.versions == 11
    assert stats.memories_by_type == {"semantic": 5, "episodic": 1, "procedural": 1}
    assert [(n.name, n.count, n.new_7d) for n in stats.namespaces] == [
        ("user:u0", 4, 4),
        ("user:u1", 2, 2),
    ]
    assert stats.sessions_by_status == {"active": 2, "terminated": 1}
    assert stats.events == 4
    assert stats.events_per_session == {"mean": 2.0, "p50": 3.0, "p95": 3.0, "max": 3.0}
    growth = {g.name: g for g in stats.growth}
    assert len(growth["memories"].days) == 5
    # Every memory first written that day, deleted and expired ones included.
    assert growth["memories"].counts[-4] == 2 and growth["memories"].counts[-1] == 7
    assert growth["memories:episodic"].counts[-1] == 1
    assert growth["sessions"].counts == [0, 0, 0, 0, 3]
    assert growth["events"].sparkline == "▁▁▁▁█"
    assert stats.db_bytes > 0 and stats.archive_bytes > 0 and stats.queue_depth == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "forever"}, "duration 'forever'"),
        ({"since": -1}, "positive duration"),
        ({"days": 0}, "days must be an integer from 1 to 366"),
        ({"depth": True}, "depth must be an integer"),
        ({"top": 5000}, "top must be an integer from 1 to 1000"),
    ],
)
async def test_stats_refuses_bad_arguments(ab: Abathur, kwargs: dict, message: str) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.analytics.stats(**kwargs)
    assert ei.value.code == "invalid_input" and message in ei.value.message


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of SQLite's SQL (PostgreSQL: test_pg_inspection)")
async def test_metrics_query_uses_its_index(ab: Abathur) -> None:
    plan = await rows(ab, "EXPLAIN QUERY PLAN " + SQL_METRICS_SINCE, (0.0,))
    assert "USING INDEX metrics_by_time (at>?)" in " ".join(str(r[-1]) for r in plan)
