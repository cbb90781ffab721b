"""``EmbeddingService``: the embedding queue's worker and the embedding cache: ``ab.embeddings``.

Writes never wait for an embedder (DESIGN.md §5). A service that writes an
item calls :func:`~abathur.embeddings.queue.jobs.enqueue` (and
:func:`~abathur.embeddings.queue.jobs.cancel` for the version it replaces)
inside its own write transaction; :class:`EmbeddingService` drains the queue
through the stores (``tx.queue``, ``tx.usage``):

1. claim a batch of ready jobs (``Settings.embed_batch_size``) in one short
   write transaction (``tx.queue.claim_ready``: a random token per batch and a
   lease, see below) and read the live items they point at
   (:class:`~abathur.search.IndexKind` ``load``);
2. look each text up in ``embedding_cache`` by (embedder name, sha256 of the
   text): a text is embedded once, ever;
3. embed the misses in one ``embed_with_usage`` call, outside any transaction;
4. in one short write transaction: add the vectors to the cache, the items to
   their vec0 table, delete the jobs the batch's token still claims and write
   one ``usage_ledger`` row per embedder call (cache hits counted on it).

Claims and leases (issue 14). Workers of several processes (hosts, on
PostgreSQL) share one queue. A claimed job is passed over by every other
worker until its lease runs out, so each job is embedded once; only the
claimer's token finishes, retries, fails or postpones it, and that gives the
claim up. A worker that dies (or is killed) mid-batch leaves its jobs
claimed: they are claimed again once the lease has run out. The lease
(:func:`lease_seconds`) is twice the slowest the embedder can take to answer
one batch, from its own timeout settings (``timeout_s``, ``retries``,
``max_backoff_s``, ``batch_size``, ``concurrency``: the Ollama and
OpenAI-compatible providers have them, set by ``ABATHUR_OLLAMA_TIMEOUT_S``,
``ABATHUR_OPENAI_TIMEOUT_S`` and friends) plus a few seconds; an embedder
without a ``timeout_s`` (the bundled model, a custom one) gets
:data:`LEASE_DEFAULT_S`. A batch that still outlasts its lease (a permanent
error retried text by text, a stalled process) may be claimed and embedded
by another worker too, but its vectors are never applied twice: the late
claimer's token no longer claims the jobs, so it writes its vectors to the
cache only. A ``fresh=True`` search embeds its scope inline whatever the
claims (its caller waits for those vectors) and finishes the jobs without a
token; the vector is still inserted once. :meth:`EmbeddingService.close`
gives up the claim of a batch it abandons.

A job whose item changed meanwhile was cancelled by that write, so its vector
goes to the cache only. When the embedder is unreachable
(:class:`~abathur.errors.EmbedderUnavailableError`) the jobs stay queued with
their attempts counted and a growing backoff, search falls back to keyword,
and the queue catches up when the embedder returns. A permanent
:class:`~abathur.errors.EmbedderError` marks the jobs whose text fails (each
text is retried alone to find them) with ``failed_at`` and ``last_error``;
:meth:`EmbeddingService.retry_failed` queues them again.

The embedder (name, dims) is recorded in ``meta`` the first time it is known
(at open, or at its first answer when the provider learns its dims then).
Opening the file with another one raises
:class:`~abathur.errors.EmbedderMismatchError`; :meth:`EmbeddingService.reindex`
(``Abathur.open(..., reindex=True)``) switches.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         async with Abathur.open(pathlib.Path(tmp) / "e.db", embed_worker=False) as ab:
    ...             await ab.memory.put("user:alice", "lang", "Alice speaks French")
    ...             before = (await ab.embeddings.status()).queue_depth
    ...             report = await ab.embeddings.drain()
    ...             return before, report.embedded, (await ab.embeddings.status()).queue_depth
    >>> asyncio.run(demo())
    (1, 1, 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import structlog

from abathur.embeddings.base import Embedder
from abathur.embeddings.queue.jobs import (
    HELD_NOT_BEFORE,
    MAX_EMBED_CHARS,
    content_hash,
    enqueue,
    recorded_embedder,
)
from abathur.embeddings.queue.usage import BudgetGate, UsageBuffer, charge
from abathur.errors import (
    AbathurError,
    BudgetExceededError,
    ClosedError,
    EmbedderError,
    EmbedderMismatchError,
    EmbedderUnavailableError,
)
from abathur.models import CompactReport, DrainReport, EmbeddingStatus
from abathur.redact import echoed
from abathur.search import IndexItem, IndexKind
from abathur.stores import Backend, Transaction
from abathur.stores.queue import JobRef, JobSelect, QueuedJob
from abathur.stores.usage import Scope, UsageRow

__all__ = ["LEASE_DEFAULT_S", "EmbeddingService", "lease_seconds"]

# The name the worker logged under before the package split (log filters keep working).
log = structlog.get_logger("abathur.embeddings.queue")

# Worker pacing. A failed call is retried after 1 s, then 2, 4... up to 5 min.
_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 300.0
_IDLE_POLL_S = 5.0  # jobs written by other processes are seen this late at worst
_GATHER_S = 0.05  # after a wake-up, let a burst of writes land in one batch
_COMPACT_EVERY_S = 60.0
_COMPACT_MIN_DEAD = 1000
_QUERY_CACHE_SIZE = 512
# Jobs a budget holds back (block, degrade) are looked at again this often.
_BUDGET_RECHECK_S = 60.0
# A fresh search embeds at most this many batches inline (embed_batch_size each).
_INLINE_MAX_BATCHES = 1000
# What drain() takes: every job, also those in backoff, but not a probe's (jobs).
_ANY_BUT_HELD = HELD_NOT_BEFORE / 2

#: The lease of a claimed batch when the embedder states no timeout (the
#: bundled model embeds a batch of 64 in about a second on one core).
LEASE_DEFAULT_S = 300.0
# A lease is _LEASE_FACTOR times the slowest answer, plus _LEASE_SLACK_S for
# the writes around the call (claim, apply) and a loaded host.
_LEASE_FACTOR = 2.0
_LEASE_SLACK_S = 2.0


def _setting(embedder: object, name: str, default: float) -> float:
    value = getattr(embedder, name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return default
    return float(value)


def lease_seconds(embedder: object, batch: int) -> float:
    """How long a claim on a batch of ``batch`` texts lasts: well above the slowest answer.

    The slowest answer of an HTTP embedder is every round of requests
    (``ceil(batch / batch_size / concurrency)``) taking every attempt
    (``retries + 1``) up to ``timeout_s``, with ``max_backoff_s`` between
    attempts. The lease is twice that, plus 2 s; :data:`LEASE_DEFAULT_S` for
    an embedder that states no ``timeout_s``.

    Example:
        >>> from types import SimpleNamespace
        >>> ollama = SimpleNamespace(timeout_s=30.0, retries=3, max_backoff_s=8.0,
        ...                          batch_size=32, concurrency=2)
        >>> lease_seconds(ollama, 64)  # 2 x (4 x 30 s + 3 x 8 s) + 2 s
        290.0
        >>> lease_seconds(object(), 64)
        300.0
    """
    timeout = _setting(embedder, "timeout_s", 0.0)
    if not timeout:
        return LEASE_DEFAULT_S
    retries = int(_setting(embedder, "retries", 0.0))
    per_request = (retries + 1) * timeout + retries * _setting(embedder, "max_backoff_s", 0.0)
    size = max(1, int(_setting(embedder, "batch_size", batch) or batch))
    concurrency = max(1, int(_setting(embedder, "concurrency", 1.0) or 1))
    rounds = math.ceil(math.ceil(max(1, batch) / size) / concurrency)
    return _LEASE_FACTOR * rounds * per_request + _LEASE_SLACK_S


def _has_pending_deletes(tx: Transaction) -> bool:
    return tx.queue.has_pending_vector_deletes()


def _mismatch(path: object, recorded: tuple[str, int], name: str, dims: int) -> str:
    known = f" ({dims} dims)" if dims else ""
    return (
        f"{str(path)!r} holds vectors from embedder {recorded[0]!r} ({recorded[1]} dims), but "
        f"this process uses {name!r}{known}: open it with the same embedder, or switch with "
        f"`abathur reindex --embedder ...` (Abathur.open(..., reindex=True)), which re-embeds "
        "every item"
    )


# ---------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------


class _Job(NamedTuple):
    id: int
    kind: IndexKind
    ref_id: int
    item: IndexItem | None  # None: the item is gone; drop the job
    text_hash: str

    @property
    def ref(self) -> JobRef:
        """This job and no other (job ids are reused)."""
        return JobRef(self.id, self.kind.name, self.ref_id)


@dataclass
class _Totals:
    embedded: int = 0
    cache_hits: int = 0
    calls: int = 0
    failed: int = 0
    jobs: int = 0
    waiting: int = 0  # held back by a budget (issue 4)
    blocked: BudgetExceededError | None = None

    def add(self, other: _Totals) -> None:
        self.embedded += other.embedded
        self.cache_hits += other.cache_hits
        self.calls += other.calls
        self.failed += other.failed
        self.jobs += other.jobs
        self.waiting += other.waiting
        self.blocked = self.blocked or other.blocked


@dataclass
class _Embedded:
    """The outcome of embedding one batch's cache misses."""

    vectors: dict[str, bytes] = field(default_factory=dict)  # text hash -> float32 blob
    failures: dict[str, str] = field(default_factory=dict)  # text hash -> error message
    calls: list[UsageRow] = field(default_factory=list)  # usage rows
    call_hashes: list[list[str]] = field(default_factory=list)  # the texts of each call
    dims: int = 0
    waiting: set[str] = field(default_factory=set)  # text hashes a budget held back
    blocked: BudgetExceededError | None = None

    def merge(self, other: _Embedded) -> None:
        self.vectors.update(other.vectors)
        self.failures.update(other.failures)
        self.calls += other.calls
        self.call_hashes += other.call_hashes
        self.dims = self.dims or other.dims


