"""The public face: `abathur.__all__` is exactly what is exported, sorted, documented."""

from __future__ import annotations

import inspect
import types

import abathur


def test_all_is_sorted_and_complete() -> None:
    assert abathur.__all__ == sorted(abathur.__all__)
    # dir(), not vars(): the package imports its public names on first use (PEP 562).
    public = {
        name
        for name in dir(abathur)
        if not name.startswith("_")
        and (value := getattr(abathur, name)) is not None
        # Submodules imported as a side effect of importing the package are not exports,
        # except `errors`, which users import on purpose (`from abathur import errors`).
        and (not isinstance(value, types.ModuleType) or name == "errors")
    }
    assert public == set(abathur.__all__)


def test_every_export_is_documented() -> None:
    for name in abathur.__all__:
        obj = getattr(abathur, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_public_methods_of_services_are_documented() -> None:
    from abathur.api import Abathur
    from abathur.audit import AuditLog
    from abathur.memory import MemoryService
    from abathur.sessions import SessionService
    from abathur.tasks import TaskService

    for cls in (Abathur, SessionService, MemoryService, TaskService, AuditLog):
        methods = [
            name
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        ]
        assert methods, cls
        for name in methods:
            assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name} has no docstring"
