"""Purge (issue 11, "Erase and export"): ab.memory.purge and ab.sessions.purge erase
completely, keep the audit chain verifying, and leave no byte of what they erased."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import apsw
import pytest

from abathur import (
    Abathur,
    AbathurError,
    Event,
    InvalidIdError,
    InvalidInputError,
    InvalidNamespaceError,
)
from abathur.ops.integrity import run_checks
from tests.backends import BackendHandle
from tests.embedders import WordHashEmbedder
from tests.helpers import assert_unchanged, snapshot

ARCHIVE_ALL = [
    {"kind": "sessions", "after_days": 0},
    {"kind": "memories", "idle_days": 1e-9, "after_days": 0},
]


def opener(target: BackendHandle | Path, **kw: Any):
    """Open a backend's fresh database, or (for the tests of the SQLite file) a path."""
    kw.setdefault("embedder", WordHashEmbedder())
    if isinstance(target, BackendHandle):
        return target.open(embed_worker=False, archive_pause_ms=0, **kw)
    return Abathur.open(target, embed_worker=False, archive_pause_ms=0, **kw)


async def write_everywhere(ab: Abathur, user: str, secret: str) -> None:
    """``secret`` in a memory value and metadata, session state, user state, an
    event, a task prompt and result, plus an archived session and memory."""
    ns = f"user:{user}"
    await ab.memory.put(f"{ns}:prefs", "note", {"text": f"remember {secret}"})
    await ab.memory.put(
        f"{ns}:prefs", "note", {"text": f"still {secret}"}, metadata={"tag": secret}
    )
    await ab.memory.put(ns, "gone", f"deleted {secret}")
    await ab.memory.delete(ns, "gone")
    s = await ab.sessions.create(
        app="helpdesk", user=user, state={"user:secret": secret, "topic": secret}
    )
    s = await ab.sessions.append_event(
        s.id, Event(author="user", content={"text": secret}, state_delta={"last": secret})
    )
    t = await ab.tasks.create(session_id=s.id, prompt=f"summarise {secret}")
    await ab.tasks.update(t.id, status="running")
    await ab.tasks.update(t.id, status="succeeded", result={"summary": secret})
    await ab.embeddings.drain()


async def archive_some(path: Path, user: str, secret: str) -> None:
    """A terminated session and an idle memory of ``user``, moved to the archive."""
    async with opener(path, archive_policies=ARCHIVE_ALL) as ab:
        await ab.memory.put(f"user:{user}:old", "kept", f"archived {secret}")
        s = await ab.sessions.create(app="helpdesk", user=user)
        await ab.sessions.append_event(s.id, Event(author="user", content=f"old {secret}"))
        await ab.sessions.terminate(s.id)
        report = await ab.archival.run()
        assert report.entries >= 2


def file_bytes(path: Path) -> bytes:
    """The database file and its WAL after a TRUNCATE checkpoint, as bytes."""
    conn = apsw.Connection(str(path))
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
        assert busy == 0
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.mark.sqlite_only("reads the SQLite file's bytes and runs abathur check on it")
async def test_purge_leaves_no_byte_of_the_erased_values(db_path: Path) -> None:
    secret, kept = uuid.uuid4().hex, uuid.uuid4().hex
    await archive_some(db_path, "alice", secret)
    await archive_some(db_path, "bob", kept)
    async with opener(db_path) as ab:
        await write_everywhere(ab, "alice", secret)
        await write_everywhere(ab, "bob", kept)
        # Before: both are in the file (so the byte search below can find a value).
        assert secret.encode() in file_bytes(db_path)
        memory = await ab.memory.purge("user:alice")
        sessions = await ab.sessions.purge(app="helpdesk", user="alice")
        data = file_bytes(db_path)
        assert secret.encode() not in data
        assert kept.encode() in data
        assert (await ab.audit.verify()).is_ok
        # bob's data is whole.
        assert (await ab.memory.get("user:bob:prefs", "note")).metadata == {"tag": kept}
        assert await ab.sessions.get_user_state(app="helpdesk", user="bob") == {"secret": kept}
        assert len(await ab.archival.list()) == 2
    assert memory.counts["memories"] == 4  # 2 versions, a put and its tombstone
    assert memory.counts["archive"] == 1 and memory.counts["memories_fts"] == 1
    assert memory.counts["vectors"] == 1 and memory.counts["embedding_cache"] >= 1
    assert sessions.counts == {
        "sessions": 2,
        "events": 1,
        "tasks": 1,
        "user_state": 1,
        "archive": 1,
    }
    report = run_checks(db_path)
    assert report.is_ok, [r.findings for r in report.results if r.findings]
    assert secret.encode() not in file_bytes(db_path)
    # bob's archived session and memory come back and verify against their records.
    async with opener(db_path) as ab:
        for entry in await ab.archival.list():
            await ab.archival.restore(entry.id)
        assert (await ab.memory.get("user:bob:old", "kept")).value == f"archived {kept}"
    report = run_checks(db_path)
    assert report.is_ok, [r.findings for r in report.results if r.findings]


