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
import re
from datetime import timedelta
from typing import Any

from abathur.errors import (
    InvalidIdError,
    InvalidInputError,
    ValueNotSerializableError,
    ValueTooLargeError,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "check_duration",
    "check_id",
    "check_int",
    "check_no_nul",
    "check_since",
    "check_text",
    "decode",
    "encode",
    "show_number",
]

MAX_ID_LENGTH = 256
#: SQLite's integers are 64-bit: a larger one cannot be bound, filtered on or
#: compared in SQL, so it is refused everywhere (arguments and JSON alike).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Levels of nesting a stored JSON document may have. Real data is a few levels
#: deep; past ~1000 Python's json and SQLite's JSON functions give up, and
#: pydantic already refuses 255, so 200 keeps every reader of the value safe.
MAX_JSON_DEPTH = 200


def _shown(value: str) -> str:
    """``value`` for a message: quoted, escaped (no raw surrogate), and cut if long."""
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."


def check_text(value: str, what: str, *, error: type[InvalidInputError] = InvalidInputError) -> str:
    """Return ``value`` if it is storable text, else raise ``error``.

    A Python ``str`` may hold lone surrogates (``"\\udcff"`` is how Python and
    click keep a byte that was not UTF-8); no UTF-8 encoding exists for them,
    so SQLite, JSON files and terminals cannot take them. They are refused
    here, with the value shown escaped, instead of failing deep inside.

    Example:
        >>> from abathur.values import check_text
        >>> check_text("café", "query")
        'café'
        >>> check_text("user:\\udcff", "prefix")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: prefix 'user:\\udcff' is not valid Unicode text: ...
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(
            f"{what} {_shown(value)} is not valid Unicode text: it holds the lone surrogate "
            f"{value[exc.start]!r} at position {exc.start} (bytes that were not UTF-8?)"
        ) from None
    return value


def check_no_nul(value: str, what: str) -> str:
    """Return ``value`` if it holds no NUL character, else raise :class:`InvalidInputError`.

    Free text stored as is (a task's prompt and error) must hold no NUL:
    PostgreSQL's text cannot, so neither backend takes one. (Values, state
    and metadata are JSON, where a NUL travels escaped.)

    Example:
        >>> from abathur.values import check_no_nul
        >>> check_no_nul("fine", "prompt")
        'fine'
        >>> check_no_nul("a\\x00b", "prompt")
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: prompt holds a NUL character (\\x00) at position 1: ...
    """
    at = value.find("\x00")
    if at >= 0:
        raise InvalidInputError(
            f"{what} holds a NUL character (\\x00) at position {at}: text is stored as is, "
            "and PostgreSQL text cannot hold NUL; remove it or send the text as a JSON value"
        )
    return value


def check_int(
    value: object, what: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX
) -> int:
    """Return ``value`` if it is an ``int`` (not a bool) in ``minimum..maximum``.

    The bounds default to SQLite's 64-bit range, so an integer that passes can
    always be bound to a query.

    Example:
        >>> from abathur.values import check_int
        >>> check_int(5, "limit", minimum=1, maximum=10)
        5
        >>> check_int(2**63, "offset", minimum=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: offset must be at most 9223372036854775807 ...
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if minimum <= value <= maximum:
        return value
    if maximum != INT64_MAX:
        bound = f"between {minimum} and {maximum}"
    elif value < minimum:
        bound = f">= {minimum}"
    else:
        bound = f"at most {INT64_MAX} (SQLite's largest integer)"
    raise InvalidInputError(f"{what} must be {bound}, got {show_number(value)}")


def check_duration(value: object, what: str) -> float:
    """Seconds in ``value``, a positive finite number of seconds or a :class:`~datetime.timedelta`.

    Example:
        >>> from datetime import timedelta
        >>> from abathur.values import check_duration
        >>> check_duration(90, "since"), check_duration(timedelta(minutes=5), "since")
        (90.0, 300.0)
        >>> check_duration(timedelta(0), "since")
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: since must be a positive duration, got ...
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()  # finite for every timedelta (at most ~8.6e13)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        kind = type(value).__name__
        raise InvalidInputError(f"{what} must be seconds or a datetime.timedelta, got {kind}")
    else:
        # A huge integer would reach float() and its OverflowError.
        seconds = float(value) if INT64_MIN <= value <= INT64_MAX else math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        shown = repr(value) if isinstance(value, timedelta) else show_number(value)
        raise InvalidInputError(f"{what} must be a positive duration, got {shown}")
    return seconds


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``30m``, ``24h``, ``7d`` or ``2w``.

    Raises:
        InvalidInputError: not a number followed by s, m, h, d or w.

    Example:
        >>> from abathur.values import parse_duration
        >>> parse_duration("7d"), parse_duration("90m")
        (604800.0, 5400.0)
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(
            f"duration {text!r} is not a number followed by s, m, h, d or w (e.g. '7d')"
        )
    return float(match[1]) * _UNIT_S[match[2]]


def check_since(value: object, what: str = "since") -> float:
    """Seconds in a look-back window: a duration like ``'7d'``, seconds, or a timedelta.

    Raises:
        InvalidInputError: another type, or not a positive finite duration.

    Example:
        >>> from datetime import timedelta
        >>> from abathur.values import check_since
        >>> check_since("1h"), check_since(90), check_since(timedelta(days=1))
        (3600.0, 90.0, 86400.0)
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float | timedelta):
        raise InvalidInputError(f"{what} must be a duration like '7d' or seconds, got {value!r}")
    if isinstance(value, str):
        seconds = parse_duration(value)
        if not math.isfinite(seconds) or seconds <= 0:
            raise InvalidInputError(f"{what} must be a positive duration, got {value!r}")
        return seconds
    return check_duration(value, what)


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a usable id, else raise :class:`InvalidIdError`.

    Rules: a ``str`` of 1..256 characters, no leading or trailing whitespace,
    no control characters, valid Unicode (no lone surrogates).
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
    check_text(value, what, error=InvalidIdError)
    return value


