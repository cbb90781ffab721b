"""``abathur smoke``: the 35 post-deploy cases of issue 5, against a live database.

Five groups, numbered in this order: connectivity (1-5), core operations
(6-15), performance (16-23), integration (24-30) and error handling (31-35);
:data:`CASES` is the list. Each case is a small coroutine that either returns
a one-line detail or raises; a case that raises, times out or needs what an
earlier case failed to make is *failed*, never skipped, so a run is all green
only when all 35 really passed.

Safe on a production database, after every deploy:

- it never creates, migrates or repairs the file (``auto_migrate=False``; a
  missing file fails case 1 and nothing is written);
- it writes only as app :data:`SMOKE_APP` (user ``run-<run id>``), under
  the namespace ``abathur-smoke:<run id>``, and in its own temporary
  directory for the document-sync files;
- it opens the file as a *probe* (``Abathur.open(probe=True)``), so its
  calls stay out of the operator's numbers: no call latencies, errors or
  namespace counts in ``metrics`` (``abathur stats``), no ``usage_ledger``
  rows and no budget checks (``abathur cost``), and the embedding jobs its
  writes queue are held for its own drain, so the application's worker in
  another process never embeds (or bills) them;
- when it ends, pass or fail, it erases what it wrote through the public API:
  its synced directory is taken out of the index (``documents.forget``) and
  its files deleted, its sessions are purged (``sessions.purge``: sessions,
  events, tasks) and its memories too (``memory.purge``: every version,
  tombstone, keyword row, vector, queued job and embedding-cache entry), and
  the storage of its own vector partition is freed
  (``tx.search.drop_empty_partition``: on SQLite, the vec0 chunks with the
  dead slots they held).
  :class:`Cleanup` reports it, and a run whose cleanup leaves a row is not ok.

What stays, by design, is in the audit log only: it is a hash chain, so the
run's records cannot be removed without breaking it. The purges redact them
(names and details blanked, ``redacted = 1``: the chain still verifies) and
add one ``sessions.purge`` and one ``memory.purge`` record with the counts.
The ``documents.sync``/``documents.forget`` records of the run's temporary
directory stay as written (they name that directory, no data). Every other
number an operator reads (``stats``, ``cost``, ``info`` row counts, vector
live and dead slots) is as it was before the run.

Vectors: the semantic cases embed the run's own few memories with the
embedder the application is configured with (``ABATHUR_EMBEDDER``), by
draining the held jobs (a probe's drain takes no other job). If the
embedder is unavailable, or the file records none, those cases fail and say
why; they never pass on a keyword fallback. Two runs at once may embed each
other's held items; each run erases its own, but a document chunk the other
run embedded leaves its dead vector slot and cache entry behind.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops.smoke import run_smoke
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def demo():
    ...     async with Abathur.open(path, embedder="none"):
    ...         pass
    ...     report = await run_smoke(path, category="connectivity")
    ...     return report.summary, [r.name for r in report.results][:2]
    >>> asyncio.run(demo())
    ('5 passed, 0 failed', ['connects', 'all tables'])
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import JsonValue

from abathur import audit, memory, search
from abathur.api import Abathur
from abathur.config import PostgresUrl, Settings, is_postgres_url
from abathur.embeddings.queue import recorded_embedder
from abathur.errors import (
    AbathurError,
    AlreadyExistsError,
    DatabaseError,
    InvalidInputError,
    InvalidMemoryTypeError,
    InvalidTransitionError,
    SessionNotFoundError,
    StaleSessionError,
    ValueNotSerializableError,
    VersionConflictError,
)
from abathur.models import Event, Memory, SearchMode, Session, SyncReport, Task
from abathur.stores import Transaction
from abathur.stores.checks import ObjectCheck

__all__ = [
    "CASES",
    "CATEGORIES",
    "LIMITS",
    "SMOKE_APP",
    "SMOKE_ROOT",
    "CaseResult",
    "Cleanup",
    "SmokeCase",
    "SmokeReport",
    "run_smoke",
]

log = structlog.get_logger(__name__)

SMOKE_APP = "abathur-smoke"
# Every run writes under SMOKE_ROOT:<run id>. The vector index partitions by a
# namespace's first two segments, so each run has a vec0 partition of its
# own, which its cleanup drops whole (no dead slots left behind).
SMOKE_ROOT = "abathur-smoke"

CATEGORIES: tuple[str, ...] = ("connectivity", "core", "performance", "integration", "errors")

# Issue 5's thresholds, in seconds. Latency cases compare the median of their
# samples with the limit (one slow sample on a busy host is not a regression)
# and print the maximum too.
LIMITS: dict[str, float] = {
    "session_get": 0.010,
    "memory_get": 0.020,
    "namespace_query": 0.050,
    "concurrent_session_reads": 1.0,
    "semantic_search": 0.500,
    "hybrid_search": 0.600,
}
CONCURRENT_READS = 50
_SAMPLES = 20
_ROUNDS = 3


class _CaseFailed(Exception):
    """Raised by a case: the message is what the table shows."""


def _expect(condition: object, message: str) -> None:
    if not condition:
        raise _CaseFailed(message)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


# -- what a run reports ---------------------------------------------------------------


@dataclass(frozen=True)
class SmokeCase:
    """One numbered case: ``run(ctx)`` returns a detail line or raises."""

    number: int
    category: str
    name: str
    run: Callable[[_Run], Awaitable[str]]


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case."""

    number: int
    category: str
    name: str
    is_passed: bool
    seconds: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """The result as ``abathur smoke --json`` prints it."""
        return {
            "number": self.number,
            "category": self.category,
            "name": self.name,
            "status": "passed" if self.is_passed else "failed",
            "seconds": round(self.seconds, 6),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Cleanup:
    """What the run erased, what it left on purpose, and whether anything of it remains.

    ``sessions_deleted`` and ``memories_deleted`` (memory versions) are what
    the purges erased; ``live_left`` counts what is still there (all 0 when
    clean: sessions, memory versions, documents, roots, vec0 chunks of the
    run's partition, audit records still naming the run); ``remains`` what
    stays by design: ``audit_redacted`` records and ``purge_records``.
    """

    sessions_deleted: int = 0
    memories_deleted: int = 0
    documents_removed: int = 0
    live_left: dict[str, int] = field(default_factory=dict)
    remains: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    @property
    def is_clean(self) -> bool:
        """True when cleanup raised nothing and nothing of the run is left."""
        return not self.errors and not any(self.live_left.values())

    def to_dict(self) -> dict[str, Any]:
        """The cleanup as ``abathur smoke --json`` prints it."""
        return {
            "is_clean": self.is_clean,
            "sessions_deleted": self.sessions_deleted,
            "memories_deleted": self.memories_deleted,
            "documents_removed": self.documents_removed,
            "live_left": self.live_left,
            "remains": self.remains,
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class SmokeReport:
    """Every case's result, the run's identity, its duration and its cleanup."""

    path: Path | PostgresUrl
    run_id: str
    category: str | None
    results: tuple[CaseResult, ...]
    seconds: float
    cleanup: Cleanup

    @property
    def passed(self) -> int:
        """Cases that passed."""
        return sum(r.is_passed for r in self.results)

    @property
    def failed(self) -> int:
        """Cases that failed."""
        return len(self.results) - self.passed

    @property
    def is_ok(self) -> bool:
        """True when every case ran and passed and the cleanup left nothing live."""
        return bool(self.results) and self.failed == 0 and self.cleanup.is_clean

    @property
    def summary(self) -> str:
        """The summary line, e.g. ``35 passed, 0 failed``."""
        return f"{self.passed} passed, {self.failed} failed"

    def to_dict(self) -> dict[str, Any]:
        """The report as ``abathur smoke --json`` prints it."""
        return {
            "path": _shown(self.path),
            "run_id": self.run_id,
            "namespace": f"{SMOKE_ROOT}:{self.run_id}",
            "category": self.category,
            "is_ok": self.is_ok,
            "passed": self.passed,
            "failed": self.failed,
            "summary": self.summary,
            "seconds": round(self.seconds, 3),
            "cases": [r.to_dict() for r in self.results],
            "cleanup": self.cleanup.to_dict(),
        }


# -- the run's context ----------------------------------------------------------------

# The small corpus the semantic cases embed: (key, text). Distinct topics, so
# the right memory is unambiguous for the queries below.
_CORPUS: tuple[tuple[str, str], ...] = (
    ("language", "Alice speaks French at home and wants every answer in French."),
    ("drink", "Every morning she drinks a pot of green tea before work."),
    ("pet", "Her dog is a border collie called Pixel who loves to chase balls."),
    ("city", "She lives in Lyon, in a flat close to the Rhône river."),
    ("job", "She works as a marine biologist who studies coral reefs."),
    ("music", "On weekends she plays jazz piano with a small band."),
    ("allergy", "She is allergic to peanuts and must avoid them in any food."),
    ("travel", "Next summer she plans a hiking trip through Patagonia."),
)
# (query, the key it must find first). Distinct texts: the query cache would
# make repeated ones look faster than they are.
_VECTOR_QUERIES: tuple[tuple[str, str], ...] = (
    ("which language does the user speak", "language"),
    ("what kind of animal does she own", "pet"),
    ("what is her profession", "job"),
)
_HYBRID_QUERIES: tuple[tuple[str, str], ...] = (
    ("morning drink green tea", "drink"),
    ("where does she live, which city", "city"),
    ("food allergy peanuts", "allergy"),
)

_DOC_NAME = "smoke-runbook.md"
_DOC_STEADY = "smoke-unchanged.md"


class _Run:
    """One smoke run: the open database, its identity, and what its cases made."""

    def __init__(self, path: Path | PostgresUrl, settings: Settings, run_id: str) -> None:
        self.path = path
        self.settings = settings
        self.run_id = run_id
        self.user = f"run-{run_id}"
        self.namespace = f"{SMOKE_ROOT}:{run_id}"
        self.partition = search.partition_of(self.namespace)
        self.prefix = f"{SMOKE_APP}-{run_id}"
        self._ab: Abathur | None = None
        self._open_error: str | None = None
        self.no_vectors: str | None = None
        self.audit_start = 0
        self.audited: list[tuple[str, str]] = []
        self.made: dict[str, Any] = {}
        self._corpus_error: str | None = None
        self._corpus_ready = False
        self.docs_dir: Path | None = None
        self.synced = False

    # -- connection --------------------------------------------------------

    async def ab(self) -> Abathur:
        """The open database; opened by the first case that needs it."""
        if self._ab is None and self._open_error is None:
            try:
                self._ab = await self._open()
            except AbathurError as exc:
                self._open_error = f"cannot open the database: [{exc.code}] {exc.message}"
        if self._ab is None:
            raise _CaseFailed(self._open_error or "the database is not open")
        return self._ab

    async def _open(self) -> Abathur:
        if isinstance(self.path, Path) and not self.path.is_file():
            raise DatabaseError(
                f"no database at {str(self.path)!r} (the smoke run never creates one)"
            )
        overrides: dict[str, Any] = {"embed_worker": False, "auto_migrate": False}
        # First without an embedder, to read which one the file records:
        # recording one in a file that has none would queue every memory in it
        # for embedding, which is not a smoke run's decision.
        ab = await Abathur.open(
            self.path, settings=self.settings, embedder="none", probe=True, **overrides
        )
        try:
            recorded = await ab.db.read(_recorded_embedder)
            if self.settings.embedder == "none":
                self.no_vectors = "no embedder is configured (ABATHUR_EMBEDDER is 'none')"
            elif recorded is None:
                self.no_vectors = (
                    "the file records no embedder (it was made with embedder 'none'); the "
                    "smoke run does not record one, as that would queue every memory for "
                    "embedding"
                )
            else:
                await ab.close()
                ab = await Abathur.open(self.path, settings=self.settings, probe=True, **overrides)
            self.audit_start = await ab.db.read(_audit_head)
        except BaseException:
            await ab.close()
            raise
        return ab

    async def close(self) -> None:
        if self._ab is not None:
            await self._ab.close()

    def need(self, name: str, case: int) -> Any:
        """What an earlier case made, or a failure naming that case."""
        if self._open_error is not None:
            raise _CaseFailed(self._open_error)
        if name not in self.made:
            raise _CaseFailed(f"needs the {name.replace('_', ' ')} of case {case}, which failed")
        return self.made[name]

    # -- writes, each noted with the audit record it must leave ------------

    def note(self, action: str, entity_id: str) -> None:
        self.audited.append((action, entity_id))

    async def session(self, label: str, **kwargs: Any) -> Session:
        ab = await self.ab()
        made = await ab.sessions.create(
            app=SMOKE_APP, user=self.user, session_id=f"{self.prefix}-{label}", **kwargs
        )
        self.note("session.create", made.id)
        return made

    async def set_status(self, session_id: str, status: str, **kwargs: Any) -> Session:
        ab = await self.ab()
        changed = await ab.sessions.set_status(session_id, status, **kwargs)
        self.note("session.status", session_id)
        return changed

    async def put(self, namespace: str, key: str, value: Any, **kwargs: Any) -> Memory:
        ab = await self.ab()
        written = await ab.memory.put(namespace, key, value, **kwargs)
        self.note("memory.put", f"{namespace}/{key}")
        return written

    async def task(self, session_id: str, label: str, prompt: str) -> Task:
        ab = await self.ab()
        made = await ab.tasks.create(
            session_id=session_id, prompt=prompt, task_id=f"{self.prefix}-{label}"
        )
        self.note("task.create", made.id)
        return made

    async def update_task(self, task_id: str, status: str, **kwargs: Any) -> Task:
        ab = await self.ab()
        updated = await ab.tasks.update(task_id, status=status, **kwargs)
        self.note("task.update", task_id)
        return updated

    # -- shared fixtures ---------------------------------------------------

    async def reads_session(self) -> Session:
        """A session with a few events, for the read-latency cases."""
        if "reads_session" not in self.made:
            ab = await self.ab()
            s = await self.session("reads", state={"purpose": "latency"})
            for i in range(10):
                s = await ab.sessions.append_event(
                    s.id,
                    Event(author="abathur-smoke", content={"text": f"event {i}"}),
                    expected_revision=s.revision,
                )
            self.made["reads_session"] = s
        session: Session = self.made["reads_session"]
        return session

    async def reads_memory(self) -> Memory:
        if "reads_memory" not in self.made:
            self.made["reads_memory"] = await self.put(
                f"{self.namespace}:reads", "fact", {"text": "a memory read for latency"}
            )
        found: Memory = self.made["reads_memory"]
        return found

    async def corpus(self) -> None:
        """Write the corpus and embed it; fail with the reason if vectors are impossible."""
        if self._corpus_error is not None:
            raise _CaseFailed(self._corpus_error)
        if self._corpus_ready:
            return
        ab = await self.ab()
        try:
            for key, text in _CORPUS:
                await self.put(f"{self.namespace}:corpus", key, text)
            if self.no_vectors is not None:
                raise _CaseFailed(f"no vectors: {self.no_vectors}")
            drained = await ab.embeddings.drain()
            if drained.failed:
                raise _CaseFailed(
                    f"the embedder failed on {drained.failed} text(s): "
                    f"{(await ab.embeddings.status()).last_error}"
                )
        except AbathurError as exc:
            self._corpus_error = f"cannot embed the corpus: [{exc.code}] {exc.message}"
            raise _CaseFailed(self._corpus_error) from None
        except _CaseFailed as exc:
            self._corpus_error = str(exc)
            raise
        self._corpus_ready = True

    def documents_dir(self) -> Path:
        if self.docs_dir is None:
            # Resolved: documents.sync identifies a root by its resolved path.
            self.docs_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-docs-")).resolve()
        return self.docs_dir

    async def sync(self) -> SyncReport:
        """Sync the run's document directory, as an application would."""
        ab = await self.ab()
        report = await ab.documents.sync(self.documents_dir(), patterns=["**/*.md"])
        self.synced = True
        return report


def _recorded_embedder(tx: Transaction) -> tuple[str, int] | None:
    # The schema's first migration made the meta table that records it.
    return recorded_embedder(tx) if tx.checks.engine().schema_version >= 1 else None


def _audit_head(tx: Transaction) -> int:
    head = tx.audit.head()
    return 0 if head is None else head.seq


async def _latencies(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


def _within(what: str, samples: Sequence[float], limit: float) -> str:
    median = statistics.median(samples)
    detail = (
        f"median {_ms(median)}, max {_ms(max(samples))} over {len(samples)} (limit {_ms(limit)})"
    )
    _expect(median < limit, f"{what} too slow: {detail}")
    return detail


def _check_search(result: Any, mode: SearchMode) -> None:
    _expect(
        result.mode == mode and not result.is_degraded,
        f"{mode} search fell back to {result.mode}: {result.degraded_reason}",
    )


# -- the cases ------------------------------------------------------------------------

_REGISTRY: list[SmokeCase] = []


def _case(category: str, name: str) -> Callable[[Callable[[_Run], Awaitable[str]]], Any]:
    def register(fn: Callable[[_Run], Awaitable[str]]) -> Callable[[_Run], Awaitable[str]]:
        _REGISTRY.append(SmokeCase(len(_REGISTRY) + 1, category, name, fn))
        return fn

    return register


# 1. Connectivity ---------------------------------------------------------------------


@_case("connectivity", "connects")
async def _connects(run: _Run) -> str:
    ab = await run.ab()

    engine = await ab.db.read(lambda tx: tx.checks.engine())
    embedder = ab.embeddings.embedder.name if ab.embeddings.embedder else "none"
    return f"{engine.description}, schema v{engine.schema_version}, embedder {embedder}"


def _current(check: ObjectCheck) -> None:
    _expect(
        check.is_current,
        f"schema version {check.version}, this abathur's is {check.latest}: run 'abathur migrate'",
    )


@_case("connectivity", "all tables")
async def _all_tables(run: _Run) -> str:
    ab = await run.ab()
    check = await ab.db.read(lambda tx: tx.checks.schema_objects("table"))
    _current(check)
    _expect(not check.missing, f"missing table(s): {', '.join(check.missing)}")
    _expect(
        not check.changed,
        f"table(s) with other columns than the migrations: {', '.join(check.changed)}",
    )
    _expect(
        not check.runtime_missing,
        f"vector table(s) registered but missing: {', '.join(check.runtime_missing)}",
    )
    return f"{check.expected} tables of schema v{check.version}" + (
        f" + {check.runtime} vector table(s)" if check.runtime else ""
    )


@_case("connectivity", "all indexes")
async def _all_indexes(run: _Run) -> str:
    ab = await run.ab()
    check = await ab.db.read(lambda tx: tx.checks.schema_objects("index"))
    _current(check)
    _expect(not check.missing, f"missing index(es): {', '.join(check.missing)}")
    _expect(
        not check.changed,
        f"index(es) defined otherwise than the migrations: {', '.join(check.changed)}",
    )
    return f"{check.expected} indexes of schema v{check.version}"


@_case("connectivity", "integrity_check")
async def _integrity(run: _Run) -> str:
    ab = await run.ab()
    findings, summary = await ab.db.read(lambda tx: tx.checks.integrity())
    _expect(not findings, summary)
    return summary


@_case("connectivity", "foreign_key_check")
async def _foreign_keys(run: _Run) -> str:
    ab = await run.ab()
    findings, summary = await ab.db.read(lambda tx: tx.checks.foreign_keys())
    _expect(not findings, summary)
    return summary


# 2. Core operations ------------------------------------------------------------------


@_case("core", "create session")
async def _create_session(run: _Run) -> str:
    s = await run.session("core", state={"smoke_run": run.run_id})
    _expect(s.status == "created" and s.revision == 0, f"new session is {s.status} r{s.revision}")
    _expect(s.state == {"smoke_run": run.run_id}, f"new session state is {s.state}")
    run.made["core_session"] = s
    return f"{s.status}, revision {s.revision}"


@_case("core", "append event")
async def _append_event(run: _Run) -> str:
    s: Session = run.need("core_session", 6)
    ab = await run.ab()
    content: dict[str, JsonValue] = {"text": "smoke test event"}
    after = await ab.sessions.append_event(
        s.id, Event(author="abathur-smoke", content=content), expected_revision=s.revision
    )
    _expect(after.revision == s.revision + 1, f"revision {after.revision} after one append")
    read = await ab.sessions.get(s.id, last_n=5)
    _expect(
        [(e.seq, e.content) for e in read.events] == [(1, content)],
        f"read back {[(e.seq, e.content) for e in read.events]}",
    )
    run.made["core_session"] = after
    return f"event seq 1 stored, session {after.status}, revision {after.revision}"


@_case("core", "update session state")
async def _update_state(run: _Run) -> str:
    s: Session = run.need("core_session", 7)
    ab = await run.ab()
    delta: dict[str, JsonValue] = {"step": "state updated", "counter": 2, "smoke_run": None}
    after = await ab.sessions.append_event(
        s.id, Event(author="abathur-smoke", state_delta=delta), expected_revision=s.revision
    )
    read = await ab.sessions.get(s.id, last_n=0)
    _expect(read.state == delta, f"state read back is {read.state}, expected {delta}")
    run.made["core_session"] = after
    return f"state {json.dumps(read.state)}, revision {read.revision}"


@_case("core", "terminate session")
async def _terminate(run: _Run) -> str:
    s: Session = run.need("core_session", 8)
    ab = await run.ab()
    ended = await run.set_status(s.id, "terminated", expected_revision=s.revision)
    _expect(ended.status == "terminated", f"status is {ended.status}")
    try:
        await ab.sessions.append_event(s.id, Event(author="abathur-smoke", content="late"))
    except InvalidTransitionError:
        pass
    else:
        raise _CaseFailed("a terminated session accepted an event")
    return f"terminated at revision {ended.revision}; further events refused"


@_case("core", "create semantic memory")
async def _create_memory(run: _Run) -> str:
    ns = f"{run.namespace}:core"
    m = await run.put(
        ns, "fact", {"text": "smoke fact, version 1"}, type="semantic", expected_version=0
    )
    _expect(m.version == 1 and m.type == "semantic", f"got v{m.version} {m.type}")
    run.made["core_memory"] = m
    return "core/fact v1 (semantic)"


@_case("core", "update memory to version 2")
async def _update_memory(run: _Run) -> str:
    m: Memory = run.need("core_memory", 10)
    v2 = await run.put(
        m.namespace, m.key, {"text": "smoke fact, version 2"}, expected_version=m.version
    )
    _expect(v2.version == 2, f"update wrote version {v2.version}")
    run.made["core_memory"] = v2
    return "core/fact v2"


@_case("core", "get current version")
async def _get_memory(run: _Run) -> str:
    m: Memory = run.need("core_memory", 11)
    ab = await run.ab()
    got = await ab.memory.get(m.namespace, m.key)
    _expect(got is not None, "the memory reads as absent")
    assert got is not None
    _expect(
        got.version == 2 and got.value == {"text": "smoke fact, version 2"},
        f"current is v{got.version} {got.value}",
    )
    return f"v{got.version}: {json.dumps(got.value)}"


@_case("core", "search memories by namespace")
async def _by_namespace(run: _Run) -> str:
    m: Memory = run.need("core_memory", 10)
    ab = await run.ab()
    await run.put(f"{m.namespace}:notes", "note", {"text": "a memory one level down"})
    found = await ab.memory.list(m.namespace)
    got = [(x.namespace, x.key) for x in found]
    want = [(m.namespace, "fact"), (f"{m.namespace}:notes", "note")]
    _expect(got == want, f"list({m.namespace!r}) returned {got}")
    return "core/fact and core:notes/note, nothing else"


@_case("core", "audit log holds the memory operations")
async def _audit_memory(run: _Run) -> str:
    m: Memory = run.need("core_memory", 11)
    ab = await run.ab()
    records = await ab.audit.records(
        entity="memory", entity_id=f"{m.namespace}/{m.key}", after_seq=run.audit_start
    )
    got = [(r.action, r.detail.get("version")) for r in records]
    _expect(got == [("memory.put", 1), ("memory.put", 2)], f"audit records: {got}")
    return f"memory.put v1, v2 (seq {records[0].seq}, {records[1].seq})"


@_case("core", "create task linked to the session")
async def _create_task(run: _Run) -> str:
    s: Session = run.need("core_session", 6)
    ab = await run.ab()
    t = await run.task(s.id, "task", "summarise the smoke session")
    listed = await ab.tasks.list(session_id=s.id)
    _expect(t.session_id == s.id and t.status == "pending", f"task is {t.status} of {t.session_id}")
    _expect([x.id for x in listed] == [t.id], f"session's tasks: {[x.id for x in listed]}")
    return "pending task, listed under its session"


# 3. Performance ----------------------------------------------------------------------


@_case("performance", "session get < 10 ms")
async def _perf_session_get(run: _Run) -> str:
    s = await run.reads_session()
    ab = await run.ab()
    await ab.sessions.get(s.id, last_n=50)  # warm the reader's statement cache
    samples = await _latencies(_SAMPLES, lambda _: ab.sessions.get(s.id, last_n=50))
    return _within("session get", samples, LIMITS["session_get"])


@_case("performance", "memory get < 20 ms")
async def _perf_memory_get(run: _Run) -> str:
    m = await run.reads_memory()
    ab = await run.ab()
    await ab.memory.get(m.namespace, m.key)
    samples = await _latencies(_SAMPLES, lambda _: ab.memory.get(m.namespace, m.key))
    return _within("memory get", samples, LIMITS["memory_get"])


@_case("performance", "namespace query < 50 ms")
async def _perf_namespace(run: _Run) -> str:
    ab = await run.ab()
    ns = f"{run.namespace}:reads:many"
    for i in range(10):
        await run.put(f"{ns}:n{i % 3}", f"key{i}", {"n": i})
    found = await ab.memory.list(ns)
    _expect(len(found) == 10, f"list({ns!r}) returned {len(found)} of 10")
    samples = await _latencies(_SAMPLES, lambda _: ab.memory.list(ns))
    return _within("namespace query", samples, LIMITS["namespace_query"])


@_case("performance", "50 concurrent session reads < 1 s")
async def _perf_concurrent(run: _Run) -> str:
    s = await run.reads_session()
    ab = await run.ab()

    async def burst(_: int) -> None:
        got = await asyncio.gather(
            *(ab.sessions.get(s.id, last_n=10) for _ in range(CONCURRENT_READS))
        )
        _expect(all(x.id == s.id for x in got), "a concurrent read returned another session")

    samples = await _latencies(_ROUNDS, burst)
    return _within(
        f"{CONCURRENT_READS} concurrent reads", samples, LIMITS["concurrent_session_reads"]
    )


async def _timed_searches(
    run: _Run, queries: Sequence[tuple[str, str]], mode: SearchMode
) -> tuple[list[float], list[Any]]:
    await run.corpus()
    ab = await run.ab()
    results: list[Any] = []

    async def one(i: int) -> None:
        results.append(
            await ab.memory.search(queries[i][0], prefix=f"{run.namespace}:corpus", k=3, mode=mode)
        )

    # The first query of a process pays for the embedder's warm-up, which no
    # application query sees again: one untimed query with a text of its own.
    await ab.memory.search("warm up the query embedder", prefix=run.namespace, k=1, mode=mode)
    samples = await _latencies(len(queries), one)
    for result in results:
        _check_search(result, mode)
    return samples, results


@_case("performance", "semantic search < 500 ms")
async def _perf_semantic(run: _Run) -> str:
    samples, _ = await _timed_searches(run, _VECTOR_QUERIES, "vector")
    return _within("semantic search", samples, LIMITS["semantic_search"])


@_case("performance", "hybrid search < 600 ms")
async def _perf_hybrid(run: _Run) -> str:
    samples, results = await _timed_searches(run, _HYBRID_QUERIES, "hybrid")
    tops = [r.hits[0].key if r.hits else None for r in results]
    want = [key for _, key in _HYBRID_QUERIES]
    _expect(tops == want, f"hybrid search found {tops}, expected {want}")
    return _within("hybrid search", samples, LIMITS["hybrid_search"])


@_case("performance", "document sync processes a file")
async def _perf_sync(run: _Run) -> str:
    folder = run.documents_dir()
    (folder / _DOC_NAME).write_text(
        "# Smoke runbook\n\nWritten by abathur smoke.\n\n## Step one\n\nCheck the database.\n",
        encoding="utf-8",
    )
    (folder / _DOC_STEADY).write_text("# Unchanged\n\nThis file never changes.\n", "utf-8")
    started = time.perf_counter()
    report = await run.sync()
    took = time.perf_counter() - started
    _expect(
        sorted(report.added) == [_DOC_NAME, _DOC_STEADY],
        f"sync added {report.added} of 2 new files (failed: {report.failed})",
    )
    return f"2 files added in {_ms(took)}"


@_case("performance", "hot queries use their indexes")
async def _perf_plans(run: _Run) -> str:
    ab = await run.ab()
    checked, problems = await ab.db.read(lambda tx: tx.checks.plan_problems())
    _expect(not problems, "; ".join(problems))
    return f"{checked} queries, each on its index"


# 4. Integration ----------------------------------------------------------------------


@_case("integration", "session -> task -> memory workflow")
async def _workflow(run: _Run) -> str:
    ab = await run.ab()
    s = await run.session("workflow")
    s = await ab.sessions.append_event(
        s.id,
        Event(author="user", content={"text": "please summarise my ticket"}),
        expected_revision=s.revision,
    )
    t = await run.task(s.id, "workflow-task", "summarise the ticket")
    await run.update_task(t.id, "running")
    done = await run.update_task(t.id, "succeeded", result={"summary": "billing question"})
    ns = f"{run.namespace}:workflow"
    await run.put(
        ns,
        "outcome",
        {"summary": "billing question"},
        type="episodic",
        metadata={"session_id": s.id, "task_id": t.id},
    )
    linked = await ab.memory.list(ns, filter={"task_id": t.id})
    tasks_now = await ab.tasks.list(session_id=s.id, status="succeeded")
    _expect(done.result == {"summary": "billing question"}, f"task result {done.result}")
    _expect([m.key for m in linked] == ["outcome"], "the memory is not found by its task id")
    _expect([x.id for x in tasks_now] == [t.id], "the succeeded task is not listed")
    return "task succeeded; episodic memory found by its task id"


@_case("integration", "versioning: create, update, history")
async def _versioning(run: _Run) -> str:
    ab = await run.ab()
    ns = f"{run.namespace}:versions"
    for n in (1, 2, 3):
        await run.put(ns, "setting", {"n": n}, expected_version=n - 1)
    try:
        await ab.memory.put(ns, "setting", {"n": 99}, expected_version=1)
    except VersionConflictError:
        pass
    else:
        raise _CaseFailed("a write with a stale expected_version was accepted")
    history = await ab.memory.history(ns, "setting")
    got = [(m.version, m.value, m.status) for m in history]
    want = [(n, {"n": n}, "live") for n in (1, 2, 3)]
    _expect(got == want, f"history {got}")
    return "versions 1, 2, 3 in order; a stale update refused"


@_case("integration", "namespace hierarchy")
async def _hierarchy(run: _Run) -> str:
    ab = await run.ab()
    root = f"{run.namespace}:user"
    for ns in (f"{root}:alice", f"{root}:alice:preferences", f"{root}:alicia"):
        await run.put(ns, "name", {"namespace": ns})
    seen = [m.namespace for m in await ab.memory.list(f"{root}:alice")]
    want = [f"{root}:alice", f"{root}:alice:preferences"]
    _expect(seen == want, f"user:alice sees {seen}")
    _expect(
        await ab.memory.namespaces(f"{root}:al") == [],
        "the prefix 'user:al' matched a longer segment",
    )
    return "user:alice sees itself and user:alice:preferences, not user:alicia"


@_case("integration", "semantic search returns the relevant memory")
async def _semantic(run: _Run) -> str:
    await run.corpus()
    ab = await run.ab()
    found = []
    for query, key in _VECTOR_QUERIES:
        result = await ab.memory.search(query, prefix=f"{run.namespace}:corpus", k=3, mode="vector")
        _check_search(result, "vector")
        top = result.hits[0].key if result.hits else None
        _expect(top == key, f"{query!r} found {top!r} first, expected {key!r}")
        found.append(f"{key} ({result.hits[0].score:.2f})")
    return "top hits: " + ", ".join(found)


@_case("integration", "document sync detects a changed file")
async def _sync_changed(run: _Run) -> str:
    folder = run.documents_dir()
    doc = folder / _DOC_NAME
    if not run.synced:
        doc.write_text("# Smoke runbook\n\nFirst version.\n", "utf-8")
        (folder / _DOC_STEADY).write_text("# Unchanged\n\nThis file never changes.\n", "utf-8")
        await run.sync()
    doc.write_text(
        doc.read_text("utf-8") + "\n## Step two\n\nA step added after the first sync.\n", "utf-8"
    )
    report = await run.sync()
    seen = (report.changed, report.added, report.unchanged)
    _expect(seen == ([_DOC_NAME], [], 1), f"sync saw (changed, added, unchanged) {seen}")
    return "1 changed file re-indexed, the unchanged one skipped"


@_case("integration", "consolidation resolves a conflict")
async def _consolidation(run: _Run) -> str:
    ab = await run.ab()
    root = f"{run.namespace}:conflict"
    await run.put(f"{root}:old", "timezone", "UTC")
    await run.put(f"{root}:new", "timezone", "CET")
    report = await ab.memory.consolidate(root)
    got = [(a.reason, a.loser.namespace, a.winner.namespace) for a in report.actions]
    _expect(got == [("conflict", f"{root}:old", f"{root}:new")], f"consolidation did {got}")
    for action in report.actions:
        run.note("memory.supersede", f"{action.loser.namespace}/{action.loser.key}")
    loser = await ab.memory.history(f"{root}:old", "timezone")
    winner = await ab.memory.get(f"{root}:new", "timezone")
    _expect(await ab.memory.get(f"{root}:old", "timezone") is None, "the loser still reads")
    _expect(
        loser[-1].status == "superseded" and loser[-1].superseded_by is not None,
        f"the loser's last version is {loser[-1].status}",
    )
    _expect(winner is not None and winner.value == "CET", "the winner does not read")
    return "newest value kept; the other superseded, pointing at it, restorable"


@_case("integration", "audit trail captures every operation")
async def _audit_trail(run: _Run) -> str:
    ab = await run.ab()
    # A few more operations of every audited kind, then all the run's records.
    s = await run.session("audit")
    await run.set_status(s.id, "active")
    ns = f"{run.namespace}:audit"
    await run.put(ns, "k", "v")
    await ab.memory.delete(ns, "k")
    run.note("memory.delete", f"{ns}/k")
    await ab.memory.restore(ns, "k")
    run.note("memory.restore", f"{ns}/k")
    records = []
    after = run.audit_start
    while True:
        page = await ab.audit.records(after_seq=after, limit=1000)
        if not page:
            break
        records.extend(page)
        after = page[-1].seq
    ours = Counter(
        (r.action, r.entity_id)
        for r in records
        if r.entity_id.startswith((run.prefix, run.namespace))
    )
    missing = Counter(run.audited) - ours
    _expect(not missing, f"no audit record for: {sorted(missing.elements())[:5]}")
    report = await ab.audit.verify()
    _expect(report.is_ok, f"audit chain: {'; '.join(report.problems[:3])}")
    return (
        f"{sum(ours.values())} records for {len(run.audited)} writes of this run; "
        f"chain of {report.records} verifies"
    )


# 5. Error handling -------------------------------------------------------------------


@_case("errors", "invalid JSON in an event rejected")
async def _invalid_json(run: _Run) -> str:
    ab = await run.ab()
    s = await run.session("invalid-json")
    try:
        await ab.sessions.append_event(
            s.id,
            Event(author="abathur-smoke", content={"x": float("nan")}),
            expected_revision=s.revision,
        )
    except ValueNotSerializableError:
        pass
    else:
        raise _CaseFailed("an event holding NaN was stored")
    try:
        Event(author="abathur-smoke", content={"x": {1, 2}})  # type: ignore[dict-item]
    except InvalidInputError:
        pass
    else:
        raise _CaseFailed("an event holding a set was accepted")
    after = await ab.sessions.get(s.id)
    _expect(after.revision == s.revision and not after.events, "the session changed")
    return "NaN and a set refused (invalid_json, invalid_input); session unchanged"


@_case("errors", "duplicate session id raises")
async def _duplicate_session(run: _Run) -> str:
    ab = await run.ab()
    s = await run.session("duplicate")
    try:
        await ab.sessions.create(app=SMOKE_APP, user="someone-else", session_id=s.id)
    except AlreadyExistsError as exc:
        code = exc.code
    else:
        raise _CaseFailed(f"a second session with id {s.id!r} was created")
    again = await ab.sessions.get(s.id)
    _expect(again.user == run.user and again.revision == 0, "the first session changed")
    return f"AlreadyExistsError ({code}); the first session untouched"


@_case("errors", "invalid memory type raises")
async def _invalid_type(run: _Run) -> str:
    ab = await run.ab()
    ns = f"{run.namespace}:errors"
    try:
        await ab.memory.put(ns, "typed", "x", type="opinion")  # type: ignore[arg-type]
    except InvalidMemoryTypeError as exc:
        code = exc.code
    else:
        run.note("memory.put", f"{ns}/typed")
        raise _CaseFailed("a memory of type 'opinion' was stored")
    _expect(await ab.memory.get(ns, "typed") is None, "something was written")
    return f"InvalidMemoryTypeError ({code}); nothing written"


@_case("errors", "unknown session id on a task handled")
async def _unknown_session(run: _Run) -> str:
    ab = await run.ab()
    missing = f"{run.prefix}-no-such-session"
    try:
        await ab.tasks.create(session_id=missing, prompt="orphan", task_id=f"{run.prefix}-orphan")
    except SessionNotFoundError as exc:
        code, retryable = exc.code, exc.retryable
    else:
        raise _CaseFailed("a task was created for a session that does not exist")
    _expect(not retryable, "SessionNotFoundError says retryable")
    return f"SessionNotFoundError ({code}); no task written"


@_case("errors", "concurrent session update conflict resolved")
async def _conflict(run: _Run) -> str:
    ab = await run.ab()
    s = await run.session("race")
    outcomes = await asyncio.gather(
        *(
            ab.sessions.append_event(
                s.id, Event(author=f"writer-{w}", content={"w": w}), expected_revision=s.revision
            )
            for w in ("a", "b")
        ),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, Session)]
    lost = [o for o in outcomes if isinstance(o, StaleSessionError)]
    _expect(len(won) == 1 and len(lost) == 1, f"two writers at one revision got {outcomes}")
    _expect(lost[0].retryable, "StaleSessionError is not retryable")
    loser = "b" if won[0].events[0].author == "writer-a" else "a"
    fresh = await ab.sessions.get(s.id, last_n=0)
    await ab.sessions.append_event(
        s.id,
        Event(author=f"writer-{loser}", content={"w": loser}),
        expected_revision=fresh.revision,
    )
    final = await ab.sessions.get(s.id)
    authors = sorted(e.author for e in final.events)
    _expect(
        final.revision == s.revision + 2 and authors == ["writer-a", "writer-b"],
        f"after the retry: revision {final.revision}, events by {authors}",
    )
    return "one writer won, the other got StaleSessionError, re-read and retried"


CASES: tuple[SmokeCase, ...] = tuple(_REGISTRY)


# -- cleanup --------------------------------------------------------------------------


async def _cleanup(run: _Run) -> Cleanup:
    if run._ab is None:
        if run.docs_dir is not None:
            shutil.rmtree(run.docs_dir, ignore_errors=True)
        return Cleanup()
    ab = run._ab
    errors: list[str] = []
    sessions_deleted = memories_deleted = documents_removed = redacted = 0
    purge_records: list[int] = []

    async def step(what: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except Exception as exc:  # one failed step must not stop the others
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            errors.append(f"{what}: {message}")

    async def documents() -> None:
        nonlocal documents_removed, redacted
        if run.docs_dir is None:
            return
        root = str(run.docs_dir)
        try:
            if run.synced:
                documents_removed = len((await ab.documents.forget(run.docs_dir)).removed)
                done, seq = await ab.db.write(
                    lambda tx: _purge_root_records(tx, root, documents_removed)
                )
                redacted += done
                purge_records.append(seq)
        finally:
            shutil.rmtree(run.docs_dir, ignore_errors=True)

    async def purge_sessions() -> None:
        nonlocal sessions_deleted, redacted
        # Sessions with their events, state and tasks; their audit records redacted.
        report = await ab.sessions.purge(app=SMOKE_APP, user=run.user)
        sessions_deleted = report.counts.get("sessions", 0)
        redacted += report.redacted
        if report.audit_seq is not None:
            purge_records.append(report.audit_seq)

    async def purge_memories() -> None:
        nonlocal memories_deleted, redacted
        # Every version and tombstone, keyword rows, vectors, held jobs and
        # the cache entries no other vector uses; their audit records redacted.
        report = await ab.memory.purge(run.namespace)
        memories_deleted = report.counts.get("memories", 0)
        redacted += report.redacted
        if report.audit_seq is not None:
            purge_records.append(report.audit_seq)
        # The run's partition is its own: drop its vec0 chunks and the dead
        # slots the purge just counted, so the table is as it was.
        dead = report.counts.get("vectors", 0)
        await ab.db.write(lambda tx: _drop_partition(tx, run.partition, dead))

    await step("documents", documents)
    await step("sessions", purge_sessions)
    await step("memories", purge_memories)
    live_left: dict[str, int] = {}
    try:
        live_left = await ab.db.read(lambda tx: _leftovers(tx, run))
    except Exception as exc:
        errors.append(f"counting what is left: {exc}")
    return Cleanup(
        sessions_deleted=sessions_deleted,
        memories_deleted=memories_deleted,
        documents_removed=documents_removed,
        live_left=live_left,
        remains={"audit_redacted": redacted, "purge_records": len(purge_records)},
        errors=tuple(errors),
    )


def _purge_root_records(tx: Transaction, root: str, documents: int) -> tuple[int, int]:
    """Redact the records of the run's forgotten document root; (records redacted, purge seq).

    They name only the run's temporary directory, but they are the run's:
    redacted, under one ``documents.purge`` record, like its sessions and memories.
    """
    seqs = audit.root_records(tx, root)
    return audit.record_purge(tx, "documents.purge", root, {"documents": documents}, seqs)


def _drop_partition(tx: Transaction, partition: str, dead: int) -> int:
    return tx.search.drop_empty_partition(memory.VEC_TABLE, partition, dead=dead)


def _leftovers(tx: Transaction, run: _Run) -> dict[str, int]:
    root = str(run.docs_dir) if run.docs_dir is not None else None
    left = tx.checks.run_leftovers(
        app=SMOKE_APP,
        user=run.user,
        namespace=run.namespace,
        audit_after=run.audit_start,
        root=root,
        partition=run.partition,
    )
    ours = (run.prefix, run.namespace)
    return {
        "sessions": left.sessions,
        "memories": left.memories,
        "documents": left.documents,
        "document_roots": left.document_roots,
        "vector_chunks": left.vector_chunks,
        "audit_records_naming_the_run": sum(
            e.startswith(ours) or e == root for e in left.audit_entities
        ),
    }


# -- running --------------------------------------------------------------------------


def _shown(target: Path | PostgresUrl) -> str:
    """A file's absolute path, or a server's URL without its password."""
    return str(target.absolute()) if isinstance(target, Path) else str(target)


def _new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


async def run_smoke(
    path: str | Path | PostgresUrl,
    *,
    category: str | None = None,
    settings: Settings | None = None,
    run_id: str | None = None,
    case_timeout_s: float = 60.0,
) -> SmokeReport:
    """Run the smoke cases (all 35, or one category) against the database at ``path``.

    Every case runs, in order, even after a failure; then the run's writes are
    cleaned up (see the module docstring for what stays by design).

    Args:
        path: an existing database file, or a PostgreSQL URL; it is never
            created or migrated.
        category: one of :data:`CATEGORIES`, or ``None`` for all.
        settings: pragmas and the embedder; default :class:`~abathur.config.Settings`
            (``ABATHUR_*`` variables, as the application reads them).
        run_id: names the run's namespace and ids; default the time and 6 random hex.
        case_timeout_s: a case still running after this long fails.

    Returns:
        A :class:`SmokeReport`; ``is_ok`` only when every case passed and the
        cleanup left nothing live.

    Raises:
        InvalidInputError: ``category`` is unknown, ``run_id`` is not a usable
            id, or ``case_timeout_s`` is not positive.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.ops.smoke import run_smoke
        >>> missing = pathlib.Path(tempfile.mkdtemp()) / "missing.db"
        >>> report = asyncio.run(run_smoke(missing, category="connectivity"))
        >>> report.summary, report.results[0].detail[:38], missing.exists()
        ('0 passed, 5 failed', 'cannot open the database: [db.error] n', False)
    """
    if category is not None and category not in CATEGORIES:
        raise InvalidInputError(
            f"unknown smoke category {category!r}: the categories are {', '.join(CATEGORIES)}"
        )
    run_id = _new_run_id() if run_id is None else run_id
    if (
        not isinstance(run_id, str)
        or not run_id
        or any(not (ch.isalnum() or ch in "-_.") for ch in run_id)
    ):
        raise InvalidInputError(f"run_id {run_id!r} must be letters, digits, '-', '_' or '.'")
    if not isinstance(case_timeout_s, int | float) or not case_timeout_s > 0:
        raise InvalidInputError(f"case_timeout_s must be a positive number, got {case_timeout_s!r}")
    target: Path | PostgresUrl
    if isinstance(path, PostgresUrl):
        target = path
    elif isinstance(path, str) and is_postgres_url(path):
        target = PostgresUrl(path)
    else:
        target = Path(path)
    run = _Run(target, settings or Settings(), run_id)
    selected = [c for c in CASES if category is None or c.category == category]
    started = time.perf_counter()
    results: list[CaseResult] = []
    try:
        for case in selected:
            results.append(await _run_case(case, run, case_timeout_s))
        cleanup = await _cleanup(run)
    finally:
        await run.close()
    report = SmokeReport(
        target, run_id, category, tuple(results), time.perf_counter() - started, cleanup
    )
    log.info(
        "smoke.finished",
        path=_shown(target),
        run_id=run_id,
        passed=report.passed,
        failed=report.failed,
        seconds=round(report.seconds, 3),
        is_clean=cleanup.is_clean,
    )
    return report


async def _run_case(case: SmokeCase, run: _Run, timeout: float) -> CaseResult:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(case.run(run), timeout)
        passed = True
    except _CaseFailed as exc:
        detail, passed = str(exc), False
    except TimeoutError:
        detail, passed = f"did not finish within {timeout:g} s", False
    except AbathurError as exc:
        detail, passed = f"[{exc.code}] {exc.message}", False
    except Exception as exc:  # a smoke run reports a broken case; it does not crash
        detail, passed = f"{type(exc).__name__}: {exc}", False
    seconds = time.perf_counter() - started
    return CaseResult(case.number, case.category, case.name, passed, seconds, detail)