async def test_the_audit_keeps_that_it_happened_not_what(backend: BackendHandle) -> None:
    async with opener(backend) as ab:
        await write_everywhere(ab, "alice", "s3cret")
        await write_everywhere(ab, "bob", "other")
        before = {r.seq for r in await ab.audit.records(limit=1000)}
        report = await ab.memory.purge("user:alice")
        records = await ab.audit.records(limit=1000)
        verified = await ab.audit.verify()
    assert verified.is_ok, verified.problems
    assert {r.seq for r in records} >= before  # nothing removed
    blank = [r for r in records if r.entity_id == "" and r.detail == {}]
    assert len(blank) == report.redacted == 4  # 2 puts, a put and its delete
    assert not any("user:alice" in r.entity_id + json.dumps(r.detail) for r in records)
    assert any(r.entity_id.startswith("user:bob") for r in records)
    last = records[-1]
    assert (last.seq, last.action, last.entity) == (report.audit_seq, "memory.purge", "purge")
    assert last.entity_id == hashlib.sha256(b"user:alice").hexdigest()
    assert last.detail["redacted"] == 4 and last.detail["memories"] == 4


async def test_a_prefix_matches_whole_segments(backend: BackendHandle) -> None:
    async with opener(backend, embedder="none") as ab:
        for ns in ("user:al", "user:al:x", "user:alice", "user:al-2"):
            await ab.memory.put(ns, "k", ns)
        report = await ab.memory.purge("user:al")
        left = [m.namespace for m in await ab.memory.list("user")]
    assert report.counts["memories"] == 2
    assert left == ["user:al-2", "user:alice"]


async def test_a_dry_run_counts_what_the_purge_then_does_and_changes_nothing(
    backend: BackendHandle,
) -> None:
    async with opener(backend) as ab:
        await write_everywhere(ab, "alice", "x1")
        async with assert_unchanged(ab):
            memory = await ab.memory.purge("user:alice", dry_run=True)
            sessions = await ab.sessions.purge(app="helpdesk", user="alice", dry_run=True)
        assert memory.is_dry_run and memory.audit_seq is None
        real_memory = await ab.memory.purge("user:alice")
        real_sessions = await ab.sessions.purge(app="helpdesk", user="alice")
    assert (memory.counts, memory.redacted) == (real_memory.counts, real_memory.redacted)
    assert (sessions.counts, sessions.redacted) == (real_sessions.counts, real_sessions.redacted)


async def test_everything_must_be_asked_for(backend: BackendHandle) -> None:
    async with opener(backend, embedder="none") as ab:
        await ab.memory.put("a", "k", 1)
        await ab.memory.put("b:c", "k", 2)
        report = await ab.memory.purge(None, everything=True)
        assert report.counts["memories"] == 2
        assert await ab.memory.list("a") == [] and await ab.memory.list("b") == []
        assert (await ab.audit.verify()).is_ok


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda ab: ab.memory.purge(""), InvalidInputError),
        (lambda ab: ab.memory.purge(None), InvalidInputError),
        (lambda ab: ab.memory.purge("user:alice", everything=True), InvalidInputError),
        (lambda ab: ab.memory.purge("user::alice"), InvalidNamespaceError),
        (lambda ab: ab.memory.purge(42), InvalidNamespaceError),
        (lambda ab: ab.memory.purge("user:alice", dry_run="no"), InvalidInputError),
        (lambda ab: ab.sessions.purge(app="helpdesk", user=" alice"), InvalidIdError),
        (lambda ab: ab.sessions.purge(app="", user="alice"), InvalidIdError),
        (lambda ab: ab.sessions.purge(app="a", user="b", dry_run=1), InvalidInputError),
    ],
)
async def test_bad_input_is_a_typed_error_and_changes_nothing(
    backend: BackendHandle, call: Any, error: type[AbathurError]
) -> None:
    async with opener(backend, embedder="none") as ab:
        await ab.memory.put("user:alice", "k", 1)
        await ab.sessions.create(app="helpdesk", user="alice")
        async with assert_unchanged(ab):
            with pytest.raises(error) as raised:
                await call(ab)
    assert raised.value.code == error.code


