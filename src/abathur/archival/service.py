"""``ArchivalService``: ``ab.archival``, a run, the listing, show and restore."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import apsw
import structlog

from abathur import audit, search
from abathur.archival.codecs import Codecs
from abathur.archival.payload import MAX_RAW_BYTES, STORED_COLUMNS, Stored, open_payload
from abathur.archival.restore import restore_memory, restore_session, restore_versions
from abathur.archival.runs import (
    AUTO_VACUUM,
    POLICY_KINDS,
    Batches,
    Tally,
    file_sizes,
    finish_run,
    maintain,
    start_run,
)
from abathur.backends.sqlite import Database
from abathur.errors import ArchiveNotFoundError, InvalidInputError
from abathur.models import (
    ArchivedItem,
    ArchiveEntry,
    ArchiveKind,
    ArchiveRestoreReport,
    ArchiveRunReport,
    CompactReport,
)
from abathur.values import INT64_MAX, check_text, show_number

if TYPE_CHECKING:
    from abathur.embeddings.queue import EmbeddingService

log = structlog.get_logger(__name__)

_MAX_LIST = 10_000

_ENTRY_COLUMNS = (
    "id, kind, ref, policy, app, user, namespace, rows, raw_bytes, stored_bytes, run_id, "
    "archived_at"
)
# archive list: newest first, paged by id. Params: before id, limit.
SQL_ARCHIVE_LIST = f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE id < ? ORDER BY id DESC LIMIT ?"
# archive list --kind K --ref R: index archive_by_ref, whose rowid suffix gives
# the order. Params: kind, ref, before id, limit.
SQL_ARCHIVE_BY_REF = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE kind = ? AND ref = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)
_SQL_ARCHIVE_ONE = f"SELECT {_ENTRY_COLUMNS}, {STORED_COLUMNS} FROM archive WHERE id = ?"
# archive list --kind K: newest first along the primary key, skipping other kinds.
# Params: kind, before id, limit.
SQL_ARCHIVE_BY_KIND = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive NOT INDEXED WHERE kind = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)


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

    def __init__(self, db: Database, embeddings: EmbeddingService | None = None) -> None:
        self._db = db
        self._embeddings = embeddings
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
        size_before, wal_before = file_sizes(self._db.path)
        run_id: int | None = None
        resumed: int | None = None
        if not dry_run:
            run_id, resumed = await self._db.write(start_run)
            if resumed is not None:
                log.warning("archive.resume", run_id=run_id, interrupted_run=resumed)
        tallies = {kind: Tally() for kind in POLICY_KINDS}
        batches = 0
        too_big: list[str] = []
        batches_of = Batches(self._codecs, settings.archive_batch_size)
        phases = ((batches_of.session_batch, (-math.inf, "")), (batches_of.memory_batch, 0))
        for phase, cursor in phases:
            while True:
                fn = partial(
                    phase, cursor=cursor, now=time.time(), policies=policies, run_id=run_id
                )
                batch = await (self._db.read(fn) if dry_run else self._db.write(fn))
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
        auto_vacuum = await self._db.read(
            lambda conn: AUTO_VACUUM.get(
                int(conn.execute("PRAGMA auto_vacuum").fetchall()[0][0]), "none"
            )
        )
        results = [tallies[k].result(k) for k in POLICY_KINDS]
        entries = sum(t.items for t in tallies.values())
        rows = sum(t.rows for t in tallies.values())
        vacuumed = 0
        if run_id is not None:
            compacted = await self._reclaim_vectors()
            detail = {r.policy: r.model_dump(exclude={"policy"}) for r in results}
            await self._db.write(
                partial(finish_run, run_id=run_id, detail=detail, entries=entries, rows=rows)
            )
            # Last, so the checkpoint leaves the WAL empty: nothing is written after it.
            auto_vacuum, vacuumed, note = await asyncio.to_thread(
                maintain, self._db.path, settings, vacuum=vacuum
            )
            if note:
                notes.append(note)
        if auto_vacuum != "incremental":
            notes.append(
                "auto_vacuum is NONE: freed pages are reused by new rows but the file does not "
                "shrink; 'abathur archive run --vacuum' switches it to incremental once"
            )
        free = await self._db.read(
            lambda conn: (
                conn.execute("PRAGMA freelist_count").fetchall()[0][0]
                * conn.execute("PRAGMA page_size").fetchall()[0][0]
            )
        )
        size_after, wal_after = file_sizes(self._db.path)
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
        await self._db.write(lambda conn: search.apply_vector_deletes(conn))
        ratio = self._db.settings.vector_compact_ratio
        stats = await self._db.read(search.vector_table_stats)
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
        _check_int(limit, "limit", 1, _MAX_LIST)
        if before is not None:
            _check_int(before, "before", 1, None)
        below = math.inf if before is None else before
        if kind is None:
            sql, params = SQL_ARCHIVE_LIST, (below, limit)
        elif ref is None:
            sql, params = SQL_ARCHIVE_BY_KIND, (kind, below, limit)
        else:
            sql, params = SQL_ARCHIVE_BY_REF, (kind, ref, below, limit)
        rows = await self._db.read(lambda conn: conn.execute(sql, params).fetchall())
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
        _check_int(entry_id, "archive entry id", 1, None)

        def read(conn: apsw.Connection) -> ArchivedItem:
            row = _one(conn, entry_id)
            tables = open_payload(conn, self._codecs, Stored(*row[12:]))
            return ArchivedItem(
                entry=_entry(row[:12]),
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
        _check_int(entry_id, "archive entry id", 1, None)
        started = time.perf_counter()

        def write(conn: apsw.Connection) -> tuple[ArchiveRestoreReport, bool]:
            row = _one(conn, entry_id)
            entry = _entry(row[:12])
            tables = open_payload(conn, self._codecs, Stored(*row[12:]))
            reindexed, queued = 0, False
            if entry.kind == "session":
                restore_session(conn, tables)
            elif entry.kind == "memory":
                reindexed, queued = restore_memory(conn, tables)
            else:
                restore_versions(conn, tables)
            conn.execute("DELETE FROM archive WHERE id = ?", (entry_id,))
            audit.append(
                conn,
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
            self._embeddings._notify()
        return report


def _chunk_note(conn: apsw.Connection) -> list[str]:
    has = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'chunks'"
    ).fetchall()
    if not has:
        return ["chunks: skipped, this file has no document tables"]
    return [
        "chunks: nothing to archive, documents.sync deletes a vanished file's chunks "
        "with it (their dead vector slots are reclaimed by compaction)"
    ]


def _check_int(value: object, what: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidInputError(f"{what} must be {bound}, got {value}")
    if value > INT64_MAX:  # no id or bound past SQLite's integers can be bound
        raise InvalidInputError(f"{what} must be at most {INT64_MAX}, got {show_number(value)}")


def _one(conn: apsw.Connection, entry_id: int) -> tuple[Any, ...]:
    rows = conn.execute(_SQL_ARCHIVE_ONE, (entry_id,)).fetchall()
    if not rows:
        raise ArchiveNotFoundError(
            f"no archive entry has id {entry_id} (never archived, or restored already)"
        )
    return rows[0]


def _entry(row: Sequence[Any]) -> ArchiveEntry:
    (
        entry_id,
        kind,
        ref,
        policy,
        app,
        user,
        namespace,
        rows,
        raw_bytes,
        stored_bytes,
        run_id,
        archived_at,
    ) = row
    return ArchiveEntry.model_construct(
        id=entry_id,
        kind=kind,
        ref=ref,
        policy=policy,
        app=app,
        user=user,
        namespace=namespace,
        rows=rows,
        raw_bytes=raw_bytes,
        stored_bytes=stored_bytes,
        run_id=run_id,
        archived_at=archived_at,
    )
