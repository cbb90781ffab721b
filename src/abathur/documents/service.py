"""``DocumentService``: the rules of ``ab.documents`` (sync, forget, search, watch)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import structlog

from abathur import audit
from abathur.analytics import CallRecorder, recorded
from abathur.documents.globs import check_patterns, glob_reach, glob_regex
from abathur.documents.paths import check_prefix, check_root, check_utf8_root
from abathur.documents.search import (
    VEC_TABLE,
    ChunkIndexing,
    keyword_ranking,
    pending_chunk_jobs,
    pending_chunks,
    relevance,
    search_mode,
    vector_filter,
)
from abathur.documents.walk import Examined, examine_batch, walk_root
from abathur.documents.watch import DocumentWatch
from abathur.documents.writes import Tally, remove_document, write_document
from abathur.errors import ClosedError, EmbedderError, InvalidInputError, NotFoundError
from abathur.models import DocumentHit, DocumentSearchResult, SearchMode, SyncReport
from abathur.search import check_search_args, outcome, query_vector, rank
from abathur.stores import Backend, Transaction
from abathur.values import check_int

if TYPE_CHECKING:
    from abathur.embeddings.queue import EmbeddingService

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_PATTERNS",
    "MAX_FILE_BYTES_LIMIT",
    "DocumentService",
]

log = structlog.get_logger(__name__)

DEFAULT_PATTERNS: tuple[str, ...] = ("**/*.md",)
DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_FILE_BYTES_LIMIT = 1024 * 1024 * 1024

# Files per write transaction, and chunks: each transaction stays short.
_BATCH_FILES = 32
_BATCH_CHUNKS = 512
_BATCH_REMOVALS = 64


class DocumentService:
    """Directories of markdown files, chunked, indexed and searchable: ``ab.documents``.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         (pathlib.Path(tmp) / "a.md").write_text("# A\\n\\nalpha\\n")
        ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
        ...             return (await ab.documents.sync(tmp)).added
        >>> asyncio.run(demo())
        ['a.md']
    """

    def __init__(
        self,
        db: Backend,
        embeddings: EmbeddingService | None = None,
        *,
        recorder: CallRecorder | None = None,
    ) -> None:
        self._db = db
        self.recorder = recorder  # times each public call (analytics.recorded)
        self._embeddings = embeddings
        self._lock = asyncio.Lock()
        self._watches: set[DocumentWatch] = set()
        # The database's own files: never synced, and never a reason to sync. A
        # PostgreSQL server (issue 14) has none under any synced root.
        db_file = db.settings.db_file
        path = os.path.realpath(db_file) if db_file is not None else None
        self._own_files = frozenset(
            path + suffix for suffix in ("", "-wal", "-shm", "-journal") if path is not None
        )

    @recorded("documents.sync")
    async def sync(
        self,
        root: str | os.PathLike[str],
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        *,
        exclude: Sequence[str] | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        progress: Callable[[int, int], object] | None = None,
    ) -> SyncReport:
        """Make the index of ``root`` match the files the patterns select under it.

        Files are compared with what the last sync stored: unchanged ones
        (same size and mtime, or the same sha256) are not chunked again; new
        and changed ones are chunked (:func:`chunk_markdown`) and only their
        new chunks are embedded (queued for the worker, or taken from the
        embedding cache); files deleted, renamed or no longer matched lose
        their chunks. Bad files are reported in ``failed``, never raised:
        binary (a NUL byte), unreadable, invalid UTF-8, over
        ``max_file_bytes``, not a regular file, a broken symlink, a symlink
        loop or a symlink to a file outside the root, a file or directory
        whose name is not UTF-8 (reported with such bytes as ``\\xff``; a
        path must be UTF-8 text to be stored). Symlinked directories are not
        entered. A directory that cannot be listed is reported too,
        and the files known under it are kept. The work is written in small
        transactions, so readers and other writers are never held up for long.

        Args:
            root: the directory to sync. Its resolved path identifies it: a
                later sync of the same directory updates the same documents.
            patterns: globs relative to ``root`` (``**`` spans directories,
                ``*`` stays within one); default ``["**/*.md"]``.
            exclude: globs of files (or directories, pruned whole) to leave out.
            max_file_bytes: larger files are reported in ``failed`` (default 2 MiB).
            progress: called as ``progress(files_done, files_total)`` as the
                sync goes (from the event loop; its result is ignored).

        Returns:
            A :class:`~abathur.models.SyncReport`.

        Raises:
            NotFoundError: ``root`` does not exist.
            InvalidInputError: ``root`` is not a directory or its path is not
                UTF-8, a glob is blank,
                absolute or has a ``..`` segment, ``patterns`` is not a list,
                or ``max_file_bytes`` is out of range.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         root = pathlib.Path(tmp) / "docs"
            ...         (root / "ops").mkdir(parents=True)
            ...         (root / "ops" / "restore.md").write_text("# Restore\\n\\nVerify first.\\n")
            ...         (root / "blob.md").write_bytes(b"\\x00\\x01")
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             report = await ab.documents.sync(root, ["**/*.md"])
            ...             (root / "ops" / "restore.md").unlink()
            ...             again = await ab.documents.sync(root, ["**/*.md"])
            ...             return report.added, report.failed[0].reason, again.removed
            >>> asyncio.run(demo())
            (['ops/restore.md'], 'binary file (NUL byte at offset 0)', ['ops/restore.md'])
        """
        started = time.perf_counter()
        resolved = check_root(root)
        patterns = check_patterns(patterns, "patterns", allow_empty=False)
        excluded = check_patterns(exclude or (), "exclude", allow_empty=True)
        max_bytes = check_int(
            max_file_bytes, "max_file_bytes", minimum=1, maximum=MAX_FILE_BYTES_LIMIT
        )
        if progress is not None and not callable(progress):
            raise InvalidInputError(f"progress must be callable, got {type(progress).__name__}")
        if self._db.is_closed:
            raise ClosedError(f"database {str(self._db.settings.db)!r} is closed")
        root_text = str(resolved)
        async with self._lock:
            root_id = await self._root_id(root_text)
            known = await self._db.read(
                lambda tx: {known.path: known for known in tx.documents.documents_of_root(root_id)}
            )
            walk = await asyncio.to_thread(
                walk_root,
                root_text,
                [glob_regex(p) for p in patterns],
                [glob_reach(p) for p in patterns],
                [glob_regex(p) for p in excluded],
                self._own_files,
            )
            tally = Tally(failed=list(walk.failed))
            total = len(walk.files)
            done = 0
            if progress is not None:
                progress(0, total)
            pending: list[Examined] = []
            for batch in _batched(walk.files, _BATCH_FILES):
                examined = await asyncio.to_thread(
                    examine_batch, root_text, batch, known, max_bytes
                )
                for item in examined:
                    if item.outcome == "unchanged":
                        tally.unchanged += 1
                    else:
                        pending.append(item)
                if len(pending) >= _BATCH_FILES or sum(len(e.chunks) for e in pending) >= (
                    _BATCH_CHUNKS
                ):
                    tally.add(await self._write(root_id, root_text, pending))
                    pending = []
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if pending:
                tally.add(await self._write(root_id, root_text, pending))
            seen = set(walk.files)
            gone = [
                path
                for path in sorted(known)
                if path not in seen and not _under_any(path, walk.unlisted)
            ]
            for batch in _batched(gone, _BATCH_REMOVALS):
                tally.add(await self._remove(root_id, root_text, batch))
        if tally.queued and self._embeddings is not None:
            self._embeddings.notify()
        report = tally.report(root_text, started)
        log.info(
            "documents.synced",
            root=root_text,
            added=len(report.added),
            changed=len(report.changed),
            removed=len(report.removed),
            unchanged=report.unchanged,
            failed=len(report.failed),
            queued=report.embeddings_queued,
            seconds=report.seconds,
        )
        return report

    @recorded("documents.forget")
    async def forget(self, root: str | os.PathLike[str]) -> SyncReport:
        """Take a synced directory out of the index: its documents, chunks, vectors and root.

        Nothing on disk is read or touched, so the directory may be gone
        already. Every document of the root is removed as :meth:`sync`
        removes a deleted file (its chunks, their keyword rows, their vectors
        and pending embedding jobs), in the same small transactions; the last
        one deletes the root itself, with an audit record
        (``documents.forget``). Interrupted, it can simply be run again.
        Memories and the embedding cache are not affected.

        Args:
            root: the directory as it was synced (resolved the same way).

        Returns:
            A :class:`~abathur.models.SyncReport` with the documents in
            ``removed`` and their chunks in ``chunks_removed``.

        Raises:
            InvalidInputError: ``root`` is not a usable path.
            NotFoundError: no sync ever recorded this directory.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         docs = pathlib.Path(tmp) / "docs"
            ...         docs.mkdir()
            ...         (docs / "tea.md").write_text("# Tea\\n\\nSteep green tea for 2 minutes.\\n")
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             await ab.documents.sync(docs)
            ...             gone = await ab.documents.forget(docs)
            ...             found = await ab.documents.search("green tea", mode="keyword")
            ...             return gone.removed, gone.chunks_removed, found.hits
            >>> asyncio.run(demo())
            (['tea.md'], 1, [])
        """
        started = time.perf_counter()
        root_text = str(check_root(root, must_exist=False))
        if self._db.is_closed:
            raise ClosedError(f"database {str(self._db.settings.db)!r} is closed")
        async with self._lock:
            found = await self._db.read(lambda tx: tx.documents.root_id(root_text))
            if found is None:
                raise NotFoundError(
                    f"root {root_text!r} was never synced into this database (nothing to forget)"
                )
            root_id = found
            paths = await self._db.read(
                lambda tx: sorted(known.path for known in tx.documents.documents_of_root(root_id))
            )
            tally = Tally()
            for batch in _batched(paths, _BATCH_REMOVALS):
                tally.add(await self._remove(root_id, root_text, batch))

            def write(tx: Transaction) -> None:
                if tx.documents.forget_root(root_id):
                    counts = {"documents": len(paths), "chunks_removed": tally.chunks_removed}
                    audit.append(
                        tx,
                        "documents.forget",
                        "document_root",
                        root_text,
                        counts,
                        at=time.time(),
                    )

            await self._db.write(write)
        report = tally.report(root_text, started)
        log.info(
            "documents.forgot",
            root=root_text,
            removed=len(report.removed),
            chunks_removed=report.chunks_removed,
            seconds=report.seconds,
        )
        return report

    async def _root_id(self, root: str) -> int:
        found = await self._db.read(lambda tx: tx.documents.root_id(root))
        if found is not None:
            return found

        def write(tx: Transaction) -> int:
            found = tx.documents.root_id(root)
            if found is not None:
                return found
            now = time.time()
            root_id = tx.documents.insert_root(root, created_at=now)
            audit.append(
                tx,
                "documents.add_root",
                "document_root",
                root,
                {},
                at=now,
            )
            return root_id

        return await self._db.write(write)

    def _configured(self) -> bool:
        return self._embeddings is not None and self._embeddings.is_configured

    async def _write(self, root_id: int, root: str, items: list[Examined]) -> Tally:
        configured = self._configured()
        held = self._embeddings is not None and self._embeddings.is_probe

        def write(tx: Transaction) -> Tally:
            now = time.time()
            tally = Tally()
            index = ChunkIndexing(tx, configured=configured, held=held)
            wrote = False
            for item in items:
                wrote = write_document(tx, index, tally, root_id, item, now) or wrote
            if wrote:
                tx.documents.mark_root_synced(root_id, at=now)
                _audit_sync(tx, root, tally, now)
            return tally

        return await self._db.write(write)

    async def _remove(self, root_id: int, root: str, paths: list[str]) -> Tally:
        configured = self._configured()

        def write(tx: Transaction) -> Tally:
            now = time.time()
            tally = Tally()
            index = ChunkIndexing(tx, configured=configured)
            wrote = False
            for path in paths:
                wrote = remove_document(tx, index, tally, root_id, path) or wrote
            if wrote:
                tx.documents.mark_root_synced(root_id, at=now)
                _audit_sync(tx, root, tally, now)
            return tally

        return await self._db.write(write)

    @recorded("documents.search")
    async def search(
        self,
        query: str,
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        path_prefix: str | None = None,
        root: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        fresh: bool = False,
    ) -> DocumentSearchResult:
        """Find the document chunks that best match ``query``.

        Modes as for :meth:`MemoryService.search`: ``"keyword"`` (FTS5 BM25
        over headings and text, headings weighing double), ``"vector"``
        (cosine similarity of embeddings) or ``"hybrid"`` (reciprocal rank
        fusion of both). Filters apply before ranking. When the query cannot
        be embedded, vector and hybrid fall back to keyword and the result
        says so (``mode``, ``is_degraded``, ``degraded_reason``). Chunks
        written a moment ago are found by keyword at once and by vector once
        embedded (``await ab.embeddings.drain()`` waits for that, and
        ``result.pending`` counts the chunks in scope still waiting). With
        ``fresh=True`` (vector and hybrid) the chunks of ``root`` (of every
        root when none is given) still waiting are embedded inline first, as
        :meth:`MemoryService.search` does.

        ``min_score`` keeps, of the ``k`` best chunks, those whose
        ``relevance`` is at least that much: the cosine similarity to the
        query in vector and hybrid mode, the share of the query's words in
        the heading and text in keyword mode, as for
        :meth:`MemoryService.search`. No floor by default.

        Args:
            query: what to look for, in words (never FTS syntax).
            k: at most this many hits (1..1000).
            mode: ``"hybrid"`` (default), ``"keyword"`` or ``"vector"``.
            path_prefix: only documents at or under this relative path, whole
                segments (``"runbooks"`` covers ``runbooks/a.md``, not
                ``runbooks-old/a.md``).
            root: only documents of this synced directory (none match if it
                was never synced).
            min_score: the relevance floor, a number in [-1, 1]; ``None``
                (default): none.
            fresh: embed the waiting chunks in scope before searching.

        Returns:
            A :class:`~abathur.models.DocumentSearchResult`, hits best first;
            it iterates over its hits.

        Raises:
            InvalidInputError: the query is not a string, is blank or longer
                than 8192 characters; the mode is unknown; k is out of range;
                min_score is not a number in [-1, 1]; fresh is not a bool;
                or the path prefix or root is not a usable path.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         root = pathlib.Path(tmp)
            ...         (root / "restore.md").write_text(
            ...             "# Restore\\n\\nVerify the copy, stop writers, then swap the file.\\n")
            ...         (root / "tea.md").write_text("# Tea\\n\\nSteep green tea for 2 minutes.\\n")
            ...         async with Abathur.open(root / "d.db", embed_worker=False) as ab:
            ...             await ab.documents.sync(root)
            ...             await ab.embeddings.drain()
            ...             found = await ab.documents.search("bring the database back", k=1)
            ...             return found.mode, [(hit.path, hit.heading) for hit in found.hits]
            >>> asyncio.run(demo())
            ('hybrid', [('restore.md', 'Restore')])
        """
        args = check_search_args(query, k=k, mode=mode, min_score=min_score, fresh=fresh)
        prefix = check_prefix(path_prefix)
        floor = args.floor
        root_text: str | None = None
        if root is not None:
            if not isinstance(root, str | os.PathLike):
                raise InvalidInputError(f"root must be a path, got {type(root).__name__}")
            raw = os.fspath(root)
            if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
                raise InvalidInputError(f"root {raw!r} is not a usable path")
            check_utf8_root(raw)
            root_text = os.path.realpath(raw)

        vector, reason = await query_vector(
            args,
            self._embeddings,
            owner="document service",
            embed_scope=lambda embeddings: self._embed_scope(embeddings, root_text),
        )
        settings = self._db.settings
        embedder = None if self._embeddings is None else self._embeddings.embedder
        model = None if embedder is None else embedder.name

        def read(tx: Transaction) -> tuple[SearchMode, str | None, int, list[DocumentHit]]:
            used, why = search_mode(tx, args.mode, vector, reason)
            root_id: int | None = None
            if root_text is not None:
                root_id = tx.documents.root_id(root_text)
                if root_id is None:
                    return used, why, 0, []
            pending = 0
            if args.mode != "keyword" and tx.documents.is_ready():
                pending = pending_chunks(tx, root_id)
            ranked, cosine = rank(
                tx,
                used,
                k=k,
                keyword=lambda depth: keyword_ranking(tx, query, root_id, prefix, depth),
                vector=vector,
                vec_table=VEC_TABLE,
                where=lambda: vector_filter(tx, root_id=root_id, prefix=prefix, now=time.time()),
                oversample=settings.search_oversample,
                rrf_k=settings.search_rrf_k,
            )
            by_id = {hit.id: hit for hit in tx.documents.chunk_hits([item for item, _ in ranked])}
            # A chunk removed since it was indexed (a pending vector delete) is left out.
            found = [(by_id[item], score) for item, score in ranked if item in by_id]
            relevances = relevance(tx, used, query, vector, model, [h for h, _ in found], cosine)
            hits = []
            for (hit, score), rel in zip(found, relevances, strict=True):
                if floor is not None and rel < floor:
                    continue
                hits.append(
                    DocumentHit.model_construct(
                        root=hit.root,
                        path=hit.path,
                        heading=hit.heading,
                        text=hit.text,
                        ordinal=hit.ordinal,
                        score=float(score),
                        relevance=rel,
                    )
                )
            return used, why, pending, hits

        used, why, pending, hits = await self._db.read(read)
        return DocumentSearchResult.model_construct(
            **outcome(args, used, why), pending=pending, hits=hits
        )

    async def _embed_scope(self, embeddings: EmbeddingService, root_text: str | None) -> None:
        """Embed, inline, the chunks of a root (or all) still waiting (``fresh=True``).

        An embedder that fails leaves them waiting: the search then runs on
        what is embedded and ``pending`` says how many it could not see.
        """

        def root_of(tx: Transaction) -> int | Literal[False] | None:
            if not tx.documents.is_ready():
                return False
            if root_text is None:
                return None
            found = tx.documents.root_id(root_text)
            return False if found is None else found

        root_id = await self._db.read(root_of)
        if root_id is False:
            return  # nothing synced there: nothing waits
        try:
            await embeddings.embed_now(pending_chunk_jobs(root_id))
        except EmbedderError as exc:
            log.warning("documents.fresh_failed", error=exc.message)

    @recorded("documents.watch")
    async def watch(
        self,
        root: str | os.PathLike[str],
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        *,
        exclude: Sequence[str] | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        debounce_ms: int = 500,
    ) -> DocumentWatch:
        """Sync ``root`` now, then again whenever its files change, in the background.

        Changes are seen with watchfiles (inotify, FSEvents...) and grouped:
        a sync starts once no new change has come for ``debounce_ms`` (or
        after at most that long). Errors are logged and kept on the handle
        (``last_error``); the watch goes on. Closing the database stops it.

        Args:
            root: as for :meth:`sync`.
            patterns: as for :meth:`sync`.
            exclude: as for :meth:`sync`.
            max_file_bytes: as for :meth:`sync`.
            debounce_ms: how long changes are gathered into one sync (1..60000).

        Returns:
            A running :class:`DocumentWatch`; ``await watch.stop()`` ends it.

        Raises:
            NotFoundError, InvalidInputError: as for :meth:`sync`, or
                ``debounce_ms`` is out of range.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             watch = await ab.documents.watch(tmp, debounce_ms=50)
            ...             (pathlib.Path(tmp) / "new.md").write_text("# New\\n\\nhello\\n")
            ...             for _ in range(200):
            ...                 if watch.last_report and watch.last_report.added:
            ...                     break
            ...                 await asyncio.sleep(0.05)
            ...             await watch.stop()
            ...             return watch.last_report.added
            >>> asyncio.run(demo())
            ['new.md']
        """
        resolved = check_root(root)
        checked = check_patterns(patterns, "patterns", allow_empty=False)
        excluded = check_patterns(exclude or (), "exclude", allow_empty=True)
        max_bytes = check_int(
            max_file_bytes, "max_file_bytes", minimum=1, maximum=MAX_FILE_BYTES_LIMIT
        )
        debounce = check_int(debounce_ms, "debounce_ms", minimum=1, maximum=60_000)
        report = await self.sync(resolved, checked, exclude=excluded, max_file_bytes=max_bytes)
        handle = DocumentWatch(
            self.sync,
            resolved,
            checked,
            excluded,
            max_bytes,
            debounce,
            report,
            own_files=self._own_files,
            on_stop=self._watches.discard,
        )
        self._watches.add(handle)
        return handle

    async def close(self) -> None:
        """Stop every watch of this service; :meth:`Abathur.close` calls it. Idempotent.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         ab = await Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none")
            ...         watch = await ab.documents.watch(tmp)
            ...         await ab.close()
            ...         return watch.is_running
            >>> asyncio.run(demo())
            False
        """
        for handle in list(self._watches):
            await handle.stop()


def _batched(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _under_any(path: str, directories: Sequence[str]) -> bool:
    return any(d == "." or path.startswith(d + "/") for d in directories)


def _audit_sync(tx: Transaction, root: str, tally: Tally, now: float) -> None:
    audit.append(
        tx,
        "documents.sync",
        "document_root",
        root,
        tally.counts(),
        at=now,
    )
