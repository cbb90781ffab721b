"""The :class:`Database`: one writer connection and a pool of read-only readers.

Each connection is an apsw connection owned by its own aiosqlite worker thread
(aiosqlite's connector hook). Services never touch connections directly: they
hand a plain function ``fn(tx) -> T`` to :meth:`Database.write`, which runs
it in ``BEGIN IMMEDIATE`` on the writer thread and rolls back on any error, or
to :meth:`Database.read`, which runs it inside one read transaction (a
consistent snapshot) on a reader. ``tx`` is the connection's
:class:`~abathur.backends.sqlite.transaction.SqliteTransaction`: the stores of
:mod:`abathur.stores`, bound to that connection. Writes from one process queue on the writer
thread; writes from other processes wait on SQLite's busy timeout instead of
failing; readers never block the writer (WAL).
"""

from __future__ import annotations

import asyncio
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import apsw
import structlog

from abathur.backends.sqlite import migrations, vectors
from abathur.backends.sqlite.connection import (
    Versions,
    check_environment,
    connect,
    scalar_int,
    translate_errors,
)
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.transaction import SqliteTransaction
from abathur.config import Settings
from abathur.errors import ClosedError, InvalidInputError
from abathur.values import check_text

__all__ = ["Database", "DatabaseInfo", "MigrationPlan", "check_db_path"]

_PLAIN_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")

T = TypeVar("T")
log = structlog.get_logger(__name__)
_NAME_MAX = 255  # bytes in one file name: ext4, xfs, btrfs, APFS, NTFS (in UTF-16 units)


# SQLite keeps its journal and WAL beside the file under these names.
_SIDE_FILES = ("-journal", "-wal", "-shm")


