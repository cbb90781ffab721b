"""Read-your-writes (issue 12): ``search(..., fresh=True)`` embeds the memories of its
scope still waiting for the worker, inline, before searching; a search that could not
see some memories says so (``pending``); inline embedding never inserts a vector the
background worker of this or another process inserts at the same moment.

The ``WordHashEmbedder`` and ``GatedEmbedder`` are test doubles of the Embedder
protocol (tests/unit/test_embedding_queue.py); the first-search test runs the
bundled MiniLM, as users do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from abathur import Abathur, InvalidInputError
from abathur.ops.integrity import run_checks
from tests.backends import BackendHandle
from tests.embedders import GatedEmbedder, WordHashEmbedder
from tests.helpers import assert_unchanged, rows


def keys(result) -> list[str]:
    return [hit.key for hit in result]


@pytest.mark.sqlite_only("reads SQLite tables (the queue, the vec0 table) to check the work")
async def test_fresh_finds_a_memory_written_a_moment_ago_by_vector(backend: BackendHandle) -> None:
    # The worker is off: without fresh the new memory stays invisible to the
    # vector ranking for as long as the worker is behind (about 2 s in real use).
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        await ab.memory.put("user:alice", "old", "Alice likes green tea")
        await ab.embeddings.drain()
        await ab.memory.put("user:alice", "new", "Alice adopted a zebra named Zed")
        stale = await ab.memory.search("zebra Zed", prefix="user:alice", mode="vector")
        assert stale.mode == "vector"
        assert "new" not in keys(stale)
        assert stale.pending == 1, "the result must say what the vector ranking could not see"
        found = await ab.memory.search("zebra Zed", prefix="user:alice", mode="vector", fresh=True)
        assert found.mode == "vector" and not found.is_degraded
        assert keys(found)[0] == "new"
        assert found.pending == 0
        assert await rows(ab, "SELECT count(*) FROM embedding_queue") == [(0,)]
        assert await rows(ab, "SELECT count(*) FROM memories_vec") == [(2,)]


@pytest.mark.sqlite_only("reads SQLite tables (the queue, the vec0 table) to check the work")
async def test_fresh_embeds_only_the_searched_scope(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        await ab.memory.put("user:alice:notes", "a", "Alice plays chess")
        await ab.memory.put("user:alicia", "b", "Alicia plays chess")
        await ab.memory.put("user:bob", "c", "Bob plays chess")
        found = await ab.memory.search("chess", prefix="user:alice", mode="hybrid", fresh=True)
        assert keys(found) == ["a"]
        assert embedder.texts == ["a: Alice plays chess", "chess"]
        waiting = await rows(
            ab,
            "SELECT m.key FROM embedding_queue AS q JOIN memories AS m ON m.id = q.ref_id "
            "ORDER BY m.key",
        )
        assert waiting == [("b",), ("c",)]


async def test_fresh_keyword_search_embeds_nothing(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "a", "Alice plays chess")
        found = await ab.memory.search("chess", prefix="user:alice", mode="keyword", fresh=True)
        assert keys(found) == ["a"] and found.pending == 0
        assert embedder.calls == 0


async def test_the_first_search_of_a_new_file_does_not_degrade_silently(
    backend: BackendHandle,
) -> None:
    # Real bundled model. Nothing is embedded yet: a plain search falls back to
    # keyword and says why and how many memories it could not see; fresh waits
    # for the model instead and searches by vector.
    async with backend.open(embed_worker=False) as ab:
        await ab.memory.put("user:bob", "pet", "Bob has a cat named Tom")
        await ab.memory.put("user:bob", "car", "Bob drives a red Tesla")
        plain = await ab.memory.search("does he own an animal", prefix="user:bob", mode="vector")
        assert plain.mode == "keyword" and plain.is_degraded
        assert plain.degraded_reason and plain.pending == 2
        fresh = await ab.memory.search(
            "does he own an animal", prefix="user:bob", mode="vector", fresh=True
        )
        assert fresh.mode == "vector" and not fresh.is_degraded and fresh.pending == 0
        assert keys(fresh)[0] == "pet"


async def test_fresh_with_the_embedder_down_searches_what_it_can(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "a", "Alice plays chess")
        await ab.embeddings.drain()
        await ab.memory.put("user:alice", "b", "Alice plays go")
        embedder.available = False
        found = await ab.memory.search("plays", prefix="user:alice", mode="hybrid", fresh=True)
        assert found.mode == "keyword" and found.is_degraded
        assert sorted(keys(found)) == ["a", "b"]
        assert found.pending == 1
        embedder.available = True
        await asyncio.sleep(1.1)  # the embedder is not asked again within 1 s of "unavailable"
        again = await ab.memory.search("plays", prefix="user:alice", mode="hybrid", fresh=True)
        assert again.mode == "hybrid" and again.pending == 0


@pytest.mark.parametrize("fresh", ["yes", 1, None])
async def test_fresh_must_be_a_bool(ab: Abathur, fresh: object) -> None:
    await ab.memory.put("user:alice", "a", "x")
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError, match="fresh must be a bool"):
            await ab.memory.search("x", prefix="user:alice", fresh=fresh)  # type: ignore[arg-type]


@pytest.mark.sqlite_only("runs the SQLite integrity checks on the file")
async def test_fresh_racing_a_worker_that_holds_the_same_job(backend: BackendHandle) -> None:
    # Another process's worker has read the job and is mid-embed when a fresh
    # search embeds the same memory inline. Only the first to finish the job
    # (by id, kind and ref_id) inserts the vector: one vector, never a UNIQUE error.
    gated = GatedEmbedder()
    async with (
        backend.open(embedder=WordHashEmbedder(), embed_worker=False) as reader,
        backend.open(embedder=gated, embed_worker=False) as worker,
    ):
        await reader.memory.put("user:alice", "x", "Alice adopted a zebra")
        held = asyncio.create_task(worker.embeddings.drain())
        await gated.started.wait()
        found = await reader.memory.search("zebra", prefix="user:alice", mode="vector", fresh=True)
        assert keys(found) == ["x"] and found.pending == 0
        gated.gate.set()
        report = await held
        assert report.embedded == 0, "the held batch must not insert the vector again"
        assert await rows(reader, "SELECT count(*) FROM memories_vec") == [(1,)]
        assert await rows(reader, "SELECT count(*) FROM embedding_queue") == [(0,)]
    assert run_checks(backend.target).is_ok


@pytest.mark.sqlite_only("runs the SQLite integrity checks on the file")
async def test_a_held_fresh_search_racing_a_worker(backend: BackendHandle) -> None:
    # The other way round: the fresh search is mid-embed when a worker embeds
    # the same memories and finishes first.
    gated = GatedEmbedder()
    async with (
        backend.open(embedder=gated, embed_worker=False) as searcher,
        backend.open(embedder=WordHashEmbedder(), embed_worker=False) as worker,
    ):
        for n in range(5):
            await worker.memory.put("user:alice", f"k{n}", f"Alice fact number {n}")
        search = asyncio.create_task(
            searcher.memory.search("fact", prefix="user:alice", mode="vector", fresh=True)
        )
        await gated.started.wait()
        assert (await worker.embeddings.drain()).embedded == 5
        gated.gate.set()
        found = await search
        assert found.mode == "vector" and found.pending == 0
        assert sorted(keys(found)) == [f"k{n}" for n in range(5)]
        assert await rows(worker, "SELECT count(*) FROM memories_vec") == [(5,)]
    assert run_checks(backend.target).is_ok


@pytest.mark.sqlite_only("runs the SQLite integrity checks on the file")
async def test_fresh_and_a_running_worker_on_many_writes(backend: BackendHandle) -> None:
    # The background worker runs while fresh searches keep embedding inline:
    # every memory ends with exactly one vector.
    async with backend.open(embedder=WordHashEmbedder()) as ab:
        for n in range(40):
            await ab.memory.put("user:alice", f"k{n}", f"note {n} about tea")
            found = await ab.memory.search(
                "tea", prefix="user:alice", mode="vector", fresh=True, k=100
            )
            assert found.pending == 0 and f"k{n}" in keys(found)
        await ab.embeddings.drain()
        assert await rows(ab, "SELECT count(*) FROM memories_vec") == [(40,)]
    assert run_checks(backend.target).is_ok


async def test_documents_search_fresh_finds_chunks_synced_a_moment_ago(
    tmp_path: Path, backend: BackendHandle
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tea.md").write_text("# Tea\n\nSteep green tea for two minutes.\n")
    async with backend.open(
        embedder=WordHashEmbedder(), embed_worker=False
    ) as ab:
        await ab.documents.sync(docs)
        await ab.embeddings.drain()
        (docs / "zebra.md").write_text("# Zebra\n\nThe zebra Zed sleeps standing up.\n")
        await ab.documents.sync(docs)
        stale = await ab.documents.search("zebra Zed", mode="vector", root=docs)
        assert "zebra.md" not in [h.path for h in stale] and stale.pending == 1
        found = await ab.documents.search("zebra Zed", mode="vector", root=docs, fresh=True)
        assert found.mode == "vector" and found.pending == 0
        assert found[0].path == "zebra.md"
        with pytest.raises(InvalidInputError, match="fresh must be a bool"):
            await ab.documents.search("zebra", fresh="yes")  # type: ignore[arg-type]
