"""SQLite's :class:`~abathur.stores.queue.QueueStore`: ``embedding_queue``, ``embedding_cache``
and the embedder's record in ``meta``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

import apsw

from abathur.backends.ranges import range_params
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.queue import JobRef, QueuedJob, QueueStats, RecordedEmbedder

__all__ = [
    "SQL_CLAIMABLE_HELD_JOBS",
    "SQL_CLAIMABLE_JOBS",
    "SQL_HELD_JOBS",
    "SQL_PENDING_CHUNKS",
    "SQL_PENDING_CHUNK_JOBS",
    "SQL_PENDING_MEMORY_JOBS",
    "SQL_READY_JOBS",
    "SqliteQueueStore",
]

_META_NAME = "embedder.name"
_META_DIMS = "embedder.dims"

SQL_RECORDED = "SELECT key, value FROM meta WHERE key IN ('embedder.name', 'embedder.dims')"
SQL_RECORD = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
SQL_FORGET = "DELETE FROM meta WHERE key IN ('embedder.name', 'embedder.dims')"
SQL_ENQUEUE = (
    "INSERT INTO embedding_queue (kind, ref_id, content_hash, enqueued_at, not_before) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, ref_id) DO NOTHING"
)
SQL_CANCEL = "DELETE FROM embedding_queue WHERE kind = ? AND ref_id = ?"
# The worker's next batch: index embedding_queue_ready. Params: now, max id, limit.
SQL_READY_JOBS = (
    "SELECT id, kind, ref_id, content_hash FROM embedding_queue "
    "WHERE failed_at IS NULL AND not_before <= ? AND id <= ? ORDER BY not_before, id LIMIT ?"
)
# A probe's jobs wait at HELD_NOT_BEFORE (abathur.embeddings.queue), where no
# worker's ready_before reaches: only a probe's drain takes them.
# Params: HELD_NOT_BEFORE, max id, limit (index embedding_queue_ready).
SQL_HELD_JOBS = (
    "SELECT id, kind, ref_id, content_hash FROM embedding_queue "
    "WHERE failed_at IS NULL AND not_before >= ? AND id <= ? ORDER BY not_before, id LIMIT ?"
)
# A worker's claim (issue 14): the ready (or held) jobs of the kinds it knows
# that no live lease holds, due first (index embedding_queue_ready). The single
# writer makes this select and the update after it one atomic claim.
# Params: ready_before / held_from, max_id, kinds (JSON array), now, limit.
_SQL_CLAIMABLE = (
    "SELECT id, kind, ref_id, content_hash FROM embedding_queue "
    "WHERE failed_at IS NULL AND {due} AND id <= :max_id "
    # Unary + keeps the kinds a filter: the (kind, ref_id) key would read every
    # job of a kind and sort them, where the ready index reads the first few.
    "AND +kind IN (SELECT value FROM json_each(:kinds)) "
    "AND (claimed_until IS NULL OR claimed_until <= :now) "
    "ORDER BY not_before, id LIMIT :limit"
)
SQL_CLAIMABLE_JOBS = _SQL_CLAIMABLE.format(due="not_before <= :due")
SQL_CLAIMABLE_HELD_JOBS = _SQL_CLAIMABLE.format(due="not_before >= :due")
SQL_SET_CLAIM = (
    "UPDATE embedding_queue SET claim_token = :token, claimed_until = :until "
    "WHERE id IN (SELECT value FROM json_each(:ids))"
)
# memory.search(fresh=True): the jobs of the current versions under a prefix.
# The queue is read through its (kind, ref_id) key, each memory by its id (see
# SqliteMemoryStore.awaiting_vectors). Params: kind, range_params, limit.
SQL_PENDING_MEMORY_JOBS = (
    "SELECT q.id, q.kind, q.ref_id, q.content_hash "
    # CROSS JOIN keeps the queue outside: it is small when the worker keeps
    # up, while a tenant's range of memories may be 100k rows.
    "FROM embedding_queue AS q CROSS JOIN memories AS m ON m.id = q.ref_id "
    "WHERE q.kind = :kind AND q.failed_at IS NULL AND m.is_current = 1 AND m.status = 'live' "
    "AND m.namespace >= :prefix AND m.namespace < :after "
    "AND (m.namespace = :prefix OR m.namespace >= :below) "
    "ORDER BY q.id LIMIT :limit"
)
# documents.search(fresh=True): the embedding jobs of chunks (of one root, or
# of every root when :root_id is NULL), and how many wait
# (DocumentSearchResult.pending). The queue is read first (CROSS JOIN): it is
# small when the worker keeps up.
_SQL_PENDING_WHERE = (
    "FROM embedding_queue AS q CROSS JOIN chunks AS c ON c.id = q.ref_id "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE q.kind = :kind AND q.failed_at IS NULL AND (:root_id IS NULL OR d.root_id = :root_id)"
)
SQL_PENDING_CHUNK_JOBS = (
    "SELECT q.id, q.kind, q.ref_id, q.content_hash "
    + _SQL_PENDING_WHERE
    + " ORDER BY q.id LIMIT :limit"
)
SQL_PENDING_CHUNKS = "SELECT count(*) " + _SQL_PENDING_WHERE
SQL_CACHED = (
    "SELECT content_hash FROM embedding_cache "
    "WHERE model = ? AND content_hash IN (SELECT value FROM json_each(?))"
)
SQL_CACHE_PUT = (
    "INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, content_hash) DO NOTHING"
)
SQL_CACHED_DIMS = "SELECT dims FROM embedding_cache WHERE model = ? LIMIT 1"
# A batch names its jobs by (id, kind, ref_id), never by id alone: job ids are
# rowids, so once another worker has finished a job its id may be reused by the
# next job queued, and a batch that embedded the old one must not touch it.
_SQL_THE_JOB = "id = :id AND kind = :kind AND ref_id = :ref_id"
# With a token (a claimer's call): only while the token claims the job, and the
# claim is given up. Without (fresh=True): whoever claims it, claim untouched.
_SQL_OURS = " AND claim_token = :token"
_SQL_RELEASE = ", claim_token = NULL, claimed_until = NULL"
_SQL_RETRY = "attempts = attempts + 1, last_error = :error, not_before = :not_before"
_SQL_FAILED = "attempts = attempts + 1, last_error = :error, failed_at = :failed_at"
_SQL_WAIT = "not_before = :not_before"
SQL_JOB_DONE = f"DELETE FROM embedding_queue WHERE {_SQL_THE_JOB}"
SQL_JOB_RETRY = f"UPDATE embedding_queue SET {_SQL_RETRY} WHERE {_SQL_THE_JOB}"
SQL_JOB_FAILED = f"UPDATE embedding_queue SET {_SQL_FAILED} WHERE {_SQL_THE_JOB}"
SQL_JOB_WAIT = f"UPDATE embedding_queue SET {_SQL_WAIT} WHERE {_SQL_THE_JOB}"
SQL_CLAIMED_JOB_DONE = f"DELETE FROM embedding_queue WHERE {_SQL_THE_JOB}{_SQL_OURS}"
SQL_CLAIMED_JOB_RETRY = (
    f"UPDATE embedding_queue SET {_SQL_RETRY}{_SQL_RELEASE} WHERE {_SQL_THE_JOB}{_SQL_OURS}"
)
SQL_CLAIMED_JOB_FAILED = (
    f"UPDATE embedding_queue SET {_SQL_FAILED}{_SQL_RELEASE} WHERE {_SQL_THE_JOB}{_SQL_OURS}"
)
SQL_CLAIMED_JOB_WAIT = (
    f"UPDATE embedding_queue SET {_SQL_WAIT}{_SQL_RELEASE} WHERE {_SQL_THE_JOB}{_SQL_OURS}"
)
SQL_RELEASE = (
    "UPDATE embedding_queue SET claim_token = NULL, claimed_until = NULL "
    f"WHERE {_SQL_THE_JOB}{_SQL_OURS}"
)
SQL_QUEUE_STATS = (
    "SELECT count(*), count(failed_at), min(enqueued_at), max(id) FROM embedding_queue"
)
SQL_ATTEMPTS = (
    "SELECT id, attempts FROM embedding_queue WHERE id IN (SELECT value FROM json_each(?))"
)
SQL_REQUEUE_FAILED = (
    "UPDATE embedding_queue SET failed_at = NULL, not_before = ? WHERE failed_at IS NOT NULL"
)
SQL_CLEAR = "DELETE FROM embedding_queue"
SQL_PENDING_DELETES = "SELECT 1 FROM vector_deletes LIMIT 1"


def _key(job: JobRef) -> dict[str, object]:
    """The named parameters of ``_SQL_THE_JOB``: this job and no other."""
    return {"id": job.id, "kind": job.kind, "ref_id": job.ref_id}


def _jobs(rows: apsw.Cursor | list[tuple[apsw.SQLiteValue, ...]]) -> list[QueuedJob]:
    return [QueuedJob(*cast(tuple[int, str, int, str], row)) for row in rows]


class SqliteQueueStore:
    """:class:`~abathur.stores.queue.QueueStore` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends.sqlite import Database
        >>> from abathur.config import Settings
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "q.db"
        ...     db = await Database.open(path, Settings(db=path))
        ...     def write(tx):
        ...         tx.queue.enqueue("memory", 1, "ab12", now=5.0, not_before=5.0)
        ...         return tx.queue.ready_jobs(ready_before=10.0, max_id=100, limit=8)
        ...     try:
        ...         return await db.write(write)
        ...     finally:
        ...         await db.close()
        >>> asyncio.run(demo())
        [QueuedJob(id=1, kind='memory', ref_id=1, content_hash='ab12')]
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def enqueue(
        self, kind: str, ref_id: int, content_hash: str, *, now: float, not_before: float
    ) -> None:
        """Queue item ``ref_id`` of ``kind``, due at ``not_before`` (no-op if already queued)."""
        self._conn.execute(SQL_ENQUEUE, (kind, ref_id, content_hash, now, not_before))

    def cancel(self, kind: str, ref_id: int) -> bool:
        """Drop the job of item ``ref_id`` of ``kind``; True if there was one."""
        self._conn.execute(SQL_CANCEL, (kind, ref_id))
        return self._conn.changes() > 0

    def ready_jobs(self, *, ready_before: float, max_id: float, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs not failed, due by ``ready_before``, id <= ``max_id``; due first."""
        return _jobs(self._conn.execute(SQL_READY_JOBS, (ready_before, max_id, limit)))

    def held_jobs(self, *, held_from: float, max_id: float, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs not failed, due at or after ``held_from`` (a probe's)."""
        return _jobs(self._conn.execute(SQL_HELD_JOBS, (held_from, max_id, limit)))

    def claim_ready(
        self,
        *,
        ready_before: float,
        max_id: float,
        limit: int,
        kinds: Sequence[str],
        token: str,
        now: float,
        until: float,
    ) -> list[QueuedJob]:
        """Claim up to ``limit`` ready jobs of ``kinds`` no live lease holds; due first."""
        return self._claim(
            SQL_CLAIMABLE_JOBS, ready_before, max_id, limit, kinds, token, now, until
        )

    def claim_held(
        self,
        *,
        held_from: float,
        max_id: float,
        limit: int,
        kinds: Sequence[str],
        token: str,
        now: float,
        until: float,
    ) -> list[QueuedJob]:
        """Claim up to ``limit`` held jobs (a probe's) of ``kinds`` no live lease holds."""
        return self._claim(
            SQL_CLAIMABLE_HELD_JOBS, held_from, max_id, limit, kinds, token, now, until
        )

    def _claim(
        self,
        sql: str,
        due: float,
        max_id: float,
        limit: int,
        kinds: Sequence[str],
        token: str,
        now: float,
        until: float,
    ) -> list[QueuedJob]:
        params = {
            "due": due,
            "max_id": max_id,
            "kinds": json.dumps(list(kinds)),
            "now": now,
            "limit": limit,
        }
        jobs = _jobs(self._conn.execute(sql, params).fetchall())
        if jobs:
            ids = json.dumps([job.id for job in jobs])
            self._conn.execute(SQL_SET_CLAIM, {"token": token, "until": until, "ids": ids})
        return jobs

    def release(self, jobs: Sequence[JobRef], *, token: str) -> int:
        """Give up ``token``'s claim on ``jobs``; how many it still claimed."""
        released = 0
        for job in jobs:
            self._conn.execute(SQL_RELEASE, {**_key(job), "token": token})
            released += self._conn.changes()
        return released

    def memory_jobs(self, kind: str, prefix: str, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs of ``kind`` not failed, of live current memories in ``prefix``."""
        params = {"kind": kind, **range_params(prefix), "limit": limit}
        return _jobs(self._conn.execute(SQL_PENDING_MEMORY_JOBS, params))

    def chunk_jobs(self, kind: str, root_id: int | None, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs of ``kind`` not failed, of chunks of root ``root_id`` (or all)."""
        params = {"kind": kind, "root_id": root_id, "limit": limit}
        return _jobs(self._conn.execute(SQL_PENDING_CHUNK_JOBS, params))

    def pending_chunks(self, kind: str, root_id: int | None) -> int:
        """Jobs of ``kind`` not failed, of chunks of root ``root_id`` (or all)."""
        params = {"kind": kind, "root_id": root_id}
        return cast(int, self._conn.execute(SQL_PENDING_CHUNKS, params).fetchall()[0][0])

    def stats(self) -> QueueStats:
        """Depth, failed jobs, oldest job and highest id of the queue."""
        row = self._conn.execute(SQL_QUEUE_STATS).fetchall()[0]
        return QueueStats(*cast(tuple[int, int, float | None, int | None], row))

    def attempts(self, job_ids: Sequence[int]) -> dict[int, int]:
        """Attempts made so far of each job of ``job_ids`` still queued."""
        rows = self._conn.execute(SQL_ATTEMPTS, (json.dumps(list(job_ids)),))
        return {cast(int, job_id): cast(int, n) for job_id, n in rows}

    def finish(self, job: JobRef, *, token: str | None = None) -> bool:
        """Remove a done job; False if it was gone (or, with ``token``, claimed by another)."""
        if token is None:
            self._conn.execute(SQL_JOB_DONE, _key(job))
        else:
            self._conn.execute(SQL_CLAIMED_JOB_DONE, {**_key(job), "token": token})
        return self._conn.changes() > 0

    def retry(
        self, job: JobRef, *, error: str, not_before: float, token: str | None = None
    ) -> None:
        """Count a failed attempt; try again at ``not_before``."""
        params = {**_key(job), "error": error, "not_before": not_before}
        if token is None:
            self._conn.execute(SQL_JOB_RETRY, params)
        else:
            self._conn.execute(SQL_CLAIMED_JOB_RETRY, {**params, "token": token})

    def fail(self, job: JobRef, *, error: str, failed_at: float, token: str | None = None) -> None:
        """Count a failed attempt and mark the job failed (left until re-queued)."""
        params = {**_key(job), "error": error, "failed_at": failed_at}
        if token is None:
            self._conn.execute(SQL_JOB_FAILED, params)
        else:
            self._conn.execute(SQL_CLAIMED_JOB_FAILED, {**params, "token": token})

    def postpone(self, job: JobRef, *, not_before: float, token: str | None = None) -> None:
        """Try the job again at ``not_before`` (no attempt counted)."""
        params = {**_key(job), "not_before": not_before}
        if token is None:
            self._conn.execute(SQL_JOB_WAIT, params)
        else:
            self._conn.execute(SQL_CLAIMED_JOB_WAIT, {**params, "token": token})

    def requeue_failed(self, now: float) -> int:
        """Make every failed job due at ``now`` again; how many there were."""
        self._conn.execute(SQL_REQUEUE_FAILED, (now,))
        return self._conn.changes()

    def clear(self) -> int:
        """Drop every job; how many there were."""
        self._conn.execute(SQL_CLEAR)
        return self._conn.changes()

    def cached(self, model: str, content_hashes: Sequence[str]) -> set[str]:
        """Those of ``content_hashes`` the cache holds a vector of, for ``model``."""
        rows = self._conn.execute(SQL_CACHED, (model, json.dumps(list(content_hashes))))
        return {cast(str, h) for (h,) in rows}

    def cache_put(
        self, model: str, content_hash: str, dims: int, vector: bytes, now: float
    ) -> None:
        """Keep ``vector`` (float32 little-endian) of a text (no-op if already kept)."""
        self._conn.execute(SQL_CACHE_PUT, (model, content_hash, dims, vector, now))

    def cached_dims(self, model: str) -> int | None:
        """Dimensions of ``model``'s cached vectors, or None if it has none."""
        rows = self._conn.execute(SQL_CACHED_DIMS, (model,)).fetchall()
        return cast(int, rows[0][0]) if rows else None

    def recorded_embedder(self) -> RecordedEmbedder | None:
        """The embedder recorded in ``meta``, or None."""
        values = {cast(str, k): v for k, v in self._conn.execute(SQL_RECORDED)}
        if _META_NAME not in values:
            return None
        return RecordedEmbedder(
            str(values[_META_NAME]), int(cast(str, values.get(_META_DIMS) or 0))
        )

    def record_embedder(self, name: str, dims: int) -> None:
        """Record the embedder (``dims`` 0: not known yet, left as it is)."""
        self._conn.execute(SQL_RECORD, (_META_NAME, name))
        if dims:
            self._conn.execute(SQL_RECORD, (_META_DIMS, str(dims)))

    def forget_embedder(self) -> None:
        """Forget the recorded embedder."""
        self._conn.execute(SQL_FORGET)

    def has_pending_vector_deletes(self) -> bool:
        """True when vector deletes wait for a worker to apply them."""
        return bool(self._conn.execute(SQL_PENDING_DELETES).fetchall())
