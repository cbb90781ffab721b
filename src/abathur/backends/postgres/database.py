"""The :class:`PgDatabase`: a bounded pool of psycopg connections to one PostgreSQL database.

The PostgreSQL counterpart of :class:`abathur.backends.sqlite.Database`
(issue 14). Services hand a plain function ``fn(tx) -> T`` to
:meth:`PgDatabase.write` or :meth:`PgDatabase.read`; it runs on a worker
thread (psycopg's sync API: the stores are sync functions) with a connection
borrowed from a :class:`psycopg_pool.ConnectionPool`, inside one transaction:

* writes: at ``READ COMMITTED``, each under transaction-scoped advisory
  locks taken before ``fn`` reads anything, each wait bounded by
  ``Settings.busy_timeout_ms`` (then :class:`~abathur.errors.DatabaseBusyError`,
  as SQLite's busy timeout):

  - a write that declares no tenant takes the global lock
    (:data:`WRITE_LOCK_KEY`) *exclusive*: it runs alone, as every write did
    before per-tenant locks, and its audit records go to the global chain;
  - a write that declares its tenant (``write(fn, tenant=key)``) takes the
    global lock *shared* and the tenant's lock *exclusive*
    (``hashtextextended(key, 0)``, the key a parameter): writes of other
    tenants run beside it, writes of its tenant wait, and every undeclared
    write waits for it (and it for them). Its audit records go to the
    tenant's chain (:mod:`abathur.backends.postgres.audit`), so tenants do
    not queue on one head row. ``tenant`` may be a function reading the key
    inside the transaction (a session's owner, from its id): it runs under
    the shared global lock, then the tenant's lock is taken and the key read
    again (an owner that changed meanwhile runs the write again); a function
    that finds no key (no such row) makes the write an undeclared one.

  Why this and not the alternatives. ``SERIALIZABLE`` alone: every audited
  write moved the one audit head, so writers aborted each other past any
  retry bound (tests/integration/test_races.py). One global lock (the step
  before this one): safe but every write of every tenant on every host in
  one line. Batched chaining (a writer appends unchained records, one
  chainer links them later) keeps one line for the chainer and leaves
  records unverifiable until it runs. Per-tenant chains under per-tenant
  locks keep every record chained at commit and order exactly what must be
  ordered: one tenant's revisions and versions.

  What a tenant's write may touch, and why it is safe beside another
  tenant's (a write not sure of this declares nothing):

  - its own rows: the session, its events (``max(seq) + 1`` under the
    tenant's lock), ``user:`` state; the memory's versions (``namespace,
    key``), its search text, embedding job and vector (by the version's id);
  - ``app:`` state, shared by the users of an app: an upsert per key
    (``ON CONFLICT DO UPDATE``, which waits on the row at ``READ
    COMMITTED``; two writers upserting keys in opposite orders deadlock,
    and the deadlock is retried below);
  - unique keys another tenant may take meanwhile (a session id given by
    the caller): the unique violation runs the write once more, when ``fn``
    sees the row and raises its own typed error (``AlreadyExistsError``);
  - ids: identity columns and the audit seq (``audit_log_seq``) are
    sequences, which never block and never repeat;
  - deferred vector deletes: an insert that ignores a duplicate; the rare
    batch apply deletes by id and counts ``dead_rows`` by the rows it did
    delete (an atomic increment);
  - read only: the embedding cache, the vector index state (only undeclared
    writes change them).

  Everything that reads or writes across tenants declares nothing: tasks,
  consolidation, purges, archival and restores, transfer imports, the
  embedding worker, index rebuilds, metrics flushes.

  A serialization failure (``40001``) or deadlock (``40P01``) is retried:
  rolled back and ``fn`` run again, a bounded number of times with jittered
  backoff. ``fn`` may therefore run more than once: it must have no effect
  outside the database (``tx.on_rollback`` undoes what must be).
  :attr:`PgDatabase.tenant_writes` False makes every write undeclared (the
  single-lock baseline of benchmarks/tenant_writes.py).
* reads: ``REPEATABLE READ READ ONLY``: one consistent snapshot, never
  aborted for serialization.

At most ``Settings.pg_pool_size`` calls run at once; a call that finds every
connection busy for ``Settings.pg_pool_timeout_s`` fails with
:class:`~abathur.errors.PoolExhaustedError` (retryable) instead of waiting
without end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import structlog
from psycopg.pq import TransactionStatus

from abathur.backends.postgres import migrations
from abathur.backends.postgres.connection import (
    PgVersions,
    check_versions,
    driver_versions,
    is_retryable,
    read_versions,
    translate_errors,
)
from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.transaction import PgTransaction
from abathur.config import PostgresUrl, Settings
from abathur.errors import ClosedError, DatabaseBusyError, PoolExhaustedError

__all__ = ["MAX_WRITE_ATTEMPTS", "PgDatabase", "backoff_delay"]

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: How many times one write runs before a serialization failure or deadlock
#: reaches the caller (as retryable DatabaseBusyError). Bounded because ``fn``
#: re-runs each time and a hot row under heavy contention could otherwise keep
#: a call (and its pooled connection) retrying without end; 12 attempts sleep
#: at most 1.25 s in all (11 jittered delays capped at 2, 4, ... 128, 250 ms),
#: well above what a few writers on one row need (each conflict lets one of
#: them commit), and below the default 5 s a queued caller waits for a slot.
MAX_WRITE_ATTEMPTS = 12
_BACKOFF_BASE_S = 0.002
_BACKOFF_CAP_S = 0.25

SQL_BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
#: The global advisory lock: every write transaction holds it, exclusive if
#: it declared no tenant (it runs alone), shared if it did.
WRITE_LOCK_KEY = 0x616261746877  # "abathw"
SQL_WRITE_LOCK = (
    "SELECT set_config('lock_timeout', %(timeout)s, true), pg_advisory_xact_lock(%(key)s)"
)
SQL_SHARED_LOCK = (
    "SELECT set_config('lock_timeout', %(timeout)s, true), pg_advisory_xact_lock_shared(%(key)s)"
)
# A tenant's lock: its key hashed to 64 bits by the server (a parameter, never
# SQL text). Two tenants whose keys collide share a lock: they then take turns,
# which is safe. The select list runs left to right: the global lock first.
SQL_TENANT_ONLY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(tenant)s, 0))"
SQL_TENANT_LOCK = (
    "SELECT set_config('lock_timeout', %(timeout)s, true), "
    "pg_advisory_xact_lock_shared(%(key)s), pg_advisory_xact_lock(hashtextextended(%(tenant)s, 0))"
)
SQL_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


_Tenant = str | Callable[[PgTransaction], str | None] | None


class _Relock(Exception):
    """A resolved tenant changed once its lock was held: roll back, run again."""


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): full jitter, capped.

    Exponential (2 ms, 4 ms, 8 ms...) up to 250 ms, then a uniform draw
    below that, so two writers that collided do not collide again in step.

    Example:
        >>> 0 <= backoff_delay(1) <= 0.002 and backoff_delay(30) <= 0.25
        True
    """
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, ceiling)


