"""Validation and JSON encoding of what callers hand us: ids, values, state.

Shared by every service, so an id or a value is judged by the same rule
everywhere. Ids are *rejected*, never silently normalised: ``" s1"`` and
``"s1"`` would otherwise be two spellings of one session.

Example:
    >>> from abathur.values import check_id, encode
    >>> check_id("alice", "user")
    'alice'
    >>> encode({"b": 1, "a": None}, what="value", limit=100)
    '{"b":1,"a":null}'
"""

from __future__ import annotations

import json
import math
from typing import Any

from abathur.errors import InvalidIdError, ValueNotSerializableError, ValueTooLargeError

__all__ = ["MAX_ID_LENGTH", "check_id", "decode", "encode"]

MAX_ID_LENGTH = 256


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a usable id, else raise :class:`InvalidIdError`.

    Rules: a ``str`` of 1..256 characters, no leading or trailing whitespace,
    no control characters.
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__}")
    if not value or value.isspace():
        raise InvalidIdError(f"{what} must not be blank")
    if value != value.strip():
        raise InvalidIdError(f"{what} {value!r} has leading or trailing whitespace")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidIdError(f"{what} {value!r} contains a control character")
    return value


def encode(value: Any, *, what: str, limit: int) -> str:
    """Serialise ``value`` to compact JSON, enforcing JSON-ness and a size limit.

    Raises:
        ValueNotSerializableError: not representable as JSON (sets, bytes, NaN,
            non-string dict keys, arbitrary objects).
        ValueTooLargeError: the JSON text is longer than ``limit`` bytes.
    """
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_refuse
        )
    except (TypeError, ValueError) as exc:
        raise ValueNotSerializableError(f"{what} is not JSON-serialisable: {exc}") from exc
    _check_keys(value, what)
    size = len(text.encode("utf-8"))
    if size > limit:
        raise ValueTooLargeError(f"{what} is {size} bytes as JSON; the limit is {limit} bytes")
    return text


def _refuse(obj: object) -> Any:
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _check_keys(value: Any, what: str) -> None:
    # json.dumps quietly turns int/float/bool/None keys into strings, so
    # {1: "a"} would come back as {"1": "a"}: refuse rather than change data.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValueNotSerializableError(
                        f"{what} has a non-string key {key!r}; JSON object keys are strings"
                    )
                stack.append(sub)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):  # pragma: no cover
            raise ValueNotSerializableError(f"{what} contains {item!r}")


def decode(text: str | None) -> Any:
    """Parse JSON stored by :func:`encode` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)
