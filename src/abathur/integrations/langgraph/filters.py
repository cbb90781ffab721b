"""LangGraph's search filters over JSON values: checking, matching, and what SQL can do.

A filter maps a field of the item's value to a condition, as LangGraph's
``SearchOp.filter`` documents:

* a plain value: equality (``{"status": "active"}``); a dict without operators
  matches a sub-object field by field, a list matches element by element, as
  LangGraph's ``InMemoryStore`` does;
* a dict of operators: ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``,
  all of which must hold (``{"score": {"$gte": 3, "$lt": 5}}``).

Comparisons follow JSON's types, like PostgreSQL's ``jsonb`` (which the
in-memory store says it imitates): ``true`` equals only ``true`` (never ``1``),
numbers compare as numbers (``1`` equals ``1.0``), and ``$gt``/``$gte``/``$lt``/
``$lte`` compare two numbers or two strings and are false for anything else
(a missing field, ``null``, a number against a string). A missing field reads
as ``null``, as in the in-memory store: ``{"x": None}`` matches items without
``x``, and ``{"x": {"$ne": 1}}`` matches them too.

Plain equality on a string, number or boolean is also handed to abathur's own
metadata filter (:func:`pushdown`), which applies it inside the index scan
and before ranking; everything is checked again here, so that part only
narrows what is read.

Example:
    >>> from abathur.integrations.langgraph.filters import check_filter, matches
    >>> f = check_filter({"kind": "note", "score": {"$gt": 4.5}})
    >>> matches({"kind": "note", "score": 5}, f), matches({"kind": "note", "score": 4}, f)
    (True, False)
    >>> matches({"flag": True}, check_filter({"flag": 1}))
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from abathur.errors import InvalidInputError

__all__ = ["OPERATORS", "check_filter", "matches", "pushdown"]

#: The comparison operators LangGraph documents for ``SearchOp.filter``.
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_RANGE = ("$gt", "$gte", "$lt", "$lte")
# abathur binds filter values as SQLite numbers: beyond 2**53 an int and a
# float that JSON calls equal may not compare equal there, so those stay here.
_EXACT_INT = 2**53


def _kind(value: object) -> str:
    return type(value).__name__


def _check_json(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"filter value at {where} must be finite, got {value!r}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"filter key {key!r} at {where} must be a string")
            _check_json(item, f"{where}.{key}")
        return
    raise InvalidInputError(f"filter value at {where} must be JSON, got {_kind(value)}")


def _is_operators(condition: object) -> bool:
    return isinstance(condition, Mapping) and any(
        isinstance(k, str) and k.startswith("$") for k in condition
    )


def check_filter(filter_: object) -> dict[str, Any] | None:
    """Validate a LangGraph filter; return it as a dict (``None`` for no filter).

    Raises:
        InvalidInputError: not a dict with string keys, an unknown operator
            (a dict with one ``$`` key is all operators), a range operator
            given something other than a number or a string, or a value that
            is not JSON.

    Example:
        >>> from abathur.integrations.langgraph.filters import check_filter
        >>> check_filter({"n": {"$gte": 1, "$lt": 3}})
        {'n': {'$gte': 1, '$lt': 3}}
        >>> check_filter({"n": {"$in": [1]}})
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: filter on 'n': unsupported operator '$in'; ...
    """
    if filter_ is None:
        return None
    if not isinstance(filter_, Mapping):
        raise InvalidInputError(f"filter must be a dict, got {_kind(filter_)}")
    for key, condition in filter_.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"filter key {key!r} must be a string, got {_kind(key)}")
        _check_condition(condition, key)
    return dict(filter_)


def _check_condition(condition: Any, where: str) -> None:
    if _is_operators(condition):
        for op, operand in condition.items():
            if op not in OPERATORS:
                raise InvalidInputError(
                    f"filter on {where!r}: unsupported operator {op!r}; "
                    f"use one of {', '.join(OPERATORS)}"
                )
            if op in _RANGE and (
                isinstance(operand, bool) or not isinstance(operand, int | float | str)
            ):
                raise InvalidInputError(
                    f"filter on {where!r}: {op} compares numbers or strings, got {_kind(operand)}"
                )
            _check_json(operand, f"{where}.{op}")
    elif isinstance(condition, Mapping):
        for key, sub in condition.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"filter key {key!r} in {where!r} must be a string")
            _check_condition(sub, f"{where}.{key}")
    elif isinstance(condition, list | tuple):
        for i, sub in enumerate(condition):
            _check_condition(sub, f"{where}[{i}]")
    else:
        _check_json(condition, where)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: booleans only equal booleans, numbers compare as numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (
            isinstance(a, list | tuple)
            and isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a)
        )
    return bool(a == b)


def _order(value: Any, op: str, operand: Any) -> bool:
    if not (
        (_is_number(value) and _is_number(operand))
        or (isinstance(value, str) and isinstance(operand, str))
    ):
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    return bool(value <= operand)


def _condition(value: Any, condition: Any) -> bool:
    if _is_operators(condition):
        for op, operand in condition.items():
            if op == "$eq":
                ok = _same(value, operand)
            elif op == "$ne":
                ok = not _same(value, operand)
            else:
                ok = _order(value, op, operand)
            if not ok:
                return False
        return True
    if isinstance(condition, Mapping):
        # A sub-object matches field by field (the in-memory store's rule).
        return isinstance(value, Mapping) and all(
            _condition(value.get(k), sub) for k, sub in condition.items()
        )
    if isinstance(condition, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(condition)
            and all(_condition(v, c) for v, c in zip(value, condition, strict=True))
        )
    return _same(value, condition)


def matches(value: Mapping[str, Any], filter_: Mapping[str, Any] | None) -> bool:
    """True when the item's ``value`` satisfies every condition of a checked filter.

    Example:
        >>> from abathur.integrations.langgraph.filters import matches
        >>> matches({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}), matches({}, {"x": None})
        (True, True)
    """
    if not filter_:
        return True
    return all(_condition(value.get(key), cond) for key, cond in filter_.items())


def _scalar(condition: Any) -> bool:
    if isinstance(condition, bool | str):
        return True
    if isinstance(condition, int):
        return abs(condition) <= _EXACT_INT
    return isinstance(condition, float) and abs(condition) <= _EXACT_INT


def pushdown(filter_: Mapping[str, Any] | None) -> dict[str, str | int | float | bool]:
    """The part of a checked filter abathur's metadata filter can apply exactly.

    Plain or ``$eq`` equality on a string, a boolean or a number; ``None`` is
    left out (it also matches a missing field, which abathur's filter does not).

    Example:
        >>> from abathur.integrations.langgraph.filters import pushdown
        >>> pushdown({"a": "x", "b": {"$eq": True, "$ne": 1}, "c": None, "d": {"$gt": 1}})
        {'a': 'x', 'b': True}
    """
    pushed: dict[str, str | int | float | bool] = {}
    for key, condition in (filter_ or {}).items():
        if '"' in key:
            continue  # abathur's filter cannot name such a key
        if _is_operators(condition):
            condition = condition.get("$eq")
        if condition is not None and _scalar(condition):
            pushed[key] = condition
    return pushed
