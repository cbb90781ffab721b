"""The PostgreSQL backend itself (issue 14): PgDatabase on a real server.

Opening and closing, transactions through ``tx.conn``, the retry of
serialization failures, pool exhaustion as a typed error, the version floor,
the password kept out of every message, and migrations applied once when two
processes open a fresh database together.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from abathur.backends import backend_name, open_backend
from abathur.backends.postgres.connection import MIN_PGVECTOR, check_versions
from abathur.backends.postgres.database import PgDatabase
from abathur.backends.postgres.migrations import available
from abathur.config import PostgresUrl, Settings
from abathur.errors import (
    ClosedError,
    DatabaseBusyError,
    DatabaseError,
    IncompatibleEnvironmentError,
    PoolExhaustedError,
    SchemaError,
)

ROOT = Path(__file__).resolve().parents[2]


SQL_SCRATCH = "CREATE TABLE scratch (k text PRIMARY KEY, v text NOT NULL)"


def _settings(url: str, **values: object) -> Settings:
    return Settings(db=url, embedder="none", **values)


async def test_open_write_read_close(pg_url: str) -> None:
    db = await open_backend(_settings(pg_url))
    assert isinstance(db, PgDatabase) and db.name == "postgres"
    assert db.versions.pgvector >= ".".join(map(str, MIN_PGVECTOR))
    assert await db.schema_version() == available()[-1].version
    await db.write(lambda tx: tx.conn.execute(SQL_SCRATCH))
    await db.write(lambda tx: tx.conn.execute("INSERT INTO scratch VALUES ('k', 'v')"))
    assert await db.read(lambda tx: tx.conn.execute("SELECT v FROM scratch").fetchall()) == [
        ("v",)
    ]

    def fails(tx: object) -> None:
        db_conn = tx.conn  # type: ignore[attr-defined]
        db_conn.execute("INSERT INTO scratch VALUES ('k2', 'v2')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await db.write(fails)
    keys = await db.read(lambda tx: tx.conn.execute("SELECT k FROM scratch").fetchall())
    assert keys == [("k",)], "a failed write rolled back"

    # A read is read only; a driver error becomes DatabaseError (never psycopg's).
    with pytest.raises(DatabaseError, match="read-only"):
        await db.read(lambda tx: tx.conn.execute("INSERT INTO scratch VALUES ('x', 'y')"))
    with pytest.raises(DatabaseError) as excinfo:
        await db.write(lambda tx: tx.conn.execute("INSERT INTO scratch VALUES ('k', 'dup')"))
    assert type(excinfo.value) is DatabaseError and "UniqueViolation" in str(excinfo.value)

    await db.close()
    await db.close()  # idempotent
    assert db.is_closed
    with pytest.raises(ClosedError):
        await db.read(lambda tx: 1)
    with pytest.raises(ClosedError):
        await db.write(lambda tx: 1)


async def test_concurrent_read_modify_write_loses_no_update(pg_url: str) -> None:
    db = await PgDatabase.open(PostgresUrl(pg_url), _settings(pg_url, pg_pool_size=4))
    try:
        await db.write(lambda tx: tx.conn.execute(SQL_SCRATCH))
        await db.write(lambda tx: tx.conn.execute("INSERT INTO scratch VALUES ('n', '0')"))
        runs = {"calls": 0}

        def bump(tx: object) -> None:
            runs["calls"] += 1
            conn = tx.conn  # type: ignore[attr-defined]
            (value,) = conn.execute("SELECT v FROM scratch WHERE k = 'n'").fetchone()
            time.sleep(0.001)  # widen the window between the read and the write
            conn.execute(
                "UPDATE scratch SET v = %(v)s WHERE k = 'n'", {"v": str(int(value) + 1)}
            )

        async def writer() -> None:
            for _ in range(50):
                await db.write(bump)

        await asyncio.gather(writer(), writer())
        final = await db.read(
            lambda tx: tx.conn.execute("SELECT v FROM scratch WHERE k = 'n'").fetchone()
        )
        assert final == ("100",)
        # Writers wait their turn on the write lock: none was aborted and re-run.
        assert runs["calls"] == 100
    finally:
        await db.close()


async def test_pool_exhaustion_is_a_quick_typed_error(pg_url: str) -> None:
    db = await PgDatabase.open(
        PostgresUrl(pg_url), _settings(pg_url, pg_pool_size=1, pg_pool_timeout_s=0.3)
    )
    try:
        holding = asyncio.Event()
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def hold(tx: object) -> None:
            loop.call_soon_threadsafe(holding.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)

        first = asyncio.create_task(db.write(hold))
        await holding.wait()
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError) as excinfo:
            await db.read(lambda tx: 1)
        waited = time.monotonic() - started
        assert 0.25 <= waited < 2.0, waited
        assert excinfo.value.retryable and excinfo.value.code == "db.pool_exhausted"
        assert isinstance(excinfo.value, DatabaseBusyError)
        assert "ABATHUR_PG_POOL_SIZE" in str(excinfo.value)
        release.set()
        await first
        assert await db.read(lambda tx: 2) == 2, "the slot came back"
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("server", "pgvector", "problem"),
    [
        (140010, "0.8.4", "PostgreSQL 14.10 is older than 15"),
        (90624, "0.8.4", "PostgreSQL 9.6 is older than 15"),
        (180001, "0.8.3", "pgvector 0.8.3 is older than 0.8.4"),
        (170000, "0.7.4", "pgvector 0.7.4 is older"),
        (170000, None, "no pgvector"),
    ],
)
def test_old_versions_are_refused(server: int, pgvector: str | None, problem: str) -> None:
    with pytest.raises(IncompatibleEnvironmentError, match=problem):
        check_versions(server, pgvector)


@pytest.mark.parametrize(("server", "pgvector"), [(150000, "0.8.4"), (180001, "0.9.0"),
                                                  (150002, "1.0.0-dev")])
def test_current_versions_pass(server: int, pgvector: str) -> None:
    check_versions(server, pgvector)


async def test_the_password_never_shows(pg_url: str) -> None:
    secret = "Sup3r-s3cret"
    # The test server trusts its socket: any password is accepted, and must not show.
    url = pg_url.replace("postgres:@", f"postgres:{secret}@", 1)
    assert secret in url
    settings = _settings(url)
    assert secret not in repr(settings) and secret not in str(settings.db)
    assert secret not in f"{settings.db}" and secret not in repr(settings.db)
    assert settings.db.reveal() == url  # type: ignore[union-attr]
    # A server that cannot be reached: the message names it without the password.
    bad = f"postgresql://alice:{secret}@127.0.0.1:1/nowhere?connect_timeout=1"
    with pytest.raises(DatabaseError) as excinfo:
        await open_backend(_settings(bad, pg_pool_timeout_s=1))
    assert secret not in str(excinfo.value) and "127.0.0.1" in str(excinfo.value)
    db = await open_backend(settings)
    try:
        assert secret not in repr(db)
        with pytest.raises(DatabaseError) as failed:
            await db.read(lambda tx: tx.conn.execute("SELECT * FROM no_such_table"))
        assert secret not in str(failed.value)
    finally:
        await db.close()


def _open_in_process(url: str) -> list[int]:
    async def run() -> list[int]:
        db = await PgDatabase.open(PostgresUrl(url), _settings(url))
        await db.close()
        return db.migrated

    return asyncio.run(run())


def test_two_processes_migrate_a_fresh_database_once(pg_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_open_in_process, [pg_url, pg_url])
    versions = [m.version for m in available()]
    # One process applied everything, the other found nothing left to do.
    assert sorted(results, key=len) == [[], versions]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version"
        ).fetchall()
    assert rows == [(v, 1) for v in versions]


async def test_a_database_from_a_newer_abathur_is_refused(
    pg_url: str, pg_conn: psycopg.Connection
) -> None:
    pg_conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
    )
    for auto_migrate in (True, False):
        with pytest.raises(SchemaError, match="999"):
            await PgDatabase.open(PostgresUrl(pg_url), _settings(pg_url, auto_migrate=auto_migrate))


def test_abathur_db_env_reaches_settings_intact() -> None:
    url = "postgresql://app:p%40ss@db.internal:5432/agents?sslmode=require&application_name=x"
    code = (
        "from abathur.config import Settings; from abathur.backends import backend_name; "
        "s = Settings(); print(s.db.reveal()); print(backend_name(s)); print(repr(s.db))"
    )
    env = {"ABATHUR_DB": url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    revealed, backend, shown = done.stdout.splitlines()
    assert revealed == url and backend == "postgres"
    assert "p%40ss" not in shown and "db.internal:5432/agents" in shown
    assert backend_name(Settings(db="postgres://h/x")) == "postgres"
    assert backend_name(Settings(db="agent.db")) == "sqlite"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["memory", "get", "user:a", "k"], "db.error"),  # opened: the server is down
        (["info"], "invalid_input"),  # a file-only command, refused before opening
        (["backup"], "invalid_input"),
    ],
)
def test_cli_db_takes_a_url_and_never_shows_its_password(args: list[str], code: str) -> None:
    import json as jsonlib

    from click.testing import CliRunner

    from abathur.cli import main

    secret = "hunter2-s3cret"
    url = f"postgresql://bob:{secret}@127.0.0.1:1/agents?connect_timeout=1"
    done = CliRunner().invoke(main, [*args, "--db", url, "--json"])
    assert done.exit_code == 3, done.output
    assert secret not in done.output and secret not in (done.stderr or "")
    error = jsonlib.loads(done.stdout)["error"]
    assert error["code"] == code and "127.0.0.1:1/agents" in error["message"]
    assert done.exception is None or isinstance(done.exception, SystemExit)


async def test_the_test_snapshot_sees_every_table_and_compares_vectors(pg_url: str) -> None:
    from types import SimpleNamespace

    import numpy as np

    from tests.backends import POSTGRES

    db = await PgDatabase.open(PostgresUrl(pg_url), _settings(pg_url))
    try:
        await db.write(lambda tx: tx.conn.execute("CREATE TABLE vecs (id int, v vector(3))"))
        await db.write(
            lambda tx: tx.conn.execute(
                "INSERT INTO vecs VALUES (1, %(v)s)", {"v": np.array([1, 2, 3], dtype=np.float32)}
            )
        )
        fake = SimpleNamespace(db=db)
        before = await POSTGRES.snapshot(fake)  # type: ignore[arg-type]
        assert before["vecs"] == [(1, (1.0, 2.0, 3.0))]
        assert "schema_migrations" in before and "memories" in before
        assert await POSTGRES.snapshot(fake) == before  # type: ignore[arg-type]
        await db.write(lambda tx: tx.conn.execute("UPDATE vecs SET v = '[1,2,4]'"))
        assert await POSTGRES.snapshot(fake) != before  # type: ignore[arg-type]
    finally:
        await db.close()


async def test_endless_conflicts_stop_at_the_bound(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psycopg import errors as pg_errors

    from abathur.backends.postgres import database

    monkeypatch.setattr(database, "MAX_WRITE_ATTEMPTS", 3)
    db = await PgDatabase.open(PostgresUrl(pg_url), _settings(pg_url))
    calls: list[int] = []

    def always_conflicts(tx: object) -> None:
        calls.append(1)
        raise pg_errors.SerializationFailure("could not serialize access")

    def deadlock_once(tx: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            # A store may wrap the driver's error: the retry still sees it.
            try:
                raise pg_errors.DeadlockDetected("deadlock detected")
            except psycopg.Error as exc:
                raise ValueError("wrapped") from exc
        return "done"

    try:
        with pytest.raises(DatabaseBusyError, match="3 times") as excinfo:
            await db.write(always_conflicts)
        assert len(calls) == 3 and excinfo.value.retryable
        calls.clear()
        assert await db.write(deadlock_once) == "done" and len(calls) == 2
    finally:
        await db.close()


async def test_a_writer_waits_busy_timeout_for_the_write_lock_then_gets_busy(pg_url: str) -> None:
    """Writers go one at a time (an advisory lock); one that cannot get its turn
    within busy_timeout_ms fails with the retryable DatabaseBusyError, as on SQLite."""
    import psycopg

    from abathur.backends.postgres.database import WRITE_LOCK_KEY

    db = await PgDatabase.open(PostgresUrl(pg_url), _settings(pg_url, busy_timeout_ms=200))
    try:
        with psycopg.connect(pg_url) as holder:  # another host, mid-write
            holder.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": WRITE_LOCK_KEY})
            started = time.monotonic()
            with pytest.raises(DatabaseBusyError) as excinfo:
                await db.write(lambda tx: tx.conn.execute("SELECT 1"))
            waited = time.monotonic() - started
            holder.rollback()
        assert excinfo.value.retryable and 0.15 < waited < 5
        assert await db.write(lambda tx: tx.conn.execute("SELECT 1").fetchone()) == (1,)
    finally:
        await db.close()
