"""Several hosts on one database (issue 14): 4 OS processes, each its own
Abathur, racing for session revisions and memory versions, writing their own
memories and searching, then an audit of every reported write against the
database and ``abathur check`` (benchmarks/hosts.py; its long run is 4 x 25
coroutines for 60 s)."""

from __future__ import annotations

import pytest
from benchmarks.hosts import EXPECTED_CODES, run

from tests.backends import BackendHandle


@pytest.mark.slow
def test_four_processes_lose_nothing_and_one_writer_wins_each_revision(
    backend: BackendHandle,
) -> None:
    verdict = run(str(backend.target), processes=4, coroutines=10, seconds=5)
    assert verdict.untyped == []
    assert set(verdict.typed) <= EXPECTED_CODES, verdict.typed
    assert verdict.problems == []
    assert verdict.check_ok
    # The races happened: writers lost some, and every kind of write landed.
    assert sum(verdict.typed.values()) > 0 and verdict.writes > 100 and verdict.searches > 0