def _configure(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Prepare a new pooled connection: pgvector's adapters (numpy <-> ``vector``)."""
    from pgvector.psycopg import register_vector

    # No vector type yet: a database opened with auto_migrate=False before its
    # first migration. Nothing can use a vector column there anyway.
    with contextlib.suppress(psycopg.ProgrammingError):
        register_vector(conn)


class PgDatabase:
    """One PostgreSQL database: a bounded connection pool and the schema.

    Use :meth:`open`; close with :meth:`close` (idempotent). Implements
    :class:`abathur.stores.Backend`.

    Example (needs a server; ``url`` is a ``postgresql://`` URL)::

        db = await PgDatabase.open(PostgresUrl(url))
        try:
            rows = await db.read(lambda tx: tx.conn.execute("SELECT 1").fetchall())
        finally:
            await db.close()
    """

    #: The registry key of this backend (:mod:`abathur.backends`).
    name = "postgres"
    #: False: every write takes the global lock exclusive and files its
    #: records in the global chain, whatever it declares (the single-writer
    #: behaviour before per-tenant locks; benchmarks/tenant_writes.py's
    #: baseline). Set it on an instance, before its first write.
    tenant_writes = True

    def __init__(
        self,
        url: PostgresUrl,
        settings: Settings,
        versions: PgVersions,
        pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]],
    ) -> None:
        self.url = url
        self.settings = settings
        self.versions = versions
        # The redacted URL: stores may name it in messages or key caches by it,
        # and a context can end up in a repr; the pool alone holds the password.
        self._context = PgContext(str(url), settings)
        self._pool = pool
        self._secrets = _secrets_of(url)
        # lock_timeout 0 means "wait forever" in PostgreSQL: a zero busy
        # timeout waits 1 ms instead, so a write never hangs.
        self._write_lock = {
            "timeout": f"{max(1, settings.busy_timeout_ms)}ms",
            "key": WRITE_LOCK_KEY,
        }
        size = settings.pg_pool_size
        # Our own threads, as many as the pool has connections: a call on a
        # thread always finds a connection (the slots below admit no more
        # calls than that), and the default executor is not starved by
        # calls waiting on the server.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="abathur-pg"
        )
        # Free slots, counted under a lock so any event loop (and any thread)
        # may call: the wait for one is what pg_pool_timeout_s bounds.
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False
        #: The migrations this open applied, in order (empty: none were pending).
        self.migrated: list[int] = []
        #: The schema version before this open migrated it (None: nothing applied),
        #: as the SQLite Database reports it.
        self.migrated_from: int | None = None
        #: Always None: a server is backed up by its operator (pg_dump, PITR),
        #: not copied aside before a migration as a SQLite file is.
        self.premigration_backup: Path | None = None

    def __repr__(self) -> str:
        return f"PgDatabase({self.url!r}, closed={self._closed})"

    @classmethod
    async def open(cls, url: str | PostgresUrl, settings: Settings | None = None) -> PgDatabase:
        """Connect to ``url``, check the server, migrate (``auto_migrate``), open the pool.

        Raises:
            IncompatibleEnvironmentError: PostgreSQL < 15, or pgvector absent or < 0.8.4.
            SchemaError: the database was migrated by a newer abathur.
            DatabaseError: the server cannot be reached, or refuses the login.
        """
        settings = settings or Settings(db=PostgresUrl(url))
        url = url if isinstance(url, PostgresUrl) else PostgresUrl(url)
        versions, before, applied = await asyncio.to_thread(_prepare, url, settings)
        pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
            psycopg_pool.ConnectionPool(
                url.reveal(),
                min_size=1,
                max_size=settings.pg_pool_size,
                timeout=settings.pg_pool_timeout_s,
                # Explicit BEGIN ... / COMMIT in _write_txn and _read_txn: psycopg
                # must not open transactions of its own on these connections.
                kwargs={"autocommit": True},
                configure=_configure,
                open=False,
                name="abathur",
            )
        )
        try:
            with translate_errors(f"connecting to {url}", secrets=_secrets_of(url)):
                await asyncio.to_thread(pool.open, True, settings.pg_pool_timeout_s)
        except BaseException:
            await asyncio.to_thread(pool.close)
            raise
        db = cls(url, settings, versions, pool)
        db.migrated = applied
        db.migrated_from = before if applied else None
        if applied:
            log.info(
                "db.migrated",
                url=str(url),
                from_version=before,
                to_version=applied[-1],
                applied=applied,
            )
        return db

    # -- transactions ------------------------------------------------------

    async def write(
        self,
        fn: Callable[[PgTransaction], T],
        *,
        tenant: str | Callable[[PgTransaction], str | None] | None = None,
    ) -> T:
        """Run ``fn(tx)`` in one READ COMMITTED write transaction under the write locks.

        ``tenant`` None: the global lock, exclusive (this write runs alone).
        A key: the global lock shared and the tenant's lock exclusive (writes
        of other tenants run beside it); a function: the same with the key it
        reads in the transaction (None: as undeclared). Retried on a
        serialization failure or deadlock, else re-raised.
        """
        return await self._run(self._write_txn, fn, tenant)

    async def read(self, fn: Callable[[PgTransaction], T]) -> T:
        """Run ``fn(tx)`` in one REPEATABLE READ READ ONLY transaction (one snapshot)."""
        return await self._run(self._read_txn, fn, None)

    async def _run(
        self,
        txn: Callable[[Callable[[PgTransaction], T], _Tenant], T],
        fn: Callable[[PgTransaction], T],
        tenant: _Tenant,
    ) -> T:
        self._check_open()
        timeout = self.settings.pg_pool_timeout_s
        if not self._slots.acquire(blocking=False) and not await self._wait_for_slot(timeout):
            raise PoolExhaustedError(
                f"no PostgreSQL connection came free within {timeout:g} s "
                f"(pg_pool_size={self.settings.pg_pool_size} calls already running); "
                "retry, lower the concurrency, or raise ABATHUR_PG_POOL_SIZE / "
                "ABATHUR_PG_POOL_TIMEOUT_S"
            )
        try:
            future = self._executor.submit(txn, fn, tenant)
        except RuntimeError:  # the executor was shut down: close() ran meanwhile
            self._slots.release()
            raise ClosedError(f"database {self.url} is closed") from None
        # The slot is given back when the thread is done, not when the awaiting
        # task is: a cancelled caller must not let another call in while its
        # transaction still holds the connection.
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    async def _wait_for_slot(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a free slot; True once this call holds one.

        On a thread: a threading semaphore's wait has a timeout and belongs to
        no event loop. If the caller is cancelled meanwhile, a slot the thread
        still gets is given back, never leaked.
        """
        waiting = asyncio.get_running_loop().run_in_executor(
            None, self._slots.acquire, True, timeout
        )
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.add_done_callback(self._release_if_acquired)
            raise

    def _release_if_acquired(self, done: asyncio.Future[bool]) -> None:
        if not done.cancelled() and done.exception() is None and done.result():
            self._slots.release()

    def _connection(self) -> Any:
        return self._pool.connection(timeout=self.settings.pg_pool_timeout_s)

    def _write_txn(self, fn: Callable[[PgTransaction], T], tenant: _Tenant) -> T:
        if not self.tenant_writes:
            tenant = None
        unique_retried = False
        with translate_errors("writing", secrets=self._secrets), self._connection() as conn:
            for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
                tx = PgTransaction(conn, self._context)
                try:
                    conn.execute(SQL_BEGIN_WRITE)
                    chain = self._lock(conn, tenant)
                    if chain is None:  # a resolver changed its mind: run again
                        raise _Relock
                    tx = PgTransaction(conn, self._context, chain=chain)
                    result = fn(tx)
                    conn.execute("COMMIT")
                    return result
                except BaseException as exc:
                    _rollback(conn)
                    tx.rolled_back()  # state fn moved into the database comes back
                    if isinstance(exc, _Relock):
                        continue
                    # A tenant's write can meet a unique key another tenant's
                    # write took meanwhile (a session id, in the window
                    # between fn's check and its insert): run it once more,
                    # when fn sees that row and says so in its own words.
                    retry_unique = tenant is not None and not unique_retried and _unique(exc)
                    unique_retried = unique_retried or retry_unique
                    if not (retry_unique or is_retryable(exc)):
                        raise
                    if attempt == MAX_WRITE_ATTEMPTS:
                        raise DatabaseBusyError(
                            f"a write conflicted with concurrent writes {attempt} times in a row "
                            "(serialization failure or deadlock); retry the call"
                        ) from exc
                    log.debug("db.write_retry", attempt=attempt, sqlstate=_sqlstate(exc))
                    time.sleep(backoff_delay(attempt))
        raise DatabaseBusyError(  # pragma: no cover - a tenant's owner changed 12 times running
            "a write's tenant kept changing under it; retry the call"
        )

    def _lock(self, conn: psycopg.Connection[tuple[Any, ...]], tenant: _Tenant) -> str | None:
        """Take the write locks of ``tenant``; return the audit chain the write files in.

        None: a resolver read another tenant once that tenant's lock was held
        (the row's owner changed in between); the caller rolls back and runs again.
        """
        if tenant is None:
            conn.execute(SQL_WRITE_LOCK, self._write_lock)
            return ""
        if isinstance(tenant, str):
            conn.execute(SQL_TENANT_LOCK, {**self._write_lock, "tenant": tenant})
            return tenant
        conn.execute(SQL_SHARED_LOCK, self._write_lock)
        key = tenant(PgTransaction(conn, self._context))
        if key is None:
            # Not tenant-local after all (the row is not there): this attempt
            # runs as an undeclared write. Waiting for the exclusive global
            # lock while holding it shared would deadlock with a writer doing
            # the same, so let go of it first.
            conn.execute("ROLLBACK")
            conn.execute(SQL_BEGIN_WRITE)
            conn.execute(SQL_WRITE_LOCK, self._write_lock)
            return ""
        conn.execute(SQL_TENANT_ONLY_LOCK, {"tenant": key})
        # Once the tenant's lock is held its rows' owner cannot change (a
        # write changing it holds the same lock): read it again to be sure
        # nothing changed between the first read and the lock.
        return key if tenant(PgTransaction(conn, self._context)) == key else None

    def _read_txn(self, fn: Callable[[PgTransaction], T], tenant: _Tenant) -> T:
        del tenant  # reads take no lock
        with translate_errors("reading", secrets=self._secrets), self._connection() as conn:
            conn.execute(SQL_BEGIN_READ)
            try:
                return fn(PgTransaction(conn, self._context))
            finally:
                _rollback(conn)  # read only: ending it either way is the same

    # -- state -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"database {self.url} is closed")

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Let running calls finish, then close every pooled connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)
        await asyncio.to_thread(self._pool.close)

    async def schema_version(self) -> int:
        """The highest migration applied (``schema_migrations``); 0 before the first."""
        return await self.read(lambda tx: migrations.current_version(tx.conn))


def _prepare(url: PostgresUrl, settings: Settings) -> tuple[PgVersions, int, list[int]]:
    """Check the server and migrate, on one short-lived connection (not the pool's).

    Its own connection, so a server that cannot be reached or refuses the
    login says so (rather than as a pool timeout), and migrations run in
    autocommit mode as :func:`migrations.migrate` needs.
    """
    secrets = _secrets_of(url)
    with translate_errors(f"connecting to {url}", secrets=secrets):
        conn = psycopg.connect(
            url.reveal(), autocommit=True, connect_timeout=max(1, round(settings.pg_pool_timeout_s))
        )
    with conn, translate_errors(f"checking {url}", secrets=secrets):
        server, server_num, pgvector = read_versions(conn)
        check_versions(server_num, pgvector)
        before = migrations.current_version(conn)
        applied: list[int] = []
        if settings.auto_migrate:
            applied = migrations.migrate(conn)
        else:
            migrations.pending(conn)  # still refuse a database newer than this abathur
        psycopg_version, pool_version = driver_versions()
        installed = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        versions = PgVersions(
            postgres=server,
            pgvector=str(installed[0]) if installed else str(pgvector),
            psycopg=psycopg_version,
            psycopg_pool=pool_version,
        )
    return versions, before, applied


def _rollback(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """End whatever transaction is open; a broken connection is the pool's to discard."""
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _unique(exc: BaseException) -> bool:
    """True when ``exc`` is (or was raised from) a unique violation."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, psycopg.errors.UniqueViolation):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _sqlstate(exc: BaseException) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


def _secrets_of(url: PostgresUrl) -> tuple[str, ...]:
    """The password in ``url`` (userinfo or ``password=``), to mask in any message."""
    from urllib.parse import parse_qs, unquote, urlsplit

    try:
        parts = urlsplit(url.reveal())
    except ValueError:
        return ()
    found = [unquote(parts.password)] if parts.password else []
    found += parse_qs(parts.query).get("password", [])
    return tuple(s for s in found if s)