@pytest.mark.sqlite_only("runs abathur check (a SQLite file check) on it")
async def test_a_version_superseded_by_a_purged_memory_loses_only_the_pointer(
    db_path: Path,
) -> None:
    async with opener(db_path, embedder="none") as ab:
        await ab.memory.put("user:bob:a", "lang", "fr")
        await ab.memory.put("user:alice:b", "lang", "fr")  # newer: the winner
        (action,) = (await ab.memory.consolidate("user")).actions
        assert action.loser.namespace == "user:bob:a"
        await ab.memory.purge("user:alice")
        (*_, last) = await ab.memory.history("user:bob:a", "lang")
        assert (last.status, last.superseded_by) == ("superseded", None)
        restored = await ab.memory.restore("user:bob:a", "lang")
        assert restored.value == "fr"
        rows = await snapshot(ab)
    assert "user:alice" not in repr(rows["memories"]) + repr(rows["audit_log"])
    report = run_checks(db_path)
    assert report.is_ok, [r.findings for r in report.results if r.findings]


@pytest.mark.sqlite_only("reads the SQLite file's bytes (free pages, WAL)")
async def test_no_stale_copy_of_a_rewritten_row_survives(db_path: Path) -> None:
    # Rows rewritten before the purge (session state on every append, a task
    # on every update) leave their old bytes in free page space and freed
    # overflow pages; secure_delete=FAST on every connection zeroes those as
    # they are freed, the purge's ON the rest. With it OFF this test fails.
    secret = uuid.uuid4().hex
    async with opener(db_path, embedder="none") as ab:
        s = await ab.sessions.create(app="a", user="alice", state={"big": f"{secret} " * 400})
        t = await ab.tasks.create(session_id=s.id, prompt=f"{secret} " * 400)
        for i in range(5):
            await ab.sessions.create(app="a", user=f"bob{i}", state={"big": "y" * 20000})
            delta = {"big": "z" * (100 * i)}
            s = await ab.sessions.append_event(s.id, Event(author="u", state_delta=delta))
        await ab.tasks.update(t.id, status="running")
        for i in range(5):
            await ab.sessions.create(app="a", user=f"carol{i}", state={"big": "w" * 20000})
        assert secret.encode() in file_bytes(db_path)
        await ab.sessions.purge(app="a", user="alice")
        assert secret.encode() not in file_bytes(db_path)


@pytest.mark.sqlite_only("runs abathur check (a SQLite file check) on it")
async def test_a_purge_racing_other_writers_leaves_a_clean_file(db_path: Path) -> None:
    async with opener(db_path, embedder="none") as ab:
        s = await ab.sessions.create(app="a", user="bob")
        for i in range(20):
            await ab.memory.put("user:alice", f"k{i}", i)

        async def bob() -> None:
            for i in range(40):
                await ab.sessions.append_event(s.id, Event(author="user", content=i))
                await ab.memory.put("user:bob", f"k{i % 5}", i)

        async def alice() -> None:
            for i in range(20):
                await ab.memory.put("user:alice", f"k{i}", -i)

        _, _, report = await asyncio.gather(bob(), alice(), ab.memory.purge("user:alice"))
        left = len(await ab.memory.list("user:alice", limit=100))
        assert report.counts["memories"] + left >= 20  # written before, or after it
        assert len((await ab.sessions.get(s.id)).events) == 40
    found = run_checks(db_path)
    assert found.is_ok, [r.findings for r in found.results if r.findings]


@pytest.mark.sqlite_only("reads the SQLite file's bytes (free pages, WAL)")
async def test_access_counts_not_yet_flushed_do_not_bring_the_names_back(db_path: Path) -> None:
    # stats counts reads and writes per namespace in memory and flushes them
    # once a minute (and on close): a purge drops the pending ones it covers.
    async with opener(db_path, embedder="none") as ab:
        await ab.memory.put("user:alice:secret-project", "k", 1)
        await ab.memory.get("user:alice:secret-project", "k")
        await ab.memory.put("user:bob", "k", 1)
        await ab.memory.purge("user:alice")
    data = file_bytes(db_path)
    assert b"secret-project" not in data
    assert b"user:bob" in data
