"""The SQLite side of the operations kit: read-only snapshots of a live file.

:class:`SqliteOpsKit` implements :class:`abathur.stores.ops.OpsKit`. Each
probe opens its own isolated, connection (never a
:class:`~abathur.backends.sqlite.Database`'s pool, so it runs beside a live
application), reads in one transaction, and closes it; :class:`SqliteLock` is the
exclusive lock a restore holds while it swaps the file.

Example:
    >>> import asyncio, tempfile, pathlib, time
    >>> from abathur import Abathur
    >>> from abathur.backends.sqlite.probes import SqliteOpsKit
    >>> from abathur.config import Settings
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none"):
    ...         pass
    >>> asyncio.run(create())
    >>> from abathur.ops.schema import VECTOR_TABLES
    >>> probe = SqliteOpsKit(VECTOR_TABLES).metrics_probe(path, Settings(), time.time())
    >>> probe.schema_version > 0, probe.rows["memories"], dict(probe.sessions)
    (True, 0, {})
"""

from __future__ import annotations

from pathlib import Path

import apsw

from abathur.backends.sqlite import backup, files, migrations
from abathur.backends.sqlite.connection import scalar_int, translate_errors
from abathur.backends.sqlite.schema import VectorTables, row_counts, table_exists
from abathur.config import Settings
from abathur.errors import DatabaseError, DatabaseInUseError
from abathur.stores.ops import CopyReport, HealthProbe, MetricsProbe, QueueStats

__all__ = ["SqliteLock", "SqliteOpsKit", "queue_stats"]

SQL_QUEUE_COLUMNS = "PRAGMA main.table_xinfo(embedding_queue)"
SQL_QUEUE_DEPTH = "SELECT count(*) FROM main.embedding_queue"
# The first audit record: the audit_log primary key (seq).
SQL_FIRST_WRITE = "SELECT at FROM main.audit_log ORDER BY seq LIMIT 1"
SQL_SCHEMA_READ = "SELECT count(*) FROM main.sqlite_schema"
# Must run before a connection's first read for the lock to be kept (see SqliteLock).
SQL_LOCKING_MODE_EXCLUSIVE = "PRAGMA locking_mode = EXCLUSIVE"
SQL_JOURNAL_MODE_DELETE = "PRAGMA journal_mode = DELETE"
SQL_SESSIONS_BY_STATUS = "SELECT status, count(*) FROM main.sessions GROUP BY status"
SQL_LIVE_MEMORIES_BY_TYPE = (
    "SELECT type, count(*) FROM main.memories WHERE is_current = 1 "
    "AND status = 'live' AND (expires_at IS NULL OR expires_at > ?) "
    "GROUP BY type"
)


def queue_stats(conn: apsw.Connection, now: float) -> QueueStats | None:
    """Depth and oldest age of ``embedding_queue``, or ``None`` when the file has none."""
    if not table_exists(conn, "embedding_queue"):
        return None
    columns = {row[1] for row in conn.execute(SQL_QUEUE_COLUMNS)}
    stamp = next((c for c in ("enqueued_at", "created_at", "queued_at") if c in columns), None)
    if stamp is None:
        return QueueStats(scalar_int(conn, SQL_QUEUE_DEPTH), 0.0)
    # The column name is one of our own constants above.
    depth, oldest = conn.execute(
        f"SELECT count(*), min({stamp}) FROM main.embedding_queue"
    ).fetchall()[0]
    age = max(0.0, now - _number(oldest)) if oldest is not None else 0.0
    return QueueStats(int(_number(depth)), age)


def _number(value: apsw.SQLiteValue) -> float:
    """A numeric column's value; anything else in it is a damaged file."""
    if isinstance(value, int | float):
        return float(value)
    raise DatabaseError(f"expected a number, found {type(value).__name__}")


