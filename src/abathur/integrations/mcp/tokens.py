"""The HTTP server's tokens file: bearer tokens, each mapped to a :class:`~.scope.Grant`.

The file is JSON, read once when the server starts::

    {"tokens": [
      {"name": "alice-laptop", "token": "<32+ random characters>",
       "scope": "user:alice", "access": "read-write"},
      {"name": "dashboard", "token": "<...>", "scope": "team:ops",
       "access": "read-only", "expires_at": "2027-01-31T00:00:00Z",
       "documents": "runbooks"}
    ]}

``access`` is ``read-only`` or ``read-write``; ``expires_at`` (optional) an
ISO 8601 time with a zone, or epoch seconds; ``documents`` (optional) the
document path prefix the token may search (``"*"``: every synced document).
An unknown or expired token gets HTTP 401. Tokens are kept in memory as their
SHA-256 only, and looked up by it. Make one with
``python -c "import secrets; print(secrets.token_urlsafe(32))"``; keep the file
readable by the server's user only.

Example:
    >>> from abathur.integrations.mcp.tokens import parse_tokens
    >>> table = parse_tokens(
    ...     '{"tokens": [{"name": "a", "token": "' + "x" * 32 + '", '
    ...     '"scope": "user:alice", "access": "read-only"}]}')
    >>> entry = table.lookup("x" * 32)
    >>> entry.grant.scope, entry.grant.read_only
    ('user:alice', True)
    >>> table.lookup("wrong") is None
    True
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from abathur.errors import AbathurError, InvalidInputError
from abathur.integrations.mcp.scope import Grant

__all__ = ["MIN_TOKEN_LENGTH", "TokenEntry", "TokenTable", "load_tokens", "parse_tokens"]

#: Shorter tokens are refused: a bearer token is the whole credential.
MIN_TOKEN_LENGTH = 32
_ACCESS = {"read-only": True, "read-write": False}
_KEYS = {"name", "token", "scope", "access", "expires_at", "documents"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One token of the file: its grant and when it stops working (epoch seconds)."""

    grant: Grant
    expires_at: float | None = None

    def is_expired(self, now: float | None = None) -> bool:
        """Whether the token is past its ``expires_at``."""
        at = time.time() if now is None else now
        return self.expires_at is not None and at >= self.expires_at


class TokenTable:
    """The tokens of one file, looked up by their SHA-256."""

    def __init__(self, entries: dict[str, TokenEntry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str, *, now: float | None = None) -> TokenEntry | None:
        """The entry of ``token``, or ``None`` when it is unknown or expired."""
        entry = self._entries.get(_digest(token))
        if entry is None or entry.is_expired(now):
            return None
        return entry


def _expiry(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            return at.timestamp()
    raise InvalidInputError(
        f"{where}: expires_at must be an ISO 8601 time with a zone (2027-01-31T00:00:00Z) "
        f"or epoch seconds, got {json.dumps(value, default=str)}"
    )


def _entry(item: object, where: str) -> tuple[str, TokenEntry]:
    if not isinstance(item, dict):
        raise InvalidInputError(f"{where} must be an object")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise InvalidInputError(f"{where} has unknown keys {unknown}; known: {sorted(_KEYS)}")
    token = item.get("token")
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
        raise InvalidInputError(
            f"{where}: token must be a string of at least {MIN_TOKEN_LENGTH} characters"
        )
    access = item.get("access")
    if access not in _ACCESS:
        raise InvalidInputError(f"{where}: access must be 'read-only' or 'read-write'")
    documents = item.get("documents")
    if documents is not None and (not isinstance(documents, str) or not documents):
        raise InvalidInputError(f"{where}: documents must be a path prefix or '*'")
    name = item.get("name", where)
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where}: name must be a non-empty string")
    try:
        grant = Grant(
            scope=item.get("scope"),  # type: ignore[arg-type]  # checked by Grant
            read_only=_ACCESS[access],
            documents=documents,
            name=name,
        )
    except AbathurError as exc:
        raise InvalidInputError(f"{where}: {exc.message}") from None
    return _digest(token), TokenEntry(grant, _expiry(item.get("expires_at"), where))


def parse_tokens(text: str) -> TokenTable:
    """Parse a tokens file's text (see the module doc); raise InvalidInputError when wrong."""
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"the tokens file is not JSON: {exc}") from None
    items = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidInputError('the tokens file must be {"tokens": [...]} with one token or more')
    entries: dict[str, TokenEntry] = {}
    for i, item in enumerate(items):
        digest, entry = _entry(item, f"tokens[{i}]")
        if digest in entries:
            raise InvalidInputError(f"tokens[{i}]: the same token is listed twice")
        entries[digest] = entry
    return TokenTable(entries)


def load_tokens(path: Path) -> TokenTable:
    """Read and parse the tokens file at ``path``."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the tokens file {str(path)!r}: {exc}") from None
    return parse_tokens(text)
