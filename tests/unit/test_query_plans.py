"""Every hot query uses the index that exists for it (EXPLAIN QUERY PLAN of the SQL that ships).

The list is ``abathur.backends.sqlite.inspection.HOT_QUERIES``, the one ``abathur smoke`` checks on
a live file; here each query is checked on a fresh one.
"""

from __future__ import annotations

import pytest

from abathur import Abathur
from abathur.backends.sqlite.inspection import HOT_QUERIES
from abathur.backends.sqlite.plans import HotQuery, query_plan, scans

pytestmark = pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite backend's SQL")


@pytest.mark.parametrize("query", HOT_QUERIES, ids=[q.name for q in HOT_QUERIES])
async def test_hot_query_uses_its_index(ab: Abathur, query: HotQuery) -> None:
    plan = await ab.db.read(lambda tx: query_plan(tx.conn, query.sql))
    got = " | ".join(plan)
    assert any(query.uses in step for step in plan), f"{query.name}: {got}"
    assert not scans(plan), f"{query.name} scans: {got}"


def test_every_usage_ledger_index_has_a_hot_query() -> None:
    # Migration 005's indexes on usage_ledger, each read by a budget or a report.
    for index in ("usage_by_time", "usage_by_app", "usage_by_user"):
        assert any(index in q.uses for q in HOT_QUERIES), index