def encode(value: Any, *, what: str, limit: int) -> str:
    """Serialise ``value`` to compact JSON, enforcing JSON-ness and a size limit.

    Raises:
        ValueNotSerializableError: not representable as JSON (sets, bytes, NaN,
            non-string dict keys, arbitrary objects), nested more than
            :data:`MAX_JSON_DEPTH` levels (or containing itself), an integer
            outside SQLite's 64-bit range, or text with lone surrogates.
        ValueTooLargeError: the JSON text is longer than ``limit`` bytes.
    """
    # The shape is checked first, without recursion: json.dumps would hit
    # RecursionError on deep nesting before any rule could say why.
    _check_tree(value, what)
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_refuse
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueNotSerializableError(f"{what} is not JSON-serialisable: {exc}") from exc
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueNotSerializableError(
            f"{what} is not valid Unicode text: it holds the lone surrogate "
            f"{text[exc.start]!r} (bytes that were not UTF-8?)"
        ) from None
    if size > limit:
        raise ValueTooLargeError(f"{what} is {size} bytes as JSON; the limit is {limit} bytes")
    return text


def _refuse(obj: object) -> Any:
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _check_tree(value: Any, what: str) -> None:
    # json.dumps quietly turns int/float/bool/None keys into strings, so
    # {1: "a"} would come back as {"1": "a"}: refuse rather than change data.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise ValueNotSerializableError(
                    f"{what} is nested more than {MAX_JSON_DEPTH} levels deep (or contains itself)"
                )
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise ValueNotSerializableError(
                            f"{what} has a non-string key {key!r}; JSON object keys are strings"
                        )
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not INT64_MIN <= item <= INT64_MAX:
                raise ValueNotSerializableError(
                    f"{what} holds the integer {show_number(item)}, outside SQLite's 64-bit range "
                    f"({INT64_MIN}..{INT64_MAX}); store it as a string"
                )
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueNotSerializableError(f"{what} contains {item!r}, which JSON cannot hold")


def show_number(value: object) -> str:
    """``repr(value)`` for a message, except that a huge integer is described, not printed.

    A 10**400 is hundreds of digits, and past 4300 digits ``repr`` raises.

    Example:
        >>> from abathur.values import show_number
        >>> show_number(12), show_number(1.5), show_number(10**400)
        ('12', '1.5', 'an integer of 1329 bits')
    """
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


def decode(text: str | None) -> Any:
    """Parse JSON stored by :func:`encode` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)
