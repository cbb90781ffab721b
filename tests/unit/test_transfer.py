"""TransferService (issue 11, "Erase and export"): abathur-export/1 out and back in.

Round trips are exact (byte-identical re-export), a repeated import changes
nothing, and every kind of bad line is a typed error naming its line, with the
target database left exactly as it was.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from benchmarks.build_100k import HashEmbedder

from abathur import (
    Abathur,
    Event,
    ImportConflictError,
    InvalidImportError,
    InvalidInputError,
    InvalidNamespaceError,
    transfer,
)
from abathur.backends.sqlite import transfer as sqlite_transfer
from abathur.ops.integrity import run_checks
from abathur.transfer import FORMAT
from tests.backends import BackendHandle
from tests.helpers import assert_unchanged, snapshot
from tests.transfer_files import HEADER, HOSTILE, database, end, export_bytes, fill, memory_line


@pytest.fixture
async def source(backend: BackendHandle, tmp_path: Path) -> tuple[Path, bytes]:
    """A filled database and its full export (as a file and as bytes)."""
    async with database(backend, tmp_path / "a", embedder="none") as ab:
        await fill(ab)
        data = await export_bytes(ab)
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    return path, data


async def test_round_trip_is_exact(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, data = source
    async with database(backend, tmp_path / "b", embedder="none") as ab:
        report = await ab.transfer.import_from(path)
        again = await export_bytes(ab)
        assert again == data
        history = await ab.memory.history("user:alice:prefs", "lang")
        session = await ab.sessions.get("s1")
        tasks = await ab.tasks.list(session_id="s1")
    assert [(v.version, v.status) for v in history] == [
        (1, "live"),
        (2, "live"),
        (3, "deleted"),
        (4, "live"),
    ]
    assert history[1].value == {"value": "en", "n": 2**62, "f": 0.1}
    assert session.status == "paused" and len(session.events) == len(HOSTILE)
    assert [e.content["text"] for e in session.events] == HOSTILE
    assert session.state["app:tier"] == "gold" and "temp:x" not in session.state
    assert tasks[0].prompt == "bell\x07 prompt \n" and tasks[0].error == 'boom\x07\n"'
    assert report.imported.sessions == 3 and report.imported.events == len(HOSTILE)
    assert report.imported.tasks == 2 and report.skipped.memories == 0
    lines = data.decode("utf-8").split("\n")
    assert json.loads(lines[0]) == {
        "format": FORMAT,
        "kind": "header",
        "filter": {"prefix": None, "app": None, "user": None},
    }
    assert json.loads(lines[-2]) == {"kind": "end", "records": len(lines) - 3}
    assert lines[-1] == ""  # every line, the last included, ends with \n


async def test_round_trip_preserves_times_and_statuses(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = source
    async with (
        database(backend, tmp_path / "a", embedder="none") as a,
        database(backend, tmp_path / "b", embedder="none") as b,
    ):
        await b.transfer.import_from(path)
        for ns, key in [
            ("user:alice:prefs", "lang"),
            ("user:alice:a", "drink"),
            ("user:alice:b", "beverage"),
            ("user:alice", "later"),
        ]:
            assert await a.memory.history(ns, key) == await b.memory.history(ns, key)
        for sid in ("s1", "s2", "s3"):
            assert await a.sessions.get(sid) == await b.sessions.get(sid)
        assert await a.tasks.list(session_id="s1") == await b.tasks.list(session_id="s1")
        assert await a.sessions.get_user_state(
            app="helpdesk", user="alice"
        ) == await b.sessions.get_user_state(app="helpdesk", user="alice")
        superseded = [
            v for v in await b.memory.history("user:alice:a", "drink") if v.status == "superseded"
        ]
        assert superseded and superseded[0].superseded_by is not None


@pytest.mark.sqlite_only("runs abathur check on the SQLite file")
async def test_imported_memories_are_searchable_and_the_file_checks_clean(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = source
    async with database(backend, tmp_path / "b", embedder="none") as ab:
        target = Path(ab.db.path)
        await ab.transfer.import_from(path)
        found = await ab.memory.search("tea", prefix="user:alice", mode="keyword")
        audit = await ab.audit.verify()
        records = await ab.audit.records(entity="memory", limit=1000)
    # The winner of the consolidation is live and found; the superseded loser is not.
    assert [(h.namespace, h.key) for h in found.hits] == [("user:alice:b", "beverage")]
    assert audit.is_ok
    assert {r.action for r in records} == {"memory.import"}
    report = run_checks(target)
    assert report.is_ok, report


async def test_import_queues_embeddings_like_a_put(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = source
    async with database(backend, tmp_path / "b", embedder=HashEmbedder(), embed_worker=False) as ab:
        await ab.transfer.import_from(path)
        status = await ab.embeddings.status()
        live = sum(1 for _ in await ab.memory.list("user", limit=1000))
        assert status.queue_depth == live > 0
        await ab.embeddings.drain()
        hits = await ab.memory.search("tea", prefix="user:alice", mode="vector", k=1)
        assert hits.mode == "vector" and hits.hits


async def test_second_import_changes_nothing_and_says_skipped(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = source
    async with database(backend, tmp_path / "b", embedder="none", embed_worker=False) as ab:
        first = await ab.transfer.import_from(path)
        async with assert_unchanged(ab):
            second = await ab.transfer.import_from(path)
    assert second.imported.model_dump() == dict.fromkeys(first.imported.model_dump(), 0)
    assert second.skipped == first.imported


async def test_dry_run_writes_nothing_and_reports(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = source
    async with database(backend, tmp_path / "b", embedder="none", embed_worker=False) as ab:
        async with assert_unchanged(ab):
            report = await ab.transfer.import_from(path, dry_run=True)
        real = await ab.transfer.import_from(path)
    assert report.is_dry_run and report.imported == real.imported


async def test_export_filters_by_whole_prefix_segments_and_by_app_user(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    async with database(backend, tmp_path / "a", embedder="none") as ab:
        by_prefix = [
            json.loads(x) for x in (await export_bytes(ab, prefix="user:alice")).split(b"\n")[:-1]
        ]
        by_user = [json.loads(x) for x in (await export_bytes(ab, user="alice")).split(b"\n")[:-1]]
        by_app = [
            json.loads(x)
            for x in (await export_bytes(ab, app="helpdesk", user="alice")).split(b"\n")[:-1]
        ]
    namespaces = {r["namespace"] for r in by_prefix if r["kind"] == "memory"}
    assert namespaces == {"user:alice", "user:alice:prefs", "user:alice:a", "user:alice:b"}
    assert {r["kind"] for r in by_prefix} == {"header", "memory", "end"}
    assert {r["id"] for r in by_user if r["kind"] == "session"} == {"s1", "s3"}
    assert not [r for r in by_user if r["kind"] in ("memory", "app_state")]
    assert {r["id"] for r in by_app if r["kind"] == "session"} == {"s1"}
    assert {(r["app"], r["key"]) for r in by_app if r["kind"] == "app_state"} == {
        ("helpdesk", "tier")
    }


async def test_expired_memories_are_left_out(backend: BackendHandle, tmp_path: Path) -> None:
    async with database(backend, tmp_path / "a", embedder="none") as ab:
        await ab.memory.put("user:a", "short", "x", ttl=0.05)
        await ab.memory.put("user:a", "long", "y")
        await asyncio.sleep(0.1)
        buffer = io.BytesIO()
        report = await ab.transfer.export_to(buffer)
    keys = [json.loads(x).get("key") for x in buffer.getvalue().splitlines()]
    assert "long" in keys and "short" not in keys
    assert report.expired == 1 and report.counts.memories == 1


async def test_export_streams_in_blocks(backend: BackendHandle, tmp_path: Path) -> None:
    writes: list[int] = []

    class Sink:
        def write(self, data: bytes) -> int:
            writes.append(len(data))
            return len(data)

    async with database(backend, tmp_path / "a", embedder="none", embed_worker=False) as ab:
        for i in range(300):
            await ab.memory.put("user:a", f"k{i}", "x" * 1000)
        await ab.transfer.export_to(Sink())
    # Written as it is read, a block at a time, never as one buffer of everything.
    assert len(writes) >= 4 and max(writes) < 2 * 65536 + 4096


async def test_export_to_a_path_is_atomic_and_validates(
    backend: BackendHandle, tmp_path: Path
) -> None:
    async with database(backend, tmp_path / "a", embedder="none") as ab:
        await ab.memory.put("user:a", "k", 1)
        report = await ab.transfer.export_to(tmp_path / "out.jsonl")
        for scope in ({"prefix": "user:\udcff"}, {"app": "a\udcff"}, {"user": "\ud800"}):
            with pytest.raises(InvalidInputError, match="lone surrogate"):
                await ab.transfer.export_to(io.BytesIO(), **scope)
        with pytest.raises(InvalidInputError, match="binary stream"):
            await ab.transfer.export_to(io.StringIO())  # type: ignore[arg-type]
        with pytest.raises(InvalidNamespaceError):
            await ab.transfer.export_to(tmp_path / "x.jsonl", prefix="user::a")
        with pytest.raises(InvalidInputError):
            await ab.transfer.export_to(42)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await ab.transfer.export_to(tmp_path / "missing-dir" / "x.jsonl")
        for bad in ("", "/", str(tmp_path / "nul\x00.jsonl"), tmp_path):
            with pytest.raises(InvalidInputError):
                await ab.transfer.export_to(bad)
    assert report.counts.memories == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "jsonl" in p.name) == ["out.jsonl"]


# --- bad files: a typed error naming the line, and the target unchanged -------------------


def v(n: int, **changes: Any) -> dict[str, Any]:
    base = json.loads(memory_line())["versions"][0]
    return {**base, "version": n, **changes}


BIG = "x" * 70_000  # over the max_value_bytes of the test database (65536)

BAD_FILES: dict[str, tuple[list[str], int, str]] = {
    # name: (lines, the bad line's number, reason)
    "not json": ([HEADER, memory_line(), "{not json", end(2)], 3, "json"),
    "wrong format version": (
        [HEADER.replace("abathur-export/1", "abathur-export/2"), end(0)],
        1,
        "format",
    ),
    "no header": ([memory_line(), end(1)], 1, "format"),
    "missing field": (
        [HEADER, memory_line(versions=[{k: x for k, x in v(1).items() if k != "status"}]), end(1)],
        2,
        "schema",
    ),
    "unknown field": ([HEADER, memory_line()[:-1] + ', "extra": 1}', end(1)], 2, "schema"),
    "bad namespace": (
        [HEADER, memory_line(namespace="user::x"), end(1)],
        2,
        "memory.invalid_namespace",
    ),
    "bad key": ([HEADER, memory_line(key=" padded"), end(1)], 2, "invalid_id"),
    "version gap": ([HEADER, memory_line(versions=[v(1), v(3)]), end(1)], 2, "version_gap"),
    "duplicate": ([HEADER, memory_line(), memory_line(), end(2)], 3, "duplicate"),
    "too large value": (
        [HEADER, memory_line(versions=[v(1, value=BIG)]), end(1)],
        2,
        "value_too_large",
    ),
    "array line": ([HEADER, "[1, 2, 3]", end(1)], 2, "schema"),
    "blank line": ([HEADER, "", memory_line(), end(2)], 2, "json"),
    "unknown kind": ([HEADER, json.dumps({"kind": "widget"}), end(1)], 2, "schema"),
    "bad type": ([HEADER, memory_line(versions=[v(1, type="opinion")]), end(1)], 2, "schema"),
    "superseded without winner": (
        [HEADER, memory_line(versions=[v(1, status="superseded")]), end(1)],
        2,
        "schema",
    ),
    "nan time": (
        [HEADER, memory_line().replace('"created_at": 1.0', '"created_at": NaN'), end(1)],
        2,
        "json",
    ),
    "huge time": (
        [HEADER, memory_line().replace('"created_at": 1.0', '"created_at": 1e999'), end(1)],
        2,
        "schema",
    ),
    "huge version": ([HEADER, memory_line(versions=[v(2**63)]), end(1)], 2, "schema"),
    # The raw escape \ud800 in the line: json.loads makes it a lone surrogate.
    "lone surrogate": (
        [HEADER, memory_line(key="KEY").replace('"KEY"', '"k\\ud800"'), end(1)],
        2,
        "encoding",
    ),
    "deep nesting": (
        [
            HEADER,
            memory_line(versions=[v(1)]).replace('"v"', "[" * 100_000 + "]" * 100_000),
            end(1),
        ],
        2,
        "json",
    ),
    "truncated": ([HEADER, memory_line()], 2, "truncated"),
    "end count wrong": ([HEADER, memory_line(), end(5)], 3, "truncated"),
    "line after end": ([HEADER, end(0), memory_line()], 3, "order"),
    "event without session": (
        [
            HEADER,
            json.dumps(
                {
                    "kind": "event",
                    "session_id": "s",
                    "seq": 1,
                    "id": "e",
                    "author": "u",
                    "content": None,
                    "state_delta": {},
                    "metadata": {},
                    "timestamp": 1.0,
                }
            ),
            end(1),
        ],
        2,
        "order",
    ),
}


def session_lines(events: list[int], count: int | None = None) -> list[str]:
    lines = [
        json.dumps(
            {
                "kind": "session",
                "id": "s",
                "app": "a",
                "user": "u",
                "status": "active",
                "state": {},
                "revision": len(events),
                "created_at": 1.0,
                "updated_at": 2.0,
                "events": len(events) if count is None else count,
            }
        )
    ]
    for seq in events:
        lines.append(
            json.dumps(
                {
                    "kind": "event",
                    "session_id": "s",
                    "seq": seq,
                    "id": f"e{seq}",
                    "author": "u",
                    "content": None,
                    "state_delta": {},
                    "metadata": {},
                    "timestamp": 1.0,
                }
            )
        )
    return lines


TASK_FIRST = json.dumps(
    {
        "kind": "task",
        "id": "t",
        "session_id": "s",
        "prompt": "p",
        "status": "pending",
        "result": None,
        "error": None,
        "metadata": {},
        "created_at": 1.0,
        "updated_at": 1.0,
    }
)
BAD_FILES["task before its session"] = (
    [HEADER, TASK_FIRST, *session_lines([]), end(2)],
    3,
    "order",
)
BAD_FILES["event seq gap"] = ([HEADER, *session_lines([1, 3]), end(3)], 4, "version_gap")
BAD_FILES["session event count short"] = (
    [HEADER, *session_lines([1, 2], count=3), memory_line(), end(4)],
    5,
    "order",
)
BAD_FILES["temp key in stored state"] = ([HEADER, *session_lines([])[:1], end(1)], 2, "schema")
BAD_FILES["temp key in stored state"][0][1] = BAD_FILES["temp key in stored state"][0][1].replace(
    '"state": {}', '"state": {"temp:x": 1}'
)


@pytest.fixture
async def target(backend: BackendHandle, tmp_path: Path):
    """A database with data of its own, so 'unchanged' means something."""
    async with database(
        backend, tmp_path / "b", embedder="none", embed_worker=False, max_value_bytes=65536
    ) as ab:
        await ab.memory.put("user:keep", "k", "kept")
        await ab.sessions.create(app="a", user="u", session_id="kept")
        yield ab


@pytest.mark.parametrize("name", sorted(BAD_FILES))
async def test_a_bad_line_is_a_typed_error_naming_it(
    name: str, target: Abathur, tmp_path: Path
) -> None:
    lines, line, reason = BAD_FILES[name]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with assert_unchanged(target):
        with pytest.raises(InvalidImportError) as caught:
            await target.transfer.import_from(path)
    assert (caught.value.line, caught.value.reason) == (line, reason), caught.value.message
    assert f"bad.jsonl line {line}: " in caught.value.message
    assert caught.value.to_dict()["line"] == line


async def test_a_bad_last_line_rolls_back_the_good_ones(target: Abathur, tmp_path: Path) -> None:
    good = [memory_line(namespace=f"user:n{i}") for i in range(50)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([HEADER, *good, memory_line(versions=[v(1), v(5)]), end(51)]) + "\n")
    async with assert_unchanged(target):
        with pytest.raises(InvalidImportError) as caught:
            await target.transfer.import_from(path)
    assert caught.value.line == 52


async def test_a_conflicting_memory_is_refused_whole(target: Abathur, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    other = memory_line(namespace="user:keep", key="k")  # "v", not "kept"
    path.write_text("\n".join([HEADER, memory_line(), other, end(2)]) + "\n")
    async with assert_unchanged(target):
        with pytest.raises(ImportConflictError) as caught:
            await target.transfer.import_from(path)
    assert caught.value.line == 3 and caught.value.code == "import.conflict"
    assert "different history" in caught.value.message


async def test_a_conflicting_session_is_refused(target: Abathur, tmp_path: Path) -> None:
    kept = await target.sessions.get("kept")
    line = json.dumps(
        {
            "kind": "session",
            "id": "kept",
            "app": "a",
            "user": "u",
            "status": "terminated",
            "state": {},
            "revision": 0,
            "created_at": kept.created_at,
            "updated_at": kept.updated_at,
            "events": 0,
        }
    )
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([HEADER, line, end(1)]) + "\n")
    async with assert_unchanged(target):
        with pytest.raises(ImportConflictError) as caught:
            await target.transfer.import_from(path)
    assert caught.value.line == 2


async def test_a_task_needs_its_session_in_the_file_or_the_database(
    target: Abathur, tmp_path: Path
) -> None:
    def task(task_id: str, session_id: str) -> str:
        return json.dumps(
            {
                "kind": "task",
                "id": task_id,
                "session_id": session_id,
                "prompt": "p",
                "status": "pending",
                "result": None,
                "error": None,
                "metadata": {},
                "created_at": 1.0,
                "updated_at": 1.0,
            }
        )

    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([HEADER, task("t1", "kept"), task("t2", "nowhere"), end(2)]) + "\n")
    async with assert_unchanged(target):
        with pytest.raises(InvalidImportError) as caught:
            await target.transfer.import_from(path)
    assert (caught.value.line, caught.value.reason) == (3, "missing_session")
    path.write_text("\n".join([HEADER, task("t1", "kept"), end(1)]) + "\n")
    report = await target.transfer.import_from(path)
    assert report.imported.tasks == 1
    assert (await target.tasks.get("t1")).session_id == "kept"


async def test_import_rejects_bad_arguments(target: Abathur, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        await target.transfer.import_from(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError):
        await target.transfer.import_from(42)  # type: ignore[arg-type]
    for bad in ("", "nul\x00.jsonl", tmp_path):
        with pytest.raises(InvalidInputError):
            await target.transfer.import_from(bad)
    with pytest.raises(InvalidInputError):
        await target.transfer.import_from(tmp_path / "x", dry_run=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidImportError) as caught:
        (tmp_path / "empty.jsonl").write_bytes(b"")
        await target.transfer.import_from(tmp_path / "empty.jsonl")
    assert caught.value.reason == "format"
    before = await snapshot(target)
    assert before["memories"]


async def test_the_documented_example_imports_and_exports_back_identically(
    backend: BackendHandle,
    tmp_path: Path,
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "export-format.md").read_text("utf-8")
    (example,) = [b for b in re.findall(r"```json\n(.*?)```", doc, flags=re.S) if '"end"' in b]
    path = tmp_path / "example.jsonl"
    path.write_text(example, encoding="utf-8")
    async with database(backend, tmp_path / "b", embedder="none") as ab:
        report = await ab.transfer.import_from(path)
        assert await export_bytes(ab) == example.encode("utf-8")
    assert report.imported.versions == 2 and report.imported.events == 1


# --- races ------------------------------------------------------------------------------


async def test_two_concurrent_imports_of_one_file_import_it_once(
    backend: BackendHandle, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, data = source
    async with (
        database(backend, tmp_path / "b", embedder="none") as first,
        database(backend, tmp_path / "b", embedder="none") as second,
    ):
        reports = await asyncio.gather(
            first.transfer.import_from(path), second.transfer.import_from(path)
        )
        assert await export_bytes(first) == data
    # One did the work, the other found it all present (the write lock serialises them).
    imported = sorted(r.imported.memories for r in reports)
    assert imported[0] == 0 and imported[1] > 0
    assert sorted(r.skipped.memories for r in reports) == [0, imported[1]]


async def test_an_export_during_writes_is_one_consistent_snapshot(
    backend: BackendHandle, tmp_path: Path
) -> None:
    async with database(backend, tmp_path / "a", embedder="none", embed_worker=False) as ab:
        await ab.sessions.create(app="a", user="u", session_id="busy")
        for i in range(200):
            await ab.memory.put("user:u", f"k{i}", i)
        stop = asyncio.Event()

        async def writer() -> int:
            n = 0
            while not stop.is_set():
                await ab.sessions.append_event("busy", Event(author="u", content=n))
                await ab.memory.put("user:u", f"k{n % 200}", n)
                n += 1
            return n

        task = asyncio.create_task(writer())
        exports = []
        for _ in range(5):
            exports.append(await export_bytes(ab))
            await asyncio.sleep(0)
        stop.set()
        written = await task
    assert written > 0 and len(set(exports)) > 1  # the writes ran between and during them
    # Each export checks clean on import: the session's event count matches its events.
    for i, data in enumerate(exports):
        path = tmp_path / f"e{i}.jsonl"
        path.write_bytes(data)
        async with database(backend, tmp_path / f"t{i}", embedder="none") as ab:
            report = await ab.transfer.import_from(path)
        assert report.imported.sessions == 1 and report.imported.memories == 200


async def test_a_big_file_is_read_again_and_must_not_change_between_passes(
    backend: BackendHandle,
    source: tuple[Path, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, data = source
    monkeypatch.setattr(transfer, "_KEEP_BYTES", 0)  # every file counts as big: parsed twice
    async with database(backend, tmp_path / "b", embedder="none", embed_worker=False) as ab:
        assert (await ab.transfer.import_from(path)).imported.memories > 0
        assert await export_bytes(ab) == data

    real_apply = transfer._apply

    def edit_then_apply(conn: Any, *args: Any) -> Any:
        # Someone rewrites the file after it was checked, before it is written.
        path.write_bytes(data.replace(b'"fr"', b'"de"'))
        return real_apply(conn, *args)

    monkeypatch.setattr(transfer, "_apply", edit_then_apply)
    async with (
        database(backend, tmp_path / "c", embedder="none", embed_worker=False) as ab,
        assert_unchanged(ab),
    ):
        with pytest.raises(InvalidImportError) as caught:
            await ab.transfer.import_from(path)
    assert caught.value.reason == "changed"


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite backend's queries")
async def test_the_per_record_queries_use_their_indexes(target: Abathur) -> None:
    """Import looks each record up by its key; export walks memories in index order."""
    lookups = {
        "SQL_MEMORY_HISTORY": ("x", "k"),
        "SQL_SESSION_ROW": ("s",),
        "SQL_EVENT_ROW": ("s", 1),
        "SQL_TASK_ROW": ("t",),
        "SQL_APP_STATE_ROW": ("a", "k"),
        "SQL_USER_STATE_ROW": ("a", "u", "k"),
        "SQL_EXPORT_EVENTS": ("s",),
        "SQL_EXPORT_MEMORIES_PREFIX": {"prefix": "user", "after": "user;", "below": "user:"},
    }

    def plans(conn: Any) -> dict[str, list[str]]:
        return {
            name: [
                row[3]
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN " + getattr(sqlite_transfer, name), params
                )
            ]
            for name, params in {**lookups, "SQL_EXPORT_MEMORIES": ()}.items()
        }

    for name, plan in (await target.db.read(lambda tx: plans(tx.conn))).items():
        text = " ".join(plan)
        assert "TEMP B-TREE" not in text, (name, plan)
        if name != "SQL_EXPORT_MEMORIES":
            assert text.startswith("SEARCH"), (name, plan)