class SqliteOpsKit:
    """The operations kit's machinery for SQLite files (see the module doc).

    ``vectors`` names the vec0 tables abathur makes at run time, so a copy's
    schema can be compared with the migrations.
    """

    def __init__(self, vectors: VectorTables) -> None:
        self._vectors = vectors

    def copy_online(self, source: Path, target: Path, settings: Settings) -> None:
        """One consistent snapshot of ``source`` in ``target``, by SQLite's online backup API."""
        backup.copy_online(source, target, settings)

    def inspect_copy(self, path: Path, *, what: str) -> CopyReport:
        """Integrity, schema and manifest fields of a copy, read as a hostile file."""
        return backup.inspect_copy(path, what=what, vectors=self._vectors)

    def check_readable(self, path: Path) -> None:
        """Return if a database can be read at ``path``; creates nothing."""
        files.check_readable(path)

    def lock_exclusive(self, path: Path, timeout_ms: int) -> SqliteLock:
        """An exclusive lock on the file, refused while any other connection has it open."""
        return SqliteLock(path, timeout_ms)

    def health_probe(self, path: Path, settings: Settings, now: float) -> HealthProbe:
        """Schema version, first audit record and queue, in one read transaction."""
        conn = files.open_existing(path, settings)
        try:
            with translate_errors(f"reading {path}"):
                conn.execute("BEGIN")
                version = migrations.current_version(conn)
                conn.execute(SQL_SCHEMA_READ).fetchall()
                first_write: float | None = None
                if table_exists(conn, "audit_log"):
                    row = conn.execute(SQL_FIRST_WRITE).fetchall()
                    first_write = _number(row[0][0]) if row else None
                queue = queue_stats(conn, now)
                conn.execute("COMMIT")
        finally:
            conn.close()
        latest = migrations.available()[-1].version
        return HealthProbe(version, latest, first_write, queue)

    def metrics_probe(self, path: Path, settings: Settings, now: float) -> MetricsProbe:
        """Rows per table, sessions, live memories and queue, in one read transaction."""
        conn = files.open_existing(path, settings)
        try:
            with translate_errors(f"reading metrics of {path}"):
                conn.execute("BEGIN")
                try:
                    sessions = {
                        str(status): int(_number(n))
                        for status, n in conn.execute(SQL_SESSIONS_BY_STATUS).fetchall()
                    }
                    memories = {
                        str(kind): int(_number(n))
                        for kind, n in conn.execute(SQL_LIVE_MEMORIES_BY_TYPE, (now,)).fetchall()
                    }
                    return MetricsProbe(
                        schema_version=migrations.current_version(conn),
                        rows=row_counts(conn),
                        sessions=sessions,
                        memories=memories,
                        queue=queue_stats(conn, now),
                    )
                finally:
                    conn.execute("COMMIT")
        finally:
            conn.close()


class SqliteLock:
    """An EXCLUSIVE lock on one file, held by a connection until :meth:`close`.

    Taking the lock changes nothing in the file: ``locking_mode=EXCLUSIVE``
    and ``BEGIN EXCLUSIVE`` only read. In WAL mode every open connection keeps
    a SHARED lock on the database file from its first read until it closes, so
    this is refused exactly when another connection (in this process or
    another) has the file open.
    """

    def __init__(self, target: Path, timeout_ms: int) -> None:
        """Take the lock.

        Raises:
            DatabaseInUseError: another connection has the file open.
            DatabaseError: the file is not a database.
        """
        self._target = target
        try:
            conn = apsw.Connection(str(target), flags=apsw.SQLITE_OPEN_READWRITE)
        except apsw.Error as exc:
            raise DatabaseError(f"cannot open {str(target)!r}: {exc}") from exc
        try:
            conn.set_busy_timeout(timeout_ms)
            # Closing the last connection of a WAL file checkpoints it and deletes
            # the -wal: not while a restore may still be refused. settle() does it.
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            # Must come before the first read: only then does SQLite keep the lock
            # (and use heap memory, not the shared -shm, for the WAL index).
            conn.execute(SQL_LOCKING_MODE_EXCLUSIVE).fetchall()
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute(SQL_SCHEMA_READ).fetchall()
            conn.execute("COMMIT")
        except (apsw.BusyError, apsw.LockedError):
            conn.close()
            raise DatabaseInUseError(
                f"{str(target)!r} is open in another process (or connection): stop the "
                "application first, or pass --force to replace the file anyway"
            ) from None
        except apsw.Error as exc:
            conn.close()
            raise DatabaseError(
                f"{str(target)!r} is not a usable SQLite database ({type(exc).__name__}: {exc}); "
                "pass --force to replace it anyway"
            ) from None
        self._conn = conn

    def settle(self) -> None:
        """Under the lock, fold the WAL into the file and remove ``-wal`` and ``-shm``.

        The file kept aside is then complete on its own, and no stale WAL is left
        to be mistaken for the new file's. Done only once the backup has verified:
        a refused restore leaves the target byte for byte as it was.
        """
        try:
            mode = self._conn.execute(SQL_JOURNAL_MODE_DELETE).fetchall()[0][0]
        except apsw.Error as exc:
            raise DatabaseError(
                f"cannot checkpoint {str(self._target)!r} before replacing it: {exc}"
            ) from None
        if mode != "delete":
            raise DatabaseError(
                f"{str(self._target)!r} stayed in journal mode {mode!r}; nothing was replaced"
            )

    def close(self) -> None:
        """Release the lock."""
        self._conn.close()
