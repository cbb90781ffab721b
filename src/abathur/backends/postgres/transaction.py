"""``PgTransaction``: the :class:`~abathur.stores.Transaction` of one pooled psycopg connection.

:meth:`PgDatabase.write <abathur.backends.postgres.database.PgDatabase.write>`
and :meth:`~abathur.backends.postgres.database.PgDatabase.read` build one for
the connection the pool lends them, inside the transaction they began, and
hand it to the service's ``fn``. Its stores are made on first use, bound to
that connection, with the same property names as
:class:`~abathur.backends.sqlite.transaction.SqliteTransaction`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.stores import (
    ArchiveStore,
    AuditStore,
    DocumentStore,
    MemoryStore,
    MetricsStore,
    QueueStore,
    SearchIndex,
    SessionStore,
    TaskStore,
    TransferStore,
    UsageLedger,
)

__all__ = ["PgTransaction"]

# Each store class is imported inside its property, not at the top, and typed
# as its protocol: the store modules are written in parallel on other branches
# of issue 14 and do not exist on this one yet (hence the ignores, which say
# "unused-ignore" too so mypy stays clean once they land). Once every store is
# merged, move the imports to the top of the module as SqliteTransaction has
# them, return the concrete classes, and drop the ignores.


class PgTransaction:
    """One psycopg connection, inside one transaction, seen as the stores of :mod:`abathur.stores`.

    ``conn`` is for the PostgreSQL backend's own modules (migrations, the
    test snapshots), never for a service. Valid only inside the ``fn`` it
    was handed to: the connection goes back to the pool afterwards.
    """

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self.conn = conn
        self.context = context

    @cached_property
    def archive(self) -> ArchiveStore:
        from abathur.backends.postgres.archive import (  # type: ignore[import-not-found, unused-ignore]
            PgArchiveStore,
        )

        store: ArchiveStore = PgArchiveStore(self.conn, self.context)
        return store

    @cached_property
    def audit(self) -> AuditStore:
        from abathur.backends.postgres.audit import (  # type: ignore[import-not-found, unused-ignore]
            PgAuditStore,
        )

        store: AuditStore = PgAuditStore(self.conn, self.context)
        return store

    @cached_property
    def documents(self) -> DocumentStore:
        from abathur.backends.postgres.documents import (  # type: ignore[import-not-found, unused-ignore]
            PgDocumentStore,
        )

        store: DocumentStore = PgDocumentStore(self.conn, self.context)
        return store

    @cached_property
    def memories(self) -> MemoryStore:
        from abathur.backends.postgres.memories import (  # type: ignore[import-not-found, unused-ignore]
            PgMemoryStore,
        )

        store: MemoryStore = PgMemoryStore(self.conn, self.context)
        return store

    @cached_property
    def metrics(self) -> MetricsStore:
        from abathur.backends.postgres.metrics import (  # type: ignore[import-not-found, unused-ignore]
            PgMetricsStore,
        )

        store: MetricsStore = PgMetricsStore(self.conn, self.context)
        return store

    @cached_property
    def queue(self) -> QueueStore:
        from abathur.backends.postgres.queue import (  # type: ignore[import-not-found, unused-ignore]
            PgQueueStore,
        )

        store: QueueStore = PgQueueStore(self.conn, self.context)
        return store

    @cached_property
    def search(self) -> SearchIndex:
        from abathur.backends.postgres.search import (  # type: ignore[import-not-found, unused-ignore]
            PgSearchIndex,
        )

        store: SearchIndex = PgSearchIndex(self.conn, self.context)
        return store

    @cached_property
    def sessions(self) -> SessionStore:
        from abathur.backends.postgres.sessions import (  # type: ignore[import-not-found, unused-ignore]
            PgSessionStore,
        )

        store: SessionStore = PgSessionStore(self.conn, self.context)
        return store

    @cached_property
    def tasks(self) -> TaskStore:
        from abathur.backends.postgres.tasks import (  # type: ignore[import-not-found, unused-ignore]
            PgTaskStore,
        )

        store: TaskStore = PgTaskStore(self.conn, self.context)
        return store

    @cached_property
    def transfer(self) -> TransferStore:
        from abathur.backends.postgres.transfer import (  # type: ignore[import-not-found, unused-ignore]
            PgTransferStore,
        )

        store: TransferStore = PgTransferStore(self.conn, self.context)
        return store

    @cached_property
    def usage(self) -> UsageLedger:
        from abathur.backends.postgres.usage import (  # type: ignore[import-not-found, unused-ignore]
            PgUsageLedger,
        )

        store: UsageLedger = PgUsageLedger(self.conn, self.context)
        return store
