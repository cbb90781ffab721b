"""SQLite's :class:`~abathur.stores.documents.DocumentStore`."""

from __future__ import annotations

import apsw

from abathur.backends.sqlite.context import SqliteContext

__all__ = ["SqliteDocumentStore"]


class SqliteDocumentStore:
    """:class:`~abathur.stores.documents.DocumentStore` on one apsw connection (its transaction)."""

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context
