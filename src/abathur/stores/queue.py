"""``QueueStore``: the embedding queue, the embedding cache and the embedder's record.

The protocol every backend implements; reach it inside a transaction as
``tx.queue`` (see :mod:`abathur.stores`). A queued job is a
:class:`QueuedJob`; a job is finished, retried, failed or postponed by its
:class:`JobRef` (id, kind and item), never by id alone.

Claims (issue 14): a worker takes a batch with :meth:`QueueStore.claim_ready`
(or ``claim_held``, a probe's), which marks each job claimed by the batch's
``token`` until a lease runs out; other workers pass over a job whose claim
has not run out, so each job is embedded once across processes. The worker
then finishes, retries, fails or postpones its jobs with that ``token``:
a call with a token acts only on a job the token still claims (a job whose
lease ran out and that another worker claimed is left to that worker), and
gives the claim up. A call without a token (``fresh=True`` searches, which
embed their scope inline whatever the claims) acts on the job whoever claims
it, and leaves the claim alone.

Example:
    >>> from abathur.stores.queue import JobRef, QueuedJob
    >>> job = QueuedJob(id=7, kind="memory", ref_id=3, content_hash="ab12")
    >>> job.ref
    JobRef(id=7, kind='memory', ref_id=3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

__all__ = [
    "JobRef",
    "JobSelect",
    "QueueStats",
    "QueueStore",
    "QueuedJob",
    "RecordedEmbedder",
]

JobSelect = Callable[["QueueStore", int], "list[QueuedJob]"]
"""How ``fresh=True`` names the queued jobs of one search's scope:
``select(tx.queue, limit)`` returns up to ``limit`` of them, oldest first."""


class JobRef(NamedTuple):
    """One job and no other: job ids are reused once a job is done."""

    id: int
    kind: str
    ref_id: int


class QueuedJob(NamedTuple):
    """A job waiting in the queue: the item (``kind``, ``ref_id``) and its text's hash."""

    id: int
    kind: str
    ref_id: int
    content_hash: str

    @property
    def ref(self) -> JobRef:
        """The :class:`JobRef` naming this job."""
        return JobRef(self.id, self.kind, self.ref_id)


class QueueStats(NamedTuple):
    """Jobs queued, how many failed, when the oldest was queued, the highest job id."""

    depth: int
    failed: int
    oldest: float | None
    max_id: int | None


class RecordedEmbedder(NamedTuple):
    """The embedder the file's vectors come from; ``dims`` is 0 until first known."""

    name: str
    dims: int


class QueueStore(Protocol):
    """The embedding queue, the embedding cache and the embedder's record."""

    # -- the queue

    def enqueue(
        self, kind: str, ref_id: int, content_hash: str, *, now: float, not_before: float
    ) -> None:
        """Queue item ``ref_id`` of ``kind``, due at ``not_before`` (no-op if already queued)."""
        ...

    def cancel(self, kind: str, ref_id: int) -> bool:
        """Drop the job of item ``ref_id`` of ``kind``; True if there was one."""
        ...

    def ready_jobs(self, *, ready_before: float, max_id: float, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs not failed, due by ``ready_before``, id <= ``max_id``; due first."""
        ...

    def held_jobs(self, *, held_from: float, max_id: float, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs not failed, due at or after ``held_from`` (a probe's)."""
        ...

    def memory_jobs(self, kind: str, prefix: str, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs of kind ``kind``, not failed, whose memory is a current live
        version in namespace ``prefix`` or under ``prefix:``, oldest first."""
        ...

    def chunk_jobs(self, kind: str, root_id: int | None, limit: int) -> list[QueuedJob]:
        """Up to ``limit`` jobs of kind ``kind``, not failed, whose chunk is in document
        root ``root_id`` (every root if None), oldest first."""
        ...

    def pending_chunks(self, kind: str, root_id: int | None) -> int:
        """How many jobs :meth:`chunk_jobs` would find, with no limit: chunks awaiting a vector."""
        ...

    def stats(self) -> QueueStats:
        """Depth, failed jobs, oldest job and highest id of the queue."""
        ...

    def attempts(self, job_ids: Sequence[int]) -> dict[int, int]:
        """Attempts made so far of each job of ``job_ids`` still queued."""
        ...

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
        """Claim up to ``limit`` jobs for ``token`` until ``until``; the claimed jobs, due first.

        A job is taken when its kind is one of ``kinds``, it is not failed, due
        by ``ready_before``, id <= ``max_id``, and not claimed, or claimed by a
        lease that ran out by ``now``. Runs in a write transaction; a job
        another transaction is claiming at the same moment is passed over
        (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: the single writer).
        """
        ...

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
        """As :meth:`claim_ready`, for jobs due at or after ``held_from`` (a probe's)."""
        ...

    def release(self, jobs: Sequence[JobRef], *, token: str) -> int:
        """Give up ``token``'s claim on ``jobs`` (a worker closing mid-batch); how many."""
        ...

    def finish(self, job: JobRef, *, token: str | None = None) -> bool:
        """Remove a done job; False if it was gone (cancelled, or done by another worker).

        With ``token``: only while ``token`` claims it (False otherwise).
        """
        ...

    def retry(
        self, job: JobRef, *, error: str, not_before: float, token: str | None = None
    ) -> None:
        """Count a failed attempt; try again at ``not_before``.

        With ``token``: only while ``token`` claims it, and the claim is given up.
        """
        ...

    def fail(self, job: JobRef, *, error: str, failed_at: float, token: str | None = None) -> None:
        """Count a failed attempt and mark the job failed (left until re-queued).

        With ``token``: only while ``token`` claims it, and the claim is given up.
        """
        ...

    def postpone(self, job: JobRef, *, not_before: float, token: str | None = None) -> None:
        """Try the job again at ``not_before`` (no attempt counted).

        With ``token``: only while ``token`` claims it, and the claim is given up.
        """
        ...

    def requeue_failed(self, now: float) -> int:
        """Make every failed job due at ``now`` again; how many there were."""
        ...

    def clear(self) -> int:
        """Drop every job; how many there were."""
        ...

    # -- the embedding cache

    def cached(self, model: str, content_hashes: Sequence[str]) -> set[str]:
        """Those of ``content_hashes`` the cache holds a vector of, for ``model``."""
        ...

    def cache_put(
        self, model: str, content_hash: str, dims: int, vector: bytes, now: float
    ) -> None:
        """Keep ``vector`` (float32 little-endian) of a text (no-op if already kept)."""
        ...

    def cached_dims(self, model: str) -> int | None:
        """Dimensions of ``model``'s cached vectors, or None if it has none."""
        ...

    # -- the embedder's record

    def recorded_embedder(self) -> RecordedEmbedder | None:
        """The embedder recorded for the file, or None."""
        ...

    def record_embedder(self, name: str, dims: int) -> None:
        """Record the embedder (``dims`` 0: not known yet, left as it is)."""
        ...

    def forget_embedder(self) -> None:
        """Forget the recorded embedder."""
        ...

    def has_pending_vector_deletes(self) -> bool:
        """True when vector deletes wait for a worker to apply them."""
        ...
