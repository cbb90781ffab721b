"""The embedding queue and its worker: writes never wait, the cache embeds a text once,
usage is recorded, the embedder is recorded and checked, reindex switches, compaction
reclaims dead vectors, an embedder that is down only delays vectors, close is clean.

The test doubles (``WordHashEmbedder``, ``GatedEmbedder``) live in tests/embedders.py.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from pathlib import Path

import apsw
import pytest

from abathur import (
    Abathur,
    DrainReport,
    EmbedderError,
    EmbedderMismatchError,
    EmbedderUnavailableError,
    InvalidInputError,
)
from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.queue import SQL_READY_JOBS
from abathur.backends.sqlite.search import SQL_KEYWORD_SEARCH, keyword_params
from abathur.embeddings import EmbedResult
from abathur.embeddings.queue import content_hash as text_hash
from abathur.ops.integrity import run_checks
from tests.backends import BackendHandle
from tests.embedders import GatedEmbedder, WordHashEmbedder
from tests.helpers import assert_unchanged, rows


@pytest.fixture
def embedder() -> WordHashEmbedder:
    return WordHashEmbedder()


@pytest.fixture
async def eab(backend: BackendHandle, embedder: WordHashEmbedder):
    """An Abathur with the test double and no background worker: tests drain explicitly."""
    async with backend.open(embedder=embedder, embed_worker=False) as opened:
        yield opened


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- write path


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_a_write_queues_a_job_in_its_own_transaction(eab: Abathur, embedder) -> None:
    m = await eab.memory.put("user:alice", "lang", "Alice speaks French")
    jobs = await rows(eab, "SELECT kind, content_hash, attempts FROM embedding_queue")
    assert jobs == [("memory", text_hash("lang: Alice speaks French"), 0)]
    assert embedder.calls == 0, "the write did not wait for the embedder"
    status = await eab.embeddings.status()
    assert (status.queue_depth, status.vectors, status.recorded_embedder) == (
        1,
        0,
        "test:word-hash",
    )
    report = await eab.embeddings.drain()
    assert (report.embedded, report.calls, report.remaining) == (1, 1, 0)
    status = await eab.embeddings.status()
    assert (status.queue_depth, status.vectors, status.oldest_job_age_s) == (1 - 1, 1, None)
    assert m.version == 1


async def test_a_failed_write_queues_nothing(eab: Abathur) -> None:
    await eab.memory.put("user:alice", "lang", "fr")
    async with assert_unchanged(eab):
        with pytest.raises(InvalidInputError) as ei:
            await eab.memory.put("user:alice", "lang", "en", ttl=-1)
    assert ei.value.code == "invalid_input"


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_a_newer_version_cancels_the_older_job(eab: Abathur, embedder) -> None:
    await eab.memory.put("user:alice", "lang", "first text")
    await eab.memory.put("user:alice", "lang", "second text")
    await eab.memory.put("user:alice", "other", "kept text")
    await eab.memory.delete("user:alice", "other")
    assert len(await rows(eab, "SELECT * FROM embedding_queue")) == 1
    await eab.embeddings.drain()
    assert embedder.texts == ["lang: second text"]


async def test_the_cache_embeds_a_text_once(eab: Abathur, embedder) -> None:
    await eab.memory.put("user:alice", "note", "the same words")
    await eab.memory.put("user:bob", "note", "the same words")
    first = await eab.embeddings.drain()
    assert (first.embedded, first.calls, embedder.texts) == (2, 1, ["note: the same words"])
    # An unchanged text, a restore, an old value again: vectors straight from the cache.
    await eab.memory.put("user:alice", "note", "the same words", metadata={"v": 2})
    await eab.memory.delete("user:bob", "note")
    await eab.memory.restore("user:bob", "note")
    assert await rows(eab, "SELECT * FROM embedding_queue") == []
    assert embedder.calls == 1
    assert (await eab.embeddings.status()).vectors == 2
    cache = await rows(eab, "SELECT model, content_hash, dims, length(vector) FROM embedding_cache")
    assert cache == [("test:word-hash", text_hash("note: the same words"), 64, 64 * 4)]


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_usage_rows_one_per_call_with_cache_hits(eab: Abathur, embedder) -> None:
    await eab.memory.put("user:a", "k1", "alpha beta")
    await eab.memory.put("user:a", "k2", "gamma")
    await eab.embeddings.drain()
    await eab.embeddings.reindex()  # every text again: all from the cache
    usage = await rows(
        eab,
        "SELECT provider, model, operation, inputs, tokens, is_estimate, chars, cache_hits, "
        "duration_ms >= 0 FROM usage_ledger ORDER BY id",
    )
    assert usage == [
        ("test", "word-hash", "embed", 2, 5, 1, len("k1: alpha betak2: gamma"), 0, 1),
        ("test", "word-hash", "embed", 0, 0, 0, 0, 2, 1),
    ]
    assert embedder.calls == 1


async def test_query_embeddings_are_recorded_too(eab: Abathur, embedder) -> None:
    await eab.memory.put("user:a", "k", "alpha")
    await eab.embeddings.drain()
    await eab.memory.search("alpha beta", prefix="user:a", mode="vector")
    await eab.memory.search("alpha beta", prefix="user:a", mode="vector")  # cached query
    await eab.embeddings.drain()  # writes buffered usage
    ops = await rows(eab, "SELECT operation, inputs FROM usage_ledger ORDER BY id")
    assert ops == [("embed", 1), ("embed.query", 1)]


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_embedder_none_keeps_no_queue_and_keyword_search_works(
    backend: BackendHandle,
) -> None:
    async with backend.open(embedder="none") as ab:
        await ab.memory.put("user:alice", "lang", "Alice speaks French")
        assert await rows(ab, "SELECT * FROM embedding_queue") == []
        found = await ab.memory.search("french", prefix="user:alice")
        assert (found.mode, found.is_degraded) == ("keyword", True)
        assert "no embedder is configured" in (found.degraded_reason or "")
        assert [h.key for h in found.hits] == ["lang"]
        assert (await ab.embeddings.drain()).remaining == 0
        with pytest.raises(EmbedderError) as ei:
            await ab.embeddings.reindex()
        assert ei.value.code == "embedder.error"


async def test_first_embedder_on_an_old_file_queues_every_live_memory(
    backend: BackendHandle, embedder
) -> None:
    async with backend.open(embedder="none") as ab:
        await ab.memory.put("user:alice", "a", "one")
        await ab.memory.put("user:alice", "b", "two")
        await ab.memory.delete("user:alice", "b")
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        assert (await ab.embeddings.status()).queue_depth == 1
        await ab.embeddings.drain()
        assert embedder.texts == ["a: one"]


@pytest.mark.sqlite_only("builds a schema-2 SQLite file with apsw")
async def test_memories_from_schema_2_are_indexed_on_open(db_path: Path, embedder) -> None:
    conn = apsw.Connection(str(db_path))
    migrations.apply(conn, [m for m in migrations.available() if m.version <= 2])
    conn.execute(
        "INSERT INTO memories (namespace, key, version, type, value, created_at, "
        "first_created_at) VALUES ('user:alice', 'lang', 1, 'semantic', '\"Alice speaks French\"',"
        " 1.0, 1.0)"
    )
    conn.close()
    async with Abathur.open(db_path, embedder=embedder, embed_worker=False) as ab:
        found = await ab.memory.search("french", prefix="user", mode="keyword")
        assert [h.key for h in found.hits] == ["lang"]
        await ab.embeddings.drain()
        assert embedder.texts == ["lang: Alice speaks French"]


# --------------------------------------------------------------------------- the worker


async def test_the_worker_drains_in_the_background(backend: BackendHandle, embedder) -> None:
    async with backend.open(embedder=embedder) as ab:
        for i in range(5):
            await ab.memory.put("user:alice", f"k{i}", f"text number {i}")

        async def done() -> bool:
            return (await ab.embeddings.status()).vectors == 5

        await wait_for(done)
        status = await ab.embeddings.status()
        assert (status.queue_depth, status.is_worker_running) == (0, True)


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_embedder_down_writes_succeed_search_falls_back_queue_catches_up(
    eab: Abathur, embedder
) -> None:
    await eab.memory.put("user:alice", "lang", "Alice speaks French")
    await eab.embeddings.drain()
    embedder.available = False
    m = await eab.memory.put("user:alice", "drink", "Alice drinks green tea")
    assert m.version == 1
    with pytest.raises(EmbedderUnavailableError) as ei:
        await eab.embeddings.drain()
    assert ei.value.code == "embedder.unavailable" and ei.value.retryable
    jobs = await rows(eab, "SELECT attempts, last_error, failed_at FROM embedding_queue")
    assert jobs == [(1, "test embedder switched off", None)]
    status = await eab.embeddings.status()
    assert (status.queue_depth, status.last_error) == (1, "test embedder switched off")

    found = await eab.memory.search("green tea", prefix="user:alice")
    assert (found.requested_mode, found.mode, found.is_degraded) == ("hybrid", "keyword", True)
    assert "unavailable" in found.degraded_reason
    assert [h.key for h in found.hits] == ["drink"]

    embedder.available = True
    report = await eab.embeddings.drain()
    assert (report.embedded, report.remaining) == (1, 0)
    found = await eab.memory.search("green tea", prefix="user:alice", mode="vector")
    assert (found.mode, found.is_degraded) == ("vector", False)
    assert found.hits[0].key == "drink"


async def test_the_worker_retries_after_the_embedder_returns(
    backend: BackendHandle, embedder
) -> None:
    embedder.available = False
    async with backend.open(embedder=embedder) as ab:
        await ab.memory.put("user:alice", "lang", "French")
        await wait_for(lambda: _attempted(ab))
        embedder.available = True

        async def caught_up() -> bool:
            return (await ab.embeddings.status()).vectors == 1

        await wait_for(caught_up, timeout=10)  # the first backoff is one second


async def _attempted(ab: Abathur) -> bool:
    return bool(await rows(ab, "SELECT 1 FROM embedding_queue WHERE attempts > 0"))


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_a_permanent_error_fails_only_the_bad_text(eab: Abathur, embedder) -> None:
    embedder.fail_on = {"poison"}
    await eab.memory.put("user:a", "good1", "fine words")
    await eab.memory.put("user:a", "bad", "poison pill")
    await eab.memory.put("user:a", "good2", "more words")
    report = await eab.embeddings.drain()
    assert (report.embedded, report.failed, report.remaining) == (2, 1, 1)
    failed = await rows(
        eab, "SELECT attempts, last_error, failed_at IS NOT NULL FROM embedding_queue"
    )
    assert failed == [(1, "test embedder refuses 'bad: poison pill'", 1)]
    assert (await eab.embeddings.status()).failed_jobs == 1
    assert (await eab.embeddings.drain()).embedded == 0, "failed jobs wait for retry_failed"
    embedder.fail_on = set()
    assert await eab.embeddings.retry_failed() == 1
    assert (await eab.embeddings.drain()).embedded == 1


async def test_a_wrong_answer_to_a_batch_is_retried_text_by_text(eab: Abathur, embedder) -> None:
    async def one_vector_only(texts):
        return EmbedResult(vectors=[embedder.vector(texts[0])], tokens=0)

    embedder.embed_with_usage = one_vector_only
    await eab.memory.put("user:a", "k1", "one")
    await eab.memory.put("user:a", "k2", "two")
    report = await eab.embeddings.drain()
    assert (report.embedded, report.failed, report.calls) == (2, 0, 2)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda texts: EmbedResult(vectors=[[float("nan")] * 64] * len(texts), tokens=0), "NaN"),
        (lambda texts: EmbedResult(vectors=[[1.0] * 8] * len(texts), tokens=0), "returned 8"),
        (lambda texts: EmbedResult(vectors=[["x"] * 64] * len(texts), tokens=0), "not numbers"),
        (lambda texts: 1 / 0, "raised ZeroDivisionError"),
        (lambda texts: None, "no EmbedResult"),
    ],
    ids=["nan", "dims", "junk", "raises", "none"],
)
@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_a_misbehaving_embedder_fails_its_jobs_with_a_typed_error(
    eab: Abathur, embedder, answer, message
) -> None:
    async def misbehave(texts):
        return answer(texts)

    embedder.embed_with_usage = misbehave
    await eab.memory.put("user:a", "k1", "one")
    report = await eab.embeddings.drain()
    assert (report.embedded, report.failed) == (0, 1)
    (error,) = await rows(eab, "SELECT last_error FROM embedding_queue")
    assert message in error[0]
    assert (await eab.embeddings.status()).vectors == 0


async def test_an_embedder_learning_its_dims_is_recorded_at_its_first_answer(
    backend: BackendHandle,
) -> None:
    embedder = WordHashEmbedder(dims=16)
    embedder.dims = 0  # like OllamaEmbedder before the server's first answer

    async def learn(texts):
        embedder.dims = 16
        return await WordHashEmbedder.embed_with_usage(embedder, texts)

    embedder.embed_with_usage = learn
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        await ab.memory.put("user:a", "k", "words")
        status = await ab.embeddings.status()
        assert (status.recorded_embedder, status.recorded_dims, status.vectors) == (
            "test:word-hash",
            None,
            0,
        )
        found = await ab.memory.search("words", prefix="user:a", mode="vector")
        assert (found.mode, found.degraded_reason) == (
            "keyword",
            "no vectors yet: nothing has been embedded in this file",
        )
        await ab.embeddings.drain()
        assert (await ab.embeddings.status()).recorded_dims == 16
        assert (await ab.memory.search("words", prefix="user:a", mode="vector")).hits


# --------------------------------------------------------------------------- recorded embedder


@pytest.mark.sqlite_only("checks the SQLite file's bytes are unchanged")
async def test_opening_with_another_embedder_is_a_clear_error(db_path: Path, embedder) -> None:
    async with Abathur.open(db_path, embedder=embedder, embed_worker=False) as ab:
        await ab.memory.put("user:a", "k", "words")
        await ab.embeddings.drain()
    before = db_path.read_bytes()
    for other in (WordHashEmbedder(model="other"), WordHashEmbedder(dims=32)):
        with pytest.raises(EmbedderMismatchError) as ei:
            await Abathur.open(db_path, embedder=other)
        assert ei.value.code == "embedder.mismatch"
        assert "test:word-hash" in ei.value.message and other.name in ei.value.message
        assert "abathur reindex --embedder" in ei.value.message
    assert db_path.read_bytes() == before
    # No embedder at all is fine: keyword search, and vectors kept for later.
    async with Abathur.open(db_path, embedder="none") as ab:
        assert (await ab.embeddings.status()).recorded_embedder == "test:word-hash"
        await ab.memory.put("user:a", "k2", "more words")
    async with Abathur.open(db_path, embedder=embedder, embed_worker=False) as ab:
        assert (await ab.embeddings.drain()).embedded == 1


async def test_reindex_switches_embedder(backend: BackendHandle, embedder) -> None:
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        await ab.memory.put("user:a", "k1", "alpha words")
        await ab.memory.put("user:a", "k2", "beta words")
        await ab.embeddings.drain()
    other = WordHashEmbedder(dims=128, model="bigger")
    async with backend.open(embedder=other, reindex=True, embed_worker=False) as ab:
        status = await ab.embeddings.status()
        assert (status.recorded_embedder, status.recorded_dims) == ("test:bigger", 128)
        assert (status.vectors, status.queue_depth) == (0, 2)
        report = await ab.embeddings.drain()
        assert (report.embedded, report.cache_hits) == (2, 0)
        found = await ab.memory.search("alpha", prefix="user:a", mode="vector")
        assert found.hits[0].key == "k1"
    async with backend.open(embedder=embedder, reindex=True, embed_worker=False) as ab:
        report = await ab.embeddings.drain()
        assert (report.embedded, report.cache_hits, report.calls) == (2, 2, 0)


@pytest.mark.sqlite_only("checks no SQLite file (or no vector table) was made")
async def test_open_refuses_a_bad_embedder_before_touching_the_file(db_path: Path) -> None:
    with pytest.raises(InvalidInputError) as ei:
        await Abathur.open(db_path, embedder=object())
    assert ei.value.code == "invalid_input"
    with pytest.raises(InvalidInputError):
        await Abathur.open(db_path, embedder="gpt")
    with pytest.raises(InvalidInputError):
        await Abathur.open(db_path, embedder="none", reindex="yes")
    with pytest.raises(EmbedderError):
        await Abathur.open(db_path, embedder=WordHashEmbedder(dims=12))
    assert not db_path.exists() or (await _no_vectors(db_path))


async def _no_vectors(path: Path) -> bool:
    async with Abathur.open(path, embedder="none") as ab:
        return (await ab.embeddings.status()).recorded_embedder is None


# --------------------------------------------------------------------------- dead rows


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_compact_reclaims_dead_rows(eab: Abathur) -> None:
    for i in range(20):
        await eab.memory.put("user:a", f"k{i}", f"first text {i}")
    await eab.embeddings.drain()
    for i in range(10):
        await eab.memory.put("user:a", f"k{i}", f"second text {i}")
    await eab.memory.delete("user:a", "k19")
    status = await eab.embeddings.status()
    assert (status.vectors, status.dead_rows) == (9, 0), "replaced vectors are hidden at once"
    await eab.embeddings.drain()
    status = await eab.embeddings.status()
    assert (status.vectors, status.dead_rows) == (19, 11)
    before = await eab.memory.search("second text", prefix="user:a", mode="vector", k=5)
    (report,) = [r for r in await eab.embeddings.compact() if r.table == "memories_vec"]
    assert (report.table, report.live_rows, report.dead_rows) == ("memories_vec", 19, 11)
    status = await eab.embeddings.status()
    assert (status.vectors, status.dead_rows) == (19, 0)
    chunks = await rows(eab, "SELECT sum(size) FROM memories_vec_chunks")
    assert chunks == [(eab.settings.vector_chunk_size,)]
    after = await eab.memory.search("second text", prefix="user:a", mode="vector", k=5)
    assert after.hits == before.hits


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_many_pending_deletes_are_applied_by_the_writes(
    backend: BackendHandle, embedder
) -> None:
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        for i in range(300):
            await ab.memory.put("user:a", f"k{i}", f"text {i}")
        await ab.embeddings.drain()
        for i in range(300):
            await ab.memory.delete("user:a", f"k{i}")
        pending = await rows(ab, "SELECT count(*) FROM vector_deletes")
        assert pending[0][0] < 300
        assert (await ab.embeddings.status()).vectors == 0


# --------------------------------------------------------------------------- query plans


@pytest.mark.sqlite_only("reads or sets up SQLite tables directly")
async def test_queue_and_keyword_queries_use_their_indexes(eab: Abathur) -> None:
    def plan(conn, sql, params):
        return " | ".join(
            str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        )

    ready = await eab.db.read(lambda c: plan(c.conn, SQL_READY_JOBS, (1.0, 10, 64)))
    assert "USING INDEX embedding_queue_ready (not_before<?)" in ready, ready
    cache = await eab.db.read(
        lambda c: plan(
            c.conn,
            "SELECT id FROM embedding_cache WHERE model = ? AND content_hash = ?",
            ("m", "h"),
        )
    )
    assert "USING COVERING INDEX sqlite_autoindex_embedding_cache_1" in cache, cache
    keyword = await eab.db.read(
        lambda c: plan(
            c.conn, SQL_KEYWORD_SEARCH, keyword_params(["tea"], "user:alice", now=time.time())
        )
    )
    assert "SCAN memories_fts VIRTUAL TABLE INDEX" in keyword, keyword
    assert "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)" in keyword, keyword


# --------------------------------------------------------------------------- close


async def test_close_with_a_busy_worker_is_clean(backend: BackendHandle, embedder) -> None:
    embedder.delay_s = 30.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ab = await backend.open(embedder=embedder)
        await ab.memory.put("user:a", "k", "words")
        await asyncio.wait_for(embedder.started.wait(), 5)
        started = time.monotonic()
        await ab.close()
        assert time.monotonic() - started < 2, "close waited for the embed call"
        await ab.close()  # idempotent
        gc.collect()
    pending = [t for t in asyncio.all_tasks() if "abathur-embed" in t.get_name()]
    assert pending == []
    async with backend.open(embedder=embedder, embed_worker=False) as again:
        assert (await again.embeddings.status()).queue_depth == 1, "the job is still queued"
        # close() gave the abandoned batch's claim up (issue 14): no lease to wait out.
        embedder.delay_s = 0.0
        assert (await again.embeddings.drain()).embedded == 1


async def test_drain_after_close_is_a_typed_error(backend: BackendHandle, embedder) -> None:
    ab = await backend.open(embedder=embedder, embed_worker=False)
    await ab.close()
    with pytest.raises(Exception) as ei:
        await ab.embeddings.drain()
    assert ei.value.code == "closed"


async def test_drain_report_is_exported() -> None:
    assert (
        DrainReport(embedded=1, cache_hits=0, calls=1, failed=0, remaining=0, seconds=0.1).embedded
        == 1
    )


# --------------------------------------------------------------------------- with Ollama


async def test_ollama_down_then_back_with_dims_learned_from_its_first_answer(
    backend: BackendHandle,
) -> None:
    from abathur.embeddings.ollama import OllamaEmbedder
    from tests.ollama_server import OllamaServer

    with OllamaServer(dims=8) as server:
        ollama = OllamaEmbedder(
            "nomic-embed-text", host=server.url, retries=0, timeout_s=2.0, backoff_s=0.001
        )
        async with backend.open(embedder=ollama, embed_worker=False) as ab:
            server.fail_next(5, status=503, error="loading model")
            await ab.memory.put("user:alice", "drink", "green tea")
            await ab.memory.put("user:alice", "pet", "a cat named Felix")
            with pytest.raises(EmbedderUnavailableError):
                await ab.embeddings.drain()
            status = await ab.embeddings.status()
            assert (status.recorded_embedder, status.recorded_dims) == (
                "ollama:nomic-embed-text",
                None,
            )
            found = await ab.memory.search("green tea", prefix="user:alice")
            assert (found.mode, keys_of(found)) == ("keyword", ["drink"])
            server.clear()
            report = await ab.embeddings.drain()
            assert (report.embedded, report.remaining) == (2, 0)
            assert (await ab.embeddings.status()).recorded_dims == 8
            # The server's vectors hash the text: only the very same text is nearest.
            found = await ab.memory.search("drink: green tea", prefix="user:alice", mode="vector")
            assert (found.mode, keys_of(found)[0]) == ("vector", "drink")
            assert found.hits[0].score == pytest.approx(1.0)


def keys_of(result) -> list[str]:
    return [hit.key for hit in result.hits]


@pytest.mark.sqlite_only("reads the queue and vec0 through tx.conn, runs abathur check")
async def test_a_stale_batch_never_finishes_a_reused_job_id(db_path: Path) -> None:
    # Two workers on one file. The slow one holds job 1 (item X) while the fast
    # one embeds X and deletes job 1; the next job (item Y) then gets id 1 again,
    # since job ids are rowids. Finishing "job 1" by id alone used to delete Y's
    # job and insert X's vector a second time: a UNIQUE error (seen in the smoke
    # suite's two-runs-at-once test) and Y never embedded.
    # Since claims (issue 14) the fast one passes over job 1 while the slow
    # one's lease runs; the slow embedder states a short timeout (a lease of
    # about 2 s), and the fast one takes job 1 once that has run out.
    gated = GatedEmbedder()
    gated.timeout_s = 0.05  # type: ignore[attr-defined]
    async with (
        Abathur.open(db_path, embedder=WordHashEmbedder(), embed_worker=False) as fast,
        Abathur.open(db_path, embedder=gated, embed_worker=False) as slow,
    ):
        await fast.memory.put("user:alice", "x", {"text": "green tea"})
        held = asyncio.create_task(slow.embeddings.drain())
        await gated.started.wait()
        first = await fast.embeddings.drain()
        assert (first.embedded, first.remaining) == (0, 1), "claimed by the slow one"

        async def lease_ran_out() -> bool:
            return (await fast.embeddings.drain()).embedded == 1

        await wait_for(lease_ran_out, timeout=10)
        await fast.memory.put("user:alice", "y", {"text": "black coffee"})
        jobs = await rows(fast, "SELECT id, ref_id FROM embedding_queue")
        ids = dict(await rows(fast, "SELECT key, id FROM memories WHERE is_current = 1"))
        x_id, y_id = ids["x"], ids["y"]
        assert jobs == [(1, y_id)] and x_id != y_id, "the scenario needs job id 1 reused"
        gated.gate.set()
        # Raised DatabaseError (UNIQUE on memories_vec) before the fix, and
        # deleted Y's job. Now the stale X is skipped and Y is embedded (by
        # the held drain's next batch or the one below).
        await held
        await fast.embeddings.drain()
        assert await rows(fast, "SELECT count(*) FROM embedding_queue") == [(0,)]
        vectors = await rows(fast, "SELECT item_id FROM memories_vec ORDER BY item_id")
        assert vectors == sorted([(x_id,), (y_id,)])
    assert run_checks(db_path).is_ok


# --------------------------------------------------------------------------- claims (issue 14)


def test_the_lease_follows_the_embedders_timeout_settings() -> None:
    from abathur.embeddings.ollama import OllamaEmbedder
    from abathur.embeddings.openai_compat import OpenAICompatEmbedder
    from abathur.embeddings.queue.worker import LEASE_DEFAULT_S, lease_seconds

    ollama = OllamaEmbedder("m", host="http://127.0.0.1:9")
    # 64 texts: 2 requests of 32, 2 at once: one round; 4 attempts of 30 s, 3 waits of 8 s.
    assert lease_seconds(ollama, 64) == 2 * (4 * 30 + 3 * 8) + 2
    slow = OllamaEmbedder("m", host="http://127.0.0.1:9", timeout_s=120, retries=0)
    assert lease_seconds(slow, 64) == 2 * 120 + 2, "raise the timeout and the lease follows"
    assert lease_seconds(slow, 256) == 4 * (2 * 120) + 2, "four rounds of two requests"
    openai = OpenAICompatEmbedder("m", base_url="http://127.0.0.1:9/v1", retries=1)
    assert lease_seconds(openai, 64) == 2 * (2 * 30 + 8) + 2
    # No stated timeout (the bundled model, the test doubles): the default.
    assert lease_seconds(WordHashEmbedder(), 64) == LEASE_DEFAULT_S == 300


async def test_an_unavailable_embedder_gives_the_claim_up_with_a_backoff(
    backend: BackendHandle, embedder
) -> None:
    # The batch's jobs get an attempt and a backoff, and no claim is left:
    # another worker (a drain here) takes them at once, not after the lease.
    async with (
        backend.open(embedder=embedder, embed_worker=False) as ab,
        backend.open(embedder=WordHashEmbedder(), embed_worker=False) as other,
    ):
        await ab.memory.put("user:a", "k", "words")
        embedder.available = False
        with pytest.raises(EmbedderUnavailableError):
            await ab.embeddings.drain()
        assert (await other.embeddings.drain()).embedded == 1


@pytest.mark.sqlite_only("reads SQLite's query plan")
async def test_a_claim_reads_the_ready_index(eab: Abathur) -> None:
    from abathur.backends.sqlite.queue import SQL_CLAIMABLE_HELD_JOBS, SQL_CLAIMABLE_JOBS

    params = {"due": 1.0, "max_id": 10, "kinds": '["memory"]', "now": 1.0, "limit": 8}
    for sql in (SQL_CLAIMABLE_JOBS, SQL_CLAIMABLE_HELD_JOBS):
        plan = await eab.db.read(
            lambda c, sql=sql: " | ".join(
                str(r[-1]) for r in c.conn.execute("EXPLAIN QUERY PLAN " + sql, params)
            )
        )
        assert "USING INDEX embedding_queue_ready (not_before" in plan, plan
