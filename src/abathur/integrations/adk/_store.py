"""The abathur database behind an ADK service: given, or named by a path or URI.

ADK builds its services synchronously (its service registry calls a factory
at start-up, before any event loop runs), while an :class:`~abathur.Abathur`
is opened with ``await``. So a service holds a :class:`Store`, which opens the
database on the first call that needs it, in the loop that makes that call.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import ValidationError

from abathur.api import Abathur
from abathur.config import PostgresUrl, Settings, is_postgres_url
from abathur.errors import ClosedError, InvalidInputError
from abathur.redact import redact, redact_url

__all__ = ["SCHEME", "Store", "parse_uri"]

#: The URI scheme ADK's service registry knows abathur by.
SCHEME = "abathur"


def parse_uri(uri: str) -> tuple[Path, dict[str, str]]:
    """Split an ``abathur:`` URI into the database path and settings overrides.

    ``abathur:///srv/agent.db`` names an absolute path (the three slashes of a
    ``file:`` URI); ``abathur:agent.db`` a path relative to the current
    directory. Query parameters are :class:`~abathur.config.Settings` fields:
    ``abathur:///srv/agent.db?synchronous=FULL&embedder=none``.

    Args:
        uri: the URI.

    Returns:
        ``(path, overrides)``; override values are strings, validated when the
        settings are built.

    Raises:
        InvalidInputError: not an ``abathur:`` URI, names a host, has no path,
            repeats a parameter, or sets ``db`` (the path is the URI's).

    Example:
        >>> from abathur.integrations.adk import parse_uri
        >>> parse_uri("abathur:///srv/agent.db?synchronous=FULL")
        (PosixPath('/srv/agent.db'), {'synchronous': 'FULL'})
        >>> parse_uri("abathur:agent.db")
        (PosixPath('agent.db'), {})
    """
    if not isinstance(uri, str):
        raise InvalidInputError(f"an abathur URI must be a string, got {type(uri).__name__}")
    # A query may carry an ollama_host with a password: messages show the URI
    # decoded and redacted, never as given.
    shown = redact(unquote(uri))
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{shown!r} is not a valid URI: {exc}") from None
    if parts.scheme != SCHEME:
        raise InvalidInputError(f"{shown!r} is not an {SCHEME}: URI")
    if parts.netloc not in ("", "localhost"):
        raise InvalidInputError(
            f"{shown!r} names the host {redact_url(parts.netloc)!r}; an {SCHEME} URI names a "
            f"local file: {SCHEME}:///absolute/path.db or {SCHEME}:relative/path.db"
        )
    path = unquote(parts.path)
    if not path:
        raise InvalidInputError(f"{shown!r} names no database file")
    overrides: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidInputError(
            f"{shown!r} has a malformed query: {redact(unquote(str(exc)))}"
        ) from None
    for key, value in pairs:
        if key == "db":
            raise InvalidInputError(f"{shown!r} sets 'db'; the database path is the URI's path")
        if key in overrides:
            raise InvalidInputError(f"{shown!r} sets {key!r} more than once")
        overrides[key] = value
    return Path(path), overrides


def _settings(path: Path | PostgresUrl, overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**{**overrides, "db": path})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidInputError(f"invalid abathur settings: {problems}") from None


class Store:
    """The :class:`~abathur.Abathur` an ADK service uses, opened on first use.

    Args:
        db: an open :class:`~abathur.Abathur` (the caller keeps it and closes
            it), or the path of the database file (the service opens it and
            :meth:`close` closes it).
        uri: instead of ``db``, an ``abathur:`` URI (see :func:`parse_uri`).
        overrides: :class:`~abathur.config.Settings` fields for a database
            this store opens.
        options: names of service options (not settings) a URI may carry as
            query parameters; they land in :attr:`options`, as strings.

    Raises:
        InvalidInputError: neither or both of ``db`` and ``uri``, settings
            with an open ``Abathur``, a bad URI or bad settings.
    """

    def __init__(
        self,
        db: Abathur | str | os.PathLike[str] | None,
        uri: str | None,
        overrides: dict[str, Any],
        options: tuple[str, ...] = (),
    ) -> None:
        if (db is None) == (uri is None):
            raise InvalidInputError("give either a database (an Abathur or a path) or a uri")
        self.options: dict[str, str] = {}
        self._given: Abathur | None = None
        self._opened: Abathur | None = None
        self._is_closed = False
        self._lock = asyncio.Lock()
        if isinstance(db, Abathur):
            if overrides:
                raise InvalidInputError(
                    f"settings {sorted(overrides)} cannot apply to an Abathur that is "
                    "already open; pass a path instead"
                )
            self._given = db
            self.settings = db.settings
            return
        path: Path | PostgresUrl
        if uri is not None:
            path, from_uri = parse_uri(uri)
            self.options = {k: from_uri.pop(k) for k in options if k in from_uri}
            clash = sorted(set(from_uri) & set(overrides))
            if clash:
                raise InvalidInputError(f"{clash} set both in the URI {uri!r} and as arguments")
            overrides = {**from_uri, **overrides}
        elif isinstance(db, str | os.PathLike):
            # A postgresql:// URL stays a URL (a Path would fold its '//').
            path = PostgresUrl(db) if isinstance(db, str) and is_postgres_url(db) else Path(db)
        else:
            raise InvalidInputError(f"db must be an Abathur or a path, got {type(db).__name__}")
        self.settings = _settings(path, overrides)

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._is_closed

    async def get(self) -> Abathur:
        """The open database (opening it now if this store owns it)."""
        if self._given is not None:
            return self._given
        if self._opened is not None:
            return self._opened
        async with self._lock:
            if self._is_closed:
                raise ClosedError(f"this ADK service on {str(self.settings.db)!r} was closed")
            if self._opened is None:
                self._opened = await Abathur.open(settings=self.settings)
            return self._opened

    async def close(self) -> None:
        """Close the database if this store opened it; idempotent."""
        async with self._lock:
            self._is_closed = True
            if self._opened is not None:
                await self._opened.close()
