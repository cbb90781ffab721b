"""Abathur.open(probe=True) (issue 12): a probe's calls leave the operator's numbers alone.

Real files, real bundled embedder; each rule is shown against a normal
instance doing the same, so a test that stopped telling them apart fails.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import apsw
import pytest

from abathur import Abathur, BudgetExceededError, InvalidInputError
from abathur.backends.sqlite.queue import SQL_HELD_JOBS
from abathur.backends.sqlite.vectors import drop_empty_partition
from abathur.embeddings.queue import HELD_NOT_BEFORE
from abathur.memory import VEC_TABLE
from abathur.search import partition_of
from tests.backends import BackendHandle


def count(path: Path, sql: str, *params: object) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute(sql, params).fetchall()[0][0])
    finally:
        conn.close()


async def use(ab: Abathur, ns: str) -> None:
    """What a smoke run does: writes, reads, searches, a refused call, a drain."""
    await ab.memory.put(ns, "lang", "Alice speaks French at home")
    await ab.memory.get(ns, "lang")
    with pytest.raises(InvalidInputError):
        await ab.memory.put(ns, "bad", "x", ttl=-1)
    await ab.embeddings.drain()
    await ab.memory.search("which language", prefix=ns, k=1, mode="vector")
    await ab.memory.context(ns, "which language", max_tokens=50)


@pytest.mark.sqlite_only("counts the SQLite file's rows with apsw")
@pytest.mark.parametrize("probe", [False, True])
async def test_a_probe_writes_no_metrics_and_no_usage(tmp_path: Path, probe: bool) -> None:
    path = tmp_path / "p.db"
    async with Abathur.open(path, embed_worker=False):
        pass
    async with Abathur.open(path, embed_worker=False, probe=probe) as ab:
        assert ab.is_probe is probe
        await use(ab, "abathur-smoke:run1")
    metrics = count(path, "SELECT count(*) FROM metrics")
    usage = count(path, "SELECT count(*) FROM usage_ledger")
    if probe:
        assert (metrics, usage) == (0, 0)
    else:  # the same calls, made by an application, are counted
        assert metrics > 0 and usage > 0


@pytest.mark.sqlite_only("counts the SQLite file's rows with apsw")
async def test_a_probes_jobs_are_held_for_its_own_drain(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with (
        Abathur.open(path, embed_worker=False) as app,
        Abathur.open(path, embed_worker=False, probe=True) as probe,
    ):
        await probe.memory.put("abathur-smoke:run1", "k", "a probe's memory about tea")
        await app.memory.put("user:alice", "k", "an application's memory about coffee")
        # The application's drain (and its worker) leave the probe's job alone ...
        assert (await app.embeddings.drain()).embedded == 1
        held = "SELECT count(*) FROM embedding_queue WHERE not_before >= 1e18"
        assert count(path, held) == 1
        await app.memory.put("user:bob", "k", "another application memory")
        # ... and the probe's drain embeds only its own.
        assert (await probe.embeddings.drain()).embedded == 1
        assert count(path, "SELECT count(*) FROM embedding_queue") == 1
        assert count(path, held) == 0
    assert count(path, "SELECT count(*) FROM usage_ledger WHERE inputs > 0") == 1


async def test_a_probe_is_not_gated_by_budgets(backend: BackendHandle) -> None:
    budgets = [{"max_tokens": 0, "action": "block"}]
    async with backend.open(embed_worker=False, budgets=budgets) as app:
        await app.memory.put("abathur-smoke:run1", "k", "green tea")
        with pytest.raises(BudgetExceededError):
            await app.memory.search("tea", prefix="abathur-smoke:run1", mode="vector")
    async with backend.open(embed_worker=False, budgets=budgets, probe=True) as ab:
        await ab.memory.put("abathur-smoke:run1", "k2", "black coffee")
        assert (await ab.embeddings.drain()).embedded == 1  # its own, held job only
        found = await ab.memory.search("tea", prefix="abathur-smoke:run1", mode="vector")
        assert found.mode == "vector", found.degraded_reason


@pytest.mark.sqlite_only("checks that no file was created at the path")
async def test_probe_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as ei:
        await Abathur.open(tmp_path / "p.db", probe="yes")  # type: ignore[arg-type]
    assert "probe" in ei.value.message
    assert not (tmp_path / "p.db").exists()


@pytest.mark.sqlite_only("vec0 partitions and dead slots, through tx.conn")
async def test_dropping_an_emptied_partition_reclaims_its_dead_slots(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    gone = "abathur-smoke:run1"
    async with Abathur.open(path, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "k", "alice drinks green tea")
        for i in range(3):
            await ab.memory.put(gone, f"k{i}", f"smoke text {i}")
        await ab.embeddings.drain()
        before = await ab.memory.search("green tea", prefix="user:alice", mode="vector")

        def state(conn: apsw.Connection) -> tuple[int, int]:
            return conn.execute(
                "SELECT dead_rows, generation FROM vector_tables WHERE name = ?", (VEC_TABLE,)
            ).fetchall()[0]

        dead0, gen0 = await ab.db.read(lambda tx: state(tx.conn))
        # A vector still in the partition: nothing changes.
        part = partition_of(gone)
        dropped = await ab.db.write(
            lambda c: drop_empty_partition(c.conn, VEC_TABLE, part, dead=3)
        )
        assert dropped == 0
        assert await ab.db.read(lambda tx: state(tx.conn)) == (dead0, gen0)
        report = await ab.memory.purge(gone)
        assert report.counts["vectors"] == 3
        assert (await ab.db.read(lambda tx: state(tx.conn)))[0] == dead0 + 3
        dead = report.counts["vectors"]
        await ab.db.write(lambda c: drop_empty_partition(c.conn, VEC_TABLE, part, dead=dead))
        dead1, gen1 = await ab.db.read(lambda tx: state(tx.conn))
        assert dead1 == dead0 and gen1 != gen0
        after = await ab.memory.search("green tea", prefix="user:alice", mode="vector")
        assert [h.key for h in after.hits] == [h.key for h in before.hits] == ["k"]


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite queue")
async def test_a_probes_batch_query_uses_the_ready_index(tmp_path: Path) -> None:
    async with Abathur.open(tmp_path / "p.db", embed_worker=False) as ab:
        rows = await ab.db.read(
            lambda c: c.conn.execute(
                "EXPLAIN QUERY PLAN " + SQL_HELD_JOBS, (HELD_NOT_BEFORE, 10, 64)
            ).fetchall()
        )
    plan = " | ".join(str(row[-1]) for row in rows)
    assert "USING INDEX embedding_queue_ready (not_before>?)" in plan, plan


def vectors(path: Path) -> int:
    if not count(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'memories_vec'"):
        return 0
    return count(path, "SELECT count(*) FROM memories_vec_rowids")


@pytest.mark.sqlite_only("counts vec0 rows of the SQLite file with apsw")
async def test_a_running_worker_leaves_a_probes_job_alone(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with (
        Abathur.open(path) as app,  # its embedding worker runs
        Abathur.open(path, embed_worker=False, probe=True) as probe,
    ):
        await probe.memory.put("abathur-smoke:run1", "k", "a probe's memory about tea")
        await app.memory.put("user:alice", "k", "an application's memory about coffee")
        for _ in range(200):  # the worker embeds the application's item ...
            if vectors(path):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # ... and has had time to take another batch
        held = "SELECT count(*) FROM embedding_queue WHERE not_before >= 1e18"
        assert count(path, "SELECT count(*) FROM embedding_queue") == count(path, held) == 1
        assert vectors(path) == 1
