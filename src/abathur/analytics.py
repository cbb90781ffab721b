"""AnalyticsService: counts, growth, sizes, queue, call latencies and access patterns.

Two sources:

* **The tables themselves**, read when asked (:meth:`AnalyticsService.stats`):
  memories per type and per namespace, growth per UTC day (from
  ``first_created_at``, ``sessions.created_at`` and ``events.timestamp``, so
  no snapshot job is needed), sessions per status, events per session, the
  embedding queue, archive entries, and the file, WAL, archive and free sizes.
* **Service calls**, measured in the process that makes them. Each public
  coroutine method of the services is decorated with :func:`recorded`,
  which names its metric and is given the recorder through the service's
  constructor: the wrapper adds the call's duration to an in-memory histogram
  (:class:`CallRecorder`; log-spaced buckets, four per doubling, so a
  percentile is within about 9 % of the true value) and, for memory calls,
  counts a read or a write for the namespace. Every ``Settings.metrics_flush_s``
  (and on close) one write transaction moves the windows to the ``metrics``
  table, which keeps ``Settings.metrics_retention_days``. A call costs the
  recorder about a microsecond: nothing is written per call.

Percentiles of a period merge the histograms of its windows, so p99 over a
week is exact to the bucket, not an average of averages.

Example:
    >>> from abathur.analytics import sparkline
    >>> sparkline([0, 1, 2, 4, 8])
    '▁▂▃▅█'
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

import structlog

from abathur.errors import InvalidInputError
from abathur.models import CallStats, GrowthSeries, NamedCount, Stats
from abathur.stores import Backend, Transaction
from abathur.stores.metrics import MemoryGrowth, MetricRow, MetricWindow, StorageSizes, TableStats
from abathur.values import check_since

__all__ = [
    "AnalyticsService",
    "CallRecorder",
    "Recorded",
    "recorded",
    "sparkline",
]

log = structlog.get_logger(__name__)

_BUCKETS_PER_DOUBLING = 4
_MAX_NAMESPACES = 1000  # distinct namespaces counted per window; the rest are "(other)"
_TOP_PER_WINDOW = 100  # namespaces written per window and kind
_OTHER = "(other)"
_MAX_LABEL = 512  # characters of a namespace kept in a metrics row
_SPARKS = "▁▂▃▄▅▆▇█"

# ---------------------------------------------------------------------------
# Recording calls
# ---------------------------------------------------------------------------


def _bucket(ms: float) -> int:
    us = ms * 1000.0
    return 0 if us < 1.0 else int(math.log2(us) * _BUCKETS_PER_DOUBLING)


def _bucket_ms(bucket: int) -> float:
    """The middle of a bucket (geometric), in milliseconds."""
    return 2 ** ((bucket + 0.5) / _BUCKETS_PER_DOUBLING) / 1000.0


class _Histogram:
    __slots__ = ("buckets", "count", "errors", "max_ms", "total_ms")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.buckets: dict[int, int] = {}

    def add(self, ms: float, ok: bool) -> None:
        self.count += 1
        self.errors += not ok
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        b = _bucket(ms)
        self.buckets[b] = self.buckets.get(b, 0) + 1

    def merge(
        self, count: int, errors: int, total_ms: float, max_ms: float, buckets: Mapping[int, int]
    ) -> None:
        self.count += count
        self.errors += errors
        self.total_ms += total_ms
        self.max_ms = max(self.max_ms, max_ms)
        for b, n in buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n

    def percentile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(_bucket_ms(b), self.max_ms)
        return self.max_ms  # pragma: no cover - the loop always reaches rank

    def stats(self, name: str) -> CallStats:
        return CallStats(
            name=name,
            calls=self.count,
            errors=self.errors,
            p50_ms=round(self.percentile(0.50), 4),
            p95_ms=round(self.percentile(0.95), 4),
            p99_ms=round(self.percentile(0.99), 4),
            mean_ms=round(self.total_ms / self.count, 4) if self.count else 0.0,
            max_ms=round(self.max_ms, 4),
        )


class CallRecorder:
    """Call durations and namespace accesses of one process, in memory until flushed.

    Example:
        >>> from abathur.analytics import CallRecorder
        >>> recorder = CallRecorder()
        >>> for ms in (1.0, 2.0, 3.0, 100.0):
        ...     recorder.record("memory.get", ms / 1000, ok=True)
        >>> stats = recorder.snapshot()["memory.get"].stats("memory.get")
        >>> stats.calls, stats.max_ms, 1.8 < stats.p50_ms < 2.2
        (4, 100.0, True)
    """

    def __init__(self, flush_s: float = 60.0, *, on_due: Callable[[], None] | None = None) -> None:
        """``on_due`` is called (once) by the first call recorded after ``flush_s``."""
        self.flush_s = flush_s
        self._on_due = on_due
        self._calls: dict[str, _Histogram] = {}
        self._access: dict[str, dict[str, int]] = {"reads": {}, "writes": {}}
        self._counters: dict[str, int] = {}
        self._started = time.time()
        self._next_flush = time.monotonic() + flush_s

    def record(self, name: str, seconds: float, *, ok: bool) -> None:
        """Add one call of ``name`` that took ``seconds``."""
        hist = self._calls.get(name)
        if hist is None:
            hist = self._calls[name] = _Histogram()
        hist.add(seconds * 1000.0, ok)
        if self._on_due is not None and time.monotonic() >= self._next_flush:
            self._next_flush = math.inf  # until the flush that is now due has run
            self._on_due()

    def access(self, namespace: str, *, is_write: bool) -> None:
        """Count one read or write of ``namespace``.

        The namespace is counted even when the call refused it, so it is
        recorded as a label that can always be stored (:func:`_label`).
        """
        namespace = _label(namespace)
        counts = self._access["writes" if is_write else "reads"]
        if namespace not in counts and len(counts) >= _MAX_NAMESPACES:
            namespace = _OTHER
        counts[namespace] = counts.get(namespace, 0) + 1

    def forget_access(self, covers: Callable[[str], bool]) -> int:
        """Drop the pending read and write counts of every namespace ``covers`` accepts.

        A purge (issue 11) calls it, so a window flushed after it cannot write
        the erased namespaces' names back. Returns the counts dropped.
        """
        dropped = 0
        for counts in self._access.values():
            for namespace in [n for n in counts if covers(n)]:
                dropped += counts.pop(namespace)
        return dropped

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (e.g. ``budget.warn``)."""
        self._counters[name] = self._counters.get(name, 0) + n

    def snapshot(self) -> dict[str, _Histogram]:
        """The calls recorded since the last flush (not a copy: read, do not change)."""
        return self._calls

    def pending_access(self) -> dict[str, dict[str, int]]:
        """Reads and writes per namespace since the last flush."""
        return self._access

    def take(self) -> list[MetricRow]:
        """Rows for the ``metrics`` table, and a fresh window."""
        now = time.time()
        seconds = max(0.0, now - self._started)
        rows: list[MetricRow] = []
        for name, h in self._calls.items():
            rows.append(
                MetricRow(
                    at=now,
                    seconds=seconds,
                    kind="call",
                    name=name,
                    count=h.count,
                    errors=h.errors,
                    total_ms=h.total_ms,
                    max_ms=h.max_ms,
                    histogram=json.dumps({str(b): n for b, n in sorted(h.buckets.items())}),
                )
            )
        for kind, counts in self._access.items():
            ranked = sorted(counts.items(), key=lambda item: -item[1])
            top, rest = ranked[:_TOP_PER_WINDOW], ranked[_TOP_PER_WINDOW:]
            if rest:
                top.append((_OTHER, sum(n for _, n in rest)))
            rows += [MetricRow(now, seconds, kind, name, n) for name, n in top]
        rows += [MetricRow(now, seconds, "counter", name, n) for name, n in self._counters.items()]
        self._calls, self._counters = {}, {}
        self._access = {"reads": {}, "writes": {}}
        self._started = now
        self._next_flush = time.monotonic() + self.flush_s
        return rows


