"""PostgreSQL's :class:`~abathur.stores.metrics.MetricsStore` (issue 14).

The SQL of :mod:`abathur.backends.sqlite.metrics`, in PostgreSQL's words:

- SQLite's ``CAST(x / 86400 AS INTEGER)`` truncates toward zero; PostgreSQL's
  ``::bigint`` rounds, so the day is ``trunc(x / 86400)::bigint``.
- ``sum(condition)`` is ``count(*) FILTER (WHERE condition)``.
- Each ``GROUP BY`` has the ``ORDER BY`` SQLite's sorter gives for free (a
  hash aggregate would hand groups back in any order).
- :meth:`PgMetricsStore.sizes` reports what a database on a shared server can
  say about itself: see there.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg
from psycopg import errors

from abathur.backends.postgres.context import PgContext
from abathur.stores.metrics import (
    MemoryGrowth,
    MetricRow,
    MetricWindow,
    NamespaceCount,
    StorageSizes,
    TableStats,
)

__all__ = ["SQL_METRICS_SINCE", "PgMetricsStore"]

SQL_HAS_METRICS = "SELECT to_regclass('metrics') IS NOT NULL"
SQL_METRICS_INSERT = (
    "INSERT INTO metrics (at, seconds, kind, name, count, errors, total_ms, max_ms, histogram) "
    "VALUES (%(at)s, %(seconds)s, %(kind)s, %(name)s, %(count)s, %(errors)s, %(total_ms)s, "
    "%(max_ms)s, %(histogram)s)"
)
SQL_METRICS_PRUNE = "DELETE FROM metrics WHERE at < %(before)s"
# stats: the windows of a period, in the order SQLite's range on its index
# metrics_by_time (at, then rowid) gives them.
SQL_METRICS_SINCE = (
    "SELECT kind, name, count, errors, total_ms, max_ms, histogram FROM metrics "
    "WHERE at >= %(since)s ORDER BY at, id"
)
_LIVE = (
    "is_current = 1 AND status = 'live' AND (expires_at IS NULL OR expires_at > %(now)s)"
)
SQL_MEMORIES_BY_TYPE = (
    f"SELECT type, count(*) FROM memories WHERE {_LIVE} GROUP BY type ORDER BY type"
)
SQL_MEMORY_VERSIONS = "SELECT count(*) FROM memories"
SQL_NAMESPACES = (
    "SELECT namespace, count(*), count(*) FILTER (WHERE first_created_at >= %(new_since)s) "
    f"FROM memories WHERE {_LIVE} GROUP BY namespace ORDER BY namespace"
)
SQL_MEMORY_GROWTH = (
    "SELECT trunc(first_created_at / 86400)::bigint, type, count(*) FROM memories "
    "WHERE is_current = 1 AND first_created_at >= %(since)s GROUP BY 1, 2 ORDER BY 1, 2"
)
SQL_SESSION_GROWTH = (
    "SELECT trunc(created_at / 86400)::bigint, count(*) FROM sessions "
    "WHERE created_at >= %(since)s GROUP BY 1 ORDER BY 1"
)
SQL_EVENT_GROWTH = (
    "SELECT trunc(timestamp / 86400)::bigint, count(*) FROM events "
    "WHERE timestamp >= %(since)s GROUP BY 1 ORDER BY 1"
)
SQL_SESSIONS_BY_STATUS = "SELECT status, count(*) FROM sessions GROUP BY status ORDER BY status"
SQL_EVENTS_PER_SESSION = "SELECT count(*) FROM events GROUP BY session_id"
SQL_QUEUE = "SELECT count(*), count(failed_at), min(enqueued_at) FROM embedding_queue"
SQL_ARCHIVE = "SELECT kind, count(*) FROM archive GROUP BY kind ORDER BY kind"
# The archive's share: its tables with their indexes and TOAST (where SQLite
# counts the pages of archive, archive_by_ref and archive_dicts).
SQL_SIZES = (
    "SELECT pg_database_size(current_database()), "
    "coalesce(pg_total_relation_size(to_regclass('archive')), 0) "
    "+ coalesce(pg_total_relation_size(to_regclass('archive_dicts')), 0)"
)


def _counts(rows: Any) -> dict[Any, int]:
    """``{key: count}`` of a ``SELECT key, count(*) ... GROUP BY key``."""
    return {key: int(count) for key, count in rows}


def _one(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> tuple[Any, ...]:
    row = conn.execute(sql).fetchone()
    assert row is not None  # an aggregate without GROUP BY always has one row
    return row


class PgMetricsStore:
    """:class:`~abathur.stores.metrics.MetricsStore` on one psycopg connection, in its transaction.

    Example:
        >>> from abathur.stores.metrics import MetricsStore
        >>> [m for m in dir(MetricsStore) if m[0] != "_" and not hasattr(PgMetricsStore, m)]
        []
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def has_metrics(self) -> bool:
        """True when the database has the ``metrics`` table (migration 010)."""
        return bool(_one(self._conn, SQL_HAS_METRICS)[0])

    def prune(self, before: float) -> None:
        """Delete the windows flushed before ``before``."""
        self._conn.execute(SQL_METRICS_PRUNE, {"before": before})

    def add(self, row: MetricRow) -> None:
        """Store one window.

        On SQLite a value apsw cannot bind fails before the statement runs. A
        value PostgreSQL refuses fails on the server and would abort the whole
        transaction, so the insert runs in a savepoint and its errors become
        the ones the protocol names (the caller skips that row only):

        Raises:
            OverflowError: an integer out of bigint's range.
            ValueError: a value PostgreSQL cannot hold (text with NUL, a lone
                surrogate) or otherwise refuses as data.
            TypeError: a value psycopg cannot adapt, or of a type the column refuses.
        """
        params = {
            "at": row.at,
            "seconds": row.seconds,
            "kind": row.kind,
            "name": row.name,
            "count": row.count,
            "errors": row.errors,
            "total_ms": row.total_ms,
            "max_ms": row.max_ms,
            "histogram": row.histogram,
        }
        try:
            with self._conn.transaction():
                self._conn.execute(SQL_METRICS_INSERT, params)
        except errors.NumericValueOutOfRange as exc:
            raise OverflowError(str(exc)) from exc
        except psycopg.DataError as exc:
            raise ValueError(str(exc)) from exc
        except (errors.DatatypeMismatch, errors.CannotCoerce) as exc:
            raise TypeError(str(exc)) from exc  # a value of the wrong type (a list, ...)
        except psycopg.ProgrammingError as exc:
            if exc.sqlstate is not None:  # the server's, about the SQL: not the row's fault
                raise
            raise TypeError(str(exc)) from exc  # psycopg could not adapt a value

    def windows(self, since: float) -> list[MetricWindow]:
        """The windows flushed at or after ``since``."""
        return [
            MetricWindow(*cast(tuple[str, str, int, int, float, float, str | None], row))
            for row in self._conn.execute(SQL_METRICS_SINCE, {"since": since})
        ]

    def table_stats(self, now: float, *, growth_since: float, new_since: float) -> TableStats:
        """Table counts at ``now``; growth since ``growth_since``, new since ``new_since``."""
        conn = self._conn
        depth, failed, oldest = _one(conn, SQL_QUEUE)
        since = {"since": growth_since}
        return TableStats(
            memories_by_type=_counts(conn.execute(SQL_MEMORIES_BY_TYPE, {"now": now})),
            versions=int(_one(conn, SQL_MEMORY_VERSIONS)[0]),
            namespaces=[
                NamespaceCount(str(namespace), int(count), int(new or 0))
                for namespace, count, new in conn.execute(
                    SQL_NAMESPACES, {"now": now, "new_since": new_since}
                )
            ],
            memory_growth=[
                MemoryGrowth(int(day), str(kind), int(count))
                for day, kind, count in conn.execute(SQL_MEMORY_GROWTH, since)
            ],
            session_growth=_counts(conn.execute(SQL_SESSION_GROWTH, since)),
            event_growth=_counts(conn.execute(SQL_EVENT_GROWTH, since)),
            sessions_by_status=_counts(conn.execute(SQL_SESSIONS_BY_STATUS)),
            events_per_session=sorted(int(n) for (n,) in conn.execute(SQL_EVENTS_PER_SESSION)),
            queue_depth=int(depth),
            queue_failed=int(failed),
            queue_oldest=None if oldest is None else float(oldest),
            archive_entries=_counts(conn.execute(SQL_ARCHIVE)),
        )

    def sizes(self) -> StorageSizes:
        """Bytes on disk now, as far as one database on a shared server can tell.

        ``db_bytes`` is ``pg_database_size`` (every relation of this database)
        and ``archive_bytes`` the archive tables with their indexes and TOAST.
        ``wal_bytes`` is 0: PostgreSQL's WAL belongs to the whole server, not
        to one database (and reading its size needs the ``pg_monitor`` role).
        ``free_bytes`` is 0: the space VACUUM frees stays inside each table's
        free space map, which only an extension (pgstattuple, pg_freespacemap)
        can count; there is no file-level free list as in SQLite.
        """
        db_bytes, archive_bytes = _one(self._conn, SQL_SIZES)
        return StorageSizes(
            db_bytes=int(db_bytes), wal_bytes=0, archive_bytes=int(archive_bytes), free_bytes=0
        )
