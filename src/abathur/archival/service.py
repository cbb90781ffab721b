"""``ArchivalService``: ``ab.archival``, a run, the listing, show and restore."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from abathur import audit
from abathur.archival.codecs import Codecs
from abathur.archival.payload import MAX_RAW_BYTES, Rows, Stored, open_payload
from abathur.archival.restore import restore_memory, restore_session, restore_versions
from abathur.archival.runs import (
    POLICY_KINDS,
    Batch,
    Batches,
    RunPlan,
    Tally,
    file_sizes,
    finish_run,
    start_run,
)
from abathur.errors import ArchiveNotFoundError, InvalidInputError
from abathur.models import (
    ArchivedItem,
    ArchiveEntry,
    ArchiveKind,
    ArchiveRestoreReport,
    ArchiveRunReport,
    CompactReport,
)
from abathur.stores import Backend, Transaction
from abathur.stores.archive import EntryRow, StoredRow
from abathur.values import check_int, check_text

if TYPE_CHECKING:
    from abathur.embeddings.queue import EmbeddingService

__all__ = ["ArchivalService", "ReclaimSpace"]

log = structlog.get_logger(__name__)

_MAX_LIST = 10_000

#: Gives freed space back to the file system once a run has committed, outside
#: any transaction: ``reclaim(vacuum)`` returns (auto-vacuum mode, bytes given
#: back, a note or None). The SQLite backend's is
#: :func:`abathur.backends.sqlite.archive.reclaim_space`.
ReclaimSpace = Callable[[bool], tuple[str, int, str | None]]


class ArchivalService:
    """Archive cold data, list it, show it, and restore it exactly: ``ab.archival``.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
        ...             report = await ab.archival.run(dry_run=True)
        ...             return report.is_dry_run, report.entries, await ab.archival.list()
        >>> asyncio.run(demo())
        (True, 0, [])
    """

    def __init__(
        self,
        db: Backend,
        embeddings: EmbeddingService | None = None,
        *,
        reclaim_space: ReclaimSpace | None = None,
    ) -> None:
        self._db = db
        self._embeddings = embeddings
        self._reclaim_space = reclaim_space
        self._codecs = Codecs()

    # -- a run ---------------------------------------------------------------

    async def run(self, *, dry_run: bool = False, vacuum: bool = False) -> ArchiveRunReport:
        """Move everything the policies select into the archive, then reclaim space.

        Safe while agents write: small transactions with a pause between
        them. Idempotent and resumable (see the module docs): running it
        again after a crash finishes the work, and archives nothing twice.

        Args:
            dry_run: report what would move (sizes estimated) and write nothing.
            vacuum: also VACUUM the file once, switching it to incremental
                auto-vacuum so every later run shrinks it. Rewrites the whole
                file and blocks writers while it runs.

        Returns:
            An :class:`~abathur.models.ArchiveRunReport`: per-policy items,
            rows and bytes, file and WAL sizes before and after, space freed.

        Raises:
            InvalidInputError: dry_run or vacuum is not a bool, or both are set.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "a.db"
            ...         policies = [{"kind": "versions", "keep_versions": 2, "after_days": 0}]
            ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
            ...                                 archive_policies=policies) as ab:
            ...             for v in range(5):
            ...                 await ab.memory.put("user:alice", "lang", f"v{v}")
            ...             report = await ab.archival.run()
            ...             versions = await ab.memory.history("user:alice", "lang")
            ...             return report.rows, [m.version for m in versions]
            >>> asyncio.run(demo())
            (3, [4, 5])
        """
        for value, what in ((dry_run, "dry_run"), (vacuum, "vacuum")):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{what} must be a bool, got {type(value).__name__}")
        if dry_run and vacuum:
            raise InvalidInputError("a dry run cannot vacuum: choose one of dry_run and vacuum")
        started = time.perf_counter()
        settings = self._db.settings
        policies = settings.archive_policies
        # A PostgreSQL server has no file to measure (issue 14): sizes stay 0 there.
        path = settings.db_file
        size_before, wal_before = file_sizes(path) if path is not None else (0, 0)
        run_id: int | None = None
        resumed: int | None = None
        if dry_run:
            plan = RunPlan.dry(policies=policies, batch_size=settings.archive_batch_size)
        else:
            new_id, resumed = await self._db.write(start_run)
            if resumed is not None:
                log.warning("archive.resume", run_id=new_id, interrupted_run=resumed)
            plan = RunPlan.recorded(
                new_id, policies=policies, batch_size=settings.archive_batch_size
            )
            run_id = new_id
        tallies = {kind: Tally() for kind in POLICY_KINDS}
        batches = 0
        too_big: list[str] = []
        of_plan = Batches(self._codecs, plan)
        phases: tuple[tuple[Callable[..., Batch], Any], ...] = (
            (of_plan.session_batch, (-math.inf, "")),
            (of_plan.memory_batch, 0),
        )
        for phase, first in phases:
            cursor = first
            while True:
                fn = partial(phase, cursor=cursor, now=time.time())
                batch = await (self._db.read(fn) if plan.is_dry_run else self._db.write(fn))
                batches += 1
                for move, stored in zip(batch.moves, batch.stored, strict=True):
                    tally = tallies[move.policy]
                    tally.items += 1
                    tally.rows += move.rows
                    tally.raw_bytes += len(move.raw)
                    tally.stored_bytes += stored
                too_big += batch.too_big
                cursor = batch.cursor
                if batch.is_done:
                    break
                if settings.archive_pause_ms:
                    await asyncio.sleep(settings.archive_pause_ms / 1000)
        notes = await self._db.read(_chunk_note)
        if too_big:
            log.warning("archive.too_big", items=too_big[:20], count=len(too_big))
            notes.append(
                f"{len(too_big)} item(s) left hot: their rows exceed the {MAX_RAW_BYTES} bytes "
                f"one archive row may hold ({', '.join(too_big[:5])})"
            )
        compacted: list[CompactReport] = []
        auto_vacuum = await self._db.read(lambda tx: tx.archive.auto_vacuum())
        results = [tallies[k].result(k) for k in POLICY_KINDS]
        entries = sum(t.items for t in tallies.values())
        rows = sum(t.rows for t in tallies.values())
        vacuumed = 0
        if not plan.is_dry_run:
            compacted = await self._reclaim_vectors()
            detail = {r.policy: r.model_dump(exclude={"policy"}) for r in results}
            await self._db.write(
                partial(finish_run, run_id=plan.run_id, detail=detail, entries=entries, rows=rows)
            )
            if self._reclaim_space is not None:
                # Last, so the checkpoint leaves the WAL empty: nothing is written after it.
                auto_vacuum, vacuumed, note = await asyncio.to_thread(self._reclaim_space, vacuum)
                if note:
                    notes.append(note)
        if auto_vacuum != "incremental":
            notes.append(
                "auto_vacuum is NONE: freed pages are reused by new rows but the file does not "
                "shrink; 'abathur archive run --vacuum' switches it to incremental once"
            )
        free = await self._db.read(lambda tx: tx.archive.free_bytes())
        size_after, wal_after = file_sizes(path) if path is not None else (0, 0)
        report = ArchiveRunReport(
            run_id=run_id,
            is_dry_run=dry_run,
            resumed_after=resumed,
            policies=results,
            entries=entries,
            rows=rows,
            batches=batches,
            bytes_before=size_before + wal_before,
            bytes_after=size_after + wal_after,
            wal_bytes_before=wal_before,
            wal_bytes_after=wal_after,
            free_bytes=int(free),
            auto_vacuum=auto_vacuum,  # type: ignore[arg-type]
            vacuumed_bytes=vacuumed,
            compacted=compacted,
            notes=notes,
            seconds=round(time.perf_counter() - started, 3),
        )
        log.info(
            "archive.run",
            run_id=run_id,
            dry_run=dry_run,
            entries=entries,
            rows=rows,
            bytes_before=report.bytes_before,
            bytes_after=report.bytes_after,
            seconds=report.seconds,
        )
        return report

    async def _reclaim_vectors(self) -> list[CompactReport]:
        await self._db.write(lambda tx: tx.search.apply_vector_deletes())
        ratio = self._db.settings.vector_compact_ratio
        stats = await self._db.read(lambda tx: tx.search.vector_table_stats())
        if (
            self._embeddings is None
            or not ratio
            or not any(s.dead_rows and s.dead_rows >= ratio * s.live_rows for s in stats)
        ):
            return []
        return await self._embeddings.compact()

    # -- one batch of each phase (runs inside one transaction) ------------------

    # -- reading the archive ---------------------------------------------------

    async def list(
        self,
        *,
        kind: ArchiveKind | None = None,
        ref: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[ArchiveEntry]:
        """Archive entries, newest first.

        Args:
            kind: only ``"session"``, ``"memory"`` or ``"versions"`` entries.
            ref: only entries of this session id or ``namespace/key`` (needs ``kind``).
            limit: at most this many (1..10000).
            before: only entries with an id below this one (the next page).

        Returns:
            The entries (without their rows: see :meth:`show`).

        Raises:
            InvalidInputError: an argument is out of range, or ``ref`` without ``kind``.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
            ...             return await ab.archival.list(kind="session", limit=10)
            >>> asyncio.run(demo())
            []
        """
        if kind is not None and kind not in ("session", "memory", "versions"):
            raise InvalidInputError(f"kind {kind!r} is not one of session, memory, versions")
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise InvalidInputError(f"ref must be a non-empty string, got {ref!r}")
        if ref is not None:
            check_text(ref, "ref")
        if ref is not None and kind is None:
            raise InvalidInputError("ref needs kind: a session id and a memory can look alike")
        check_int(limit, "limit", minimum=1, maximum=_MAX_LIST)
        if before is not None:
            check_int(before, "before", minimum=1)
        rows = await self._db.read(
            lambda tx: tx.archive.entries(kind=kind, ref=ref, before=before, limit=limit)
        )
        return [_entry(row) for row in rows]

    async def show(self, entry_id: int) -> ArchivedItem:
        """One archive entry with its rows, decompressed, as they were in the hot tables.

        Args:
            entry_id: the entry's id (``archive list``).

        Returns:
            An :class:`~abathur.models.ArchivedItem`.

        Raises:
            InvalidInputError: entry_id is not a positive integer.
            ArchiveNotFoundError: no entry has this id (or it was restored).
            CorruptArchiveError: the entry fails verification (see :meth:`restore`).
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "a.db"
            ...         policies = [{"kind": "tombstones", "after_days": 0}]
            ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
            ...                                 archive_policies=policies) as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.delete("user:alice", "lang")
            ...             await ab.archival.run()
            ...             (entry,) = await ab.archival.list()
            ...             item = await ab.archival.show(entry.id)
            ...             return entry.ref, [r["status"] for r in item.tables["memories"]]
            >>> asyncio.run(demo())
            ('user:alice/lang', ['live', 'deleted'])
        """
        check_int(entry_id, "archive entry id", minimum=1)

        def read(tx: Transaction) -> ArchivedItem:
            row, stored = _one(tx, entry_id)
            tables = open_payload(tx.archive, self._codecs, Stored.of(stored))
            return ArchivedItem(
                entry=_entry(row),
                tables={
                    name: [dict(zip(t.columns, r, strict=True)) for r in t.rows]
                    for name, t in tables.items()
                },
            )

        return await self._db.read(read)

    # -- restoring -------------------------------------------------------------

    async def restore(self, entry_id: int) -> ArchiveRestoreReport:
        """Put an archive entry's rows back in the hot tables, exactly as they were.

        A session comes back with its status, state, revision, times and
        every event; a memory with every version (ids kept where still free);
        old versions slot back under their memory. A live memory is put back
        in the keyword index and queued for its vector (taken straight from
        the embedding cache when it is there), so search finds it again. The
        archive entry is removed; an audit record says what came back.

        Args:
            entry_id: the entry's id (``archive list``).

        Returns:
            An :class:`~abathur.models.ArchiveRestoreReport`.

        Raises:
            InvalidInputError: entry_id is not a positive integer.
            ArchiveNotFoundError: no entry has this id (or it was restored).
            AlreadyExistsError: the hot tables hold that item again (a session
                with the id, a memory written again at that key, or those
                versions); nothing was restored.
            MemoryNotFoundError: old versions whose memory is not in the hot
                tables (archived whole later: restore that entry first).
            CorruptArchiveError: the entry fails verification: its payload or
                dictionary does not match its sha256, it does not decompress,
                or would decompress past the size it records, or it does not
                hold the rows it names (unknown tables or columns, bad values);
                nothing was restored.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "a.db"
            ...         policies = [{"kind": "memories", "idle_days": 1e-9, "after_days": 0}]
            ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
            ...                                 archive_policies=policies) as ab:
            ...             await ab.memory.put("user:alice", "lang", "Alice speaks French")
            ...             await ab.archival.run()
            ...             gone = await ab.memory.search("french", prefix="user:alice")
            ...             (entry,) = await ab.archival.list()
            ...             report = await ab.archival.restore(entry.id)
            ...             back = await ab.memory.search("french", prefix="user:alice")
            ...             return len(gone.hits), report.reindexed, [h.key for h in back.hits]
            >>> asyncio.run(demo())
            (0, 1, ['lang'])
        """
        check_int(entry_id, "archive entry id", minimum=1)
        started = time.perf_counter()

        def write(tx: Transaction) -> tuple[ArchiveRestoreReport, bool]:
            row, stored = _one(tx, entry_id)
            entry = _entry(row)
            tables: dict[str, Rows] = open_payload(tx.archive, self._codecs, Stored.of(stored))
            reindexed, queued = 0, False
            if entry.kind == "session":
                restore_session(tx, tables)
            elif entry.kind == "memory":
                reindexed, queued = restore_memory(tx, tables)
            else:
                restore_versions(tx, tables)
            tx.archive.delete_entry(entry_id)
            audit.append(
                tx,
                "archive.restore",
                "archive",
                str(entry_id),
                {"kind": entry.kind, "ref": entry.ref, "rows": entry.rows},
            )
            report = ArchiveRestoreReport(
                id=entry_id,
                kind=entry.kind,
                ref=entry.ref,
                rows=entry.rows,
                reindexed=reindexed,
                seconds=round(time.perf_counter() - started, 6),
            )
            return report, queued

        report, queued = await self._db.write(write)
        if queued and self._embeddings is not None:
            self._embeddings.notify()
        return report


def _chunk_note(tx: Transaction) -> list[str]:
    if not tx.archive.has_document_tables():
        return ["chunks: skipped, this file has no document tables"]
    return [
        "chunks: nothing to archive, documents.sync deletes a vanished file's chunks "
        "with it (their dead vector slots are reclaimed by compaction)"
    ]


def _one(tx: Transaction, entry_id: int) -> tuple[EntryRow, StoredRow]:
    found = tx.archive.entry(entry_id)
    if found is None:
        raise ArchiveNotFoundError(
            f"no archive entry has id {entry_id} (never archived, or restored already)"
        )
    return found


def _entry(row: EntryRow) -> ArchiveEntry:
    # The store's row has the model's fields, in order; they were validated on the way in.
    return ArchiveEntry.model_construct(**row._asdict())
