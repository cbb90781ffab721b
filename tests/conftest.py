"""Shared fixtures: a real database file per test, and a way to prove a failed
call left it exactly as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import apsw
import pytest

from abathur import Abathur


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh database file (not yet created)."""
    return tmp_path / "agent.db"


@pytest.fixture
async def ab(db_path: Path) -> AsyncIterator[Abathur]:
    """An open Abathur on a fresh file, closed after the test.

    No background embedding worker: it would write between the two snapshots
    of ``assert_unchanged``. Tests of the worker open their own database.
    """
    async with Abathur.open(db_path, embed_worker=False) as opened:
        yield opened


async def snapshot(ab: Abathur) -> dict[str, list[tuple]]:
    """Every row of every table, read through the library's own reader.

    Use it around a call that must fail: ``before == after`` proves the call
    changed nothing (``assert_unchanged`` does exactly that).
    """

    def dump(conn: apsw.Connection) -> dict[str, list[tuple]]:
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


class assert_unchanged:
    """Async context manager: the database holds the same rows after the block."""

    def __init__(self, ab: Abathur) -> None:
        self.ab = ab
        self.before: dict[str, list[tuple]] = {}

    async def __aenter__(self) -> None:
        self.before = await snapshot(self.ab)

    async def __aexit__(self, *exc: object) -> bool:
        after = await snapshot(self.ab)
        assert after == self.before, "the failed call changed the database"
        return False
