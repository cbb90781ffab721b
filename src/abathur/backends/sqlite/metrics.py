"""SQLite's :class:`~abathur.stores.metrics.MetricsStore`: the ``metrics`` table and ``stats``."""

from __future__ import annotations

from typing import Any, cast

import apsw

from abathur.backends.sqlite.connection import scalar_int, table_exists
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.metrics import (
    MemoryGrowth,
    MetricRow,
    MetricWindow,
    NamespaceCount,
    StorageSizes,
    TableStats,
)

__all__ = ["SQL_METRICS_SINCE", "SqliteMetricsStore"]

SQL_METRICS_INSERT = (
    "INSERT INTO metrics (at, seconds, kind, name, count, errors, total_ms, max_ms, histogram) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_METRICS_PRUNE = "DELETE FROM metrics WHERE at < ?"
# stats: the windows of a period (index metrics_by_time).
SQL_METRICS_SINCE = (
    "SELECT kind, name, count, errors, total_ms, max_ms, histogram FROM metrics WHERE at >= ?"
)
_LIVE = "is_current = 1 AND status = 'live' AND (expires_at IS NULL OR expires_at > :now)"
SQL_MEMORIES_BY_TYPE = f"SELECT type, count(*) FROM memories WHERE {_LIVE} GROUP BY type"
SQL_MEMORY_VERSIONS = "SELECT count(*) FROM memories"
SQL_NAMESPACES = (
    f"SELECT namespace, count(*), sum(first_created_at >= :new_since) FROM memories "
    f"WHERE {_LIVE} GROUP BY namespace"
)
SQL_MEMORY_GROWTH = (
    "SELECT CAST(first_created_at / 86400 AS INTEGER), type, count(*) FROM memories "
    "WHERE is_current = 1 AND first_created_at >= ? GROUP BY 1, 2"
)
SQL_SESSION_GROWTH = (
    "SELECT CAST(created_at / 86400 AS INTEGER), count(*) FROM sessions "
    "WHERE created_at >= ? GROUP BY 1"
)
SQL_EVENT_GROWTH = (
    "SELECT CAST(timestamp / 86400 AS INTEGER), count(*) FROM events "
    "WHERE timestamp >= ? GROUP BY 1"
)
SQL_SESSIONS_BY_STATUS = "SELECT status, count(*) FROM sessions GROUP BY status"
SQL_EVENTS_PER_SESSION = "SELECT count(*) FROM events GROUP BY session_id"
SQL_QUEUE = "SELECT count(*), count(failed_at), min(enqueued_at) FROM embedding_queue"
SQL_ARCHIVE = "SELECT kind, count(*) FROM archive GROUP BY kind"
SQL_ARCHIVE_PAGES = (
    "SELECT coalesce(sum(pgsize), 0) FROM dbstat('main', 1) "
    "WHERE name IN ('archive', 'archive_by_ref', 'archive_dicts')"
)


def _counts(rows: Any) -> dict[Any, int]:
    """``{key: count}`` of a ``SELECT key, count(*) ... GROUP BY key``."""
    return {key: cast(int, count) for key, count in rows}


class SqliteMetricsStore:
    """:class:`~abathur.stores.metrics.MetricsStore` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends.sqlite import Database
        >>> from abathur.config import Settings
        >>> from abathur.stores.metrics import MetricRow
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "m.db"
        ...     db = await Database.open(path, Settings(db=path))
        ...     row = MetricRow(at=10.0, seconds=60.0, kind="counter", name="budget.warn", count=3)
        ...     try:
        ...         await db.write(lambda tx: tx.metrics.add(row))
        ...         return await db.read(lambda tx: tx.metrics.windows(0.0))
        ...     finally:
        ...         await db.close()
        >>> asyncio.run(demo())
        [MetricWindow(kind='counter', name='budget.warn', count=3, errors=0, total_ms=0.0, max_ms=0.0, histogram=None)]
    """  # noqa: E501

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def has_metrics(self) -> bool:
        """True when the file has the ``metrics`` table (migration 005)."""
        return table_exists(self._conn, "metrics")

    def prune(self, before: float) -> None:
        """Delete the windows flushed before ``before``."""
        self._conn.execute(SQL_METRICS_PRUNE, (before,))

    def add(self, row: MetricRow) -> None:
        """Store one window (apsw raises ValueError, TypeError or OverflowError on a bad value)."""
        self._conn.execute(
            SQL_METRICS_INSERT,
            (
                row.at,
                row.seconds,
                row.kind,
                row.name,
                row.count,
                row.errors,
                row.total_ms,
                row.max_ms,
                row.histogram,
            ),
        )

    def windows(self, since: float) -> list[MetricWindow]:
        """The windows flushed at or after ``since``."""
        return [
            MetricWindow(*cast(tuple[str, str, int, int, float, float, str | None], row))
            for row in self._conn.execute(SQL_METRICS_SINCE, (since,))
        ]

    def table_stats(self, now: float, *, growth_since: float, new_since: float) -> TableStats:
        """Table counts at ``now``; growth since ``growth_since``, new since ``new_since``."""
        conn = self._conn
        depth, failed, oldest = cast(
            tuple[int, int, float | None], conn.execute(SQL_QUEUE).fetchall()[0]
        )
        return TableStats(
            memories_by_type=_counts(conn.execute(SQL_MEMORIES_BY_TYPE, {"now": now})),
            versions=scalar_int(conn, SQL_MEMORY_VERSIONS),
            namespaces=[
                NamespaceCount(str(namespace), cast(int, count), cast(int, new or 0))
                for namespace, count, new in conn.execute(
                    SQL_NAMESPACES, {"now": now, "new_since": new_since}
                )
            ],
            memory_growth=[
                MemoryGrowth(cast(int, day), str(kind), cast(int, count))
                for day, kind, count in conn.execute(SQL_MEMORY_GROWTH, (growth_since,))
            ],
            session_growth=_counts(conn.execute(SQL_SESSION_GROWTH, (growth_since,))),
            event_growth=_counts(conn.execute(SQL_EVENT_GROWTH, (growth_since,))),
            sessions_by_status=_counts(conn.execute(SQL_SESSIONS_BY_STATUS)),
            events_per_session=sorted(
                cast(int, n) for (n,) in conn.execute(SQL_EVENTS_PER_SESSION)
            ),
            queue_depth=depth,
            queue_failed=failed,
            queue_oldest=oldest,
            archive_entries=_counts(conn.execute(SQL_ARCHIVE)),
        )

    def sizes(self) -> StorageSizes:
        """Bytes on disk now: the file, its WAL, the archive's pages and the free pages."""
        conn = self._conn
        path = self._context.path
        wal = path.with_name(path.name + "-wal")
        page_size = scalar_int(conn, "PRAGMA page_size")
        return StorageSizes(
            db_bytes=path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
            archive_bytes=scalar_int(conn, SQL_ARCHIVE_PAGES),
            free_bytes=scalar_int(conn, "PRAGMA freelist_count") * page_size,
        )
