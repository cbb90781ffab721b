"""What one MCP connection may touch: its :class:`Grant`, and namespaces relative to its scope.

A connection holds a *scope*, a namespace such as ``user:alice``. Every
namespace an agent names is relative to it: ``preferences`` is
``user:alice:preferences``. The library matches prefixes by whole segments
and byte for byte (no ``LIKE``, no case folding), so ``user:alice`` never
reaches ``user:alice2``, ``user:al_ce`` or ``user:ALICE``; on top of that,
every namespace that comes back is checked to lie inside the scope before it
is shown (:meth:`Grant.relative`), and the scope is stripped from it.

Refused, with :class:`~abathur.errors.InvalidNamespaceError`: an empty
namespace, an absolute one (a leading ``:`` or ``/``), a ``.`` or ``..``
segment (segments are plain names here, never paths: refusing them keeps an
agent from believing it climbed out), and anything the library's namespace
rules refuse (:func:`abathur.memory.check_namespace`).

Example:
    >>> from abathur.integrations.mcp.scope import Grant
    >>> grant = Grant(scope="user:alice")
    >>> grant.namespace("preferences")
    'user:alice:preferences'
    >>> grant.prefix(None)
    'user:alice'
    >>> grant.relative("user:alice:preferences")
    'preferences'
    >>> grant.namespace("../bob")
    Traceback (most recent call last):
    ...
    abathur.errors.InvalidNamespaceError: namespace '../bob' has a '..' segment: namespaces are relative to the connection's scope and cannot leave it
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass

from abathur.errors import InvalidIdError, InvalidNamespaceError, PermissionDeniedError
from abathur.values import check_id

__all__ = ["ALL_DOCUMENTS", "Grant", "check_scope"]

_SEP = ":"
#: The ``documents`` value that lets a connection search every synced document.
ALL_DOCUMENTS = "*"


def check_scope(scope: object) -> str:
    """Return ``scope`` if it can be a connection's scope, else raise.

    A scope is a valid namespace (``user:alice``) that is also a valid id (at
    most 256 characters): the connection's sessions belong to it as their user.

    Example:
        >>> check_scope("user:alice")
        'user:alice'
        >>> check_scope("user:")
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidNamespaceError: scope 'user:' has an empty segment
    """
    # Imported here: abathur.memory pulls in the search stack, which the CLI's
    # `abathur mcp --help` never needs.
    from abathur.memory import check_namespace

    check_namespace(scope, "scope")
    try:
        return check_id(scope, "scope")
    except InvalidIdError as exc:  # too long to be the sessions' user: say it of the scope
        raise InvalidNamespaceError(exc.message) from None


@dataclass(frozen=True)
class Grant:
    """One connection's rights: its scope, whether it may write, which documents it may read.

    Attributes:
        scope: the namespace every namespace argument is relative to.
        read_only: refuse the tools that write (``memory_put``, ``memory_delete``,
            ``session_append``) with :class:`~abathur.errors.PermissionDeniedError`.
        documents: the document path prefix ``documents_search`` may read
            (:data:`ALL_DOCUMENTS`: every synced document); ``None``: none.
            Documents are the operator's synced files, not namespaced data,
            so reading them is granted separately.
        name: who holds it, for logs (a token's name; ``"stdio"``).
    """

    scope: str
    read_only: bool = False
    documents: str | None = None
    name: str = "stdio"

    def __post_init__(self) -> None:
        check_scope(self.scope)

    def namespace(self, relative: object, what: str = "namespace") -> str:
        """The full namespace of ``relative``, refused if empty, absolute or climbing."""
        from abathur.memory import check_namespace

        if not isinstance(relative, str):
            raise InvalidNamespaceError(f"{what} must be a string, got {type(relative).__name__}")
        if not relative:
            raise InvalidNamespaceError(
                f"{what} must not be empty: name a namespace inside the connection's scope"
            )
        if relative[0] in (_SEP, "/"):
            raise InvalidNamespaceError(
                f"{what} {relative!r} is absolute: namespaces are relative to the "
                "connection's scope"
            )
        for segment in relative.split(_SEP):
            for part in segment.split("/"):
                if part in (".", ".."):
                    raise InvalidNamespaceError(
                        f"{what} {relative!r} has a {part!r} segment: namespaces are relative "
                        "to the connection's scope and cannot leave it"
                    )
        check_namespace(relative, what)
        full = self.scope + _SEP + relative
        check_namespace(full, what)
        return full

    def prefix(self, relative: object) -> str:
        """The full prefix of an optional ``prefix`` argument: ``None`` is the whole scope."""
        if relative is None:
            return self.scope
        return self.namespace(relative, "prefix")

    def contains(self, namespace: str) -> bool:
        """Whether ``namespace`` is the scope or lies below it (whole segments, exact bytes)."""
        return namespace == self.scope or namespace.startswith(self.scope + _SEP)

    def relative(self, namespace: str) -> str:
        """``namespace`` as the connection names it: the scope and its ``:`` stripped.

        The scope itself is ``""``. A namespace outside the scope is never
        shown: it raises (the caller drops it), as a last line of defence.
        """
        if namespace == self.scope:
            return ""
        if not namespace.startswith(self.scope + _SEP):
            raise PermissionDeniedError("a namespace outside the connection's scope")
        return namespace[len(self.scope) + 1 :]

    def check_write(self, tool: str) -> None:
        """Refuse ``tool`` if this grant is read-only."""
        if self.read_only:
            raise PermissionDeniedError(
                f"{tool} writes, and this connection is read-only (its token grants "
                "'read-only' access)"
            )

    def document_prefix(self, relative: object) -> str | None:
        """The path prefix a ``documents_search`` may use, or raise if documents are not granted."""
        if self.documents is None:
            raise PermissionDeniedError(
                "this connection may not search documents (the server grants it no documents: "
                '--documents for stdio, "documents" in the tokens file for HTTP)'
            )
        if relative is not None:
            if not isinstance(relative, str) or not relative:
                raise InvalidNamespaceError("prefix must be a non-empty relative path")
            parts = relative.split("/")
            if relative.startswith("/") or any(p in (".", "..") for p in parts):
                raise InvalidNamespaceError(
                    f"prefix {relative!r} must be a relative path without '.' or '..' segments"
                )
        if self.documents == ALL_DOCUMENTS:
            return relative
        if relative is None:
            return self.documents
        return self.documents.rstrip("/") + "/" + relative