def _label(name: str) -> str:
    """``name`` as a metrics label that SQLite can always store.

    A refused call's namespace may hold lone surrogates (bytes that were not
    UTF-8) or be huge; such a label would fail the whole flush. It is kept,
    escaped (``\\udcff``) and cut to :data:`_MAX_LABEL` characters, so an
    operator still sees what was tried. (Call and counter names are our own
    constants; a bad row of any kind is still skipped by the flush.)
    """
    if len(name) > _MAX_LABEL:
        name = name[: _MAX_LABEL - 1] + "…"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name


AccessKind = Literal["read", "write"]


class Recorded(Protocol):
    """A service whose calls :func:`recorded` times: it holds the recorder, or ``None``."""

    recorder: CallRecorder | None


S = TypeVar("S", bound=Recorded)
P = ParamSpec("P")
R = TypeVar("R")


def recorded(
    name: str, *, access: AccessKind | None = None
) -> Callable[
    [Callable[Concatenate[S, P], Awaitable[R]]], Callable[Concatenate[S, P], Coroutine[Any, Any, R]]
]:
    """Decorate a public coroutine method of a service so its calls are timed.

    Each call adds its duration (and whether it raised) to the histogram
    ``name`` of the service's ``recorder``; a service built without one (a
    probe, :meth:`Abathur.open(probe=True) <abathur.Abathur.open>`) is not
    timed. With ``access``, the call also counts a read or a write of the
    namespace it was given: its ``namespace`` or ``prefix`` argument, or its
    first positional argument. Services name their metrics here, at each
    method, so ``stats`` lists exactly what the code declares.

    Example:
        >>> import asyncio
        >>> from abathur.analytics import CallRecorder, recorded
        >>> class Greeter:
        ...     def __init__(self, recorder: CallRecorder | None) -> None:
        ...         self.recorder = recorder
        ...     @recorded("greeter.hello", access="read")
        ...     async def hello(self, namespace: str) -> str:
        ...         return f"hello {namespace}"
        >>> recorder = CallRecorder()
        >>> asyncio.run(Greeter(recorder).hello("user:alice"))
        'hello user:alice'
        >>> list(recorder.snapshot()), recorder.pending_access()["reads"]
        (['greeter.hello'], {'user:alice': 1})
    """

    def decorate(
        fn: Callable[Concatenate[S, P], Awaitable[R]],
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
        clock = time.perf_counter
        # search(query, *, prefix=...) names its namespace by keyword; the others first.
        positional = access is not None and "prefix" not in _keyword_only(fn)
        is_write = access == "write"

        @functools.wraps(fn)
        async def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            recorder = self.recorder
            if recorder is None:
                return await fn(self, *args, **kwargs)
            started = clock()
            ok = False
            try:
                result = await fn(self, *args, **kwargs)
                ok = True
                return result
            finally:
                recorder.record(name, clock() - started, ok=ok)
                if access is not None:
                    ns = kwargs.get("namespace", kwargs.get("prefix"))
                    if ns is None and positional and args:
                        ns = args[0]
                    if isinstance(ns, str):
                        recorder.access(ns, is_write=is_write)

        call.__recorded__ = name  # type: ignore[attr-defined]  # read by the suite's guard
        return call

    return decorate


def _keyword_only(fn: Callable[..., Any]) -> set[str]:
    return {
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def sparkline(values: Sequence[int | float]) -> str:
    """One block character per value, scaled to the largest.

    Example:
        >>> from abathur.analytics import sparkline
        >>> sparkline([3, 3, 0])
        '██▁'
    """
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[min(7, int(v / top * 7 + 0.5))] if v > 0 else _SPARKS[0] for v in values)


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def _group(namespace: str, depth: int) -> str:
    return ":".join(namespace.split(":")[:depth])


class AnalyticsService:
    """Counts, growth, sizes and call latencies: ``ab.analytics``.

    Attributes:
        recorder: the :class:`CallRecorder` the service wrappers write to
            (made here, flushed every ``Settings.metrics_flush_s``).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
        ...             await ab.memory.put("user:alice:prefs", "lang", "fr")
        ...             await ab.memory.get("user:alice:prefs", "lang")
        ...             stats = await ab.analytics.stats()
        ...             return (stats.memories, [c.name for c in stats.calls],
        ...                     [(n.name, n.count) for n in stats.top_writes])
        >>> asyncio.run(demo())
        (1, ['memory.get', 'memory.put'], [('user:alice:prefs', 1)])
    """

    def __init__(self, db: Backend) -> None:
        self._db = db
        self.recorder = CallRecorder(db.settings.metrics_flush_s, on_due=self._schedule_flush)
        self._flush_task: asyncio.Task[None] | None = None
        self._has_table = False
        self._closed = False

    def _schedule_flush(self) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - services are only called from a loop
            return
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = loop.create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception:  # metrics must never break a caller
            log.exception("analytics.flush_failed")

    async def flush(self) -> int:
        """Write the calls recorded so far to the ``metrics`` table; return the rows written.

        Also deletes windows older than ``Settings.metrics_retention_days``.

        Raises:
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             return await ab.analytics.flush()
            >>> asyncio.run(demo())  # memory.put, and one write of user:alice
            2
        """
        rows = self.recorder.take()
        cutoff = time.time() - self._db.settings.metrics_retention_days * 86400
        if rows and not self._has_table:
            # A file opened without migrating (abathur info) may predate the table.
            self._has_table = await self._db.read(lambda tx: tx.metrics.has_metrics())
            if not self._has_table:
                return 0

        def write(tx: Transaction) -> int:
            metrics = tx.metrics
            metrics.prune(cutoff)
            written = 0
            # Row by row: one record SQLite cannot bind (a value out of its
            # range, text that is not UTF-8) is skipped, never the window.
            for row in rows:
                try:
                    metrics.add(row)
                except (ValueError, TypeError, OverflowError) as exc:
                    log.warning(
                        "analytics.record_skipped", kind=row.kind, name=row.name, error=repr(exc)
                    )
                    continue
                written += 1
            return written

        if not rows:
            return 0
        return await self._db.write(write)

    async def close(self) -> None:
        """Flush what is recorded (when the database is still open). Idempotent."""
        self._closed = True  # no more flushes scheduled by calls
        task, self._flush_task = self._flush_task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        if not self._db.is_closed:
            await self._flush_quietly()

    async def stats(
        self, *, since: str | float = "7d", days: int = 14, depth: int = 2, top: int = 10
    ) -> Stats:
        """What the database holds, how it grows, and how fast calls are.

        Args:
            since: the period of the call latencies and access counts: a
                duration (``"7d"``, ``"24h"``) or seconds. Calls this process
                has not flushed yet are included.
            days: UTC days of growth to show (1..366).
            depth: namespaces are grouped by their first ``depth`` segments (1..16).
            top: at most this many namespaces in each list (1..1000).

        Returns:
            A :class:`~abathur.models.Stats`.

        Raises:
            InvalidInputError: an argument is out of range or not a duration.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
            ...             s = await ab.sessions.create(app="helpdesk", user="alice")
            ...             await ab.sessions.terminate(s.id)
            ...             stats = await ab.analytics.stats(days=3)
            ...             return stats.sessions_by_status, stats.growth[1].counts[-1]
            >>> asyncio.run(demo())
            ({'terminated': 1}, 1)
        """
        window = check_since(since)
        for value, what, high in ((days, "days", 366), (depth, "depth", 16), (top, "top", 1000)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise InvalidInputError(
                    f"{what} must be an integer from 1 to {high}, got {value!r}"
                )
        now = time.time()
        calls_since = now - window
        today = int(now // 86400)
        first_day = today - days + 1

        def read(tx: Transaction) -> tuple[TableStats, StorageSizes, list[MetricWindow]]:
            metrics = tx.metrics
            tables = metrics.table_stats(
                now, growth_since=first_day * 86400.0, new_since=now - 7 * 86400
            )
            return tables, metrics.sizes(), metrics.windows(calls_since)

        data, sizes, windows = await self._db.read(read)
        per_session = data.events_per_session
        depth_groups: dict[str, list[int]] = {}
        for namespace, count, new in data.namespaces:
            group = depth_groups.setdefault(_group(namespace, depth), [0, 0])
            group[0] += count
            group[1] += new
        namespaces = sorted(depth_groups.items(), key=lambda item: (-item[1][0], item[0]))[:top]
        day_names = [
            time.strftime("%Y-%m-%d", time.gmtime(d * 86400)) for d in range(first_day, today + 1)
        ]
        growth = [
            _series("memories", day_names, first_day, _sum_by_day(data.memory_growth)),
            _series("sessions", day_names, first_day, data.session_growth),
            _series("events", day_names, first_day, data.event_growth),
        ]
        growth += [
            _series(
                f"memories:{t}",
                day_names,
                first_day,
                _sum_by_day(data.memory_growth, t),
            )
            for t in ("semantic", "episodic", "procedural")
        ]
        calls, reads, writes = self._merge_calls(windows)
        oldest = data.queue_oldest
        by_type = data.memories_by_type
        return Stats(
            generated_at=now,
            db_bytes=sizes.db_bytes,
            wal_bytes=sizes.wal_bytes,
            archive_bytes=sizes.archive_bytes,
            free_bytes=sizes.free_bytes,
            memories=sum(by_type.values()),
            versions=data.versions,
            memories_by_type={t: by_type.get(t, 0) for t in ("semantic", "episodic", "procedural")},
            namespaces=[NamedCount(name=n, count=c, new_7d=new) for n, (c, new) in namespaces],
            sessions_by_status=data.sessions_by_status,
            events=sum(per_session),
            events_per_session={
                "mean": round(sum(per_session) / len(per_session), 2) if per_session else 0.0,
                "p50": _percentile(per_session, 0.50),
                "p95": _percentile(per_session, 0.95),
                "max": float(per_session[-1]) if per_session else 0.0,
            },
            queue_depth=data.queue_depth,
            queue_failed=data.queue_failed,
            queue_oldest_age_s=None if oldest is None else round(max(0.0, now - oldest), 3),
            archive_entries=data.archive_entries,
            growth=growth,
            calls=calls,
            top_reads=_top(reads, top),
            top_writes=_top(writes, top),
            calls_since=calls_since,
        )

    def _merge_calls(
        self, rows: Iterable[MetricWindow]
    ) -> tuple[list[CallStats], dict[str, int], dict[str, int]]:
        calls: dict[str, _Histogram] = {}
        access: dict[str, dict[str, int]] = {"reads": {}, "writes": {}}
        for w in rows:
            if w.kind == "call":
                buckets = {int(b): n for b, n in json.loads(w.histogram or "{}").items()}
                calls.setdefault(w.name, _Histogram()).merge(
                    w.count, w.errors, w.total_ms, w.max_ms, buckets
                )
            elif w.kind in access:
                access[w.kind][w.name] = access[w.kind].get(w.name, 0) + w.count
        for name, h in self.recorder.snapshot().items():
            calls.setdefault(name, _Histogram()).merge(
                h.count, h.errors, h.total_ms, h.max_ms, h.buckets
            )
        for kind, counts in self.recorder.pending_access().items():
            for name, count in counts.items():
                access[kind][name] = access[kind].get(name, 0) + count
        stats = [h.stats(name) for name, h in sorted(calls.items())]
        return stats, access["reads"], access["writes"]


def _sum_by_day(rows: Iterable[MemoryGrowth], type_: str | None = None) -> dict[int, int]:
    """Memories per day, of one type (or all)."""
    out: dict[int, int] = {}
    for row in rows:
        if type_ is None or row.type == type_:
            out[row.day] = out.get(row.day, 0) + row.memories
    return out


def _series(
    name: str, day_names: list[str], first_day: int, by_day: Mapping[int, int]
) -> GrowthSeries:
    counts = [int(by_day.get(first_day + i, 0)) for i in range(len(day_names))]
    return GrowthSeries(name=name, days=day_names, counts=counts, sparkline=sparkline(counts))


def _top(counts: Mapping[str, int], top: int) -> list[NamedCount]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [NamedCount(name=name, count=count) for name, count in ranked]
