"""``Abathur``: opens the database and wires the services together."""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from abathur import audit, memory
from abathur.analytics import AnalyticsService
from abathur.archival import ArchivalService
from abathur.audit import AuditLog
from abathur.backends import open_backend
from abathur.backends.sqlite import Database, Versions
from abathur.backends.sqlite.archive import reclaim_space
from abathur.config import PostgresUrl, Settings, is_postgres_url, load_settings
from abathur.costs import CostService
from abathur.documents import CHUNK_KIND, DocumentService
from abathur.embeddings.base import Embedder
from abathur.embeddings.queue import EmbeddingService, UsageBuffer
from abathur.errors import InvalidInputError
from abathur.memory import MEMORY_KIND, MemoryService
from abathur.sessions import SessionService
from abathur.tasks import TaskService
from abathur.transfer import TransferService

if TYPE_CHECKING:
    # Only for types: psycopg loads when a PostgreSQL URL is opened (the
    # postgres extra), never on `import abathur`.
    from abathur.backends.postgres.connection import PgVersions
    from abathur.backends.postgres.database import PgDatabase

__all__ = ["Abathur", "sqlite_database"]


class Abathur:
    """Durable agent memory in one SQLite file.

    Open it as an async context manager, or await it and close it yourself.

    Attributes:
        sessions: :class:`~abathur.sessions.SessionService`.
        memory: :class:`~abathur.memory.MemoryService` (``search`` included).
        tasks: :class:`~abathur.tasks.TaskService`.
        audit: :class:`~abathur.audit.AuditLog`.
        documents: :class:`~abathur.documents.DocumentService`: directories of
            markdown kept in sync (``sync``, ``watch``, ``search``).
        embeddings: :class:`~abathur.embeddings.queue.EmbeddingService`: the
            embedding queue and its worker (``drain``, ``status``, ``reindex``,
            ``compact``).
        archival: :class:`~abathur.archival.ArchivalService`: cold data moved
            to compressed archive rows and back (``run``, ``list``, ``show``,
            ``restore``).
        costs: :class:`~abathur.costs.CostService`: prices, budgets and the
            cost report (``report``, ``budgets``).
        analytics: :class:`~abathur.analytics.AnalyticsService`: counts,
            growth, sizes and call latencies (``stats``).
        transfer: :class:`~abathur.transfer.TransferService`: export to and
            import from versioned JSON Lines (``export_to``, ``import_from``).
        is_probe: opened with ``probe=True`` (see :meth:`open`).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur, Event
        >>> async def demo():
        ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "agent.db") as ab:
        ...         s = await ab.sessions.create(app="helpdesk", user="alice")
        ...         s = await ab.sessions.append_event(
        ...             s.id, Event(author="user", content={"text": "hi"}),
        ...             expected_revision=s.revision)
        ...         await ab.memory.put("user:alice:preferences", "language", {"value": "French"})
        ...         m = await ab.memory.get("user:alice:preferences", "language")
        ...         return s.revision, m.value
        >>> asyncio.run(demo())
        (1, {'value': 'French'})
    """

    def __init__(
        self,
        db: Database | PgDatabase,
        embedder: Embedder | None = None,
        *,
        probe: bool = False,
    ) -> None:
        self.db = db
        self.settings = db.settings
        self.is_probe = probe
        # Issue 4. Every public method of the services below is timed in
        # memory by the analytics service's recorder, which flushes once a minute.
        self.analytics = AnalyticsService(db)
        recorder = self.analytics.recorder
        # Usage rows made outside a write (search queries, cache hits,
        # context), shared by the two services below. A probe's keeps none:
        # its calls are not the application's, no budget counters either.
        usage = UsageBuffer(probe=probe)
        self.costs = CostService(db, usage, None if probe else recorder)
        # The embedding pipeline asks the cost service (its budget gate)
        # before each call.
        self.embeddings = EmbeddingService(
            db, embedder, [MEMORY_KIND, CHUNK_KIND], budget=self.costs, usage=usage, probe=probe
        )
        # The services' public calls are timed into the recorder
        # (analytics.recorded), except a probe's.
        calls = None if probe else recorder
        self.documents = DocumentService(db, self.embeddings, recorder=calls)
        self.sessions = SessionService(db, recorder=calls)
        self.memory = MemoryService(db, self.embeddings, costs=self.costs, recorder=calls)
        self.tasks = TaskService(db, recorder=calls)
        self.audit = AuditLog(db)
        self.archival = ArchivalService(
            db,
            self.embeddings,
            # Giving a file's pages back (VACUUM) is SQLite's; a server reclaims
            # its own space (autovacuum), so PostgreSQL gets none (issue 14).
            reclaim_space=(
                partial(reclaim_space, db.path, db.settings) if isinstance(db, Database) else None
            ),
        )
        self.transfer = TransferService(db, self.embeddings)

    @classmethod
    def open(
        cls,
        path: str | Path | PostgresUrl | None = None,
        *,
        settings: Settings | None = None,
        embedder: Embedder | str | None = None,
        reindex: bool = False,
        probe: bool = False,
        **overrides: Any,
    ) -> _Opening:
        """Open (creating and migrating if needed) the database at ``path``.

        With an embedder, a background worker embeds what writes queue
        (``Settings.embed_worker``); ``ab.embeddings`` drains and reports it.

        Args:
            path: the database file, or a ``postgresql://`` URL (a PostgreSQL
                server, with the ``postgres`` extra); default ``$ABATHUR_DB``
                or ``./abathur.db``.
            settings: a full :class:`~abathur.config.Settings`; ``overrides``
                (e.g. ``synchronous="FULL"``) are applied on top of it.
            embedder: an :class:`~abathur.embeddings.Embedder` instance to use,
                or a ``Settings.embedder`` name (``"bundled"``, ``"ollama"``,
                ``"openai"``, ``"none"``); default: built from the settings.
            reindex: if the file's vectors come from another embedder, switch
                to this one (drop them and queue every item to be re-embedded)
                instead of raising :class:`~abathur.errors.EmbedderMismatchError`.
            probe: open as a probe that must leave the operator's numbers as
                they were (``abathur smoke``): its service calls are not timed
                into the ``metrics`` table nor counted as namespace reads and
                writes (``stats``); its embedder calls write no ``usage_ledger``
                rows and are not gated by budgets (``cost``); the embedding
                jobs its writes queue are held for its own
                ``embeddings.drain()`` (which embeds only held jobs), so no
                other process's worker embeds and bills them; and it leaves
                other writers' pending vector deletes to their workers. What it
                writes is still audited; erase it with ``memory.purge`` and
                ``sessions.purge`` (as the smoke run does).

        Raises:
            InvalidInputError: a setting, the embedder or reindex is invalid.
            IncompatibleEnvironmentError: SQLite < 3.51.3 or no sqlite-vec.
            SchemaError: the file is newer than this abathur.
            EmbedderMismatchError: the file was embedded with another embedder
                (name or dims) and ``reindex`` is false.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "agent.db"
            ...         async with Abathur.open(path, embedder="none") as ab:
            ...             return ab.embeddings.embedder, ab.settings.embedder
            >>> asyncio.run(demo())
            (None, 'none')
        """
        return _Opening(cls, path, settings, overrides, embedder, reindex, probe)

    @property
    def path(self) -> Path:
        """The database file.

        Raises:
            InvalidInputError: the database is a PostgreSQL server (no file).
        """
        return self.settings.require_db_file("Abathur.path")

    @property
    def versions(self) -> Versions | PgVersions:
        """SQLite, sqlite-vec, apsw and aiosqlite versions in use.

        On PostgreSQL: the server's, pgvector's, psycopg's and psycopg_pool's.
        """
        return self.db.versions

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self.db.is_closed

    async def close(self) -> None:
        """Stop the embedding worker, let queued writes finish, close every connection.

        Idempotent.
        """
        await self.analytics.close()
        await self.documents.close()
        await self.embeddings.close()
        await self.db.close()

    async def __aenter__(self) -> Abathur:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def sqlite_database(ab: Abathur, feature: str) -> Database:
    """``ab``'s SQLite :class:`Database`, for a ``feature`` that works on a file only.

    The operations kit's file-level tools (``smoke``'s pragma and plan checks,
    ``info``'s page counts...) read SQLite's own machinery; on a PostgreSQL
    server (issue 14) they are not available yet.

    Raises:
        InvalidInputError: ``ab`` is open on a PostgreSQL server; the message
            names ``feature``.
    """
    if isinstance(ab.db, Database):
        return ab.db
    raise InvalidInputError(
        f"{feature} works on a SQLite database file; {ab.settings.db} is a PostgreSQL "
        "server, where it is not available yet (issue 14)"
    )


