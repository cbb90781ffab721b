"""PgCheckStore (issue 14): what abathur smoke asks of PostgreSQL, on a real server."""

from __future__ import annotations

from typing import Any

import pytest

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.inspection import HOT_QUERIES, PgCheckStore
from abathur.backends.postgres.migrations import available
from abathur.config import Settings


def store(conn: Any) -> PgCheckStore:
    return PgCheckStore(conn, PgContext("postgresql://test", Settings()))


def test_engine_and_schema_of_a_fresh_database(pg_conn: Any) -> None:
    checks = store(pg_conn)
    engine = checks.engine()
    assert engine.description.startswith("PostgreSQL 18") and "pgvector 0.8" in engine.description
    assert engine.schema_version == available()[-1].version
    tables = checks.schema_objects("table")
    assert tables.is_current and tables.expected >= 20
    assert (tables.missing, tables.changed, tables.runtime_missing) == ((), (), ())
    indexes = checks.schema_objects("index")
    assert indexes.expected >= 10 and indexes.missing == ()


def test_a_dropped_index_and_an_added_column_are_found(pg_conn: Any) -> None:
    pg_conn.execute("DROP INDEX events_by_time")
    pg_conn.execute("ALTER TABLE tasks ADD COLUMN extra text")
    checks = store(pg_conn)
    assert checks.schema_objects("index").missing == ("events_by_time",)
    assert checks.schema_objects("table").changed == ("tasks",)


def test_integrity_and_foreign_keys_of_a_clean_database(pg_conn: Any) -> None:
    checks = store(pg_conn)
    assert checks.integrity()[0] == []
    assert checks.foreign_keys() == ([], "no violations")


def test_an_orphan_event_is_a_foreign_key_violation(pg_conn: Any) -> None:
    # Enforcement bypassed, as a careless bulk load or a replica role can.
    pg_conn.execute("SET session_replication_role = replica")
    pg_conn.execute(
        "INSERT INTO events (session_id, seq, id, author, timestamp) "
        "VALUES ('gone', 1, 'e', 'u', 0)"
    )
    pg_conn.execute("SET session_replication_role = origin")
    findings, summary = store(pg_conn).foreign_keys()
    assert findings == ["events 1"] and summary == "1 violation(s): events 1"


def test_every_hot_query_uses_its_index(pg_conn: Any) -> None:
    with pg_conn.transaction():
        checked, problems = store(pg_conn).plan_problems()
    assert checked == len(HOT_QUERIES) and problems == []


def test_a_missing_index_is_a_plan_problem(pg_conn: Any) -> None:
    pg_conn.execute("DROP INDEX tasks_by_session")
    with pg_conn.transaction():
        _, problems = store(pg_conn).plan_problems()
    assert [p.split(":")[0] for p in problems] == ["tasks of a session"]


@pytest.mark.parametrize("root", [None, "/tmp/docs"])
def test_leftovers_of_an_empty_database(pg_conn: Any, root: str | None) -> None:
    left = store(pg_conn).run_leftovers(
        app="abathur-smoke", user="u", namespace="abathur-smoke:run", audit_after=0,
        root=root, partition="abathur-smoke:run",
    )
    assert (left.sessions, left.memories, left.documents, left.document_roots) == (0, 0, 0, 0)
    assert left.vector_chunks == 0 and left.audit_entities == ()
