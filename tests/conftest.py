"""Shared fixtures and hooks: a real database per test on every registered
backend (tests/backends.py). Helpers tests share live in tests/helpers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from abathur import Abathur
from tests.backends import BACKENDS, BackendHandle, divergence

if TYPE_CHECKING:
    from tests.helpers import MemoryClock

# Before any test module imports it: the helpers' asserts (assert_unchanged)
# show pytest's diff, as they did when they lived in this file.
pytest.register_assert_rewrite("tests.helpers")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh database file (not yet created)."""
    return tmp_path / "agent.db"


@pytest.fixture(params=BACKENDS, ids=lambda spec: spec.name)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendHandle:
    """A registered backend (tests/backends.py) and a fresh database target on it.

    The request goes to the target: a postgres one asks for the session's
    server (``pg_server``) and drops its database after the test.
    """
    return BackendHandle(request.param, request.param.target(tmp_path, request))


@pytest.fixture
async def ab(backend: BackendHandle) -> AsyncIterator[Abathur]:
    """An open Abathur on a fresh database of ``backend``, closed after the test.

    No background embedding worker: it would write between the two snapshots
    of ``tests.helpers.assert_unchanged``. Tests of the worker open their own database.
    """
    async with backend.open(embed_worker=False) as opened:
        yield opened


@pytest.fixture
def memory_clock(monkeypatch: pytest.MonkeyPatch) -> MemoryClock:
    """The memory service's clock, for TTL tests: ``memory_clock.advance(s)`` ages memories."""
    from tests.helpers import MemoryClock

    clock = MemoryClock()
    monkeypatch.setattr("abathur.memory.time", clock)
    return clock


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): tests SQLite internals, so it runs on the sqlite backend only",
    )
    config.addinivalue_line(
        "markers",
        "unmigrated: the test watches the first open migrate; its postgres target starts empty",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A backend's recorded divergence turns its test into a strict xfail there;
    a ``sqlite_only`` test runs on no other backend."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        spec = getattr(getattr(item, "callspec", None), "params", {}).get("backend")
        if spec is None:
            kept.append(item)
            continue
        if spec.name != "sqlite" and item.get_closest_marker("sqlite_only"):
            dropped.append(item)
            continue
        reason = divergence(spec, getattr(item, "originalname", item.name))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=f"{spec.name}: {reason}", strict=True))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# The PostgreSQL server and per-test databases (issue 14).
from tests.postgres import pg_conn, pg_server, pg_url  # noqa: E402, F401
