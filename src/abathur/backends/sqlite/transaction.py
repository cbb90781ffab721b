"""``SqliteTransaction``: the :class:`~abathur.stores.Transaction` of one apsw connection.

Each connection (the writer, each reader) gets one ``SqliteTransaction`` when
it opens; :meth:`Database.write <abathur.backends.sqlite.database.Database.write>`
and :meth:`~abathur.backends.sqlite.database.Database.read` hand it to the
service's ``fn`` inside ``BEGIN IMMEDIATE`` / ``BEGIN``. Its stores are made
once, on first use, and bound to that connection, so reaching ``tx.sessions``
on the hot path is one attribute lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property

import apsw

from abathur.backends.sqlite.archive import SqliteArchiveStore
from abathur.backends.sqlite.audit import SqliteAuditStore
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.documents import SqliteDocumentStore
from abathur.backends.sqlite.inspection import SqliteCheckStore
from abathur.backends.sqlite.memories import SqliteMemoryStore
from abathur.backends.sqlite.metrics import SqliteMetricsStore
from abathur.backends.sqlite.queue import SqliteQueueStore
from abathur.backends.sqlite.search import SqliteSearchIndex
from abathur.backends.sqlite.sessions import SqliteSessionStore
from abathur.backends.sqlite.tasks import SqliteTaskStore
from abathur.backends.sqlite.transfer import SqliteTransferStore
from abathur.backends.sqlite.usage import SqliteUsageLedger

__all__ = ["SqliteTransaction"]

SQL_SECURE_DELETE_ON = "PRAGMA secure_delete = ON"
SQL_SECURE_DELETE_FAST = "PRAGMA secure_delete = FAST"


class SqliteTransaction:
    """One apsw connection seen as the stores of :mod:`abathur.stores`.

    ``conn`` is for the SQLite backend's own modules (migrations, the ops
    kit), never for a service.
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self.conn = conn
        self.context = context
        self.undo: list[Callable[[], None]] = []  # on_rollback's, for the write in progress

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Call ``undo()`` if the write in progress rolls back (``Database.write`` does)."""
        self.undo.append(undo)

    @contextmanager
    def erase_securely(self) -> Iterator[None]:
        """``PRAGMA secure_delete = ON`` inside: freed cells and pages are zeroed, so a
        purge's bytes do not linger in the file or the WAL; ``FAST`` again after."""
        self.conn.execute(SQL_SECURE_DELETE_ON)
        try:
            yield
        finally:
            self.conn.execute(SQL_SECURE_DELETE_FAST)

    @cached_property
    def archive(self) -> SqliteArchiveStore:
        return SqliteArchiveStore(self.conn, self.context)

    @cached_property
    def audit(self) -> SqliteAuditStore:
        return SqliteAuditStore(self.conn, self.context)

    @cached_property
    def checks(self) -> SqliteCheckStore:
        return SqliteCheckStore(self.conn, self.context)

    @cached_property
    def documents(self) -> SqliteDocumentStore:
        return SqliteDocumentStore(self.conn, self.context)

    @cached_property
    def memories(self) -> SqliteMemoryStore:
        return SqliteMemoryStore(self.conn, self.context)

    @cached_property
    def metrics(self) -> SqliteMetricsStore:
        return SqliteMetricsStore(self.conn, self.context)

    @cached_property
    def queue(self) -> SqliteQueueStore:
        return SqliteQueueStore(self.conn, self.context)

    @cached_property
    def search(self) -> SqliteSearchIndex:
        return SqliteSearchIndex(self.conn, self.context)

    @cached_property
    def sessions(self) -> SqliteSessionStore:
        return SqliteSessionStore(self.conn, self.context)

    @cached_property
    def tasks(self) -> SqliteTaskStore:
        return SqliteTaskStore(self.conn, self.context)

    @cached_property
    def transfer(self) -> SqliteTransferStore:
        return SqliteTransferStore(self.conn, self.context)

    @cached_property
    def usage(self) -> SqliteUsageLedger:
        return SqliteUsageLedger(self.conn, self.context)
