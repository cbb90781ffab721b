"""The storage backends, by name, and :func:`open_backend`.

A backend implements the protocols of :mod:`abathur.stores`. Only ``sqlite``
(one file, :mod:`abathur.backends.sqlite`) exists today. ``abathur.api``
opens one here; services receive it already open and never import this
package.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.backends import BACKENDS, open_backend
    >>> from abathur.config import Settings
    >>> sorted(BACKENDS)
    ['sqlite']
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

from abathur.config import Settings
from abathur.stores import Backend

__all__ = ["BACKENDS", "BackendOpener", "backend_name", "open_backend"]

#: Opens a backend for ``settings`` (creating and migrating its storage).
BackendOpener = Callable[[Settings], Awaitable[Backend]]


async def _open_sqlite(settings: Settings) -> Backend:
    # Imported on use: apsw, aiosqlite and sqlite-vec load only for this backend.
    from abathur.backends.sqlite import Database

    return await Database.open(settings.db, settings)


#: Every backend abathur can open, by name.
BACKENDS: Mapping[str, BackendOpener] = MappingProxyType({"sqlite": _open_sqlite})


def backend_name(settings: Settings) -> str:
    """The name of the backend that serves ``settings.db``: ``"sqlite"`` for a file path."""
    return "sqlite"


async def open_backend(settings: Settings) -> Backend:
    """Open the backend ``settings.db`` names, creating and migrating it if needed.

    Raises:
        IncompatibleEnvironmentError: the backend's driver or server is too old.
        SchemaError: the storage is newer than this abathur.
        DatabaseError: it cannot be opened or migrated.
    """
    return await BACKENDS[backend_name(settings)](settings)
