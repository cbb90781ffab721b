"""The :class:`Database`: one writer connection and a pool of read-only readers.

Each connection is an apsw connection owned by its own aiosqlite worker thread
(aiosqlite's connector hook). Services never touch connections directly: they
hand a plain function ``fn(conn) -> T`` to :meth:`Database.write`, which runs
it in ``BEGIN IMMEDIATE`` on the writer thread and rolls back on any error, or
to :meth:`Database.read`, which runs it inside one read transaction (a
consistent snapshot) on a reader. Writes from one process queue on the writer
thread; writes from other processes wait on SQLite's busy timeout instead of
failing; readers never block the writer (WAL).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import apsw
import structlog

from abathur.config import Settings
from abathur.db import migrations
from abathur.db.connection import Versions, check_environment, connect, translate_errors
from abathur.errors import ClosedError, InvalidInputError

__all__ = ["Database"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


class _Worker(aiosqlite.Connection):
    """An aiosqlite connection whose thread owns one prepared apsw connection.

    aiosqlite's own methods assume the stdlib sqlite3 API; we only use its
    thread-and-queue machinery, through ``_execute`` (aiosqlite is pinned
    exactly, and tests/unit/test_db.py exercises this path on every run).
    """

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._execute(fn, self._conn, *args)


def _write_txn(fn: Callable[[apsw.Connection], T], conn: apsw.Connection) -> T:
    with translate_errors("writing"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (e.g. on SQLITE_FULL).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return result


def _read_txn(fn: Callable[[apsw.Connection], T], conn: apsw.Connection) -> T:
    with translate_errors("reading"):
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")


class Database:
    """One SQLite file: a writer, a pool of readers, and the schema.

    Use :meth:`open`; close with :meth:`close` (idempotent).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.db import Database
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
        ...     db = await Database.open(path)
        ...     n = await db.read(lambda c: c.execute("SELECT count(*) FROM sessions").fetchall())
        ...     await db.close()
        ...     return n
        >>> asyncio.run(demo())
        [(0,)]
    """

    def __init__(self, path: Path, settings: Settings, versions: Versions) -> None:
        self.path = path
        self.settings = settings
        self.versions = versions
        self._writer: _Worker | None = None
        self._readers: list[_Worker] = []
        self._pool: asyncio.Queue[_Worker] = asyncio.Queue()
        self._closed = False
        self.migrated_from: int | None = None
        self.premigration_backup: Path | None = None

    @classmethod
    async def open(cls, path: str | Path, settings: Settings | None = None) -> Database:
        """Open (creating if needed) and migrate the file at ``path``.

        Raises:
            IncompatibleEnvironmentError: SQLite < 3.51.3 or sqlite-vec not loadable.
            SchemaError: the file is newer than this abathur.
            DatabaseError: the file cannot be opened or migrated.
        """
        settings = settings or Settings()
        path = Path(path)
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise InvalidInputError(
                f"database path {str(path)!r} is not a file path: abathur needs a real file "
                "so its reader connections can share it"
            )
        versions = check_environment()
        db = cls(path, settings, versions)
        try:
            db._writer = await _Worker(partial(connect, path, settings, readonly=False), 64)
            if settings.auto_migrate:
                await db._migrate()
            for _ in range(settings.readers):
                reader = await _Worker(partial(connect, path, settings, readonly=True), 64)
                db._readers.append(reader)
                db._pool.put_nowait(reader)
        except BaseException:
            await db.close()
            raise
        return db

    async def _migrate(self) -> None:
        def plan(conn: apsw.Connection) -> tuple[int, list[migrations.Migration]]:
            with translate_errors("reading the schema version"):
                return migrations.current_version(conn), migrations.pending(conn)

        current, todo = await self._writer_or_raise().run(plan)
        if not todo:
            return
        if current > 0 and self.settings.backup_before_migrate:
            self.premigration_backup = await self._writer_or_raise().run(
                partial(_backup, path=self.path, from_version=current)
            )
        await self._writer_or_raise().run(migrations.apply, todo)
        self.migrated_from = current
        log.info(
            "db.migrated",
            path=str(self.path),
            from_version=current,
            to_version=todo[-1].version,
            backup=str(self.premigration_backup) if self.premigration_backup else None,
        )

    def _writer_or_raise(self) -> _Worker:
        if self._closed or self._writer is None:
            raise ClosedError(f"database {str(self.path)!r} is closed")
        return self._writer

    async def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(conn)`` in ``BEGIN IMMEDIATE`` on the writer; commit, or roll back and re-raise."""
        return await self._writer_or_raise().run(partial(_write_txn, fn))

    async def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one read transaction on a pooled read-only connection."""
        if self._closed:
            raise ClosedError(f"database {str(self.path)!r} is closed")
        reader = await self._pool.get()
        try:
            return await reader.run(partial(_read_txn, fn))
        finally:
            self._pool.put_nowait(reader)

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Finish queued writes, then close every connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        workers = [w for w in (self._writer, *self._readers) if w is not None]
        self._writer, self._readers = None, []
        for worker in workers:
            # aiosqlite queues close() behind work already submitted, so
            # pending writes commit before the writer goes away.
            await worker.close()

    def __del__(self) -> None:
        if not self._closed and self._writer is not None:
            warnings.warn(
                f"abathur database {str(self.path)!r} was never closed; use 'async with "
                "Abathur.open(...)' or 'await ab.close()'",
                ResourceWarning,
                stacklevel=1,
            )


def _backup(conn: apsw.Connection, *, path: Path, from_version: int) -> Path:
    return migrations.backup_copy(conn, path, from_version=from_version)
