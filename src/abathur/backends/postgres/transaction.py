"""``PgTransaction``: the :class:`~abathur.stores.Transaction` of one pooled psycopg connection.

:meth:`PgDatabase.write <abathur.backends.postgres.database.PgDatabase.write>`
and :meth:`~abathur.backends.postgres.database.PgDatabase.read` build one for
the connection the pool lends them, inside the transaction they began (a new
one for each attempt of a retried write), and hand it to the service's
``fn``. Its stores are made on first use, bound to that connection, with the
same property names as
:class:`~abathur.backends.sqlite.transaction.SqliteTransaction`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import psycopg

from abathur.backends.postgres.archive import PgArchiveStore
from abathur.backends.postgres.audit import PgAuditStore
from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.documents import PgDocumentStore
from abathur.backends.postgres.inspection import PgCheckStore
from abathur.backends.postgres.memories import PgMemoryStore
from abathur.backends.postgres.metrics import PgMetricsStore
from abathur.backends.postgres.queue import PgQueueStore
from abathur.backends.postgres.search import PgSearchIndex
from abathur.backends.postgres.sessions import PgSessionStore
from abathur.backends.postgres.tasks import PgTaskStore
from abathur.backends.postgres.transfer import PgTransferStore
from abathur.backends.postgres.usage import PgUsageLedger

__all__ = ["PgTransaction"]


class PgTransaction:
    """One psycopg connection, inside one transaction, seen as the stores of :mod:`abathur.stores`.

    ``conn`` is for the PostgreSQL backend's own modules (migrations, the
    test snapshots), never for a service. Valid only inside the ``fn`` it
    was handed to: the connection goes back to the pool afterwards.
    """

    def __init__(
        self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext, *, chain: str = ""
    ) -> None:
        self.conn = conn
        self.context = context
        #: The audit chain this transaction's records go to: the tenant whose
        #: lock it holds, ``""`` for an undeclared write (and for reads).
        self.chain = chain
        self._undo: list[Callable[[], None]] = []

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Call ``undo()`` if this transaction rolls back, a retry's rollback included."""
        self._undo.append(undo)

    def rolled_back(self) -> None:
        """Run the ``on_rollback`` callbacks, newest first (``PgDatabase.write`` calls it)."""
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()

    @contextmanager
    def erase_securely(self) -> Iterator[None]:
        """Does nothing: PostgreSQL cannot erase a deleted row's bytes inside a transaction.

        SQLite's ``secure_delete`` zeroes deleted cells as it deletes them. In
        PostgreSQL a DELETE or UPDATE only marks the old row version dead; its
        bytes stay in the table's pages until VACUUM reuses the space (and in
        the WAL, replicas and base backups until they are recycled).
        Overwriting before deleting would not help: an UPDATE writes a new row
        version beside the old one. So a purge on PostgreSQL removes the rows
        from every query at commit, but erasing them on disk is the operator's
        job (VACUUM, or VACUUM FULL to rewrite the files, and WAL retention),
        which cannot run inside the purge's transaction.
        """
        yield

    @cached_property
    def archive(self) -> PgArchiveStore:
        return PgArchiveStore(self.conn, self.context)

    @cached_property
    def audit(self) -> PgAuditStore:
        return PgAuditStore(self.conn, self.context, chain=self.chain)

    @cached_property
    def checks(self) -> PgCheckStore:
        return PgCheckStore(self.conn, self.context)

    @cached_property
    def documents(self) -> PgDocumentStore:
        return PgDocumentStore(self.conn, self.context)

    @cached_property
    def memories(self) -> PgMemoryStore:
        return PgMemoryStore(self.conn, self.context)

    @cached_property
    def metrics(self) -> PgMetricsStore:
        return PgMetricsStore(self.conn, self.context)

    @cached_property
    def queue(self) -> PgQueueStore:
        return PgQueueStore(self.conn, self.context)

    @cached_property
    def search(self) -> PgSearchIndex:
        return PgSearchIndex(self.conn, self.context)

    @cached_property
    def sessions(self) -> PgSessionStore:
        return PgSessionStore(self.conn, self.context)

    @cached_property
    def tasks(self) -> PgTaskStore:
        return PgTaskStore(self.conn, self.context)

    @cached_property
    def transfer(self) -> PgTransferStore:
        return PgTransferStore(self.conn, self.context)

    @cached_property
    def usage(self) -> PgUsageLedger:
        return PgUsageLedger(self.conn, self.context)
