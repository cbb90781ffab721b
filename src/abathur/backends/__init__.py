"""The storage backends, by name, and :func:`open_backend`.

A backend implements the protocols of :mod:`abathur.stores`: ``sqlite``
(one file, :mod:`abathur.backends.sqlite`) and ``postgres`` (a server,
:mod:`abathur.backends.postgres`, issue 14; needs the ``postgres`` extra).
``Settings.db`` picks one: a file path is SQLite, a ``postgresql://`` URL is
PostgreSQL. ``abathur.api`` opens one here; services receive it already
open and never import this package.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.backends import BACKENDS, open_backend
    >>> from abathur.config import Settings
    >>> sorted(BACKENDS)
    ['postgres', 'sqlite']
    >>> backend_name(Settings(db="postgresql://db.internal/agents"))
    'postgres'
    >>> async def demo():
    ...     backend = await open_backend(Settings(db=pathlib.Path(tempfile.mkdtemp()) / "a.db"))
    ...     await backend.close()
    ...     return backend.name, backend.is_closed
    >>> asyncio.run(demo())
    ('sqlite', True)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from abathur.config import PostgresUrl, Settings
from abathur.errors import IncompatibleEnvironmentError
from abathur.stores import Backend

__all__ = ["BACKENDS", "BackendOpener", "backend_name", "open_backend"]

#: Opens a backend for ``settings`` (creating and migrating its storage).
BackendOpener = Callable[[Settings], Awaitable[Backend]]


async def _open_sqlite(settings: Settings) -> Backend:
    # Imported on use: apsw, aiosqlite and sqlite-vec load only for this backend.
    from abathur.backends.sqlite import Database

    return await Database.open(settings.require_db_file("the SQLite backend"), settings)


# The drivers of the postgres extra (psycopg, its pool, pgvector's adapters).
_PG_DRIVERS = frozenset({"psycopg", "psycopg_pool", "pgvector", "psycopg_binary", "psycopg_c"})


async def _open_postgres(settings: Settings) -> Backend:
    # Imported on use: psycopg and its pool load only for this backend, and
    # only an installation with the postgres extra has them.
    try:
        from abathur.backends.postgres.database import PgDatabase
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _PG_DRIVERS:
            raise
        raise IncompatibleEnvironmentError(
            f"a PostgreSQL database needs the postgres extra ({exc.name} is missing): "
            "pip install 'abathur[postgres]'"
        ) from exc
    assert isinstance(settings.db, PostgresUrl)  # backend_name chose this opener
    return await PgDatabase.open(settings.db, settings)


#: Every backend abathur can open, by name.
BACKENDS: Mapping[str, BackendOpener] = MappingProxyType(
    {"sqlite": _open_sqlite, "postgres": _open_postgres}
)


def backend_name(settings: Settings) -> str:
    """The name of the backend that serves ``settings.db``.

    ``"postgres"`` for a ``postgresql://`` / ``postgres://`` URL (a
    :class:`~abathur.config.PostgresUrl`), ``"sqlite"`` for a file path.
    """
    return "postgres" if isinstance(settings.db, PostgresUrl) else "sqlite"


async def open_backend(settings: Settings) -> Backend:
    """Open the backend ``settings.db`` names, creating and migrating it if needed.

    Raises:
        IncompatibleEnvironmentError: the backend's driver or server is too old.
        SchemaError: the storage is newer than this abathur.
        DatabaseError: it cannot be opened or migrated.
    """
    return await BACKENDS[backend_name(settings)](settings)
