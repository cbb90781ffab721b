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

Which backends run is ``$ABATHUR_TEST_BACKENDS`` (a comma list of names in
:data:`KNOWN`; default ``sqlite``). ``make test-pg`` runs every
backend-parametrised test on ``postgres``; ``make test`` runs the PostgreSQL
backend's own tests (tests/unit/test_pg_*.py) but, until the postgres half
fits CI's time (issue 14), not the service tests on it. A postgres target is a fresh
database on the session's embedded server (tests/postgres.py), dropped after
the test.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import apsw
import pytest

from abathur import Abathur
from abathur.api import _Opening

__all__ = [
    "BACKENDS",
    "KNOWN",
    "POSTGRES",
    "SQLITE",
    "BackendHandle",
    "TestBackend",
    "backend_of",
    "divergence",
    "handle",
]

Snapshot = dict[str, list[tuple[Any, ...]]]


@dataclass(frozen=True)
class TestBackend:
    """One backend as the tests see it."""

    __test__ = False  # a dataclass named Test*, not a test class

    #: The registry key in :data:`abathur.backends.BACKENDS`.
    name: str
    #: The database target (file path or URL) for one test, from its tmp_path
    #: and, for a backend that needs a fixture (postgres: the server), the
    #: test's request (None: reuse what an earlier call of this session got).
    target: Callable[[Path, pytest.FixtureRequest | None], str | Path]
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


def _sqlite_target(tmp_path: Path, request: pytest.FixtureRequest | None = None) -> Path:
    return tmp_path / "agent.db"


SQLITE = TestBackend(name="sqlite", target=_sqlite_target, snapshot=_sqlite_snapshot)


def _plain(value: Any) -> Any:
    # pgvector's adapters read a vector as a pgvector.Vector (or a numpy array,
    # whose == is element-wise): a snapshot holds plain tuples, compared as values.
    if hasattr(value, "to_list"):
        return tuple(value.to_list())
    return tuple(value.tolist()) if hasattr(value, "tolist") else value


async def _postgres_snapshot(ab: Abathur) -> Snapshot:
    from psycopg import sql

    def dump(tx: Any) -> Snapshot:
        conn = tx.conn
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename"
            )
        ]
        # Identifier quotes the names (from pg_tables, not from a caller).
        return {
            t: sorted(
                (
                    tuple(_plain(v) for v in row)
                    for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t)))
                ),
                key=repr,
            )
            for t in tables
        }

    return await ab.db.read(dump)


# The session server's URL, once a test has asked for it: a second target in
# the same test (tests/transfer_files.py) reuses it without a request.
_pg_server: list[str] = []


def _postgres_target(tmp_path: Path, request: pytest.FixtureRequest | None = None) -> str:
    from tests.postgres import drop_database, fresh_database

    if request is not None:
        server = request.getfixturevalue("pg_server")
        if not _pg_server:
            _pg_server.append(server)
    elif _pg_server:
        server = _pg_server[0]
    else:
        raise LookupError(
            "a postgres target needs the pg_server fixture: pass the test's request"
        )
    # One database per place, as a file per path on SQLite: a test that opens
    # tmp_path / "a" twice (close, then reopen) finds what it wrote.
    key = str(tmp_path)
    if key in _pg_targets:
        return _pg_targets[key]
    url = _pg_targets[key] = fresh_database(server)
    if request is not None:
        request.addfinalizer(lambda: drop_database(server, _pg_targets.pop(key)))
    # Without a request the database stays until the server stops (end of session).
    return url


_pg_targets: dict[str, str] = {}


POSTGRES = TestBackend(
    name="postgres",
    target=_postgres_target,
    snapshot=_postgres_snapshot,
    divergences=MappingProxyType(
        {
            # docs/backends/postgres.md lists these for users.
            "test_resources_and_the_prompt": (
                "the MCP abathur://health resource runs the ops kit's file probes "
                "(abathur health); on PostgreSQL it raises InvalidInputError until the "
                "PostgreSQL ops kit exists (issue 14)"
            ),
        }
    ),
)

#: Every backend the tests know, by name (each one abathur.backends.BACKENDS has).
KNOWN: Mapping[str, TestBackend] = MappingProxyType({"sqlite": SQLITE, "postgres": POSTGRES})


def _enabled() -> list[TestBackend]:
    names = [
        n.strip()
        for n in os.environ.get("ABATHUR_TEST_BACKENDS", "sqlite").split(",")
        if n.strip()
    ]
    unknown = [n for n in names if n not in KNOWN]
    if unknown or not names:
        raise ValueError(
            f"ABATHUR_TEST_BACKENDS names {unknown or 'nothing'}; known: {sorted(KNOWN)}"
        )
    return [KNOWN[n] for n in dict.fromkeys(names)]


#: Every backend the suite runs service tests on ($ABATHUR_TEST_BACKENDS).
BACKENDS: list[TestBackend] = _enabled()


def backend_of(ab: Abathur) -> TestBackend:
    """The backend an open ``Abathur`` runs on (registered, else known)."""
    name = ab.db.name
    for spec in BACKENDS:
        if spec.name == name:
            return spec
    if name in KNOWN:
        return KNOWN[name]
    raise LookupError(f"backend {name!r} is not in tests/backends.py KNOWN")


def divergence(spec: TestBackend, test_name: str) -> str | None:
    """Why ``spec`` diverges on the test ``test_name`` (``None``: it does not).

    ``test_name`` is the test function's name, without parameters.
    """
    return spec.divergences.get(test_name)


def handle(
    name: str, tmp_path: Path, request: pytest.FixtureRequest | None = None
) -> BackendHandle:
    """The registered backend ``name`` with a fresh target under ``tmp_path``.

    For fixtures that compare abathur with something else under their own
    parameters (e.g. ADK's in-memory service against each backend), where the
    ``backend`` fixture cannot be requested. ``request``: the fixture's own,
    which a postgres target needs to reach the server.
    """
    for spec in BACKENDS:
        if spec.name == name:
            return BackendHandle(spec, spec.target(tmp_path, request))
    raise LookupError(f"backend {name!r} is not in tests/backends.py BACKENDS")
