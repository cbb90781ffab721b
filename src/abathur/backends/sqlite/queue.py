"""SQLite's :class:`~abathur.stores.queue.QueueStore`."""

from __future__ import annotations

import apsw

from abathur.backends.sqlite.context import SqliteContext

__all__ = ["SqliteQueueStore"]


class SqliteQueueStore:
    """:class:`~abathur.stores.queue.QueueStore` on one apsw connection, in its transaction."""

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context
