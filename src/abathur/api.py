"""``Abathur``: opens the database and wires the services together."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from abathur.audit import AuditLog
from abathur.config import Settings
from abathur.db import Database, Versions
from abathur.errors import InvalidInputError
from abathur.memory import MemoryService
from abathur.sessions import SessionService
from abathur.tasks import TaskService

__all__ = ["Abathur"]


class Abathur:
    """Durable agent memory in one SQLite file.

    Open it as an async context manager, or await it and close it yourself.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur, Event
        >>> async def demo():
        ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "agent.db") as ab:
        ...         s = await ab.sessions.create(app="helpdesk", user="alice")
        ...         s = await ab.sessions.append_event(
        ...             s.id, Event(author="user", content={"text": "hi"}),
        ...             expected_revision=s.revision)
        ...         await ab.memory.put("user:alice:preferences", "language", {"value": "French"})
        ...         m = await ab.memory.get("user:alice:preferences", "language")
        ...         return s.revision, m.value
        >>> asyncio.run(demo())
        (1, {'value': 'French'})
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.settings = db.settings
        self.sessions = SessionService(db)
        self.memory = MemoryService(db)
        self.tasks = TaskService(db)
        self.audit = AuditLog(db)

    @classmethod
    def open(
        cls, path: str | Path | None = None, *, settings: Settings | None = None, **overrides: Any
    ) -> _Opening:
        """Open (creating and migrating if needed) the database at ``path``.

        Args:
            path: the database file; default ``$ABATHUR_DB`` or ``./abathur.db``.
            settings: a full :class:`~abathur.config.Settings`; ``overrides``
                (e.g. ``synchronous="FULL"``) are applied on top of it.

        Raises:
            InvalidInputError: a setting is invalid.
            IncompatibleEnvironmentError: SQLite < 3.51.3 or no sqlite-vec.
            SchemaError: the file is newer than this abathur.
        """
        return _Opening(cls, path, settings, overrides)

    @property
    def path(self) -> Path:
        """The database file."""
        return self.db.path

    @property
    def versions(self) -> Versions:
        """SQLite, sqlite-vec, apsw and aiosqlite versions in use."""
        return self.db.versions

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self.db.is_closed

    async def close(self) -> None:
        """Let queued writes finish, then close every connection. Idempotent."""
        await self.db.close()

    async def __aenter__(self) -> Abathur:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Opening:
    """What :meth:`Abathur.open` returns: awaitable, and an async context manager."""

    def __init__(
        self,
        cls: type[Abathur],
        path: str | Path | None,
        settings: Settings | None,
        overrides: dict[str, Any],
    ) -> None:
        self._cls, self._path, self._settings, self._overrides = cls, path, settings, overrides
        self._opened: Abathur | None = None

    async def _open(self) -> Abathur:
        settings = _resolve_settings(self._path, self._settings, self._overrides)
        db = await Database.open(settings.db, settings)
        return self._cls(db)

    def __await__(self) -> Generator[Any, None, Abathur]:
        return self._open().__await__()

    async def __aenter__(self) -> Abathur:
        self._opened = await self._open()
        return self._opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            await self._opened.close()


def _resolve_settings(
    path: str | Path | None, settings: Settings | None, overrides: dict[str, Any]
) -> Settings:
    if path is not None:
        overrides = {**overrides, "db": Path(path)}
    if settings is not None and not overrides:
        return settings
    base = settings.model_dump() if settings is not None else {}
    try:
        # Re-validate rather than model_copy(update=...), which would skip validation.
        return Settings(**{**base, **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidInputError(f"invalid settings: {problems}") from None
