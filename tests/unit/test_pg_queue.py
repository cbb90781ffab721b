"""PgQueueStore (issue 14): SQLite's answers, and jobs claimed once by concurrent workers.

The scenario test runs every method against both stores and compares the
answers. The concurrency tests run two workers, each on its own connection
(its own server process, as two abathur processes would have), in threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import errors

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.documents import PgDocumentStore
from abathur.backends.postgres.queue import PgQueueStore
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.embeddings.queue.jobs import HELD_NOT_BEFORE
from abathur.stores import DocumentStore, QueueStore
from abathur.stores.documents import DocumentFile
from abathur.stores.queue import JobRef

T = TypeVar("T")
Execute = Callable[[str, tuple[Any, ...]], None]

# Namespaces around the segment-aware range of 'user': ';' follows ':',
# '_' and '%' are LIKE's wildcards, 'users' shares the bytes but not the segment.
MEMORIES = [
    (1, "user", 1, "live"),
    (2, "user:a", 1, "live"),
    (3, "user:a:b", 1, "live"),
    (4, "users", 1, "live"),
    (5, "user;x", 1, "live"),
    (6, "user_", 1, "live"),
    (7, "user:c", 0, "superseded"),
    (8, "user:d", 1, "deleted"),
    (9, "usez", 1, "live"),
    (10, "user%", 1, "live"),
    (11, "user:", 1, "live"),
]


def scenario(queue: QueueStore, docs: DocumentStore, execute: Execute) -> list[Any]:
    """Every method of the protocol, with what each returned."""
    for mem_id, namespace, current, status in MEMORIES:
        execute(
            "INSERT INTO memories (id, namespace, key, version, type, value, created_at, "
            "first_created_at, is_current, status) "
            "VALUES (%s, %s, 'k', 1, 'semantic', '\"v\"', 1.0, 1.0, %s, %s)",
            (mem_id, namespace, current, status),
        )
    roots = [docs.insert_root(f"/r{n}", created_at=1.0) for n in range(2)]
    chunks: list[int] = []
    for n in range(6):
        doc = docs.insert_document(
            roots[n % 2], f"d{n}.md", DocumentFile("h", 1, 2, "indexed", None, 1, synced_at=3.0)
        )
        chunk = docs.insert_chunk(doc, ordinal=0, heading="", text="t", content_hash="c", tokens=1)
        chunks.append(chunk)
    out: list[Any] = [queue.stats(), queue.recorded_embedder(), queue.has_pending_vector_deletes()]
    # Jobs queued newest memory first: job order is not item order.
    for mem_id, *_ in reversed(MEMORIES):
        due = {3: HELD_NOT_BEFORE, 4: 500.0}.get(mem_id, 10.0 + mem_id)
        queue.enqueue("memory", mem_id, f"m{mem_id}", now=5.0 + mem_id, not_before=due)
    for n, chunk in enumerate(chunks):
        queue.enqueue("chunk", chunk, f"c{chunk}", now=2.0, not_before=30.0 - n)
    queue.enqueue("memory", 1, "again", now=99.0, not_before=0.0)  # already queued: no-op
    queue.enqueue("chunk", 999, "gone", now=1.0, not_before=1.0)  # its chunk does not exist
    out += [queue.stats(), queue.cancel("memory", 9), queue.cancel("memory", 9)]
    for ready_before, max_id, limit in [
        (100.0, math.inf, 100),
        (100.0, 5, 100),
        (100.0, math.inf, 3),
        (math.inf, math.inf, 100),
        (HELD_NOT_BEFORE / 2, 8.0, 100),
        (0.5, math.inf, 10),
    ]:
        out.append(queue.ready_jobs(ready_before=ready_before, max_id=max_id, limit=limit))
    out.append(queue.held_jobs(held_from=HELD_NOT_BEFORE, max_id=math.inf, limit=10))
    out.append(queue.held_jobs(held_from=HELD_NOT_BEFORE, max_id=1, limit=10))
    for prefix, limit in [("user", 100), ("user:a", 100), ("user", 2), ("use", 100), ("usez", 9)]:
        out.append(queue.memory_jobs("memory", prefix, limit))
    out.append(queue.memory_jobs("chunk", "user", 100))
    for root_id, limit in [(None, 100), (roots[0], 100), (roots[1], 1), (12345, 5)]:
        out.append(queue.chunk_jobs("chunk", root_id, limit))
        out.append(queue.pending_chunks("chunk", root_id))
    out.append(queue.pending_chunks("memory", None))
    jobs = queue.ready_jobs(ready_before=100.0, max_id=math.inf, limit=100)
    a, b, c, d = jobs[:4]
    queue.retry(a.ref, error="down", not_before=1000.0)
    queue.retry(a.ref, error="down again", not_before=2000.0)
    queue.fail(b.ref, error="bad text", failed_at=50.0)
    queue.postpone(c.ref, not_before=3000.0)
    wrong = JobRef(d.id, "chunk" if d.kind == "memory" else "memory", d.ref_id)
    out += [queue.finish(wrong), queue.finish(d.ref), queue.finish(d.ref)]
    queue.retry(wrong, error="not this one", not_before=1.0)  # names no job: no effect
    out.append(queue.attempts([a.id, b.id, c.id, d.id, 777]))
    out.append(queue.attempts([]))
    out += [queue.stats(), queue.ready_jobs(ready_before=100.0, max_id=math.inf, limit=100)]
    out += [queue.chunk_jobs("chunk", None, 100), queue.memory_jobs("memory", "user", 100)]
    out += [queue.requeue_failed(60.0), queue.requeue_failed(61.0), queue.stats()]
    out.append(queue.ready_jobs(ready_before=100.0, max_id=math.inf, limit=100))
    # The cache: first vector kept, hashes asked twice answered once.
    vector = bytes(range(16))
    queue.cache_put("bundled:m", "h1", 4, vector, 1.0)
    queue.cache_put("bundled:m", "h1", 8, b"\x00" * 32, 2.0)
    queue.cache_put("other", "h2", 2, vector[:8], 3.0)
    out += [
        queue.cached("bundled:m", ["h1", "h2", "h1", "zz"]),
        queue.cached("bundled:m", []),
        queue.cached_dims("bundled:m"),
        queue.cached_dims("other"),
        queue.cached_dims("none"),
    ]
    # The embedder's record.
    queue.record_embedder("bundled:m", 0)
    out.append(queue.recorded_embedder())
    queue.record_embedder("bundled:m", 384)
    queue.record_embedder("ollama:x", 0)  # dims 0: left as it was
    out.append(queue.recorded_embedder())
    queue.forget_embedder()
    out.append(queue.recorded_embedder())
    execute("INSERT INTO vector_deletes (vec_table, item_id) VALUES (%s, %s)", ("t", 1))
    out += [queue.has_pending_vector_deletes(), queue.clear(), queue.clear(), queue.stats()]
    return out


def pg_queue(conn: psycopg.Connection[tuple[Any, ...]]) -> PgQueueStore:
    return PgQueueStore(conn, PgContext("", Settings()))


async def test_every_method_answers_as_sqlite_does(pg_conn: Any, tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    db = await Database.open(path, Settings(db=path))

    def on_sqlite(tx: Any) -> list[Any]:
        def execute(sql: str, params: tuple[Any, ...]) -> None:
            tx.conn.execute(sql.replace("%s", "?"), params)

        return scenario(tx.queue, tx.documents, execute)

    try:
        expected = await db.write(on_sqlite)
    finally:
        await db.close()

    def execute(sql: str, params: tuple[Any, ...]) -> None:
        pg_conn.execute(sql, params)

    with pg_conn.transaction():
        docs = PgDocumentStore(pg_conn, PgContext("", Settings()))
        got = scenario(pg_queue(pg_conn), docs, execute)
    assert got == expected
    # The ids, kinds and counts compared are not all empty.
    assert expected[0].depth == 0 and expected[3].depth == 18


def _enqueue(conn: psycopg.Connection[tuple[Any, ...]], n: int) -> None:
    queue = pg_queue(conn)
    with conn.transaction():
        for ref in range(1, n + 1):
            queue.enqueue("memory", ref, f"h{ref}", now=1.0, not_before=float(ref))


def _begin(conn: psycopg.Connection[tuple[Any, ...]], mode: str) -> None:
    # As the backend does: SERIALIZABLE writes, REPEATABLE READ READ ONLY reads.
    conn.execute(f"SET TRANSACTION ISOLATION LEVEL {mode}")  # one of two constants


def _serializable(conn: psycopg.Connection[tuple[Any, ...]], fn: Callable[[], T]) -> T:
    """Run ``fn`` in a SERIALIZABLE transaction, again after a serialization failure."""
    while True:
        try:
            with conn.transaction():
                _begin(conn, "SERIALIZABLE")
                return fn()
        except (errors.SerializationFailure, errors.DeadlockDetected):
            time.sleep(0.001)


def test_a_write_transaction_claims_its_jobs(pg_conn: Any, pg_url: str) -> None:
    _enqueue(pg_conn, 8)
    with (
        psycopg.connect(pg_url, autocommit=True) as other,
        psycopg.connect(pg_url) as reader,
        pg_conn.transaction(),
    ):
        _begin(pg_conn, "SERIALIZABLE")
        mine = pg_queue(pg_conn).ready_jobs(ready_before=100.0, max_id=math.inf, limit=3)
        with other.transaction():
            _begin(other, "SERIALIZABLE")
            # Without SKIP LOCKED this waits for the first transaction: fail instead.
            other.execute("SET LOCAL lock_timeout = '3s'")
            theirs = pg_queue(other).ready_jobs(ready_before=100.0, max_id=math.inf, limit=3)
            held = pg_queue(other).held_jobs(held_from=2.0, max_id=math.inf, limit=3)
            by_prefix = pg_queue(other).memory_jobs("memory", "x", 3)  # a join: locks q only
        # A read (READ ONLY: no row locks allowed) sees every job, claimed or not.
        _begin(reader, "REPEATABLE READ READ ONLY")
        seen = pg_queue(reader).ready_jobs(ready_before=100.0, max_id=math.inf, limit=3)
        reader.rollback()
    assert [j.ref_id for j in mine] == [1, 2, 3]
    assert [j.ref_id for j in theirs] == [4, 5, 6]
    assert [j.ref_id for j in held] == [4, 5, 6]  # its own locks do not hide them from itself
    assert by_prefix == []
    assert [j.ref_id for j in seen] == [1, 2, 3]


def _run_workers(
    pg_url: str, work: Callable[[psycopg.Connection[tuple[Any, ...]], int], None]
) -> None:
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                start.wait()
                work(conn, worker)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures


@pytest.mark.slow
def test_two_workers_as_today_write_each_vector_once(pg_conn: Any, pg_url: str) -> None:
    # The worker of abathur.embeddings.queue.worker: read a batch (READ ONLY),
    # embed outside any transaction, then in one write finish each job and
    # insert its vector only if the finish removed it.
    jobs_total = 200
    _enqueue(pg_conn, jobs_total)
    pg_conn.execute("CREATE TABLE test_vectors (job bigint NOT NULL, worker int NOT NULL)")
    embedded: Counter[int] = Counter()
    lock = threading.Lock()

    def work(conn: psycopg.Connection[tuple[Any, ...]], worker: int) -> None:
        queue = pg_queue(conn)
        while True:
            with conn.transaction():
                _begin(conn, "REPEATABLE READ READ ONLY")
                batch = queue.ready_jobs(ready_before=math.inf, max_id=math.inf, limit=8)
            if not batch:
                return
            with lock:
                embedded.update(job.id for job in batch)  # the embedder call
            time.sleep(0.002)

            def write(batch: list[Any] = batch) -> None:
                for job in batch:
                    if queue.finish(job.ref):
                        conn.execute("INSERT INTO test_vectors VALUES (%s, %s)", (job.id, worker))

            _serializable(conn, write)

    _run_workers(pg_url, work)
    rows = pg_conn.execute("SELECT job, count(*) FROM test_vectors GROUP BY job").fetchall()
    assert len(rows) == jobs_total and all(n == 1 for _, n in rows)
    assert pg_queue(pg_conn).stats().depth == 0
    assert set(embedded) == {job for job, _ in rows}


