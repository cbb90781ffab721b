"""The exception tree: stable unique codes, exported, documented, builtin bases."""

from __future__ import annotations

import inspect

import abathur
from abathur import errors

ERROR_CLASSES = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, errors.AbathurError)
]


def test_every_error_has_a_unique_code() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert all(code and code == code.strip() for code in codes)


def test_every_error_is_exported_and_documented() -> None:
    for cls in ERROR_CLASSES:
        assert cls.__name__ in errors.__all__
        assert cls.__name__ in abathur.__all__
        assert getattr(abathur, cls.__name__) is cls
        assert cls.__doc__ and cls.__doc__.strip()


def test_docstring_tree_names_every_class() -> None:
    for cls in ERROR_CLASSES:
        assert cls.__name__ in errors.__doc__
        assert cls.code in errors.__doc__


def test_builtin_bases_keep_plain_except_clauses_working() -> None:
    assert issubclass(errors.InvalidNamespaceError, ValueError)
    assert issubclass(errors.SessionNotFoundError, LookupError)
    assert issubclass(errors.ClosedError, RuntimeError)


def test_retryable_only_where_retrying_can_help() -> None:
    retryable = {cls.__name__ for cls in ERROR_CLASSES if cls.retryable}
    assert retryable == {
        "ConflictError",
        "StaleSessionError",
        "VersionConflictError",
        "DatabaseBusyError",
        "PoolExhaustedError",
        "EmbedderUnavailableError",
    }


def test_conflict_messages_name_both_sides() -> None:
    stale = errors.StaleSessionError("s1", expected=3, actual=5)
    assert "3" in str(stale) and "5" in str(stale) and "'s1'" in str(stale)
    conflict = errors.VersionConflictError("user:a", "lang", expected=1, actual=None)
    assert "does not exist" in str(conflict)
    assert conflict.to_dict() == {
        "code": "memory.version_conflict",
        "message": str(conflict),
        "retryable": True,
    }