def check_db_path(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a database file can live there, else raise.

    Refused before anything is created: text that is not valid Unicode, a
    directory, ``:memory:`` or a ``file:`` URI (reader connections must share
    a real file), and a name too long for the file system once SQLite adds
    ``-journal`` to it (the file would be created, then fail to open).

    Raises:
        InvalidInputError: the path is not usable; the message says why.

    Example:
        >>> from abathur.backends.sqlite.database import check_db_path
        >>> check_db_path("agent.db").name
        'agent.db'
        >>> check_db_path("a" * 250 + ".db")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: database path 'aaaa...': its file name is 253 bytes ...
    """
    raw = str(path)
    check_text(raw, "database path")
    shown = repr(raw) if len(raw) <= 80 else repr(raw[:40] + "..." + raw[-20:])
    if raw.strip() in ("", ":memory:") or raw.startswith("file:"):
        raise InvalidInputError(
            f"database path {shown} is not a file path: abathur needs a real file "
            "so its reader connections can share it"
        )
    checked = Path(raw)
    name_bytes = len(os.fsencode(checked.name))
    longest = name_bytes + max(len(s) for s in _SIDE_FILES)
    if longest > _NAME_MAX:
        raise InvalidInputError(
            f"database path {shown}: its file name is {name_bytes} bytes long, too long once "
            f"SQLite adds -journal to it (file names hold at most {_NAME_MAX} bytes)"
        )
    try:
        is_dir = checked.is_dir()
    except OSError as exc:  # a loop of links, a path too long...: no file can be there
        raise InvalidInputError(f"database path {shown} cannot be used: {exc.strerror}") from None
    if is_dir:
        raise InvalidInputError(
            f"database path {shown} is not a file path (a directory): abathur needs a real "
            "file so its reader connections can share it"
        )
    return checked


@dataclass(frozen=True)
class MigrationPlan:
    """What migrating a file would do, read without creating or changing it."""

    path: Path
    exists: bool
    current: int
    latest: int
    pending: tuple[migrations.Migration, ...]

    @property
    def is_current(self) -> bool:
        """True when no migration is pending."""
        return not self.pending


@dataclass(frozen=True)
class DatabaseInfo:
    """Sizes, schema version and row counts of an open database (``abathur info``)."""

    path: Path
    size_bytes: int
    wal_bytes: int
    schema_version: int
    latest_schema_version: int
    page_size: int
    page_count: int
    freelist_count: int
    row_counts: Mapping[str, int]


class _Worker(aiosqlite.Connection):
    """An aiosqlite connection whose thread owns one prepared apsw connection.

    aiosqlite's own methods assume the stdlib sqlite3 API; we only use its
    thread-and-queue machinery, through ``_execute`` (pyproject.toml bounds
    aiosqlite to 0.22.x, and tests/unit/test_db.py exercises this path on every run).
    """

    def __init__(self, connector: Callable[[], apsw.Connection], context: SqliteContext) -> None:
        # aiosqlite types its connector as returning sqlite3.Connection; ours
        # returns apsw's, which only our own functions ever touch.
        super().__init__(connector, 64)  # type: ignore[arg-type]
        self._context = context
        self._transaction: SqliteTransaction | None = None
        # A database nobody closed must not keep the process alive at exit: `adk
        # web` never closes its services, so with non-daemon threads Ctrl+C hung
        # it (issue 7). Committed work is durable already; SQLite rolls back a
        # transaction cut short.
        self._thread.daemon = True

    @classmethod
    async def start(
        cls, connector: Callable[[], apsw.Connection], context: SqliteContext
    ) -> _Worker:
        """A started worker: its thread runs and its connection is open."""
        worker = cls(connector, context)
        await worker  # aiosqlite's __await__: start the thread, then _connect()
        return worker

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on this connection's thread (no transaction)."""
        result = await self._execute(fn, self._conn, *args)  # type: ignore[no-untyped-call]
        return cast(T, result)

    async def transact(
        self,
        txn: Callable[[Callable[[SqliteTransaction], T], apsw.Connection, SqliteTransaction], T],
        fn: Callable[[SqliteTransaction], T],
    ) -> T:
        """Run ``txn(fn, conn, tx)`` (``_write_txn``, ``_read_txn``) on the connection thread."""
        conn = cast(apsw.Connection, self._conn)
        if self._transaction is None:
            self._transaction = SqliteTransaction(conn, self._context)
        result = await self._execute(txn, fn, conn, self._transaction)  # type: ignore[no-untyped-call]
        return cast(T, result)

    async def _connect(self) -> _Worker:
        try:
            await super()._connect()
        except BaseException:
            # On a failed connect aiosqlite queues its thread's stop but does not
            # wait for it; if asyncio.run() then closes the loop first, the thread
            # dies printing "Event loop is closed" (seen on `abathur init --db
            # missing-dir/x.db`). Waiting for the thread makes the error clean.
            await asyncio.to_thread(self._thread.join)
            raise
        return self


def _write_txn(
    fn: Callable[[SqliteTransaction], T], conn: apsw.Connection, tx: SqliteTransaction
) -> T:
    with translate_errors("writing"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(tx)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (e.g. on SQLITE_FULL).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for undo in reversed(tx.undo):
                undo()
            raise
        finally:
            tx.undo.clear()
    return result


def _read_txn(
    fn: Callable[[SqliteTransaction], T], conn: apsw.Connection, tx: SqliteTransaction
) -> T:
    with translate_errors("reading"):
        conn.execute("BEGIN")
        try:
            return fn(tx)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")


class Database:
    """One SQLite file: a writer, a pool of readers, and the schema.

    Use :meth:`open`; close with :meth:`close` (idempotent).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends.sqlite import Database
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
        ...     db = await Database.open(path)
        ...     sql = "SELECT count(*) FROM sessions"
        ...     n = await db.read(lambda tx: tx.conn.execute(sql).fetchall())
        ...     await db.close()
        ...     return n
        >>> asyncio.run(demo())
        [(0,)]
    """

    #: The registry key of this backend (:mod:`abathur.backends`).
    name = "sqlite"

    def __init__(self, path: Path, settings: Settings, versions: Versions) -> None:
        self.path = path
        self._context = SqliteContext(path, settings)
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
        path = check_db_path(path)
        versions = check_environment()
        db = cls(path, settings, versions)
        try:
            db._writer = await _Worker.start(
                partial(connect, path, settings, readonly=False), db._context
            )
            if settings.auto_migrate:
                await db._migrate()
            for _ in range(settings.readers):
                reader = await _Worker.start(
                    partial(connect, path, settings, readonly=True), db._context
                )
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

    async def write(self, fn: Callable[[SqliteTransaction], T]) -> T:
        """Run ``fn(tx)`` in ``BEGIN IMMEDIATE`` on the writer; on error roll back, re-raise."""
        return await self._writer_or_raise().transact(_write_txn, fn)

    async def read(self, fn: Callable[[SqliteTransaction], T]) -> T:
        """Run ``fn(tx)`` inside one read transaction on a pooled read-only connection."""
        if self._closed:
            raise ClosedError(f"database {str(self.path)!r} is closed")
        reader = await self._pool.get()
        try:
            return await reader.transact(_read_txn, fn)
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
        # Readers first, the writer last: the last connection to close
        # checkpoints the WAL and removes the -wal and -shm files. aiosqlite
        # queues close() behind work already submitted, so pending writes
        # commit before the writer goes away.
        workers = [w for w in (*self._readers, self._writer) if w is not None]
        self._writer, self._readers = None, []
        for worker in workers:
            await worker.close()
        # This process's numpy copy of the file's vector chunks goes with it.
        vectors.forget_mirrors(self.path)

    @classmethod
    async def plan_migrations(cls, path: str | Path) -> MigrationPlan:
        """Read the schema version of ``path`` and list the migrations it lacks.

        Never creates, locks or writes the file: a missing file is planned from
        version 0, and a file with no ``-wal`` beside it is read as immutable,
        so not even ``-wal``/``-shm`` files appear.

        Raises:
            InvalidInputError: ``path`` is a directory.
            SchemaError: the file is newer than this abathur.
            DatabaseError: the file exists but is not a readable SQLite database.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.backends.sqlite import Database
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "new.db"
            >>> plan = asyncio.run(Database.plan_migrations(path))
            >>> plan.exists, plan.current, [m.version for m in plan.pending][:2], path.exists()
            (False, 0, [1, 2], False)
        """
        return await asyncio.to_thread(_plan, Path(path))

    async def schema_version(self) -> int:
        """The file's ``PRAGMA user_version``: the last migration applied."""
        return await self.read(lambda tx: migrations.current_version(tx.conn))

    async def info(self) -> DatabaseInfo:
        """File and WAL sizes, schema version, page counts and rows per table.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur.backends.sqlite import Database
            >>> async def demo():
            ...     db = await Database.open(pathlib.Path(tempfile.mkdtemp()) / "x.db")
            ...     try:
            ...         return await db.info()
            ...     finally:
            ...         await db.close()
            >>> info = asyncio.run(demo())
            >>> info.schema_version == info.latest_schema_version, info.row_counts["sessions"]
            (True, 0)
        """

        def gather(tx: SqliteTransaction) -> tuple[int, int, int, int, dict[str, int]]:
            conn = tx.conn
            version = migrations.current_version(conn)
            page_size, page_count, freelist = (
                scalar_int(conn, f"PRAGMA {name}")
                for name in ("page_size", "page_count", "freelist_count")
            )
            # Real tables only: FTS/vec virtual tables and their shadow tables
            # are indexes over these, and counting them would double-count.
            # Names come from the file, so only plain identifiers are counted: no
            # quote or semicolon can reach the SQL (a hand-made table with an odd
            # name is `abathur check`'s finding, not info's business).
            tables = sorted(
                name
                for _schema, name, kind, *_ in conn.execute("PRAGMA main.table_list")
                if kind == "table"
                and not name.startswith("sqlite_")
                and _PLAIN_IDENTIFIER.fullmatch(name)
            )
            counts = {
                t: scalar_int(conn, f'SELECT count(*) FROM "{t}"') for t in tables
            }
            return version, page_size, page_count, freelist, counts

        version, page_size, page_count, freelist, counts = await self.read(gather)
        wal = self.path.with_name(self.path.name + "-wal")
        return DatabaseInfo(
            path=self.path,
            size_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
            schema_version=version,
            latest_schema_version=migrations.available()[-1].version,
            page_size=page_size,
            page_count=page_count,
            freelist_count=freelist,
            row_counts=counts,
        )

    def __del__(self) -> None:
        if not self._closed and self._writer is not None:
            warnings.warn(
                f"abathur database {str(self.path)!r} was never closed; use 'async with "
                "Abathur.open(...)' or 'await ab.close()'",
                ResourceWarning,
                stacklevel=1,
            )


def _plan(path: Path) -> MigrationPlan:
    if path.is_dir():
        raise InvalidInputError(f"database path {str(path)!r} is a directory, not a file")
    latest = migrations.available()[-1].version
    if not path.exists():
        return MigrationPlan(path, False, 0, latest, tuple(migrations.available()))
    if path.with_name(path.name + "-wal").exists():
        # Another connection may be live, or one crashed: committed pages can
        # still sit in the WAL, so read through it (read-only) like any reader.
        target, flags = str(path), apsw.SQLITE_OPEN_READONLY
    else:
        # No WAL: the main file is the whole truth, and immutable=1 reads it
        # without the locks and the -shm/-wal files a normal open would create.
        target = path.resolve().as_uri() + "?immutable=1"
        flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    with translate_errors(f"reading the schema version of {path}"):
        conn = apsw.Connection(target, flags=flags)
        try:
            current = migrations.current_version(conn)
            todo = migrations.pending(conn)
        finally:
            conn.close()
    return MigrationPlan(path, True, current, latest, tuple(todo))


def _backup(conn: apsw.Connection, *, path: Path, from_version: int) -> Path:
    return migrations.backup_copy(conn, path, from_version=from_version)
