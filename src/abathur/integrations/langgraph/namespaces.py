"""LangGraph namespaces and keys as abathur namespaces and keys, without ambiguity.

A LangGraph namespace is a tuple of labels; an abathur namespace is one string
of ``:``-separated segments. Each label becomes one segment under a root
segment (``langgraph`` by default): ``("users", "alice")`` is stored as
``langgraph:users:alice``. A label may hold any character, so before joining,
each label is escaped the percent-encoding way (UTF-8 bytes as ``%XX``) where
abathur's rules or the separator need it, and nowhere else:

* ``%`` itself (so every ``%`` in a segment starts an escape), and ``:``;
* control characters and lone surrogates;
* whitespace at either end of the label (abathur refuses padded segments).

So ``("a:b",)`` is ``langgraph:a%3Ab`` and ``("a", "b")`` is ``langgraph:a:b``:
two tuples never share a string, and decoding gives the tuple back. Segment-aware
prefixes carry over: the tuples under ``("a",)`` are exactly the abathur
namespaces under ``langgraph:a``.

Keys follow the same rule except that ``:`` stays as it is (abathur keys may
hold it). The empty key, which LangGraph allows and abathur does not, is
stored as a lone ``%``, which no escaped key can be.

Example:
    >>> from abathur.integrations.langgraph import from_namespace, to_namespace
    >>> to_namespace(("users", "alice")), to_namespace(("a:b",)), to_namespace(("a", "b"))
    ('langgraph:users:alice', 'langgraph:a%3Ab', 'langgraph:a:b')
    >>> from_namespace("langgraph:a%3Ab")
    ('a:b',)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from urllib.parse import unquote

from abathur.errors import InvalidInputError, InvalidNamespaceError
from abathur.memory import check_namespace

__all__ = ["ROOT", "check_root", "from_key", "from_namespace", "to_key", "to_namespace"]

#: The abathur segment every LangGraph namespace is stored under (LangGraph
#: itself refuses ``"langgraph"`` as a first label, so nothing is hidden by it).
ROOT = "langgraph"

_SEP = ":"
_EMPTY_KEY = "%"


def _escape(text: str, *, separator: bool) -> str:
    last = len(text) - 1
    out: list[str] = []
    for i, ch in enumerate(text):
        if (
            ch == "%"
            or (separator and ch == _SEP)
            or unicodedata.category(ch) in ("Cc", "Cs")
            or ((i == 0 or i == last) and ch.isspace())
        ):
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogatepass")


def check_root(root: object) -> str:
    """Return ``root`` if it can be the root segment of a store, else raise.

    Raises:
        InvalidNamespaceError: not a valid one-segment abathur namespace.

    Example:
        >>> from abathur.integrations.langgraph.namespaces import check_root
        >>> check_root("agents")
        'agents'
    """
    check_namespace(root, "root")
    assert isinstance(root, str)
    if _SEP in root:
        raise InvalidNamespaceError(f"root {root!r} must be a single segment (no {_SEP!r})")
    return root


def to_namespace(labels: Sequence[str], *, root: str = ROOT) -> str:
    """The abathur namespace that stores the LangGraph namespace ``labels``.

    Args:
        labels: the LangGraph namespace (a tuple of strings); ``()`` gives the
            root itself, the prefix of every namespace of the store.
        root: the store's root segment.

    Returns:
        ``root`` followed by one escaped segment per label.

    Raises:
        InvalidNamespaceError: a label is not a non-empty string, or the
            result is longer than abathur's 512 characters.

    Example:
        >>> from abathur.integrations.langgraph import to_namespace
        >>> to_namespace(("docs", " padded ", "50%"))
        'langgraph:docs:%20padded%20:50%25'
        >>> to_namespace(())
        'langgraph'
    """
    segments = [root]
    for label in labels:
        if not isinstance(label, str) or not label:
            raise InvalidNamespaceError(
                f"namespace labels must be non-empty strings, got {label!r} in {tuple(labels)!r}"
            )
        segments.append(_escape(label, separator=True))
    return check_namespace(_SEP.join(segments))


def from_namespace(namespace: str, *, root: str = ROOT) -> tuple[str, ...] | None:
    """The LangGraph namespace stored as ``namespace``; ``None`` if outside ``root``.

    Example:
        >>> from abathur.integrations.langgraph import from_namespace
        >>> from_namespace("langgraph:docs:%20padded%20:50%25")
        ('docs', ' padded ', '50%')
        >>> from_namespace("user:alice") is None
        True
    """
    head, _, rest = namespace.partition(_SEP)
    if head != root or not rest:
        return None
    return tuple(_unescape(segment) for segment in rest.split(_SEP))


def to_key(key: str) -> str:
    """The abathur key that stores the LangGraph key ``key``.

    Raises:
        InvalidInputError: ``key`` is not a string.

    Example:
        >>> from abathur.integrations.langgraph import to_key
        >>> to_key("user:42"), to_key(" x"), to_key("")
        ('user:42', '%20x', '%')
    """
    if not isinstance(key, str):
        raise InvalidInputError(f"a LangGraph key must be a string, got {type(key).__name__}")
    return _escape(key, separator=False) if key else _EMPTY_KEY


def from_key(key: str) -> str:
    """The LangGraph key stored as the abathur key ``key``.

    Example:
        >>> from abathur.integrations.langgraph import from_key
        >>> from_key("%20x"), from_key("%")
        (' x', '')
    """
    return "" if key == _EMPTY_KEY else _unescape(key)