class _Opening:
    """What :meth:`Abathur.open` returns: awaitable, and an async context manager."""

    def __init__(
        self,
        cls: type[Abathur],
        path: str | Path | PostgresUrl | None,
        settings: Settings | None,
        overrides: dict[str, Any],
        embedder: Embedder | str | None = None,
        reindex: bool = False,
        probe: bool = False,
    ) -> None:
        self._cls, self._path, self._settings, self._overrides = cls, path, settings, overrides
        self._embedder, self._reindex, self._probe = embedder, reindex, probe
        self._opened: Abathur | None = None

    async def _open(self) -> Abathur:
        overrides = self._overrides
        embedder = self._embedder
        if isinstance(embedder, str):
            overrides, embedder = {**overrides, "embedder": embedder}, None
        elif embedder is not None and not isinstance(embedder, Embedder):
            raise InvalidInputError(
                f"embedder must be an Embedder (name, provider, model, dims, embed, "
                f"embed_with_usage) or a Settings.embedder name, got {type(embedder).__name__}"
            )
        if not isinstance(self._reindex, bool):
            raise InvalidInputError(f"reindex must be a bool, got {type(self._reindex).__name__}")
        if not isinstance(self._probe, bool):
            raise InvalidInputError(f"probe must be a bool, got {type(self._probe).__name__}")
        settings = _resolve_settings(self._path, self._settings, overrides)
        if embedder is None:
            embedder = _embedder_from(settings)
        # open_backend picks the backend from settings.db (a file: SQLite, as
        # before; a postgresql:// URL: PostgreSQL). Both concrete classes have
        # what Abathur uses beyond the Backend protocol (versions, schema_version).
        db = cast("Database | PgDatabase", await open_backend(settings))
        ab = self._cls(db, embedder, probe=self._probe)
        try:
            # A file left unmigrated (auto_migrate=False, e.g. `abathur info`)
            # has no search tables yet: nothing to index or embed.
            if await db.read(audit.needs_upgrade):
                await db.write(audit.upgrade)
            search_schema = _SEARCH_SCHEMA if isinstance(db, Database) else _PG_SEARCH_SCHEMA
            if await db.schema_version() >= search_schema:
                await memory.build_keyword_index(db)
                await ab.embeddings.start(reindex=self._reindex)
        except BaseException:
            await ab.close()
            raise
        return ab

    def __await__(self) -> Generator[Any, None, Abathur]:
        return self._open().__await__()

    async def __aenter__(self) -> Abathur:
        self._opened = await self._open()
        return self._opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            await self._opened.close()