class EmbeddingService:
    """The embedding pipeline of one open database: ``ab.embeddings``.

    Attributes:
        embedder: this process's :class:`~abathur.embeddings.Embedder`, or
            ``None`` (``Settings.embedder = "none"``: keyword search only).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "e.db") as ab:
        ...             status = await ab.embeddings.status()
        ...             return status.embedder, status.dims, status.is_worker_running
        >>> asyncio.run(demo())
        ('bundled:all-MiniLM-L6-v2', 384, True)
    """

    def __init__(
        self,
        db: Backend,
        embedder: Embedder | None,
        kinds: Sequence[IndexKind],
        *,
        budget: BudgetGate | None = None,
        usage: UsageBuffer | None = None,
        probe: bool = False,
    ) -> None:
        self._db = db
        # The file or server (a PostgresUrl shows no password): for messages only.
        self._path = db.settings.db
        self.embedder = embedder
        # A probe (abathur smoke) embeds only its own held jobs, writes no
        # usage rows, is not gated by budgets and leaves others' pending
        # vector deletes to their workers: see Abathur.open(probe=True).
        self.is_probe = probe
        self._kinds = {kind.name: kind for kind in kinds}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # The batch claimed and not yet written: (token, jobs), given up by close().
        self._claimed: tuple[str, list[JobRef]] | None = None
        self._last_error: str | None = None
        self._paused_until = 0.0  # after an unavailable error: no calls before this
        # Usage rows made outside a batch (queries, cache hits), written with
        # the next write; shared with the cost service (issue 4).
        self._usage = usage if usage is not None else UsageBuffer(probe=probe)
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._next_compact_check = 0.0
        # Prices, attribution and budgets (issue 4): the cost service, or None.
        self._budget = budget

    # -- plumbing used by Abathur and the services ---------------------------

    @property
    def is_configured(self) -> bool:
        """True when this process has an embedder (writes then queue embedding jobs)."""
        return self.embedder is not None

    def notify(self) -> None:
        """Wake the worker: a write just queued jobs."""
        self._wake.set()

    async def start(self, *, reindex: bool = False) -> None:
        """Check or record the embedder, queue what has no vector, start the worker.

        Raises:
            EmbedderMismatchError: the file's vectors come from another embedder
                and ``reindex`` is false.
            EmbedderError: the embedder's dims are not a multiple of 8.
        """
        embedder = self.embedder
        if embedder is None:
            return
        name, dims = embedder.name, int(embedder.dims or 0)

        def setup(tx: Transaction) -> None:
            now = time.time()
            recorded = recorded_embedder(tx)
            if recorded is not None and self._differs(recorded, name, dims):
                if not reindex:
                    raise EmbedderMismatchError(_mismatch(self._path, recorded, name, dims))
                log.info("embeddings.switch", old=recorded[0], new=name)
                self._reset(tx)
                recorded = None
            if recorded is None:
                self._record(tx, name, dims, now)

        recorded = await self._db.read(recorded_embedder)
        if recorded is None or self._differs(recorded, name, dims):
            await self._db.write(setup)  # re-checks inside: another process may have won
        if self._db.settings.embed_worker:
            self._task = asyncio.create_task(self._run(), name=f"abathur-embed {self._path}")

    @staticmethod
    def _differs(recorded: tuple[str, int], name: str, dims: int) -> bool:
        return recorded[0] != name or bool(dims and recorded[1] and recorded[1] != dims)

    def _record(self, tx: Transaction, name: str, dims: int, now: float) -> None:
        """Record the embedder (with dims once known) and queue every live item.

        Called when the file has no embedder recorded (or only its name), so no
        item has a vector yet. The vector tables are made with the first
        vector (:meth:`_apply`): a file that never embeds has none.
        """
        if dims and dims % 8:
            raise EmbedderError(
                f"embedder {name!r} makes {dims}-dimensional vectors; abathur's binary index "
                "needs a multiple of 8"
            )
        tx.queue.record_embedder(name, dims)
        for kind in self._kinds.values():
            for item in kind.live(tx):
                enqueue(tx, kind.name, item.id, content_hash(item.text), now)

    def _ensure_tables(self, tx: Transaction, dims: int, now: float) -> None:
        chunk_size = self._db.settings.vector_chunk_size
        for kind in self._kinds.values():
            tx.search.create_vector_table(kind.vec_table, kind.name, dims, chunk_size, now=now)

    def _reset(self, tx: Transaction) -> None:
        """Forget the recorded embedder: drop every vector table and every job."""
        for kind in self._kinds.values():
            tx.search.drop_vector_table(kind.vec_table)
        # Tables of kinds this process does not know too (a registered name
        # that is not one abathur makes raises: nothing is dropped under it).
        tx.search.drop_vector_tables()
        tx.queue.clear()
        tx.queue.forget_embedder()
        self._queries.clear()

    async def embed_query(
        self, text: str, *, namespace: str | None = None
    ) -> tuple[np.ndarray | None, str | None]:
        """The query's vector, or ``(None, why)`` when search must fall back to keyword.

        ``namespace`` (the searched prefix) says whose budget pays for it.

        Raises:
            BudgetExceededError: a ``block`` budget of the namespace's app or
                user (or of everything) is used up; the embedder was not called.
        """
        embedder = self.embedder
        if embedder is None:
            return None, "no embedder is configured (Settings.embedder is 'none')"
        scope = self._scope(namespace)
        if self._budget is not None and not self.is_probe:
            why = await self._budget.gate(scope)
            if why is not None:
                return None, why
        text = text[:MAX_EMBED_CHARS]
        cached = self._queries.get(text)
        if cached is not None:
            self._queries.move_to_end(text)
            return cached, None
        if time.time() < self._paused_until:
            return None, f"the embedder is unavailable: {self._last_error}"
        try:
            matrix, usage = await self._call([text], operation="embed.query")
        except EmbedderUnavailableError as exc:
            self._last_error = exc.message
            self._paused_until = time.time() + _BACKOFF_START_S
            return None, f"the embedder is unavailable: {exc.message}"
        except EmbedderError as exc:
            self._last_error = exc.message
            return None, f"the embedder failed: {exc.message}"
        self._usage.add(self._ledger(usage, scope, text_hash=content_hash(text)))
        if self._paused_until:
            self._paused_until = 0.0
            self._wake.set()
        vector = matrix[0]
        self._queries[text] = vector
        if len(self._queries) > _QUERY_CACHE_SIZE:
            self._queries.popitem(last=False)
        return vector, None

    # -- costs (issue 4) ----------------------------------------------------------

    def _scope(self, namespace: str | None) -> Scope:
        """The (app, user) a namespace's embeddings are charged to (abathur.costs.attribute)."""
        if self._budget is None or namespace is None:
            return (None, None)
        return self._budget.attribute(namespace)

    def _ledger(
        self,
        usage: UsageRow,
        scope: Scope,
        *,
        text_hash: str | None = None,
        call_id: int | None = None,
    ) -> UsageRow:
        """A usage_ledger row: the call's usage, who it is charged to, its price and cost."""
        price = None if self._budget is None else self._budget.price(usage.provider, usage.model)
        return charge(usage, scope, price, text_hash=text_hash, call_id=call_id)

    def note_cache_hits(self, model_name: str, namespaces: Sequence[str]) -> None:
        """Count writes that took their vector straight from the cache (no job, no call).

        A service calls it after a write whose items found their text in
        ``embedding_cache`` (``model_name`` is the embedder's ``name``, one
        namespace per item). Buffered like query usage: a cache-only usage
        row per (app, user).
        """
        if self.is_probe:
            return
        provider, _, model = model_name.partition(":")
        counts: dict[Scope, int] = {}
        for namespace in namespaces:
            scope = self._scope(namespace)
            counts[scope] = counts.get(scope, 0) + 1
        now = time.time()
        for scope, count in counts.items():
            hits = UsageRow(
                at=now,
                provider=provider,
                model=model,
                operation="embed",
                inputs=0,
                tokens=0,
                is_estimate=False,
                chars=0,
                duration_ms=0.0,
                cache_hits=count,
            )
            self._usage.add_cache_hits(self._ledger(hits, scope))

    # -- calling the embedder ------------------------------------------------

    async def _call(
        self, texts: list[str], *, operation: str = "embed"
    ) -> tuple[np.ndarray, UsageRow]:
        """Embed ``texts``; return the float32 matrix and the usage of the call (no payer yet).

        Raises:
            EmbedderUnavailableError: as raised by the embedder.
            EmbedderError: the embedder failed, or answered with the wrong
                number, length or kind of vectors (any other error of a custom
                embedder is translated into this too).
        """
        embedder = self.embedder
        assert embedder is not None
        started = time.perf_counter()
        try:
            result = await embedder.embed_with_usage(texts)
        except EmbedderError:
            raise
        except AbathurError as exc:
            raise EmbedderError(
                f"embedder {embedder.name!r} refused the texts: {echoed(exc)}"
            ) from exc
        except Exception as exc:
            # A custom embedder's error text is foreign: it may quote a request's
            # credentials or a whole error page (abathur.redact).
            raise EmbedderError(
                f"embedder {embedder.name!r} raised {type(exc).__name__}: {echoed(exc)}"
            ) from exc
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            matrix = np.asarray(result.vectors, dtype=np.float32)
            tokens, is_estimate = int(result.tokens), bool(result.is_token_estimate)
        except (AttributeError, TypeError, ValueError) as exc:
            raise EmbedderError(
                f"embedder {embedder.name!r} returned vectors that are not numbers of one "
                f"length, or no EmbedResult: {echoed(exc)}"
            ) from exc
        want = int(embedder.dims or 0)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts) or matrix.shape[1] == 0:
            raise EmbedderError(
                f"embedder {embedder.name!r} returned {matrix.shape[0] if matrix.ndim else 0} "
                f"vector(s) of shape {matrix.shape[1:]} for {len(texts)} text(s)"
            )
        if want and matrix.shape[1] != want:
            raise EmbedderError(
                f"embedder {embedder.name!r} says it makes {want}-dimensional vectors but "
                f"returned {matrix.shape[1]}"
            )
        if not np.isfinite(matrix).all():
            raise EmbedderError(f"embedder {embedder.name!r} returned NaN or infinite values")
        usage = UsageRow(
            at=time.time(),
            provider=embedder.provider,
            model=embedder.model,
            operation=operation,
            inputs=len(texts),
            tokens=tokens,
            is_estimate=is_estimate,
            chars=sum(map(len, texts)),
            duration_ms=round(elapsed_ms, 3),
        )
        return matrix, usage

    async def _embed_misses(self, texts: dict[str, str]) -> _Embedded:
        """Embed ``{hash: text}`` in one call; on a permanent error, one text at a time."""
        out = _Embedded()
        hashes = list(texts)
        try:
            matrix, usage = await self._call([texts[h] for h in hashes])
        except EmbedderUnavailableError:
            raise
        except EmbedderError as exc:
            if len(hashes) == 1:
                out.failures[hashes[0]] = exc.message
                return out
            log.warning("embeddings.batch_failed", error=exc.message, texts=len(hashes))
            for text_hash in hashes:
                out.merge(await self._embed_misses({text_hash: texts[text_hash]}))
            return out
        out.calls.append(usage)
        out.call_hashes.append(hashes)
        out.dims = int(matrix.shape[1])
        for text_hash, row in zip(hashes, matrix, strict=True):
            out.vectors[text_hash] = row.astype("<f4").tobytes()
        return out

    # -- one batch -----------------------------------------------------------

    def _read_batch(
        self, tx: Transaction, *, limit: int, select: JobSelect
    ) -> tuple[list[_Job], set[str]]:
        """A ``fresh=True`` search's jobs (``select``), whatever their claims, unclaimed."""
        return self._load_jobs(tx, select(tx.queue, limit))

    def _claim_batch(
        self,
        tx: Transaction,
        *,
        ready_before: float,
        max_id: float,
        limit: int,
        token: str,
        until: float,
    ) -> tuple[list[_Job], set[str]]:
        """Claim up to ``limit`` ready jobs (a probe: held ones) for ``token`` until ``until``."""
        kinds, now = sorted(self._kinds), time.time()
        if self.is_probe:
            rows = tx.queue.claim_held(
                held_from=HELD_NOT_BEFORE,
                max_id=max_id,
                limit=limit,
                kinds=kinds,
                token=token,
                now=now,
                until=until,
            )
        else:
            rows = tx.queue.claim_ready(
                ready_before=ready_before,
                max_id=max_id,
                limit=limit,
                kinds=kinds,
                token=token,
                now=now,
                until=until,
            )
        return self._load_jobs(tx, rows)

    def _load_jobs(self, tx: Transaction, rows: list[QueuedJob]) -> tuple[list[_Job], set[str]]:
        """The jobs with the live items they point at, and which texts the cache holds."""
        now = time.time()
        by_kind: dict[str, list[tuple[int, int, str]]] = {}
        for row in rows:
            by_kind.setdefault(row.kind, []).append((row.id, row.ref_id, row.content_hash))
        jobs: list[_Job] = []
        for kind_name, entries in by_kind.items():
            kind = self._kinds.get(kind_name)
            if kind is None:
                continue  # a kind this abathur does not know: leave its jobs alone
            items = {item.id: item for item in kind.load(tx, [e[1] for e in entries], now)}
            for job_id, ref_id, text_hash in entries:
                item = items.get(ref_id)
                jobs.append(
                    _Job(
                        job_id,
                        kind,
                        ref_id,
                        item,
                        content_hash(item.text) if item else text_hash,
                    )
                )
        cached: set[str] = set()
        hashes = sorted({job.text_hash for job in jobs if job.item is not None})
        if hashes and self.embedder is not None:
            cached = tx.queue.cached(self.embedder.name, hashes)
        return jobs, cached

    async def _step(
        self, *, ready_before: float, max_id: float, select: JobSelect | None = None
    ) -> _Totals | None:
        """Embed one batch of ready jobs (or those ``select`` names); None when there was none.

        A worker's batch is claimed first (a token and a lease, see the module
        docstring) and finished with that token; a ``select`` batch (a fresh
        search's) is read, not claimed, and finished whoever claims it.

        Raises:
            EmbedderUnavailableError: the embedder is down (the batch's jobs
                get an attempt and a backoff).
            EmbedderMismatchError: the embedder's answer does not fit the file.
        """
        embedder = self.embedder
        assert embedder is not None
        limit = self._db.settings.embed_batch_size
        async with self._lock:
            token: str | None = None
            until = math.inf
            if select is not None:
                jobs, cached = await self._db.read(
                    lambda tx: self._read_batch(tx, limit=limit, select=select)
                )
            else:
                token = mine = secrets.token_hex(8)
                until = time.time() + lease_seconds(embedder, limit)
                jobs, cached = await self._db.write(
                    lambda tx: self._claim_batch(
                        tx,
                        ready_before=ready_before,
                        max_id=max_id,
                        limit=limit,
                        token=mine,
                        until=until,
                    )
                )
                # What close() gives up if it cancels this batch mid-embed.
                self._claimed = (mine, [job.ref for job in jobs])
            if not jobs:
                self._claimed = None
                return None
            try:
                totals, embedded = await self._embed_batch(embedder, jobs, cached, token, until)
            except EmbedderUnavailableError:
                raise  # the jobs were postponed (and released) already
            except Exception:
                # Give the claim up now: the next try should not wait out the lease
                # (if this fails too, the lease runs out as a dead worker's does).
                with contextlib.suppress(AbathurError):
                    await self._release()
                raise
            self._claimed = None
        if embedded.failures:
            self._last_error = next(iter(embedded.failures.values()))
        if totals.blocked is not None:
            log.warning(
                "embeddings.budget_blocked", error=totals.blocked.message, waiting=totals.waiting
            )
        return totals

    async def _embed_batch(
        self,
        embedder: Embedder,
        jobs: list[_Job],
        cached: set[str],
        token: str | None,
        until: float,
    ) -> tuple[_Totals, _Embedded]:
        """Embed the batch's cache misses, then apply the vectors in one write."""
        misses = {
            job.text_hash: job.item.text[:MAX_EMBED_CHARS]
            for job in jobs
            if job.item is not None and job.text_hash not in cached
        }
        try:
            embedded = await self._embed_by_scope(jobs, misses)
        except EmbedderUnavailableError as exc:
            message = self._last_error = exc.message
            await self._db.write(lambda tx: self._postpone(tx, jobs, message, token))
            self._claimed = None
            raise
        if time.time() > until:
            # Another worker may have claimed (and embedded) these jobs meanwhile;
            # only the jobs this token still claims are applied below.
            log.warning("embeddings.lease_overrun", jobs=len(jobs))
        totals = await self._db.write(
            lambda tx: self._apply(tx, embedder, jobs, cached, embedded, token)
        )
        return totals, embedded

    async def _release(self) -> None:
        """Give up the claim of the batch in hand, if any (its jobs are claimable at once)."""
        claimed, self._claimed = self._claimed, None
        if claimed is None or self._db.is_closed:
            return
        token, refs = claimed
        await self._db.write(lambda tx: tx.queue.release(refs, token=token))

    async def _embed_by_scope(self, jobs: list[_Job], misses: dict[str, str]) -> _Embedded:
        """Embed the misses in one call, leaving out those a used-up budget holds back.

        Each (app, user) the texts are charged to is checked first; a scope
        whose ``block`` or ``degrade`` budget is used up is not sent: its
        texts are left in ``waiting`` and their jobs wait. The call's usage
        is then split into one row per scope (:meth:`_split_usage`).
        """
        scope_of: dict[str, Scope] = {}
        for job in jobs:
            if job.item is not None and job.text_hash in misses:
                scope_of.setdefault(job.text_hash, self._scope(job.item.scope))
        waiting: set[str] = set()
        blocked: BudgetExceededError | None = None
        if self._budget is not None and not self.is_probe:
            for scope in dict.fromkeys(scope_of.values()):
                try:
                    why = await self._budget.gate(scope)
                except BudgetExceededError as exc:
                    blocked = blocked or exc
                    why = exc.message
                if why is not None:
                    waiting.update(h for h, s in scope_of.items() if s == scope)
        send = {h: text for h, text in misses.items() if h not in waiting}
        out = await self._embed_misses(send) if send else _Embedded()
        out.calls = [
            row
            for usage, hashes in zip(out.calls, out.call_hashes, strict=True)
            for row in self._split_usage(usage, hashes, scope_of, send)
        ]
        out.waiting, out.blocked = waiting, blocked
        return out

    def _split_usage(
        self,
        usage: UsageRow,
        hashes: Sequence[str],
        scope_of: dict[str, Scope],
        texts: dict[str, str],
    ) -> list[UsageRow]:
        """One usage_ledger row per (app, user) a call's texts are charged to.

        A call of one payer keeps its numbers. Otherwise each payer gets its
        own texts and characters, and a share of the tokens and the time in
        proportion to its characters (the tokens are then an estimate: the
        embedder counts them per call); the rows add up to the call.
        """
        parts: dict[Scope, list[str]] = {}
        for h in hashes:
            parts.setdefault(scope_of.get(h, (None, None)), []).append(h)
        if len(parts) == 1:
            return [self._ledger(usage, next(iter(parts)))]
        tokens, chars = usage.tokens, usage.chars
        call_id = secrets.randbits(62)  # ties the rows together: it is still one call
        rows: list[UsageRow] = []
        given = 0
        for i, (scope, own) in enumerate(parts.items()):
            own_chars = sum(len(texts[h]) for h in own)
            share = own_chars / chars if chars else 1 / len(parts)
            own_tokens = tokens - given if i == len(parts) - 1 else round(tokens * share)
            given += own_tokens
            part = replace(
                usage,
                inputs=len(own),
                tokens=own_tokens,
                is_estimate=True,
                chars=own_chars,
                duration_ms=round(usage.duration_ms * share, 3),
            )
            rows.append(self._ledger(part, scope, call_id=call_id))
        return rows

    def _postpone(self, tx: Transaction, jobs: list[_Job], error: str, token: str | None) -> None:
        now = time.time()
        attempts = tx.queue.attempts([job.id for job in jobs])
        for job in jobs:
            delay = min(_BACKOFF_MAX_S, _BACKOFF_START_S * 2 ** attempts.get(job.id, 0))
            # A probe's job stays held, or another process's worker would take it.
            not_before = HELD_NOT_BEFORE if self.is_probe else now + delay
            tx.queue.retry(job.ref, error=error, not_before=not_before, token=token)

    def _apply(
        self,
        tx: Transaction,
        embedder: Embedder,
        jobs: list[_Job],
        cached: set[str],
        embedded: _Embedded,
        token: str | None,
    ) -> _Totals:
        """Write the batch: cache the vectors, insert those of the jobs ``token`` still claims.

        ``token`` None (a fresh search's batch): of the jobs still queued.
        """
        now = time.time()
        name = embedder.name
        recorded = recorded_embedder(tx)
        dims = embedded.dims or (recorded[1] if recorded else 0)
        queue = tx.queue
        if not dims:
            dims = queue.cached_dims(name) or 0
        if recorded is not None and self._differs(recorded, name, dims):
            raise EmbedderMismatchError(_mismatch(self._path, recorded, name, dims))
        if recorded is None or (dims and not recorded[1]):
            # The first answer of an embedder that learns its dims from it.
            self._record(tx, name, dims, now)
        if dims:
            self._ensure_tables(tx, dims, now)
        if not self.is_probe:
            tx.search.apply_vector_deletes()
        for text_hash, blob in embedded.vectors.items():
            queue.cache_put(name, text_hash, dims, blob, now)
        totals = _Totals(calls=len(embedded.calls), jobs=len(jobs), blocked=embedded.blocked)
        hits: dict[Scope, int] = {}
        for job in jobs:
            if job.item is None:
                queue.finish(job.ref, token=token)
                continue
            if job.text_hash in embedded.waiting:
                queue.postpone(job.ref, not_before=now + _BUDGET_RECHECK_S, token=token)
                totals.waiting += 1
                continue
            failure = embedded.failures.get(job.text_hash)
            if failure is not None:
                queue.fail(job.ref, error=failure, failed_at=now, token=token)
                totals.failed += 1
                continue
            if not queue.finish(job.ref, token=token):
                # Cancelled by a newer write, done by a fresh search, or (the lease ran
                # out) claimed by another worker: its vector went to the cache only.
                continue
            if tx.search.insert_vector(
                job.kind.vec_table, job.item, model=name, content_hash=job.text_hash
            ):
                totals.embedded += 1
                if job.text_hash in cached:
                    totals.cache_hits += 1
                    if not self.is_probe:
                        scope = self._scope(job.item.scope)
                        hits[scope] = hits.get(scope, 0) + 1
        # Cache hits go on the first call row charged to the same (app, user),
        # or on a row of their own.
        usage = list(embedded.calls)
        for scope, count in hits.items():
            at = next((i for i, r in enumerate(usage) if r.scope == scope), None)
            if at is None:
                empty = UsageRow(
                    at=now,
                    provider=embedder.provider,
                    model=embedder.model,
                    operation="embed",
                    inputs=0,
                    tokens=0,
                    is_estimate=False,
                    chars=0,
                    duration_ms=0.0,
                )
                usage.append(self._ledger(empty, scope))
                at = len(usage) - 1
            usage[at] = replace(usage[at], cache_hits=count)
        if not self.is_probe:  # a probe's calls are not the application's spend
            tx.usage.add(usage)
        self._usage.flush(tx)
        return totals

    def _settle(self, tx: Transaction) -> None:
        """Write buffered usage rows and apply pending vector deletes (not a probe's job)."""
        self._usage.flush(tx)
        if not self.is_probe:
            tx.search.apply_vector_deletes()

    # -- read-your-writes ----------------------------------------------------

    async def embed_now(self, select: JobSelect) -> int:
        """Embed the jobs ``select`` names now, inline, batch after batch (``fresh=True``).

        ``select(tx.queue, limit)`` returns up to ``limit`` queued jobs (see
        :data:`~abathur.stores.queue.JobSelect`); a service builds it for the
        items of one search's scope. Jobs in backoff are tried
        at once; failed ones are left.

        The jobs are taken whatever their claims (the caller waits for these
        vectors), and not claimed. Safe beside a worker (of this or another
        process) embedding the same jobs: :meth:`_apply` finishes each job by
        ``(id, kind, ref_id)`` and only the batch whose delete removed the job
        inserts its vector, so a vector is never inserted twice
        (tests/unit/test_fresh.py races them); the text may be embedded by both.

        Returns:
            Vectors written (0 when there was nothing to do, or the embedder is
            known to be down: the caller's search then says what it could not see).

        Raises:
            EmbedderError: the embedder failed (unavailable: the jobs were
                postponed as the worker would).
        """
        if self.embedder is None or self._closed or time.time() < self._paused_until:
            return 0
        written = 0
        # Each batch finishes, fails or holds back every job it read, so the
        # loop ends; the cap only bounds a scope that writers keep refilling.
        for _ in range(_INLINE_MAX_BATCHES):
            step = await self._step(ready_before=math.inf, max_id=math.inf, select=select)
            if step is None:
                break
            written += step.embedded
            if step.waiting and step.waiting == step.jobs:
                break  # only jobs a used-up budget holds back are left
        return written

    # -- the background worker ---------------------------------------------

    async def _run(self) -> None:
        delay = _BACKOFF_START_S
        while not self._closed:
            wait = self._paused_until - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._wake.clear()
            try:
                step = await self._step(ready_before=time.time(), max_id=math.inf)
            except EmbedderUnavailableError:
                self._paused_until = time.time() + delay
                delay = min(_BACKOFF_MAX_S, delay * 2)
                log.warning("embeddings.unavailable", error=self._last_error, retry_in_s=delay)
                continue
            except EmbedderError as exc:
                self._last_error = exc.message
                self._paused_until = time.time() + _BACKOFF_MAX_S
                log.error("embeddings.failed", error=exc.message)
                continue
            except ClosedError:
                return
            except Exception as exc:  # a bug must not kill the worker silently
                self._last_error = f"{type(exc).__name__}: {echoed(exc)}"
                self._paused_until = time.time() + _IDLE_POLL_S
                log.exception("embeddings.worker_error")
                continue
            delay = _BACKOFF_START_S
            if step is not None:
                continue
            await self._idle()

    async def _idle(self) -> None:
        if bool(self._usage) or await self._db.read(_has_pending_deletes):
            await self._db.write(self._settle)
        if time.time() >= self._next_compact_check:
            self._next_compact_check = time.time() + _COMPACT_EVERY_S
            await self._compact_if_needed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), _IDLE_POLL_S)
        await asyncio.sleep(_GATHER_S)

    async def _compact_if_needed(self) -> None:
        ratio = self._db.settings.vector_compact_ratio
        if not ratio or self.is_probe:  # the application's workers maintain its tables
            return
        stats = await self._db.read(lambda tx: tx.search.vector_table_stats())
        if any(s.dead_rows > max(_COMPACT_MIN_DEAD, ratio * s.live_rows) for s in stats):
            await self.compact()

    async def close(self) -> None:
        """Stop the worker (an embed call in flight is abandoned) and write pending usage.

        The abandoned batch's claim is given up, so its jobs are claimable at once.

        Idempotent; :meth:`Abathur.close` calls it before closing the database.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         ab = await Abathur.open(pathlib.Path(tmp) / "e.db")
            ...         await ab.embeddings.close()
            ...         running = (await ab.embeddings.status()).is_worker_running
            ...         await ab.close()
            ...         return running
            >>> asyncio.run(demo())
            False
        """
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self._db.is_closed:
            await self._release()  # an abandoned batch's jobs: claimable at once
        if self._usage and not self._db.is_closed:
            await self._db.write(self._usage.flush)

    # -- public --------------------------------------------------------------

    async def status(self) -> EmbeddingStatus:
        """Queue depth, oldest job, embedder, last error, live and dead vectors.

        Returns:
            An :class:`~abathur.models.EmbeddingStatus` snapshot.

        Raises:
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "e.db", embedder="none") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             status = await ab.embeddings.status()
            ...             return status.embedder, status.queue_depth, status.vectors
            >>> asyncio.run(demo())
            (None, 0, 0)
        """

        def read(tx: Transaction) -> EmbeddingStatus:
            recorded = recorded_embedder(tx)
            depth, failed, oldest, _ = tx.queue.stats()
            stats = tx.search.vector_table_stats()
            embedder = self.embedder
            return EmbeddingStatus(
                embedder=None if embedder is None else embedder.name,
                dims=(embedder.dims or None) if embedder is not None else None,
                recorded_embedder=None if recorded is None else recorded[0],
                recorded_dims=(recorded[1] or None) if recorded else None,
                is_worker_running=self._task is not None and not self._task.done(),
                queue_depth=depth,
                failed_jobs=failed,
                oldest_job_age_s=None if oldest is None else max(0.0, time.time() - oldest),
                last_error=self._last_error,
                vectors=sum(s.live_rows for s in stats),
                dead_rows=sum(s.dead_rows for s in stats),
            )

        return await self._db.read(read)

    async def drain(self) -> DrainReport:
        """Embed every job queued now, in batches, and wait until it is done.

        Jobs in backoff are tried at once; jobs marked failed are left (see
        :meth:`retry_failed`). Jobs queued while it runs are left to the worker,
        and so are jobs another worker (of this or another process) has
        claimed: they count in ``remaining``. Several processes draining one
        queue at once each embed their own jobs: a job is embedded once.
        Jobs held by a probe (``Abathur.open(probe=True)``, ``abathur smoke``)
        are left to it; a probe's drain embeds only those.
        Jobs charged to a used-up ``block`` or ``degrade`` budget
        (``Settings.budgets``) are not embedded: they wait (``waiting``).

        Returns:
            How many vectors were written (and how many came from the cache),
            calls made, jobs that failed, jobs held back by a budget, and jobs
            still queued.

        Raises:
            BudgetExceededError: a ``block`` budget held jobs back (everything
                else was embedded first; those jobs stay queued).
            EmbedderUnavailableError: the embedder is down, or none is
                configured while jobs wait; the jobs stay queued.
            EmbedderMismatchError: the embedder answered with vectors that do
                not fit the file's index.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "e.db"
            ...         async with Abathur.open(path, embed_worker=False) as ab:
            ...             await ab.memory.put("user:alice", "a", "the same text")
            ...             await ab.memory.put("user:bob", "b", "the same text")
            ...             report = await ab.embeddings.drain()
            ...             return report.embedded, report.cache_hits, report.remaining
            >>> asyncio.run(demo())
            (2, 0, 0)
        """
        if self._closed or self._db.is_closed:
            raise ClosedError(f"database {str(self._path)!r} is closed")
        started = time.perf_counter()
        depth, _, _, max_id = await self._db.read(lambda tx: tx.queue.stats())
        totals = _Totals()
        if depth and self.embedder is None:
            raise EmbedderUnavailableError(
                f"{depth} embedding job(s) wait but no embedder is configured in this process "
                "(Settings.embedder is 'none'); open the file with its embedder to embed them"
            )
        while self.embedder is not None and max_id is not None:
            step = await self._step(ready_before=_ANY_BUT_HELD, max_id=max_id)
            if step is None:
                break
            totals.add(step)
            if step.waiting and step.waiting == step.jobs:
                break  # only jobs a budget holds back are left (they sort last)
        await self._db.write(self._settle)
        self._paused_until = 0.0
        if totals.blocked is not None:
            raise totals.blocked
        remaining = (await self._db.read(lambda tx: tx.queue.stats())).depth
        return DrainReport(
            embedded=totals.embedded,
            cache_hits=totals.cache_hits,
            calls=totals.calls,
            failed=totals.failed,
            waiting=totals.waiting,
            remaining=remaining,
            seconds=round(time.perf_counter() - started, 6),
        )

    async def retry_failed(self) -> int:
        """Queue again the jobs a permanent embedder error left failed.

        Returns:
            How many jobs were queued again.

        Raises:
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "e.db") as ab:
            ...             return await ab.embeddings.retry_failed()
            >>> asyncio.run(demo())
            0
        """

        def write(tx: Transaction) -> int:
            return tx.queue.requeue_failed(time.time())

        count = await self._db.write(write)
        if count:
            self.notify()
        return count

    async def reindex(self, *, wait: bool = True) -> DrainReport:
        """Drop every vector and re-embed every live item with this process's embedder.

        What ``abathur reindex --embedder ...`` runs: forgets the recorded
        embedder, drops the vector tables and the queue, records this
        embedder, queues every live item, and (with ``wait``) drains. Texts
        this embedder saw before come from the cache, so switching back is cheap.

        Args:
            wait: drain before returning; otherwise the worker does it.

        Returns:
            The drain's report (``remaining`` is the queue when ``wait`` is false).

        Raises:
            EmbedderError: no embedder is configured in this process.
            EmbedderUnavailableError: (with ``wait``) the embedder is down;
                the items stay queued.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "e.db"
            ...         async with Abathur.open(path, embed_worker=False) as ab:
            ...             await ab.memory.put("user:alice", "lang", "Alice speaks French")
            ...             await ab.embeddings.drain()
            ...             report = await ab.embeddings.reindex()
            ...             return report.embedded, report.cache_hits
            >>> asyncio.run(demo())
            (1, 1)
        """
        embedder = self.embedder
        if embedder is None:
            raise EmbedderError(
                "reindex needs an embedder: open the file with Settings.embedder set "
                "(or Abathur.open(..., embedder=...))"
            )
        name, dims = embedder.name, int(embedder.dims or 0)

        def write(tx: Transaction) -> int:
            self._reset(tx)
            self._record(tx, name, dims, time.time())
            return tx.queue.stats().depth

        async with self._lock:
            queued = await self._db.write(write)
        log.info("embeddings.reindex", embedder=name, queued=queued)
        self._paused_until = 0.0
        self.notify()
        if wait:
            return await self.drain()
        return DrainReport(
            embedded=0, cache_hits=0, calls=0, failed=0, remaining=queued, seconds=0.0
        )

    async def compact(self) -> list[CompactReport]:
        """Rebuild every vector table from its live rows, reclaiming dead slots.

        vec0 never reuses the slot of a deleted vector, and every memory
        update deletes one. The rebuild re-derives the binary codes from the
        cache (nothing is re-embedded) in one write transaction, so writers
        wait for it: about 40 µs per live vector. The worker runs it by itself
        when dead rows pass ``Settings.vector_compact_ratio`` of the live ones.

        Returns:
            One report per table.

        Raises:
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "e.db"
            ...         async with Abathur.open(path, embed_worker=False) as ab:
            ...             await ab.memory.put("user:alice", "lang", "French")
            ...             await ab.embeddings.drain()
            ...             await ab.memory.put("user:alice", "lang", "English")
            ...             await ab.embeddings.drain()
            ...             reports = {r.table: r for r in await ab.embeddings.compact()}
            ...             report = reports["memories_vec"]
            ...             return report.table, report.live_rows, report.dead_rows
            >>> asyncio.run(demo())
            ('memories_vec', 1, 1)
        """
        chunk_size = self._db.settings.vector_chunk_size

        def write(tx: Transaction) -> list[CompactReport]:
            reports = []
            for stats in tx.search.vector_table_stats():
                kind = self._kinds.get(stats.kind)
                if kind is None:
                    continue
                started = time.perf_counter()
                live = tx.search.compact_vector_table(kind.vec_table, kind.name, chunk_size)
                reports.append(
                    CompactReport(
                        table=stats.name,
                        kind=stats.kind,
                        live_rows=live,
                        dead_rows=stats.dead_rows + stats.pending_deletes,
                        seconds=round(time.perf_counter() - started, 6),
                    )
                )
            return reports

        async with self._lock:
            reports = await self._db.write(write)
        for report in reports:
            log.info(
                "embeddings.compacted",
                table=report.table,
                live=report.live_rows,
                reclaimed=report.dead_rows,
                seconds=report.seconds,
            )
        return reports
