"""The glob patterns that select a root's files, and where they can match (walk pruning)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import NamedTuple

from abathur.errors import InvalidInputError
from abathur.values import check_text

__all__ = [
    "MAX_PATTERNS",
    "GlobReach",
    "check_patterns",
    "glob_reach",
    "glob_regex",
    "may_hold",
]

MAX_PATTERNS = 256


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over '/'-separated relative paths: ``**`` spans directories, ``*`` and
    ``?`` stay within one, ``[...]`` is a character class."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                inner = pattern[i + 1 : end]
                negate = inner.startswith("!")
                inner = inner[1:] if negate else inner
                out.append("[" + ("^/" if negate else "") + inner.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


class GlobReach(NamedTuple):
    """Where a glob can match: in ``base`` ('' for the root) and, if ``deep``, below it."""

    base: str
    deep: bool


def glob_reach(pattern: str) -> GlobReach:
    """Where ``pattern`` can match: its literal leading directories, and whether below them."""
    parts = pattern.split("/")
    literal = list(itertools.takewhile(lambda part: not set(part) & set("*?["), parts[:-1]))
    rest = parts[len(literal) :]
    return GlobReach("/".join(literal), len(rest) > 1 or "**" in rest[0])


def may_hold(directory: str, reaches: Sequence[GlobReach]) -> bool:
    """True if some glob can match a file in ``directory`` or below it (walk pruning)."""
    for base, deep in reaches:
        if base == directory or base.startswith(directory + "/"):
            return True
        if deep and (not base or directory.startswith(base + "/")):
            return True
    return False


def check_patterns(value: object, what: str, *, allow_empty: bool) -> tuple[str, ...]:
    """``value`` as a tuple of globs relative to a root; InvalidInputError says why not."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(
            f"{what} must be a list of glob strings such as ['**/*.md'], got {type(value).__name__}"
        )
    patterns = tuple(value)
    if not patterns and not allow_empty:
        raise InvalidInputError(f"{what} must name at least one glob")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInputError(f"{what} has {len(patterns)} globs; the limit is {MAX_PATTERNS}")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidInputError(f"{what} must hold strings, got {type(pattern).__name__}")
        if not pattern.strip() or pattern != pattern.strip():
            raise InvalidInputError(f"{what}: glob {pattern!r} is blank or padded")
        if any(ord(ch) < 32 or ch == "\x7f" for ch in pattern):
            raise InvalidInputError(f"{what}: glob {pattern!r} contains a control character")
        check_text(pattern, f"{what}: glob")
        if pattern.startswith("/") or "\\" in pattern:
            raise InvalidInputError(
                f"{what}: glob {pattern!r} must be relative to the root, with '/' separators"
            )
        if any(part in ("", ".", "..") for part in pattern.split("/")):
            raise InvalidInputError(
                f"{what}: glob {pattern!r} has an empty, '.' or '..' segment; globs select "
                "files under the root, never outside it"
            )
    return patterns
