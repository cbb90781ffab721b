"""PostgreSQL's :class:`~abathur.stores.queue.QueueStore` (issue 14): ``embedding_queue``,
``embedding_cache`` and the embedder's record in ``meta``.

Mirrors :mod:`abathur.backends.sqlite.queue`. What differs, and why:

* Claiming (the same lease protocol as SQLite, issue 14). A worker claims a
  batch with :meth:`PgQueueStore.claim_ready` in a short write transaction:
  ``SELECT ... FOR UPDATE SKIP LOCKED`` picks the ready jobs no live lease
  holds, passing over rows another transaction is claiming at that moment,
  and an ``UPDATE`` marks them with the batch's token and lease. Once that
  commits, other workers pass over them until the lease runs out; the worker
  embeds outside any transaction and finishes only the jobs its token still
  claims. (The backend's writers also queue on one advisory lock today, so
  two claims do not overlap; SKIP LOCKED keeps claims disjoint without it.)
  The statements a ``fresh=True`` search uses (``memory_jobs``,
  ``chunk_jobs``) and ``ready_jobs``/``held_jobs`` still end in
  ``FOR UPDATE [OF q] SKIP LOCKED`` when run in a write transaction, and run
  without it in a READ ONLY one (PostgreSQL refuses row locks there).
* Job ids are identity values, never reused (SQLite reuses a finished job's
  rowid). :class:`~abathur.stores.queue.JobRef` still names a job by
  (id, kind, ref_id), as on SQLite.
* Id and hash lists are bound as one array (``= ANY(...)``) where SQLite
  reads a JSON array through ``json_each``.
* ``CROSS JOIN ... ON`` (SQLite's way to fix the join order) is not
  PostgreSQL syntax: a plain JOIN, the planner picks the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.backends.ranges import range_params
from abathur.stores.queue import JobRef, QueuedJob, QueueStats, RecordedEmbedder

__all__ = [
    "SQL_CLAIMABLE_HELD_JOBS",
    "SQL_CLAIMABLE_JOBS",
    "SQL_HELD_JOBS",
    "SQL_PENDING_CHUNKS",
    "SQL_PENDING_CHUNK_JOBS",
    "SQL_PENDING_MEMORY_JOBS",
    "SQL_READY_JOBS",
    "PgQueueStore",
]

_META_NAME = "embedder.name"
_META_DIMS = "embedder.dims"

# Copied from abathur.backends.sqlite.memories (importing it would load apsw):
# a namespace prefix range is segment-aware, ':' separates segments.


SQL_READ_ONLY = "SELECT current_setting('transaction_read_only') = 'on'"

SQL_RECORDED = "SELECT key, value FROM meta WHERE key IN ('embedder.name', 'embedder.dims')"
SQL_RECORD = (
    "INSERT INTO meta (key, value) VALUES (%(key)s, %(value)s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
SQL_FORGET = "DELETE FROM meta WHERE key IN ('embedder.name', 'embedder.dims')"
# ON CONFLICT alone would draw an id from the identity sequence before it
# finds the conflict, so every no-op enqueue would leave a gap and later jobs
# would get other ids than on SQLite. NOT EXISTS skips the draw when the job
# is visibly queued; ON CONFLICT still settles a concurrent insert.
SQL_ENQUEUE = (
    "INSERT INTO embedding_queue (kind, ref_id, content_hash, enqueued_at, not_before) "
    "SELECT %(kind)s, %(ref_id)s, %(content_hash)s, %(now)s, %(not_before)s "
    "WHERE NOT EXISTS (SELECT 1 FROM embedding_queue "
    "WHERE kind = %(kind)s AND ref_id = %(ref_id)s) "
    "ON CONFLICT (kind, ref_id) DO NOTHING"
)
SQL_CANCEL = "DELETE FROM embedding_queue WHERE kind = %(kind)s AND ref_id = %(ref_id)s"

# Appended to a job-picking statement run in a write transaction: another
# transaction's claimed jobs are skipped, and ours stay ours until commit.
SQL_CLAIM = " FOR UPDATE SKIP LOCKED"
SQL_CLAIM_QUEUE = " FOR UPDATE OF q SKIP LOCKED"  # lock the job, not the item it names

# The worker's next batch: index embedding_queue_ready. max_id may be
# float('inf') (the worker's "any id"): bound as a double, bigint ids compare
# with it exactly below 2**53.
SQL_READY_JOBS = (
    "SELECT id, kind, ref_id, content_hash FROM embedding_queue "
    "WHERE failed_at IS NULL AND not_before <= %(ready_before)s AND id <= %(max_id)s "
    "ORDER BY not_before, id LIMIT %(limit)s"
)
# A probe's jobs wait at HELD_NOT_BEFORE (abathur.embeddings.queue), where no
# worker's ready_before reaches: only a probe's drain takes them.
SQL_HELD_JOBS = (
    "SELECT id, kind, ref_id, content_hash FROM embedding_queue "
    "WHERE failed_at IS NULL AND not_before >= %(held_from)s AND id <= %(max_id)s "
    "ORDER BY not_before, id LIMIT %(limit)s"
)
# A worker's claim (issue 14): the ready (or held) jobs of the kinds it knows
# that no live lease holds, due first (index embedding_queue_ready); rows
# another transaction has locked (is claiming) are passed over.
_SQL_CLAIMABLE = (
    "SELECT id, kind, ref_id, content_hash FROM embedding_queue "
    "WHERE failed_at IS NULL AND {due} AND id <= %(max_id)s "
    "AND kind = ANY(%(kinds)s::text[]) "
    "AND (claimed_until IS NULL OR claimed_until <= %(now)s) "
    "ORDER BY not_before, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
SQL_CLAIMABLE_JOBS = _SQL_CLAIMABLE.format(due="not_before <= %(due)s")
SQL_CLAIMABLE_HELD_JOBS = _SQL_CLAIMABLE.format(due="not_before >= %(due)s")
SQL_SET_CLAIM = (
    "UPDATE embedding_queue SET claim_token = %(token)s, claimed_until = %(until)s "
    "WHERE id = ANY(%(ids)s::bigint[])"
)
# memory.search(fresh=True): the jobs of the current versions under a prefix
# (segment-aware byte range, as SQLite: every text column is COLLATE "C").
SQL_PENDING_MEMORY_JOBS = (
    "SELECT q.id, q.kind, q.ref_id, q.content_hash "
    "FROM embedding_queue AS q JOIN memories AS m ON m.id = q.ref_id "
    "WHERE q.kind = %(kind)s AND q.failed_at IS NULL AND m.is_current = 1 "
    "AND m.status = 'live' AND m.namespace >= %(prefix)s AND m.namespace < %(after)s "
    "AND (m.namespace = %(prefix)s OR m.namespace >= %(below)s) "
    "ORDER BY q.id LIMIT %(limit)s"
)
# documents.search(fresh=True): the embedding jobs of chunks (of one root, or
# of every root when root_id is NULL: the cast types that NULL), and how many wait.
_SQL_PENDING_WHERE = (
    "FROM embedding_queue AS q JOIN chunks AS c ON c.id = q.ref_id "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE q.kind = %(kind)s AND q.failed_at IS NULL "
    "AND (%(root_id)s::bigint IS NULL OR d.root_id = %(root_id)s::bigint)"
)
SQL_PENDING_CHUNK_JOBS = (
    "SELECT q.id, q.kind, q.ref_id, q.content_hash "
    + _SQL_PENDING_WHERE
    + " ORDER BY q.id LIMIT %(limit)s"
)
SQL_PENDING_CHUNKS = "SELECT count(*) " + _SQL_PENDING_WHERE
SQL_CACHED = (
    "SELECT content_hash FROM embedding_cache "
    "WHERE model = %(model)s AND content_hash = ANY(%(hashes)s::text[])"
)
# NOT EXISTS: no identity value drawn for a text already cached (see SQL_ENQUEUE).
SQL_CACHE_PUT = (
    "INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at) "
    "SELECT %(model)s, %(content_hash)s, %(dims)s, %(vector)s, %(now)s "
    "WHERE NOT EXISTS (SELECT 1 FROM embedding_cache "
    "WHERE model = %(model)s AND content_hash = %(content_hash)s) "
    "ON CONFLICT (model, content_hash) DO NOTHING"
)
SQL_CACHED_DIMS = "SELECT dims FROM embedding_cache WHERE model = %(model)s LIMIT 1"
# A batch names its jobs by (id, kind, ref_id), never by id alone (SQLite
# reuses job ids; identity ids here are not reused, the rule is kept).
_SQL_THE_JOB = "id = %(id)s AND kind = %(kind)s AND ref_id = %(ref_id)s"
# With a token (a claimer's call): only while the token claims the job, and the
# claim is given up. Without (fresh=True): whoever claims it, claim untouched.
_SQL_OURS = " AND claim_token = %(token)s"
_SQL_RELEASE = ", claim_token = NULL, claimed_until = NULL"
_SQL_RETRY = "attempts = attempts + 1, last_error = %(error)s, not_before = %(not_before)s"
_SQL_FAILED = "attempts = attempts + 1, last_error = %(error)s, failed_at = %(failed_at)s"
_SQL_WAIT = "not_before = %(not_before)s"
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
SQL_ATTEMPTS = "SELECT id, attempts FROM embedding_queue WHERE id = ANY(%(ids)s::bigint[])"
SQL_REQUEUE_FAILED = (
    "UPDATE embedding_queue SET failed_at = NULL, not_before = %(now)s WHERE failed_at IS NOT NULL"
)
SQL_CLEAR = "DELETE FROM embedding_queue"
SQL_PENDING_DELETES = "SELECT 1 FROM vector_deletes LIMIT 1"


def _key(job: JobRef) -> dict[str, Any]:
    """The named parameters of ``_SQL_THE_JOB``: this job and no other."""
    return {"id": job.id, "kind": job.kind, "ref_id": job.ref_id}


def _jobs(rows: Sequence[tuple[Any, ...]]) -> list[QueuedJob]:
    return [QueuedJob(int(i), str(k), int(r), str(h)) for i, k, r, h in rows]


class PgQueueStore:
    """:class:`~abathur.stores.queue.QueueStore` on one psycopg connection, in its
    transaction (the backend opens, commits and retries it; this store never does)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def _claiming(self, sql: str, params: dict[str, Any], lock: str) -> list[QueuedJob]:
        """Run a job-picking statement, with ``lock`` appended in a write transaction."""
        row = self._conn.execute(SQL_READ_ONLY).fetchone()
        if not (row and row[0]):
            sql += lock
        return _jobs(self._conn.execute(sql, params).fetchall())

    def enqueue(
        self, kind: str, ref_id: int, content_hash: str, *, now: float, not_before: float
    ) -> None:
        """Queue item ``ref_id`` of ``kind``, due at ``not_before`` (no-op if already queued)."""
        params = {
            "kind": kind,
            "ref_id": ref_id,
            "content_hash": content_hash,
            "now": now,
            "not_before": not_before,
        }
        self._conn.execute(SQL_ENQUEUE, params)

    def cancel(self, kind: str, ref_id: int) -> bool:
        """Drop the job of item ``ref_id`` of ``kind``; True if there was one."""
        return self._conn.execute(SQL_CANCEL, {"kind": kind, "ref_id": ref_id}).rowcount > 0

    def ready_jobs(self, *, ready_before: float, max_id: float, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs not failed, due by ``ready_before``, id <= ``max_id``; due first.

        In a write transaction the jobs are claimed (locked, others' skipped).
        """
        params = {"ready_before": float(ready_before), "max_id": float(max_id), "limit": limit}
        return self._claiming(SQL_READY_JOBS, params, SQL_CLAIM)

    def held_jobs(self, *, held_from: float, max_id: float, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs not failed, due at or after ``held_from`` (a probe's).

        In a write transaction the jobs are claimed (locked, others' skipped).
        """
        params = {"held_from": float(held_from), "max_id": float(max_id), "limit": limit}
        return self._claiming(SQL_HELD_JOBS, params, SQL_CLAIM)

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
            "due": float(due),
            "max_id": float(max_id),
            "kinds": list(kinds),
            "now": now,
            "limit": limit,
        }
        jobs = _jobs(self._conn.execute(sql, params).fetchall())
        if jobs:
            ids = [job.id for job in jobs]
            self._conn.execute(SQL_SET_CLAIM, {"token": token, "until": until, "ids": ids})
        return jobs

    def release(self, jobs: Sequence[JobRef], *, token: str) -> int:
        """Give up ``token``'s claim on ``jobs``; how many it still claimed."""
        return sum(
            self._conn.execute(SQL_RELEASE, {**_key(job), "token": token}).rowcount for job in jobs
        )

    def memory_jobs(self, kind: str, prefix: str, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs of ``kind`` not failed, of live current memories in ``prefix``."""
        params = {"kind": kind, **range_params(prefix), "limit": limit}
        return self._claiming(SQL_PENDING_MEMORY_JOBS, params, SQL_CLAIM_QUEUE)

    def chunk_jobs(self, kind: str, root_id: int | None, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs of ``kind`` not failed, of chunks of root ``root_id`` (or all)."""
        params = {"kind": kind, "root_id": root_id, "limit": limit}
        return self._claiming(SQL_PENDING_CHUNK_JOBS, params, SQL_CLAIM_QUEUE)

    def pending_chunks(self, kind: str, root_id: int | None) -> int:
        """Jobs of ``kind`` not failed, of chunks of root ``root_id`` (or all)."""
        row = self._conn.execute(SQL_PENDING_CHUNKS, {"kind": kind, "root_id": root_id}).fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> QueueStats:
        """Depth, failed jobs, oldest job and highest id of the queue."""
        row = self._conn.execute(SQL_QUEUE_STATS).fetchone()
        assert row is not None  # an aggregate without GROUP BY returns one row
        depth, failed, oldest, max_id = row
        return QueueStats(
            int(depth),
            int(failed),
            None if oldest is None else float(oldest),
            None if max_id is None else int(max_id),
        )

    def attempts(self, job_ids: Sequence[int]) -> dict[int, int]:
        """Attempts made so far of each job of ``job_ids`` still queued."""
        rows = self._conn.execute(SQL_ATTEMPTS, {"ids": list(job_ids)})
        return {int(job_id): int(n) for job_id, n in rows}

    def finish(self, job: JobRef, *, token: str | None = None) -> bool:
        """Remove a done job; False if it was gone (or, with ``token``, claimed by another)."""
        if token is None:
            return self._conn.execute(SQL_JOB_DONE, _key(job)).rowcount > 0
        params = {**_key(job), "token": token}
        return self._conn.execute(SQL_CLAIMED_JOB_DONE, params).rowcount > 0

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
        return self._conn.execute(SQL_REQUEUE_FAILED, {"now": now}).rowcount

    def clear(self) -> int:
        """Drop every job; how many there were."""
        return self._conn.execute(SQL_CLEAR).rowcount

    def cached(self, model: str, content_hashes: Sequence[str]) -> set[str]:
        """Those of ``content_hashes`` the cache holds a vector of, for ``model``."""
        rows = self._conn.execute(SQL_CACHED, {"model": model, "hashes": list(content_hashes)})
        return {str(h) for (h,) in rows}

    def cache_put(
        self, model: str, content_hash: str, dims: int, vector: bytes, now: float
    ) -> None:
        """Keep ``vector`` (float32 little-endian, stored as bytea) of a text (no-op if kept)."""
        params = {
            "model": model,
            "content_hash": content_hash,
            "dims": dims,
            "vector": bytes(vector),
            "now": now,
        }
        self._conn.execute(SQL_CACHE_PUT, params)

    def cached_dims(self, model: str) -> int | None:
        """Dimensions of ``model``'s cached vectors, or None if it has none."""
        row = self._conn.execute(SQL_CACHED_DIMS, {"model": model}).fetchone()
        return None if row is None else int(row[0])

    def recorded_embedder(self) -> RecordedEmbedder | None:
        """The embedder recorded in ``meta``, or None."""
        values = {str(k): str(v) for k, v in self._conn.execute(SQL_RECORDED)}
        if _META_NAME not in values:
            return None
        return RecordedEmbedder(values[_META_NAME], int(values.get(_META_DIMS) or 0))

    def record_embedder(self, name: str, dims: int) -> None:
        """Record the embedder (``dims`` 0: not known yet, left as it is)."""
        self._conn.execute(SQL_RECORD, {"key": _META_NAME, "value": name})
        if dims:
            self._conn.execute(SQL_RECORD, {"key": _META_DIMS, "value": str(dims)})

    def forget_embedder(self) -> None:
        """Forget the recorded embedder."""
        self._conn.execute(SQL_FORGET)

    def has_pending_vector_deletes(self) -> bool:
        """True when vector deletes wait for a worker to apply them."""
        return self._conn.execute(SQL_PENDING_DELETES).fetchone() is not None
