"""The hash-chained audit log detects edited, removed and truncated records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import apsw
import pytest
import zstandard

from abathur import Abathur, Event, audit
from abathur.backends.sqlite import migrations
from abathur.ops.backup import create_backup
from abathur.ops.integrity import CheckResult, run_checks
from abathur.ops.restore import restore_backup
from abathur.stores import Transaction

# Tests that edit or build the SQLite file behind the log's back, or run
# `abathur check` (a SQLite file check) on it.
SQLITE_FILE = pytest.mark.sqlite_only(
    "edits or builds the SQLite file behind the log's back, or runs abathur check on it"
)


async def write_records(ab: Abathur, n: int) -> None:
    for i in range(n):
        await ab.db.write(
            lambda c, i=i: audit.append(c, "memory.put", "memory", f"ns/k{i}", {"version": i})
        )


def tamper(path: Path, sql: str) -> None:
    conn = apsw.Connection(str(path))
    try:
        conn.execute(sql)
    finally:
        conn.close()


async def test_an_untouched_chain_verifies(ab: Abathur) -> None:
    await write_records(ab, 5)
    report = await ab.audit.verify()
    assert report.is_ok and report.records == 5 and report.problems == []


async def test_an_empty_chain_verifies(ab: Abathur) -> None:
    report = await ab.audit.verify()
    assert report.is_ok and report.records == 0


async def test_records_are_listed_in_order_and_filtered(ab: Abathur) -> None:
    await write_records(ab, 3)
    records = await ab.audit.records(entity="memory")
    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.detail for r in records] == [{"version": 0}, {"version": 1}, {"version": 2}]
    only = await ab.audit.records(entity_id="ns/k1")
    assert [r.seq for r in only] == [2]
    assert await ab.audit.records(entity="session") == []
    assert [r.seq for r in await ab.audit.records(after_seq=1, limit=1)] == [2]


@SQLITE_FILE
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE audit_log SET detail = '{\"version\":99}' WHERE seq = 2", "record 2 was altered"),
        ("UPDATE audit_log SET action = 'memory.delete' WHERE seq = 1", "record 1 was altered"),
        ("DELETE FROM audit_log WHERE seq = 3", "records 3..3 are missing"),
        ("DELETE FROM audit_log WHERE seq = 5", "the newest records were removed"),
        ("UPDATE audit_head SET hash = 'x'", "head"),
    ],
)
async def test_tampering_is_detected(db_path: Path, sql: str, expected: str) -> None:
    async with Abathur.open(db_path) as ab:
        await write_records(ab, 5)
    tamper(db_path, sql)
    async with Abathur.open(db_path) as ab:
        report = await ab.audit.verify()
    assert not report.is_ok
    assert any(expected in p for p in report.problems), report.problems


async def test_a_rolled_back_write_leaves_no_record(ab: Abathur) -> None:
    def record_then_fail(tx: Transaction) -> None:
        audit.append(tx, "memory.put", "memory", "ns/k", {})
        raise RuntimeError("the change itself failed")

    with pytest.raises(RuntimeError):
        await ab.db.write(record_then_fail)
    assert await ab.audit.records() == []
    assert (await ab.audit.verify()).is_ok


# --- the chain covers content (issue 11, item 3) -------------------------------------


async def populate(path: Path) -> dict[str, str]:
    """One of each covered row: a session, an event, a finished task, two memory versions."""
    async with Abathur.open(path, embed_worker=False, embedder="none") as ab:
        s = await ab.sessions.create(app="app", user="alice")
        s = await ab.sessions.append_event(s.id, Event(author="user", content={"text": "hi"}))
        t = await ab.tasks.create(session_id=s.id, prompt="summarise")
        await ab.tasks.update(t.id, status="running")
        await ab.tasks.update(t.id, status="succeeded", result={"summary": "ok"})
        await ab.memory.put("user:alice", "lang", {"value": "fr"}, metadata={"source": "chat"})
        await ab.memory.put("user:alice", "lang", {"value": "en"})
    return {"session": s.id, "task": t.id}


def audit_result(path: Path) -> CheckResult:
    (found,) = [r for r in run_checks(path).results if r.name == "audit_chain"]
    return found


@SQLITE_FILE
async def test_an_untouched_file_verifies_every_covered_row(db_path: Path) -> None:
    await populate(db_path)
    found = audit_result(db_path)
    assert found.status == "ok", found.findings
    # session, event, task, two memory versions.
    assert found.summary.endswith("; 5 row(s) match them")


@SQLITE_FILE
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            'UPDATE memories SET value = \'{"value":"de"}\' WHERE version = 2',
            "memory user:alice/lang v2 was changed after audit record",
        ),
        (
            'UPDATE memories SET metadata = \'{"source":"forged"}\' WHERE version = 1',
            "memory user:alice/lang v1 was changed",
        ),
        ('UPDATE events SET content = \'{"text":"bye"}\'', "was changed after audit record"),
        ("UPDATE events SET author = 'admin'", "event "),
        ("UPDATE tasks SET prompt = 'exfiltrate'", "task "),
        ('UPDATE tasks SET result = \'{"summary":"forged"}\'', "was changed"),
        ("UPDATE sessions SET user = 'mallory'", "session "),
        # Pointing a row at another record does not help: the hash names the row.
        ("UPDATE memories SET audit_seq = audit_seq - 1 WHERE version = 2", "memory user:alice"),
        ("UPDATE memories SET audit_seq = 999 WHERE version = 2", "which does not exist"),
        ("UPDATE events SET audit_seq = NULL", "1 events row(s) name no audit record"),
        (
            "INSERT INTO memories (namespace, key, version, type, value, created_at, "
            "first_created_at, is_current) VALUES ('user:bob', 'k', 1, 'semantic', '1', 0, 0, 1)",
            "1 memories row(s) name no audit record",
        ),
        (
            "UPDATE memories SET is_current = 0 WHERE version = 2; "
            "UPDATE memories SET is_current = 1 WHERE version = 1",
            "memory user:alice/lang: current version is 1 but the newest is 2",
        ),
    ],
)
async def test_a_row_edited_after_the_fact_is_a_finding(
    db_path: Path, sql: str, expected: str
) -> None:
    await populate(db_path)
    tamper(db_path, sql)
    found = audit_result(db_path)
    assert found.status == "findings"
    assert any(expected in f for f in found.findings), found.findings


@SQLITE_FILE
async def test_a_task_rolled_back_to_an_earlier_state_is_a_finding(db_path: Path) -> None:
    ids = await populate(db_path)
    async with Abathur.open(db_path, embedder="none") as ab:
        records = await ab.audit.records(entity="task", entity_id=ids["task"])
    running = records[1]
    assert running.detail["to"] == "running"
    # The row exactly as the 'running' record wrote it, pointing at that record.
    conn = apsw.Connection(str(db_path))
    try:
        (updated_at,) = conn.execute(
            "SELECT at FROM audit_log WHERE seq = ?", (running.seq,)
        ).fetchall()[0]
        conn.execute(
            "UPDATE tasks SET status = 'running', result = NULL, updated_at = ?, audit_seq = ?",
            (updated_at, running.seq),
        )
    finally:
        conn.close()
    found = audit_result(db_path)
    assert found.findings == (
        f"task {ids['task']} was rolled back to audit record {running.seq}, a later one "
        "replaced it",
    )


@SQLITE_FILE
async def test_blanking_a_record_outside_a_purge_is_a_finding(db_path: Path) -> None:
    await populate(db_path)
    tamper(
        db_path,
        "UPDATE audit_log SET entity_id = '', detail = '{}', salt = NULL, redacted = 1 "
        "WHERE seq = 1",
    )
    found = audit_result(db_path)
    assert any("records were blanked outside a purge" in f for f in found.findings)
    assert any("which a purge redacted" in f for f in found.findings)


@SQLITE_FILE
async def test_archived_rows_are_no_finding_and_verify_again_once_restored(
    db_path: Path,
) -> None:
    policies = [
        {"kind": "sessions", "after_days": 0},
        {"kind": "memories", "idle_days": 1e-9, "after_days": 0},
    ]
    await populate(db_path)
    async with Abathur.open(
        db_path, embedder="none", archive_pause_ms=0, archive_policies=policies
    ) as ab:
        s = (await ab.sessions.list(app="app"))[0]
        await ab.sessions.terminate(s.id)
        report = await ab.archival.run()
        assert report.entries == 2
        assert audit_result(db_path).status == "ok"
        for entry in await ab.archival.list():
            await ab.archival.restore(entry.id)
        assert await ab.memory.get("user:alice", "lang") is not None
    found = audit_result(db_path)
    assert found.status == "ok", found.findings
    assert found.summary.endswith("; 5 row(s) match them")


@SQLITE_FILE
async def test_ab_audit_verify_covers_the_rows_too(db_path: Path) -> None:
    await populate(db_path)
    tamper(db_path, "UPDATE memories SET value = '\"forged\"' WHERE version = 2")
    async with Abathur.open(db_path, embedder="none") as ab:
        report = await ab.audit.verify()
    assert not report.is_ok and report.rows_verified == 4
    assert any("was changed after audit record" in p for p in report.problems)


# --- upgrade of a file written before migration 007 --------------------------------


def before_audit_content() -> list[migrations.Migration]:
    """The migrations before the one that made the audit cover content (by name: the
    lead may renumber it at merge)."""
    (audit_content,) = [m for m in migrations.available() if m.name == "audit_content"]
    return [m for m in migrations.available() if m.version < audit_content.version]


def v1_file(path: Path) -> str:
    """A file at migration 005 with three format-1 records and the rows they describe."""
    conn = apsw.Connection(str(path))
    try:
        migrations.apply(conn, before_audit_content())
        conn.execute(
            "INSERT INTO sessions (id, app, user, status, created_at, updated_at) "
            "VALUES ('s1', 'app', 'alice', 'created', 1.0, 1.0)"
        )
        conn.execute(
            "INSERT INTO memories (namespace, key, version, type, value, created_at, "
            "first_created_at) VALUES ('user:alice', 'lang', 1, 'semantic', '\"fr\"', 2.0, 2.0)"
        )
        prev = audit.GENESIS
        for seq, (action, entity, entity_id, detail) in enumerate(
            [
                ("session.create", "session", "s1", '{"app":"app","user":"alice"}'),
                ("memory.put", "memory", "user:alice/lang", '{"version":1}'),
                ("memory.put", "memory", "user:alice/other", '{"version":1}'),
            ],
            start=1,
        ):
            at = float(seq)
            digest = audit._digest_v1(prev, seq, at, action, entity, entity_id, detail)
            conn.execute(
                "INSERT INTO audit_log (seq, at, action, entity, entity_id, detail, prev_hash, "
                "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, at, action, entity, entity_id, detail, prev, digest),
            )
            prev = digest
        conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 3, ?)", (prev,))
    finally:
        conn.close()
    return prev


@SQLITE_FILE
async def test_format_1_records_are_upgraded_on_open_keeping_the_old_head(
    db_path: Path,
) -> None:
    old_head = v1_file(db_path)
    async with Abathur.open(db_path, embedder="none", backup_before_migrate=False) as ab:
        records = await ab.audit.records()
        assert (await ab.audit.verify()).is_ok
        await ab.memory.put("user:alice", "lang", "en")
    upgraded = records[-1]
    assert (upgraded.seq, upgraded.action) == (4, "audit.upgraded")
    assert upgraded.detail["old_head_seq"] == 3 and upgraded.detail["old_head_hash"] == old_head
    assert upgraded.detail["old_chain_problems"] == 0
    assert upgraded.detail["legacy_rows"] == {
        "memories": 1,
        "events": 0,
        "tasks": 0,
        "sessions": 1,
    }
    found = audit_result(db_path)
    assert found.status == "ok", found.findings
    assert found.summary == (
        "5 record(s) verified; 1 row(s) match them; 2 row(s) predate content hashing"
    )
    # More rows without a record than the upgrade counted: inserted behind our back.
    tamper(db_path, "UPDATE memories SET audit_seq = NULL WHERE version = 2")
    assert any(
        "2 memories row(s) name no audit record; at most 1" in f
        for f in audit_result(db_path).findings
    )


@SQLITE_FILE
async def test_a_chain_broken_before_the_upgrade_stays_a_finding(db_path: Path) -> None:
    v1_file(db_path)
    tamper(db_path, "UPDATE audit_log SET detail = '{\"version\":9}' WHERE seq = 2")
    async with Abathur.open(db_path, embedder="none", backup_before_migrate=False):
        pass
    found = audit_result(db_path)
    assert any(
        "the chain had 1 problem(s) when record 4 upgraded it" in f for f in found.findings
    ), found.findings


@SQLITE_FILE
async def test_a_backup_edited_and_re_checksummed_restores_with_a_finding(
    db_path: Path, tmp_path: Path
) -> None:
    # Issue 11, item 3: edit a memory value in a backup and recompute the
    # manifest's checksums: verify and restore still accept it (no key), but
    # the restored file's check names the edited row.
    await populate(db_path)
    made = create_backup(db_path)
    raw = tmp_path / "raw.db"
    raw.write_bytes(zstandard.ZstdDecompressor().decompress(made.data_path.read_bytes()))
    tamper(raw, 'UPDATE memories SET value = \'{"value":"de"}\' WHERE version = 2')
    data = raw.read_bytes()
    packed = zstandard.ZstdCompressor().compress(data)
    made.data_path.write_bytes(packed)
    manifest = json.loads(made.manifest_path.read_text("utf-8"))
    manifest.update(
        sha256=hashlib.sha256(packed).hexdigest(),
        compressed_bytes=len(packed),
        raw_sha256=hashlib.sha256(data).hexdigest(),
        raw_bytes=len(data),
    )
    made.manifest_path.write_text(json.dumps(manifest), "utf-8")
    result = restore_backup(made.data_path, target=tmp_path / "restored.db")
    (found,) = [r for r in result.check.results if r.name == "audit_chain"]
    assert found.findings == (
        "memory user:alice/lang v2 was changed after audit record 7 wrote it (its content "
        "does not match the record's hash)",
    )


@SQLITE_FILE
async def test_rows_of_a_file_that_had_no_audit_record_count_as_legacy(db_path: Path) -> None:
    conn = apsw.Connection(str(db_path))
    try:
        migrations.apply(conn, before_audit_content())
        conn.execute(
            "INSERT INTO memories (namespace, key, version, type, value, created_at, "
            "first_created_at) VALUES ('user:alice', 'lang', 1, 'semantic', '\"fr\"', 1.0, 1.0)"
        )
    finally:
        conn.close()
    async with Abathur.open(db_path, embedder="none", backup_before_migrate=False) as ab:
        (upgraded,) = await ab.audit.records()
    assert upgraded.action == "audit.upgraded" and upgraded.detail["records"] == 0
    assert upgraded.detail["legacy_rows"]["memories"] == 1
    found = audit_result(db_path)
    assert found.status == "ok", found.findings
