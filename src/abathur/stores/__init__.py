"""The storage seam: what a service may ask of a storage backend.

Services (``abathur.sessions``, ``abathur.memory``, ...) hold the rules:
validation, revisions and versions, consolidation, budgets, TTL. A backend
(``abathur.backends.sqlite``, ``abathur.backends.postgres``) holds
the SQL. They meet here, in protocols only: a service never imports a
backend, and a backend never imports a service.

A service runs one write as one plain function ``fn(tx)``, handed to
:meth:`Backend.write`; the backend runs it inside one transaction and rolls
everything back if it raises. ``tx`` is a :class:`Transaction`: one store per
concept (``tx.sessions``, ``tx.audit``, ...), all bound to that same
transaction, so a session write and its audit record commit together or not
at all. :meth:`Backend.read` does the same on a consistent snapshot.

Adding a backend means implementing :class:`Backend`, :class:`Transaction`
and the store protocols of the modules below, then registering it in
:mod:`abathur.backends`.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.backends import open_backend
    >>> from abathur.config import Settings
    >>> async def demo():
    ...     path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
    ...     backend = await open_backend(Settings(db=path))
    ...     try:
    ...         return backend.name, await backend.read(lambda tx: tx.audit is not None)
    ...     finally:
    ...         await backend.close()
    >>> asyncio.run(demo())
    ('sqlite', True)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol, TypeAlias, TypeVar, runtime_checkable

from abathur.config import Settings
from abathur.stores.archive import ArchiveStore
from abathur.stores.audit import AuditStore
from abathur.stores.checks import CheckStore
from abathur.stores.documents import DocumentStore
from abathur.stores.memories import MemoryStore
from abathur.stores.metrics import MetricsStore
from abathur.stores.queue import QueueStore
from abathur.stores.search import SearchIndex
from abathur.stores.sessions import SessionStore
from abathur.stores.tasks import TaskStore
from abathur.stores.transfer import TransferStore
from abathur.stores.usage import UsageLedger

__all__ = [
    "ArchiveStore",
    "AuditStore",
    "Backend",
    "CheckStore",
    "DocumentStore",
    "MemoryStore",
    "MetricsStore",
    "QueueStore",
    "SearchIndex",
    "SessionStore",
    "TaskStore",
    "Tenant",
    "Transaction",
    "TransferStore",
    "UsageLedger",
]

T = TypeVar("T")


class Transaction(Protocol):
    """One transaction, seen as one store per concept.

    Every store reached through the same ``tx`` reads and writes inside the
    same transaction. A ``tx`` is only valid inside the ``fn`` it was handed
    to: never keep it.
    """

    @property
    def archive(self) -> ArchiveStore: ...
    @property
    def audit(self) -> AuditStore: ...
    @property
    def checks(self) -> CheckStore: ...
    @property
    def documents(self) -> DocumentStore: ...
    @property
    def memories(self) -> MemoryStore: ...
    @property
    def metrics(self) -> MetricsStore: ...
    @property
    def queue(self) -> QueueStore: ...
    @property
    def search(self) -> SearchIndex: ...
    @property
    def sessions(self) -> SessionStore: ...
    @property
    def tasks(self) -> TaskStore: ...
    @property
    def transfer(self) -> TransferStore: ...
    @property
    def usage(self) -> UsageLedger: ...

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Call ``undo()`` if this write transaction rolls back.

        For the rare ``fn`` that moves state out of memory into the database
        (a buffer of usage rows): ``undo`` puts it back. A backend that
        retries a write (PostgreSQL, on a serialization failure) rolls back
        first, so the retried ``fn`` finds the state where it was. Called on
        the thread that ran ``fn``; keep it to a few assignments.
        """
        ...

    def erase_securely(self) -> AbstractContextManager[None]:
        """Inside it, what this transaction deletes or overwrites is erased on disk.

        A purge wraps its whole write (the deletes and the audit redaction) in
        it. A backend does what its engine allows and documents it (SQLite
        overwrites freed cells and pages with zeros).
        """
        ...


#: What a write declares of its tenant (:meth:`Backend.write`): the tenant's
#: key (:func:`abathur.audit.tenant_key`), a function reading the key inside
#: the write's transaction (for a write known by a row id, a session's owner),
#: or None: not tenant-local.
Tenant: TypeAlias = "str | Callable[[Transaction], str | None] | None"


@runtime_checkable
class Backend(Protocol):
    """An open storage backend: transactions, and closing.

    ``name`` is the registry key (``"sqlite"``); ``settings`` the
    :class:`~abathur.config.Settings` it was opened with.
    """

    name: str
    settings: Settings

    async def write(self, fn: Callable[[Transaction], T], *, tenant: Tenant = None) -> T:
        """Run ``fn(tx)`` in one write transaction; on error roll back and re-raise.

        ``tenant`` declares that ``fn`` writes only that tenant's rows (plus
        cross-tenant rows it writes safely under concurrency: upserts,
        sequences, unique keys): a backend may then run it beside writes of
        other tenants, and files its audit records in that tenant's chain
        (:mod:`abathur.audit`). Either the tenant key, or a function that
        reads it in the transaction (``None``: it cannot tell, so the write
        runs as an undeclared one). Undeclared writes (the default) exclude
        every other write. SQLite has one writer anyway and ignores it.
        """
        ...

    async def read(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn(tx)`` on one consistent snapshot; ``fn`` must not write."""
        ...

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        ...

    async def close(self) -> None:
        """Finish queued writes, release every connection. Safe to call twice."""
        ...
