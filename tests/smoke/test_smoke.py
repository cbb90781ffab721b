"""The 35-case smoke suite: all green on a fresh database, red where the database is wrong,
and nothing of a run left live afterwards."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import apsw
import pytest

from abathur import Abathur, InvalidInputError
from abathur.ops.integrity import run_checks
from abathur.ops.smoke import CASES, CATEGORIES, SMOKE_APP, SMOKE_ROOT, run_smoke
from tests.backends import BackendHandle
from tests.helpers import abathur, execute, populate

# The issue's list, in its order: the table an operator reads must say exactly this.
ISSUE_CASES = [
    (
        "connectivity",
        ["connects", "all tables", "all indexes", "integrity_check", "foreign_key_check"],
    ),
    (
        "core",
        [
            "create session",
            "append event",
            "update session state",
            "terminate session",
            "create semantic memory",
            "update memory to version 2",
            "get current version",
            "search memories by namespace",
            "audit log holds the memory operations",
            "create task linked to the session",
        ],
    ),
    (
        "performance",
        [
            "session get < 10 ms",
            "memory get < 20 ms",
            "namespace query < 50 ms",
            "50 concurrent session reads < 1 s",
            "semantic search < 500 ms",
            "hybrid search < 600 ms",
            "document sync processes a file",
            "hot queries use their indexes",
        ],
    ),
    (
        "integration",
        [
            "session -> task -> memory workflow",
            "versioning: create, update, history",
            "namespace hierarchy",
            "semantic search returns the relevant memory",
            "document sync detects a changed file",
            "consolidation resolves a conflict",
            "audit trail captures every operation",
        ],
    ),
    (
        "errors",
        [
            "invalid JSON in an event rejected",
            "duplicate session id raises",
            "invalid memory type raises",
            "unknown session id on a task handled",
            "concurrent session update conflict resolved",
        ],
    ),
]


@pytest.fixture
async def live_db(backend: BackendHandle) -> str | Path:
    """A database as an application leaves it: its own data, the bundled embedder recorded.

    On each registered backend; the tests of the SQLite file are sqlite_only."""
    await populate(backend.target)
    return backend.target


def application_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row that is not the smoke run's own, of the tables an application writes."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {
            "sessions": conn.execute(
                "SELECT * FROM sessions WHERE app != ? ORDER BY id", (SMOKE_APP,)
            ).fetchall(),
            "events": conn.execute(
                "SELECT * FROM events WHERE session_id IN "
                "(SELECT id FROM sessions WHERE app != ?) ORDER BY session_id, seq",
                (SMOKE_APP,),
            ).fetchall(),
            "tasks": conn.execute("SELECT * FROM tasks ORDER BY id").fetchall(),
            "memories": conn.execute(
                "SELECT * FROM memories WHERE namespace NOT LIKE 'abathur-smoke:%' ORDER BY id"
            ).fetchall(),
            "app_state": conn.execute("SELECT * FROM app_state ORDER BY 1, 2").fetchall(),
            "user_state": conn.execute("SELECT * FROM user_state ORDER BY 1, 2, 3").fetchall(),
        }
    finally:
        conn.close()


def smoke_live_rows(path: Path) -> dict[str, int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {
            "sessions": conn.execute(
                "SELECT count(*) FROM sessions WHERE app = ?", (SMOKE_APP,)
            ).fetchall()[0][0],
            "memories": conn.execute(
                "SELECT count(*) FROM memories WHERE namespace LIKE 'abathur-smoke:%' "
                "AND is_current = 1 AND status = 'live'"
            ).fetchall()[0][0],
            "documents": conn.execute(
                "SELECT count(*) FROM documents JOIN document_roots AS r ON r.id = root_id "
                "WHERE r.path LIKE '%abathur-smoke-%'"
            ).fetchall()[0][0],
            "document_roots": conn.execute(
                "SELECT count(*) FROM document_roots WHERE path LIKE '%abathur-smoke-%'"
            ).fetchall()[0][0],
        }
    finally:
        conn.close()


def failed(report) -> dict[int, str]:
    return {r.number: r.detail for r in report.results if not r.is_passed}


def test_the_cases_are_the_issues_35_in_order() -> None:
    assert [c.number for c in CASES] == list(range(1, 36))
    assert list(CATEGORIES) == [category for category, _ in ISSUE_CASES]
    assert [(c.category, c.name) for c in CASES] == [
        (category, name) for category, names in ISSUE_CASES for name in names
    ]
    assert Counter(c.category for c in CASES) == {
        "connectivity": 5,
        "core": 10,
        "performance": 8,
        "integration": 7,
        "errors": 5,
    }


@pytest.mark.sqlite_only("reads the SQLite file with apsw and runs abathur check on it")
async def test_all_35_pass_on_a_fresh_database_and_leave_nothing_live(live_db: Path) -> None:
    before = application_rows(live_db)
    report = await run_smoke(live_db)
    assert failed(report) == {}
    assert report.summary == "35 passed, 0 failed" and report.is_ok
    assert [r.number for r in report.results] == list(range(1, 36))
    assert all(r.seconds > 0 and r.detail for r in report.results)

    # The application's data is exactly as it was; nothing of the run is live.
    assert application_rows(live_db) == before
    assert smoke_live_rows(live_db) == dict.fromkeys(
        ("sessions", "memories", "documents", "document_roots"), 0
    )
    cleanup = report.cleanup
    assert cleanup.is_clean
    assert cleanup.live_left == dict.fromkeys(
        (
            "sessions",
            "memories",
            "documents",
            "document_roots",
            "vector_chunks",
            "audit_records_naming_the_run",
        ),
        0,
    )
    assert cleanup.sessions_deleted >= 5 and cleanup.memories_deleted >= 10
    # What stays by design: the run's audit records, redacted, and three purge records.
    assert cleanup.remains["audit_redacted"] > 0 and cleanup.remains["purge_records"] == 3
    # ... and the file is clean afterwards: no orphaned vector, no FTS drift.
    check = run_checks(live_db)
    assert check.is_ok, [(r.name, r.findings) for r in check.results if r.findings]


async def test_one_category_runs_only_its_cases(live_db: Path) -> None:
    report = await run_smoke(live_db, category="errors")
    assert [r.number for r in report.results] == [31, 32, 33, 34, 35]
    assert report.summary == "5 passed, 0 failed" and report.category == "errors"
    with pytest.raises(InvalidInputError) as ei:
        await run_smoke(live_db, category="everything")
    assert ei.value.code == "invalid_input" and "connectivity" in ei.value.message


@pytest.mark.sqlite_only("drops SQLite indexes behind abathur's back")
async def test_a_missing_index_fails_the_cases_that_need_it(live_db: Path) -> None:
    execute(live_db, "DROP INDEX memories_current", "DROP INDEX tasks_by_session")
    report = await run_smoke(live_db)
    problems = failed(report)
    assert set(problems) == {3, 23}, problems
    assert "missing index(es): memories_current, tasks_by_session" in problems[3]
    assert "memory current version" in problems[23] and "tasks of a session" in problems[23]
    assert report.summary == "33 passed, 2 failed" and not report.is_ok
    assert report.cleanup.is_clean


async def test_a_database_that_is_not_migrated_fails_connectivity(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    from abathur.backends.sqlite import migrations

    conn = apsw.Connection(str(path))
    migrations.apply(conn, migrations.available()[:2])
    conn.close()
    report = await run_smoke(path, category="connectivity")
    problems = failed(report)
    assert set(problems) == {2, 3}
    assert "run 'abathur migrate'" in problems[2]
    latest = migrations.available()[-1].version
    assert migrations.current_version(apsw.Connection(str(path))) == 2 != latest, "not migrated"


async def test_a_missing_file_fails_every_case_and_creates_nothing(tmp_path: Path) -> None:
    report = await run_smoke(tmp_path / "missing.db")
    assert report.summary == "0 passed, 35 failed" and not report.is_ok
    assert all("no database at" in r.detail for r in report.results)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sqlite_only("reads the SQLite file with apsw")
async def test_semantic_cases_fail_with_the_reason_when_there_are_no_vectors(
    db_path: Path,
) -> None:
    # A file made without an embedder: the run must not record one (that would
    # queue every memory), so vector search is impossible and must say so.
    async with Abathur.open(db_path, embedder="none") as ab:
        await ab.memory.put("user:alice", "lang", "fr")
    report = await run_smoke(db_path)
    problems = failed(report)
    assert set(problems) == {20, 21, 27}, problems
    assert all("records no embedder" in detail for detail in problems.values())
    assert report.cleanup.is_clean
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM embedding_queue").fetchall() == [(0,)]
    assert conn.execute("SELECT value FROM meta WHERE key = 'embedder.name'").fetchall() == []
    conn.close()


@pytest.mark.sqlite_only("reads the SQLite file with apsw")
async def test_two_runs_at_once_do_not_disturb_each_other(live_db: Path) -> None:
    first, second = await asyncio.gather(run_smoke(live_db), run_smoke(live_db))
    assert (failed(first), failed(second)) == ({}, {})
    assert first.run_id != second.run_id
    assert first.cleanup.is_clean and second.cleanup.is_clean, (first.cleanup, second.cleanup)
    assert smoke_live_rows(live_db) == dict.fromkeys(
        ("sessions", "memories", "documents", "document_roots"), 0
    )


@pytest.mark.sqlite_only("drops SQLite indexes behind abathur's back")
def test_the_command_prints_the_table_and_exits_0_only_when_all_pass(live_db: Path) -> None:
    done = abathur("smoke", "--db", str(live_db), cwd=live_db.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "35 passed, 0 failed" in lines
    rows = [line for line in lines if re.match(rf"^ ?\d+  ({'|'.join(CATEGORIES)}) ", line)]
    assert [int(row[:3]) for row in rows] == list(range(1, 36))
    assert all(" pass " in row for row in rows)
    assert lines[-1] == "35 passed, 0 failed", "the summary is the last line"

    data = json.loads(abathur("smoke", "--db", str(live_db), "--json", cwd=live_db.parent).stdout)
    assert data["passed"] == 35 and data["failed"] == 0 and data["is_ok"] is True
    assert data["namespace"] == f"{SMOKE_ROOT}:{data['run_id']}"
    assert [c["status"] for c in data["cases"]] == ["passed"] * 35

    execute(live_db, "DROP INDEX events_by_time")
    broken = abathur(
        "smoke", "--db", str(live_db), "--category", "connectivity", "--json", cwd=live_db.parent
    )
    assert broken.returncode == 1
    data = json.loads(broken.stdout)
    assert [c["number"] for c in data["cases"] if c["status"] == "failed"] == [3]
    human = abathur("smoke", "--db", str(live_db), "--category", "connectivity", cwd=live_db.parent)
    assert human.returncode == 1 and "4 passed, 1 failed" in human.stdout
    assert "FAIL" in human.stdout and "events_by_time" in human.stdout
