"""ArchivalService: policies pick the cold data, moves are atomic and exact, restores are
field-for-field equal and searchable again, runs are idempotent and safe while agents write,
space is reclaimed, and every bad input leaves the file as it was."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from abathur import (
    AlreadyExistsError,
    ArchiveNotFoundError,
    Event,
    InvalidInputError,
    MemoryNotFoundError,
)
from abathur.api import Abathur
from abathur.backends.sqlite.archive import (
    SQL_ARCHIVE_BY_KIND,
    SQL_ARCHIVE_BY_REF,
    SQL_ARCHIVE_LIST,
    SQL_CURRENT_MEMORIES_AFTER,
    SQL_CURRENT_VERSION,
    SQL_MEMORY_ROWS,
    SQL_OLD_VERSIONS,
    SQL_SESSION_EVENTS,
    SQL_TERMINATED_SESSIONS,
)
from abathur.ops.integrity import run_checks
from tests.archiving import opener
from tests.backends import BackendHandle
from tests.embedders import WordHashEmbedder
from tests.helpers import assert_unchanged, snapshot


async def rows(ab: Abathur, sql: str, params: tuple = ()) -> list[tuple]:
    return await ab.db.read(lambda tx: tx.conn.execute(sql, params).fetchall())


async def memory_rows(ab: Abathur, namespace: str, key: str) -> list[tuple]:
    return await rows(
        ab, "SELECT * FROM memories WHERE namespace = ? AND key = ? ORDER BY id", (namespace, key)
    )


async def session_rows(ab: Abathur, session_id: str) -> tuple[list[tuple], list[tuple]]:
    return (
        await rows(ab, "SELECT * FROM sessions WHERE id = ?", (session_id,)),
        await rows(ab, "SELECT * FROM events WHERE session_id = ? ORDER BY seq", (session_id,)),
    )


async def expire_soon(ab: Abathur, namespace: str, key: str, value: Any) -> None:
    await ab.memory.put(namespace, key, value, type="episodic", ttl=0.05)
    await asyncio.sleep(0.08)


# -- sessions -------------------------------------------------------------------------


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_a_terminated_session_moves_with_its_events_and_comes_back_equal(
    backend: BackendHandle,
) -> None:
    async with opener(backend) as ab:
        s = await ab.sessions.create(
            app="helpdesk",
            user="alice",
            state={"topic": "billing", "app:tier": "gold", "user:lang": "fr", "n": None},
        )
        for i in range(5):
            s = await ab.sessions.append_event(
                s.id,
                Event(
                    author="user" if i % 2 else "agent",
                    content={"text": f"message {i}", "x": 1.5},
                    state_delta={"turn": i},
                    metadata={"i": i},
                ),
            )
        await ab.sessions.terminate(s.id)
        live = await ab.sessions.create(app="helpdesk", user="alice")
        original_rows = await session_rows(ab, s.id)
        original = await ab.sessions.get(s.id)

        report = await ab.archival.run()
        assert (report.entries, report.rows) == (1, 6)
        sessions = next(p for p in report.policies if p.policy == "sessions")
        assert (sessions.items, sessions.rows) == (1, 6)
        assert 0 < sessions.stored_bytes < sessions.raw_bytes

        stub = await ab.sessions.get(s.id)
        assert (stub.status, stub.events, stub.revision) == ("archived", [], original.revision)
        assert stub.state == {"app:tier": "gold", "user:lang": "fr"}  # shared state stays
        assert await rows(ab, "SELECT count(*) FROM events WHERE session_id = ?", (s.id,)) == [(0,)]
        assert (await ab.sessions.get(live.id)).status == "created"  # untouched

        (entry,) = await ab.archival.list()
        assert (entry.kind, entry.ref, entry.app, entry.user, entry.rows) == (
            "session",
            s.id,
            "helpdesk",
            "alice",
            6,
        )
        restored = await ab.archival.restore(entry.id)
        assert (restored.kind, restored.ref, restored.rows) == ("session", s.id, 6)

        # Field by field: every column of the session row and of every event.
        assert await session_rows(ab, s.id) == original_rows
        assert await ab.sessions.get(s.id) == original
        assert await ab.archival.list() == []
        assert (await ab.audit.verify()).is_ok


async def test_sessions_of_an_exempt_app_stay_and_young_ones_wait(backend: BackendHandle) -> None:
    policies = [
        {"kind": "sessions", "after_days": 0},
        {"kind": "sessions", "scope": "compliance", "after_days": None},
    ]
    async with opener(backend, policies) as ab:
        kept = await ab.sessions.create(app="compliance", user="u")
        moved = await ab.sessions.create(app="helpdesk", user="u")
        active = await ab.sessions.create(app="helpdesk", user="u")
        for s in (kept, moved):
            await ab.sessions.terminate(s.id)
        report = await ab.archival.run()
        assert [e.ref for e in await ab.archival.list()] == [moved.id]
        assert report.entries == 1
        assert (await ab.sessions.get(kept.id)).status == "terminated"
        assert (await ab.sessions.get(active.id)).status == "created"

    # The default policy waits 30 days after termination.
    async with opener(backend, [{"kind": "sessions", "after_days": 30}]) as ab:
        young = await ab.sessions.create(app="helpdesk", user="u")
        await ab.sessions.terminate(young.id)
        assert (await ab.archival.run()).entries == 0


# -- memories -------------------------------------------------------------------------


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_an_expired_memory_moves_whole_and_comes_back_exactly(backend: BackendHandle) -> None:
    async with opener(backend) as ab:
        await ab.memory.put(
            "user:alice:episodes",
            "s1",
            {"summary": "asked for French"},
            type="episodic",
            metadata={"session": "s1"},
        )
        await expire_soon(ab, "user:alice:episodes", "s1", {"summary": "second visit"})
        await ab.memory.put("user:alice:episodes", "s2", "still fresh", type="episodic", ttl=3600)
        before = await memory_rows(ab, "user:alice:episodes", "s1")
        assert len(before) == 2

        report = await ab.archival.run()
        memories = next(p for p in report.policies if p.policy == "memories")
        assert (memories.items, memories.rows) == (1, 2)
        assert await memory_rows(ab, "user:alice:episodes", "s1") == []
        assert await rows(ab, "SELECT count(*) FROM memories_fts") == [(1,)]  # s2 only
        assert run_checks(Path(backend.target)).is_ok

        (entry,) = await ab.archival.list(kind="memory", ref="user:alice:episodes/s1")
        shown = await ab.archival.show(entry.id)
        assert [r["version"] for r in shown.tables["memories"]] == [1, 2]
        assert shown.tables["memories"][0]["value"] == '{"summary":"asked for French"}'
        await ab.archival.restore(entry.id)
        assert await memory_rows(ab, "user:alice:episodes", "s1") == before  # ids included
        assert await ab.memory.get("user:alice:episodes", "s1") is None  # still expired
        assert run_checks(Path(backend.target)).is_ok


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_a_restored_memory_is_searchable_again_by_keyword_and_vector(
    backend: BackendHandle,
) -> None:
    embedder = WordHashEmbedder()
    policies = [{"kind": "memories", "type": "episodic", "idle_days": 1e-9, "after_days": 0}]
    async with opener(backend, policies, embedder=embedder) as ab:
        await ab.memory.put(
            "user:alice:episodes", "trip", "Alice travelled to Lisbon by train", type="episodic"
        )
        await ab.memory.put("user:alice:facts", "lang", "Alice speaks French")  # semantic: stays
        await ab.embeddings.drain()
        history = await ab.memory.history("user:alice:episodes", "trip")
        assert (await ab.embeddings.status()).vectors == 2

        report = await ab.archival.run()
        assert report.entries == 1
        for mode in ("keyword", "vector"):
            found = await ab.memory.search("Lisbon train", prefix="user:alice", mode=mode, k=5)
            assert "trip" not in [h.key for h in found.hits], mode
        assert (await ab.embeddings.status()).vectors == 1
        assert run_checks(Path(backend.target)).is_ok

        (entry,) = await ab.archival.list()
        calls = embedder.calls
        restored = await ab.archival.restore(entry.id)
        assert restored.reindexed == 1
        # The vector came back from the embedding cache: no embedder call, no job.
        assert embedder.calls == calls
        assert (await ab.embeddings.status()).queue_depth == 0
        for mode in ("keyword", "vector", "hybrid"):
            found = await ab.memory.search("Lisbon train", prefix="user:alice", mode=mode, k=1)
            assert (found.mode, [h.key for h in found.hits]) == (mode, ["trip"])
        assert await ab.memory.history("user:alice:episodes", "trip") == history
        assert run_checks(Path(backend.target)).is_ok


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_versions_beyond_the_newest_k_leave_and_come_back(backend: BackendHandle) -> None:
    async with opener(backend) as ab:
        for v in range(6):
            await ab.memory.put("user:alice", "lang", {"value": f"v{v}"}, metadata={"v": v})
        await ab.memory.put("user:alice", "short", "only two versions")
        await ab.memory.put("user:alice", "short", "second")
        history = await ab.memory.history("user:alice", "lang")
        before = await memory_rows(ab, "user:alice", "lang")

        report = await ab.archival.run()
        versions = next(p for p in report.policies if p.policy == "versions")
        assert (versions.items, versions.rows) == (1, 4)
        kept = await ab.memory.history("user:alice", "lang")
        assert [m.version for m in kept] == [5, 6]
        assert kept[0].created_at == history[0].created_at  # first_created_at carried forward
        assert len(await ab.memory.history("user:alice", "short")) == 2

        # Writing on keeps working, and a second run moves the next old versions.
        await ab.memory.put("user:alice", "lang", {"value": "v6"})
        assert (await ab.archival.run()).rows == 1
        entries = await ab.archival.list(kind="versions", ref="user:alice/lang")
        assert [e.rows for e in entries] == [1, 4]
        for entry in reversed(entries):
            await ab.archival.restore(entry.id)
        after = await memory_rows(ab, "user:alice", "lang")
        # Every archived row, every field (version 6 has since stopped being current).
        assert after[:5] == before[:5]
        assert [m.version for m in await ab.memory.history("user:alice", "lang")] == list(
            range(1, 8)
        )


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_old_tombstones_move_and_a_restored_one_can_be_undeleted(
    backend: BackendHandle,
) -> None:
    async with opener(backend) as ab:
        await ab.memory.put("user:alice", "lang", "Alice speaks French")
        await ab.memory.delete("user:alice", "lang")
        await ab.memory.put("user:alice", "keep", "live")
        before = await memory_rows(ab, "user:alice", "lang")
        report = await ab.archival.run()
        assert next(p for p in report.policies if p.policy == "tombstones").items == 1
        assert await ab.memory.history("user:alice", "lang") == []
        (entry,) = await ab.archival.list()
        await ab.archival.restore(entry.id)
        assert await memory_rows(ab, "user:alice", "lang") == before
        await ab.memory.restore("user:alice", "lang")
        found = await ab.memory.search("french", prefix="user:alice", mode="keyword")
        assert [h.key for h in found.hits] == ["lang"]


async def test_the_most_specific_memory_policy_wins(backend: BackendHandle) -> None:
    policies = [
        {"kind": "memories", "after_days": 0},
        {"kind": "memories", "scope": "user:alice:keep", "after_days": None},
        {"kind": "memories", "scope": "user:alice", "type": "semantic", "after_days": 365},
    ]
    async with opener(backend, policies) as ab:
        await expire_soon(ab, "user:alice:keep", "a", "kept: exempt scope")
        await ab.memory.put("user:alice:x", "b", "kept: semantic waits a year", ttl=0.05)
        await expire_soon(ab, "user:alice:x", "c", "moved: episodic, general policy")
        await expire_soon(ab, "user:bob", "d", "moved: general policy")
        await ab.archival.run()
        refs = sorted(e.ref for e in await ab.archival.list())
        assert refs == ["user:alice:x/c", "user:bob/d"]


# -- runs -----------------------------------------------------------------------------


async def test_a_dry_run_reports_and_changes_nothing(backend: BackendHandle) -> None:
    async with opener(backend) as ab:
        s = await ab.sessions.create(app="a", user="u")
        await ab.sessions.terminate(s.id)
        for v in range(4):
            await ab.memory.put("user:alice", "lang", f"v{v}")
        async with assert_unchanged(ab):
            report = await ab.archival.run(dry_run=True)
        assert (report.is_dry_run, report.run_id, report.entries, report.rows) == (True, None, 2, 3)
        real = await ab.archival.run()
        assert (real.entries, real.rows) == (2, 3)
        assert [(p.policy, p.items, p.rows, p.raw_bytes) for p in real.policies] == [
            (p.policy, p.items, p.rows, p.raw_bytes) for p in report.policies
        ]


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_runs_are_idempotent_and_recorded(backend: BackendHandle) -> None:
    async with opener(backend, archive_batch_size=2) as ab:
        for i in range(7):
            s = await ab.sessions.create(app="a", user="u", session_id=f"s{i}")
            await ab.sessions.terminate(s.id)
        first = await ab.archival.run()
        assert (first.entries, first.batches) == (7, 5)  # 4 session batches, 1 memory batch
        second = await ab.archival.run()
        assert (second.entries, second.resumed_after) == (0, None)
        assert len(await ab.archival.list()) == 7
        runs = await rows(ab, "SELECT id, status, entries FROM archive_runs ORDER BY id")
        assert runs == [(first.run_id, "done", 7), (second.run_id, "done", 0)]
        actions = [r.action for r in await ab.audit.records(entity="archive_run", limit=50)]
        assert actions.count("archive.batch") == 4
        assert (await ab.audit.verify()).is_ok


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_a_run_that_was_cut_short_is_reported_and_finished(backend: BackendHandle) -> None:
    async with opener(backend) as ab:
        s = await ab.sessions.create(app="a", user="u")
        await ab.sessions.terminate(s.id)
        # What a killed run leaves: its row still 'running'.
        await ab.db.write(
            lambda c: c.conn.execute(
                "INSERT INTO archive_runs (started_at, status) VALUES (?, 'running')",
                (time.time(),),
            )
        )
        report = await ab.archival.run()
        assert (report.resumed_after, report.entries) == (1, 1)
        assert await rows(ab, "SELECT status FROM archive_runs ORDER BY id") == [
            ("interrupted",),
            ("done",),
        ]


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_agents_keep_writing_during_a_run_and_nothing_is_lost(backend: BackendHandle) -> None:
    async with opener(backend, archive_batch_size=3, archive_pause_ms=1) as ab:
        ids = []
        for i in range(30):
            s = await ab.sessions.create(app="a", user="u")
            await ab.sessions.append_event(s.id, Event(author="user", content=i))
            await ab.sessions.terminate(s.id)
            ids.append(s.id)
        for i in range(30):
            await ab.memory.put("user:alice", f"e{i}", i, type="episodic", ttl=0.05)
        await asyncio.sleep(0.06)

        async def agent() -> int:
            writes = 0
            for i in range(60):
                await ab.memory.put("user:bob", f"k{i}", {"i": i})
                s = await ab.sessions.create(app="a", user="bob")
                await ab.sessions.append_event(s.id, Event(author="user", content=i))
                writes += 2
            return writes

        report, writes = await asyncio.gather(ab.archival.run(), agent())
        assert writes == 120
        assert (report.entries, report.rows) == (60, 90)
        assert len(await ab.memory.list("user:bob", limit=100)) == 60
        archived = {e.ref for e in await ab.archival.list(kind="session", limit=100)}
        assert archived == set(ids)
        assert run_checks(Path(backend.target)).is_ok


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_zstd_dictionary_compresses_a_big_batch_well(backend: BackendHandle) -> None:
    async with opener(backend) as ab:
        for i in range(200):
            await ab.memory.put(
                f"user:u{i % 7}",
                f"k{i}",
                {"text": f"episode {i} of a trip", "n": i},
                type="episodic",
                ttl=0.05,
            )
        await asyncio.sleep(0.06)
        report = await ab.archival.run()
        memories = next(p for p in report.policies if p.policy == "memories")
        assert memories.items == 200
        assert memories.stored_bytes * 2.5 < memories.raw_bytes
        assert await rows(ab, "SELECT kind FROM archive_dicts") == [("memory",)]
        for entry in (await ab.archival.list(limit=200))[::37]:
            await ab.archival.restore(entry.id)  # every one decompresses with the dictionary


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_vacuum_switches_to_incremental_and_later_runs_shrink_the_file(
    backend: BackendHandle,
) -> None:
    async with opener(backend) as ab:
        first = await ab.archival.run(vacuum=True)
        assert first.auto_vacuum == "incremental"
        for i in range(400):
            await ab.memory.put(
                "user:alice", f"k{i}", {"text": "x" * 400, "i": i}, type="episodic", ttl=0.05
            )
        await asyncio.sleep(0.06)
        report = await ab.archival.run()
        assert report.entries == 400
        assert report.vacuumed_bytes > 0
        assert report.bytes_after < report.bytes_before
        assert report.wal_bytes_after == 0
        assert "auto_vacuum is NONE" not in " ".join(report.notes)
    assert Path(backend.target).stat().st_size < report.bytes_before


async def test_without_auto_vacuum_a_run_says_how_to_shrink(ab: Abathur) -> None:
    report = await ab.archival.run()
    assert report.auto_vacuum == "none" and report.vacuumed_bytes == 0
    assert any("--vacuum" in note for note in report.notes)
    assert any(note.startswith("chunks:") for note in report.notes)


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_dead_vector_slots_are_compacted_after_a_big_archive(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    policies = [{"kind": "memories", "idle_days": 1e-9, "after_days": 0}]
    async with opener(backend, policies, embedder=embedder) as ab:
        for i in range(20):
            await ab.memory.put("user:alice", f"k{i}", f"fact number {i}", type="episodic")
        await ab.embeddings.drain()
        report = await ab.archival.run()
        (compacted,) = [c for c in report.compacted if c.table == "memories_vec"]
        assert (compacted.live_rows, compacted.dead_rows) == (0, 20)
        assert (await ab.embeddings.status()).dead_rows == 0
        assert run_checks(Path(backend.target)).is_ok


# -- restore refusals and bad input ---------------------------------------------------------


async def test_restore_refuses_what_would_collide_and_changes_nothing(
    backend: BackendHandle,
) -> None:
    async with opener(backend) as ab:
        await expire_soon(ab, "user:alice", "lang", "fr")
        for v in range(4):
            await ab.memory.put("user:alice", "note", f"v{v}")
        await ab.archival.run()
        by_kind = {e.kind: e for e in await ab.archival.list()}

        await ab.memory.put("user:alice", "lang", "written again")
        async with assert_unchanged(ab):
            with pytest.raises(AlreadyExistsError) as ei:
                await ab.archival.restore(by_kind["memory"].id)
        assert ei.value.code == "already_exists" and "written again" in ei.value.message

        # The memory itself archived later: its old versions have nothing to go under.
        await ab.memory.delete("user:alice", "note")
        await ab.db.write(
            lambda c: c.conn.execute(
                "UPDATE memories SET expires_at = 1 WHERE namespace = 'user:alice' AND key = 'note'"
            )
        )
        await ab.archival.run()
        async with assert_unchanged(ab):
            with pytest.raises(MemoryNotFoundError) as ei2:
                await ab.archival.restore(by_kind["versions"].id)
        assert ei2.value.code == "memory.not_found"


async def test_unknown_and_already_restored_entries(ab: Abathur) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(ArchiveNotFoundError) as ei:
            await ab.archival.restore(99)
    assert ei.value.code == "archive.not_found" and isinstance(ei.value, LookupError)
    with pytest.raises(ArchiveNotFoundError):
        await ab.archival.show(99)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ab: ab.archival.run(dry_run="yes"), "dry_run must be a bool"),
        (lambda ab: ab.archival.run(dry_run=True, vacuum=True), "a dry run cannot vacuum"),
        (lambda ab: ab.archival.list(limit=0), "limit must be between 1 and 10000"),
        (lambda ab: ab.archival.list(kind="task"), "kind 'task' is not one of"),
        (lambda ab: ab.archival.list(ref="s1"), "ref needs kind"),
        (lambda ab: ab.archival.list(kind="session", before=True), "before must be an integer"),
        (lambda ab: ab.archival.show(0), "archive entry id must be >= 1"),
        (lambda ab: ab.archival.restore("1"), "archive entry id must be an integer"),
    ],
)
async def test_bad_input_is_refused_before_any_sql(ab: Abathur, call, message: str) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await call(ab)
    assert ei.value.code == "invalid_input"
    assert message in ei.value.message


@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_a_failed_batch_changes_nothing(backend: BackendHandle) -> None:
    # A restore target that cannot take the rows back (a session id re-created
    # after its stub was deleted) fails the whole restore transaction.
    async with opener(backend) as ab:
        s = await ab.sessions.create(app="a", user="u", session_id="s1")
        await ab.sessions.append_event(s.id, Event(author="user", content="hi"))
        await ab.sessions.terminate(s.id)
        await ab.archival.run()
        (entry,) = await ab.archival.list()
        await ab.sessions.delete("s1")
        await ab.sessions.create(app="other", user="x", session_id="s1")
        before = await snapshot(ab)
        with pytest.raises(AlreadyExistsError):
            await ab.archival.restore(entry.id)
        assert await snapshot(ab) == before


# -- query plans ----------------------------------------------------------------------


def _plan(path: Path, sql: str, params: tuple | dict) -> str:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        found = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return " | ".join(str(row[-1]) for row in found)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sql", "params", "expected"),
    [
        (SQL_TERMINATED_SESSIONS, (1.0, 0.0, "", 10), "USING INDEX sessions_terminated"),
        (SQL_CURRENT_MEMORIES_AFTER, (0, 10), "USING INTEGER PRIMARY KEY (rowid>?)"),
        (SQL_ARCHIVE_LIST, (10, 10), "USING INTEGER PRIMARY KEY (rowid<?)"),
        (SQL_ARCHIVE_BY_KIND, ("session", 10, 10), "USING INTEGER PRIMARY KEY (rowid<?)"),
        (
            SQL_ARCHIVE_BY_REF,
            ("session", "s1", 10, 10),
            "USING INDEX archive_by_ref (kind=? AND ref=? AND rowid<?)",
        ),
        # Per item a run moves or a restore checks.
        (SQL_SESSION_EVENTS, ("s1",), "USING PRIMARY KEY (session_id=?)"),
        (
            SQL_MEMORY_ROWS,
            {"namespace": "n", "key": "k"},
            "USING INDEX sqlite_autoindex_memories_1 (namespace=? AND key=?)",
        ),
        (
            SQL_OLD_VERSIONS,
            {"namespace": "n", "key": "k", "up_to": 3, "before": 1.0},
            "USING INDEX sqlite_autoindex_memories_1 (namespace=? AND key=? AND version<?)",
        ),
        (
            SQL_CURRENT_VERSION,
            {"namespace": "n", "key": "k"},
            "USING INDEX memories_current (namespace=? AND key=?)",
        ),
    ],
)
@pytest.mark.sqlite_only("compares raw rows, file sizes or query plans of the SQLite file")
async def test_archive_queries_use_their_index(
    ab: Abathur, backend: BackendHandle, sql: str, params: tuple | dict, expected: str
) -> None:
    plan = _plan(Path(backend.target), sql, params)
    assert expected in plan and "TEMP B-TREE" not in plan, plan