# Migration 003 adds memories_fts, embedding_queue and the rest of issue 3's tables.
_SEARCH_SCHEMA = 3
# On PostgreSQL: 020 (memories_fts) and 030 (embedding_queue, documents).
_PG_SEARCH_SCHEMA = 30


def _embedder_from(settings: Settings) -> Embedder | None:
    # Imported here: the providers pull in onnxruntime / httpx, which a process
    # that never embeds need not load.
    if settings.embedder == "bundled":
        from abathur.embeddings.bundled import BundledEmbedder

        return BundledEmbedder()
    if settings.embedder == "ollama":
        from abathur.embeddings.ollama import OllamaEmbedder

        return OllamaEmbedder.from_settings(settings)
    if settings.embedder == "openai":
        from abathur.embeddings.openai_compat import OpenAICompatEmbedder

        return OpenAICompatEmbedder.from_settings(settings)
    return None


def _resolve_settings(
    path: str | Path | PostgresUrl | None, settings: Settings | None, overrides: dict[str, Any]
) -> Settings:
    if path is not None:
        # A URL stays text (Settings makes it a PostgresUrl): Path() would
        # collapse its "//".
        db = path if isinstance(path, PostgresUrl) or is_postgres_url(path) else Path(path)
        overrides = {**overrides, "db": db}
    if settings is not None and not overrides:
        return settings
    base = settings.model_dump() if settings is not None else {}
    # Re-validate rather than model_copy(update=...), which would skip validation.
    return load_settings(**{**base, **overrides})
