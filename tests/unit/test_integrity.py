"""``abathur check`` as a library: each check finds what it is for, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
import sqlite_vec

from abathur import Abathur, DatabaseError, InvalidInputError
from abathur.backends.sqlite import migrations, vectors
from abathur.memory import rebuild_keyword_index
from abathur.ops import schema
from abathur.ops.integrity import CHECKS, rebuild_derived_indexes, run_checks
from tests.helpers import digest, execute, populate, snapshot

pytestmark = pytest.mark.sqlite_only(
    "abathur check reads the SQLite file itself: integrity_check, FTS5, vec0, the schema"
)


@pytest.fixture
async def populated(db_path: Path) -> Path:
    await populate(db_path)
    return db_path


CORE_CHECKS = ("integrity", "foreign_keys", "schema", "audit_chain", "json_columns")


def result(report, name: str):
    (found,) = [r for r in report.results if r.name == name]
    return found


def test_the_checks_are_a_list_in_a_stable_order() -> None:
    assert [c.name for c in CHECKS] == [
        "integrity",
        "foreign_keys",
        "schema",
        "audit_chain",
        "json_columns",
        "fts_index",
        "vectors",
        "chunk_vectors",
        "archive_payloads",
    ]
    assert all(c.description for c in CHECKS)


async def test_a_clean_file_passes_and_is_not_written(populated: Path) -> None:
    before = digest(populated)
    report = run_checks(populated)
    assert report.is_ok and report.finding_count == 0
    statuses = {r.name: r.status for r in report.results}
    assert all(statuses[n] == "ok" for n in CORE_CHECKS), statuses
    # Without a search index in the file these say "skipped"; with one, they pass.
    for name in ("fts_index", "vectors", "chunk_vectors"):
        assert statuses[name] in ("ok", "skipped"), statuses
    assert result(report, "integrity").summary == "integrity_check: ok"
    assert result(report, "audit_chain").summary == "5 record(s) verified; 5 row(s) match them"
    assert digest(populated) == before
    data = report.to_dict()
    assert data["is_ok"] is True and [c["name"] for c in data["checks"]] == [c.name for c in CHECKS]


async def test_quick_uses_quick_check(populated: Path) -> None:
    report = run_checks(populated, quick=True)
    assert result(report, "integrity").summary == "quick_check: ok"
    assert report.quick and report.is_ok


def test_search_checks_never_pass_silently_on_a_file_without_a_search_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "before-search.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = wal").fetchall()
    migrations.apply(conn, [m for m in migrations.available() if m.name in ("initial", "tasks")])
    conn.close()
    report = run_checks(path)
    for name in ("fts_index", "vectors"):
        found = result(report, name)
        assert found.status == "skipped"
        assert found.summary == "skipped: no search index in this file"


async def test_a_foreign_key_violation_is_found(populated: Path) -> None:
    # foreign_keys is off on a plain connection, as in the sqlite3 shell.
    execute(
        populated,
        "INSERT INTO tasks (id, session_id, prompt, status, metadata, created_at, updated_at) "
        "VALUES ('t-orphan', 'no-such-session', 'p', 'pending', '{}', 0, 0)",
    )
    report = run_checks(populated)
    found = result(report, "foreign_keys")
    assert found.status == "findings" and not report.is_ok
    assert found.findings == ("1 row(s) of tasks reference a missing sessions row (rowids 2)",)


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["DROP INDEX tasks_by_session"], "index 'tasks_by_session' is missing"),
        (["CREATE TABLE scratch (x)"], "table 'scratch' is not in the migrations"),
        (["ALTER TABLE sessions ADD COLUMN note TEXT"], "table 'sessions' columns differ"),
        (
            ["CREATE TRIGGER t AFTER INSERT ON sessions BEGIN SELECT 1; END"],
            "trigger 't' is not in the migrations",
        ),
        (
            ["DROP INDEX events_by_time", "CREATE INDEX events_by_time ON events (timestamp)"],
            "index 'events_by_time' differs",
        ),
        (["PRAGMA user_version = 99"], "user_version is 99 but this abathur knows"),
    ],
)
async def test_schema_drift_is_found(populated: Path, statements: list[str], expected: str) -> None:
    execute(populated, *statements)
    found = result(run_checks(populated), "schema")
    assert found.status == "findings"
    assert any(expected in f for f in found.findings), found.findings


def test_a_file_behind_the_migrations_is_told_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = wal").fetchall()
    migrations.apply(conn, migrations.available()[:1])
    conn.close()
    found = result(run_checks(path), "schema")
    latest = migrations.available()[-1].version
    # Compared with its own version's schema: only the pending migrations are reported.
    assert found.findings == (
        f"user_version is 1: {latest - 1} migration(s) pending (run 'abathur migrate')",
    )


async def test_a_vec0_table_made_at_run_time_is_not_drift(populated: Path) -> None:
    conn = schema.open_existing(populated, readonly=False)
    try:
        for statement in vectors.vector_table_statements("memories_vec", 384, 256):
            conn.execute(statement)
    finally:
        conn.close()
    found = result(run_checks(populated, only=["schema"]), "schema")
    assert found.status == "ok", found.findings
    assert "created at run time:" in found.summary and "memories_vec" in found.summary


async def test_a_vec0_table_abathur_does_not_make_is_drift(populated: Path) -> None:
    conn = schema.open_existing(populated, readonly=False)
    try:
        conn.execute("CREATE VIRTUAL TABLE scratch_vec USING vec0(embedding float[4])")
    finally:
        conn.close()
    found = result(run_checks(populated), "schema")
    assert found.status == "findings"
    assert "vec0 table 'scratch_vec' is not one abathur creates" in found.findings


async def test_a_tampered_audit_record_is_found_by_the_audit_module(populated: Path) -> None:
    execute(populated, "UPDATE audit_log SET detail = '{\"version\":9}' WHERE seq = 2")
    found = result(run_checks(populated), "audit_chain")
    assert found.status == "findings"
    assert "record 2 was altered (its hash does not match its content)" in found.findings


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE memories SET value = '{\"value\": ' WHERE version = 2",
            "memories.value: 1 row(s) are not valid JSON: 'user:alice/lang v2'",
        ),
        ("UPDATE sessions SET state = 'nope'", "sessions.state: 1 row(s) are not valid JSON"),
        ("UPDATE events SET content = '{'", "events.content: 1 row(s) are not valid JSON"),
        ("UPDATE user_state SET value = ''", "user_state.value: 1 row(s) are not valid JSON"),
        ("UPDATE tasks SET result = '[1,'", "tasks.result: 1 row(s) are not valid JSON"),
    ],
)
async def test_invalid_json_is_found(populated: Path, sql: str, expected: str) -> None:
    execute(populated, sql)
    found = result(run_checks(populated), "json_columns")
    assert found.status == "findings"
    assert any(f.startswith(expected) for f in found.findings), found.findings


async def test_a_damaged_page_is_found_and_the_other_checks_still_report(
    populated: Path,
) -> None:
    conn = apsw.Connection(str(populated))
    page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    (root,) = conn.execute(
        "SELECT rootpage FROM sqlite_schema WHERE name = 'memories_current'"
    ).fetchall()[0]
    conn.close()
    with open(populated, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * 64)  # scribble over the index's b-tree page header and cells
    report = run_checks(populated)
    assert not report.is_ok
    assert result(report, "integrity").status in ("findings", "error")
    assert len(report.results) == len(CHECKS)


def test_a_missing_file_cannot_be_checked(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as ei:
        run_checks(tmp_path / "missing.db")
    assert ei.value.code == "db.error" and "no database at" in ei.value.message
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_a_database_cannot_be_checked(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not sqlite" * 100)
    before = digest(path)
    with pytest.raises(DatabaseError) as ei:
        run_checks(path)
    assert ei.value.code == "db.error" and "is not an SQLite database" in ei.value.message
    assert digest(path) == before


async def test_only_runs_the_named_checks_and_rejects_unknown_ones(populated: Path) -> None:
    report = run_checks(populated, only=["schema", "integrity"])
    assert [r.name for r in report.results] == ["integrity", "schema"]
    with pytest.raises(InvalidInputError) as ei:
        run_checks(populated, only=["integrity", "nope"])
    assert ei.value.code == "invalid_input" and "'nope'" in ei.value.message


# -- the search indexes ----------------------------------------------------------------


def fts_rows(path: Path) -> list[int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [r for (r,) in conn.execute("SELECT rowid FROM memories_fts ORDER BY rowid")]
    finally:
        conn.close()


def live_ids(path: Path) -> list[int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        sql = "SELECT id FROM memories WHERE is_current = 1 AND status = 'live' ORDER BY id"
        return [r for (r,) in conn.execute(sql)]
    finally:
        conn.close()


async def test_the_fts_index_holds_one_row_per_live_memory(populated: Path) -> None:
    found = result(run_checks(populated), "fts_index")
    assert found.status == "ok"
    assert found.summary == "1 row(s) indexed, one per current live memory"
    assert fts_rows(populated) == live_ids(populated)


async def test_a_missing_fts_row_is_found_and_rebuilt(populated: Path) -> None:
    (memory_id,) = live_ids(populated)
    execute(populated, f"DELETE FROM memories_fts WHERE rowid = {memory_id}")
    found = result(run_checks(populated), "fts_index")
    assert found.findings == (
        f"1 live memory version(s) are missing from memories_fts (memories.id {memory_id})",
    )
    async with Abathur.open(populated, embed_worker=False) as ab:
        rows_before = await snapshot(ab)
    rebuilt = rebuild_derived_indexes(populated, rebuilders={"memories_fts": rebuild_keyword_index})
    assert rebuilt == {"chunks_fts": None, "memories_fts": 1}
    assert run_checks(populated).is_ok
    async with Abathur.open(populated, embed_worker=False) as ab:
        after = await snapshot(ab)
        # Only the index moved: every other table's rows are as they were.
        indexes = ("memories_fts", "chunks_fts")
        assert {t: r for t, r in after.items() if not t.startswith(indexes)} == {
            t: r for t, r in rows_before.items() if not t.startswith(indexes)
        }
        hits = await ab.memory.search("en", prefix="user:alice", mode="keyword")
        assert [h.key for h in hits.hits] == ["lang"]


async def test_an_fts_row_for_no_live_memory_is_found(populated: Path) -> None:
    execute(
        populated,
        "INSERT INTO memories_fts (rowid, key, text, scope) VALUES (999, 'k', 'ghost', '1')",
    )
    found = result(run_checks(populated), "fts_index")
    assert found.findings == ("1 memories_fts row(s) index no current live memory (rowid 999)",)


async def test_an_fts_index_never_built_is_found(populated: Path) -> None:
    execute(populated, "DELETE FROM meta WHERE key = 'search.memories_fts'")
    found = result(run_checks(populated), "fts_index")
    assert found.status == "findings" and "has not been built yet" in found.findings[0]


async def test_a_contentless_index_is_not_rebuilt_without_its_rebuilder(populated: Path) -> None:
    before = digest(populated)
    with pytest.raises(InvalidInputError) as ei:
        rebuild_derived_indexes(populated)
    assert ei.value.code == "invalid_input" and "'memories_fts' is contentless" in ei.value.message
    assert digest(populated) == before


async def test_every_live_memory_has_a_vector_or_a_job(populated: Path) -> None:
    found = result(run_checks(populated), "vectors")
    assert found.status == "ok" and found.summary == "0 vector(s), 1 job(s) queued"
    execute(populated, "DELETE FROM embedding_queue")
    (memory_id,) = live_ids(populated)
    found = result(run_checks(populated), "vectors")
    assert found.findings == (
        f"1 live memory version(s) have neither a vector nor a queued job "
        f"(memories.id {memory_id})",
    )


async def test_a_job_for_no_live_memory_is_found(populated: Path) -> None:
    execute(
        populated,
        "INSERT INTO embedding_queue (kind, ref_id, content_hash, enqueued_at, not_before) "
        "VALUES ('memory', 777, 'x', 0, 0)",
    )
    found = result(run_checks(populated), "vectors")
    assert found.findings == ("1 embedding job(s) are for no current live memory (ref_id 777)",)


@pytest.mark.slow
async def test_vectors_of_live_memories_pass_and_orphans_are_found(populated: Path) -> None:
    async with Abathur.open(populated, embed_worker=False) as ab:
        await ab.embeddings.drain()  # the bundled model, offline
    found = result(run_checks(populated), "vectors")
    assert found.status == "ok" and found.summary == "1 vector(s), 0 job(s) queued"
    (memory_id,) = live_ids(populated)
    # Behind the service's back: the memory stops being live, its vector stays.
    execute(populated, f"UPDATE memories SET status = 'deleted' WHERE id = {memory_id}")
    report = run_checks(populated)
    assert result(report, "vectors").findings == (
        f"1 vector(s) in memories_vec belong to no current live memory (item_id {memory_id})",
    )
    assert result(report, "fts_index").status == "findings"


async def test_a_file_without_an_embedder_keeps_no_vectors_and_says_so(db_path: Path) -> None:
    async with Abathur.open(db_path, embedder="none") as ab:
        await ab.memory.put("user:alice", "lang", {"value": "fr"})
    found = result(run_checks(db_path), "vectors")
    assert found.status == "skipped"
    assert found.summary == "skipped: no embedder recorded in this file (it keeps no vectors)"
    assert result(run_checks(db_path), "fts_index").status == "ok"


# --- document chunks' vectors ----------------------------------------------------------------


async def test_a_file_without_documents_skips_the_chunk_check(populated: Path) -> None:
    found = result(run_checks(populated), "chunk_vectors")
    assert found.status == "skipped"
    assert found.summary == "skipped: no document chunks in this file"


async def test_every_chunk_has_a_vector_or_a_job_and_none_is_orphaned(
    db_path: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Restore\n\nVerify the copy.\n\n## Afterwards\n\nRun smoke.\n")
    async with Abathur.open(db_path, embed_worker=False) as ab:
        await ab.documents.sync(docs)
        found = result(run_checks(db_path), "chunk_vectors")
        assert (found.status, found.summary) == ("ok", "2 chunk(s), 0 vector(s), 2 job(s) queued")
        await ab.embeddings.drain()  # the bundled model, offline
    found = result(run_checks(db_path), "chunk_vectors")
    assert (found.status, found.summary) == ("ok", "2 chunk(s), 2 vector(s), 0 job(s) queued")
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    first, second = [i for (i,) in conn.execute("SELECT id FROM chunks ORDER BY id")]
    conn.close()
    # Behind the service's back: one chunk loses its vector, the other its row.
    conn = apsw.Connection(str(db_path))
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())  # vec0 rows need the module
    conn.execute(f"DELETE FROM chunks_vec WHERE item_id = {first}")
    conn.close()
    execute(
        db_path,
        "PRAGMA foreign_keys = OFF",
        f"DELETE FROM chunks WHERE id = {second}",
        "INSERT INTO embedding_queue (kind, ref_id, content_hash, enqueued_at, not_before) "
        "VALUES ('chunk', 888, 'x', 0, 0)",
    )
    report = run_checks(db_path)
    assert result(report, "chunk_vectors").findings == (
        f"1 document chunk(s) have neither a vector nor a queued job (chunks.id {first})",
        f"1 vector(s) in chunks_vec belong to no document chunk (item_id {second})",
        "1 embedding job(s) are for no document chunk (ref_id 888)",
    )
    assert not report.is_ok
