"""The storage backends every test of service behaviour runs on (issue 13).

In the style of ADK's session conformance harness
(``tests/unittests/sessions/_conformance.py`` in google/adk-python): a
:data:`BACKENDS` list, and a ``backend`` fixture (tests/conftest.py) that
parametrises a test over it. A test of service behaviour takes ``backend``
(or ``ab``, which takes it) and opens its database with ``backend.open(...)``;
it then runs once per registered backend, with ids like ``test_x[sqlite]``.

A backend that knowingly behaves differently records the test's name and the
reason in its ``divergences``; the test then runs as a strict xfail on that
backend: it must fail there (an xfail that starts passing fails the run, so
a fixed divergence cannot linger), and the reason is printed.

Tests of one backend's internals (SQLite pragmas, FTS5 query plans, the
backup file format) do not take ``backend``; they carry
``pytest.mark.sqlite_only(reason)`` so a reader knows why they run once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import apsw

from abathur import Abathur
from abathur.api import _Opening

__all__ = ["BACKENDS", "BackendHandle", "TestBackend", "backend_of", "divergence", "handle"]

Snapshot = dict[str, list[tuple[Any, ...]]]


@dataclass(frozen=True)
class TestBackend:
    """One backend as the tests see it."""

    __test__ = False  # a dataclass named Test*, not a test class

    #: The registry key in :data:`abathur.backends.BACKENDS`.
    name: str
    #: The database target (file path or URL) for one test, from its tmp_path.
    target: Callable[[Path], str | Path]
    #: Every row of every table, to prove a failed call changed nothing.
    snapshot: Callable[[Abathur], Awaitable[Snapshot]]
    #: test function name -> why this backend behaves differently there.
    divergences: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class BackendHandle:
    """What the ``backend`` fixture gives a test: a backend and a fresh target."""

    spec: TestBackend
    target: str | Path

    @property
    def name(self) -> str:
        return self.spec.name

    def open(self, **overrides: Any) -> _Opening:
        """``Abathur.open`` on this test's fresh database; use as ``async with``."""
        return Abathur.open(self.target, **overrides)


async def _sqlite_snapshot(ab: Abathur) -> Snapshot:
    def dump(tx: Any) -> Snapshot:
        conn: apsw.Connection = tx.conn
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        # Table names come from sqlite_schema, not from a caller.
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables
        }

    return await ab.db.read(dump)


SQLITE = TestBackend(
    name="sqlite",
    target=lambda tmp_path: tmp_path / "agent.db",
    snapshot=_sqlite_snapshot,
)

#: Every backend the suite runs service tests on.
BACKENDS: list[TestBackend] = [SQLITE]


def backend_of(ab: Abathur) -> TestBackend:
    """The registered backend an open ``Abathur`` runs on."""
    name = ab.db.name
    for spec in BACKENDS:
        if spec.name == name:
            return spec
    raise LookupError(f"backend {name!r} is not in tests/backends.py BACKENDS")


def divergence(spec: TestBackend, test_name: str) -> str | None:
    """Why ``spec`` diverges on the test ``test_name`` (``None``: it does not).

    ``test_name`` is the test function's name, without parameters.
    """
    return spec.divergences.get(test_name)


def handle(name: str, tmp_path: Path) -> BackendHandle:
    """The registered backend ``name`` with a fresh target under ``tmp_path``.

    For fixtures that compare abathur with something else under their own
    parameters (e.g. ADK's in-memory service against each backend), where the
    ``backend`` fixture cannot be requested.
    """
    for spec in BACKENDS:
        if spec.name == name:
            return BackendHandle(spec, spec.target(tmp_path))
    raise LookupError(f"backend {name!r} is not in tests/backends.py BACKENDS")
