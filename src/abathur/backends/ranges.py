"""Namespace prefixes as index ranges: the parameters every backend's SQL binds.

Namespaces are ``:``-separated segments, and a prefix covers whole segments:
``user:al`` covers ``user:al`` and ``user:al:prefs``, not ``user:alice``.
Every backend compares text by bytes (SQLite always; PostgreSQL's columns are
``COLLATE "C"``), so all namespaces under ``p:`` sort in ``['p:', 'p;')``
(``';'`` is the character right after ``':'``) and one index range finds
them: ``namespace >= prefix AND namespace < after AND (namespace = prefix OR
namespace >= below)``. ``_`` and ``%`` need no escaping: no ``LIKE`` is used.

Example:
    >>> from abathur.backends.ranges import purge_range, range_params
    >>> range_params("user:al")
    {'prefix': 'user:al', 'after': 'user:al;', 'below': 'user:al:'}
    >>> purge_range(None)["prefix"], len(purge_range(None)["after"])
    ('', 513)
"""

from __future__ import annotations

__all__ = ["SEP", "purge_range", "range_params"]

SEP = ":"
# The character right after ':' in code-point (and UTF-8 byte) order.
_AFTER_SEP = chr(ord(SEP) + 1)
# Beyond every namespace (at most 512 characters): the range of everything.
_TOP = chr(0x10FFFF) * 513


def range_params(prefix: str) -> dict[str, str]:
    """The named parameters of one prefix range: ``prefix``, ``after``, ``below``."""
    return {"prefix": prefix, "after": prefix + _AFTER_SEP, "below": prefix + SEP}


def purge_range(prefix: str | None) -> dict[str, str]:
    """:func:`range_params` of ``prefix``, or of every namespace when ``prefix`` is None."""
    return {"prefix": "", "after": _TOP, "below": ""} if prefix is None else range_params(prefix)
