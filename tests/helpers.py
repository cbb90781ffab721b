"""Helpers several test modules share (issue 13): a test module imports from
here, never from another test module or from conftest.py (which holds
fixtures and hooks only).

- :func:`populate`: a small database with something in every core table, for
  the tests of the operations kit (check, backup, health, scripts, smoke).
- :func:`execute`: change a file behind abathur's back; :func:`digest` proves
  a file was not written at all.
- :func:`abathur` runs the command line in a subprocess, :func:`ok_json` reads
  its one JSON document.
- :func:`rows`: the rows of a query on a SQLite file, through the library's reader.
- :func:`snapshot` and :class:`assert_unchanged`: prove a failed call left the
  database exactly as it was, on any registered backend (tests/backends.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw

from abathur import Abathur, Event
from tests.backends import backend_of

__all__ = [
    "MemoryClock",
    "abathur",
    "assert_unchanged",
    "digest",
    "execute",
    "ok_json",
    "populate",
    "rows",
    "snapshot",
]


async def populate(path: str | Path) -> None:
    """Sessions, events, state, a task and two versions of a memory. No embedding
    worker runs, so the file is quiet once this returns: its embedding jobs wait."""
    async with Abathur.open(path, embed_worker=False) as ab:
        s = await ab.sessions.create(app="app", user="alice", state={"app:model": "m", "k": 1})
        s = await ab.sessions.append_event(
            s.id,
            Event(author="user", content={"text": "hi"}, state_delta={"user:lang": "fr"}),
            expected_revision=s.revision,
        )
        await ab.tasks.create(session_id=s.id, prompt="summarise")
        await ab.memory.put("user:alice", "lang", {"value": "fr"}, metadata={"source": "chat"})
        await ab.memory.put("user:alice", "lang", {"value": "en"})


def execute(path: Path, *statements: str) -> None:
    """Change the file behind abathur's back, as a bug or a person with sqlite3 might."""
    conn = apsw.Connection(str(path))
    try:
        for sql in statements:
            conn.execute(sql).fetchall()
    finally:
        conn.close()


def digest(path: Path) -> str:
    """The SHA-256 of the file's bytes: equal before and after means it was not written."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def snapshot(ab: Abathur) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through the library's own reader.

    Use it around a call that must fail: ``before == after`` proves the call
    changed nothing (``assert_unchanged`` does exactly that).
    """
    return await backend_of(ab).snapshot(ab)


class assert_unchanged:
    """Async context manager: the database holds the same rows after the block."""

    def __init__(self, ab: Abathur) -> None:
        self.ab = ab
        self.before: dict[str, list[tuple[Any, ...]]] = {}

    async def __aenter__(self) -> None:
        self.before = await snapshot(self.ab)

    async def __aexit__(self, *exc: object) -> bool:
        after = await snapshot(self.ab)
        assert after == self.before, "the failed call changed the database"
        return False


async def rows(ab: Abathur, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of ``sql`` on the SQLite file (tests that use it are sqlite_only)."""
    return await ab.db.read(lambda tx: tx.conn.execute(sql, params).fetchall())


def abathur(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``abathur`` command in a subprocess, without the caller's ABATHUR_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    return subprocess.run(
        [sys.executable, "-m", "abathur", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a successful ``--json`` command printed."""
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # exactly one document, or this raises


class MemoryClock:
    """The clock :mod:`abathur.memory` reads, moved on by :meth:`advance` instead of a sleep.

    A TTL test that slept past a 50 ms TTL also needed the put and the first
    read to fit inside it, which a loaded machine, or a PostgreSQL round trip,
    did not always allow. This clock starts at the real time and moves only
    by :meth:`advance`, and by a microsecond per reading so that successive
    writes still get increasing times. The stores are handed ``now`` by the
    service, so a store that read the time itself would fail these tests.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        self.now += 1e-6
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()

    def advance(self, seconds: float) -> None:
        self.now += seconds
