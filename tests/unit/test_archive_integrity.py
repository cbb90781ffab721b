"""Archive payload integrity (issue 11, items 4, 2 and 1 for archival): every archive row and
dictionary carries a checksum that restore and ``check`` verify; single-bit flips in a real file
are all caught as a typed error; a zstd bomb is refused within the size the row records; and
column or table names from a payload never reach SQL text."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import apsw
import pytest
import zstandard

from abathur import AbathurError, CorruptArchiveError, Event
from abathur.backends.sqlite import migrations
from abathur.ops.integrity import run_checks
from tests.archiving import NOW_POLICIES, opener
from tests.helpers import snapshot

pytestmark = pytest.mark.sqlite_only(
    "flips bits and rewrites rows of the archive tables in the SQLite file"
)

SEED = 20261207
CHECK = "archive_payloads"
_PAYLOAD = "SELECT payload FROM archive WHERE id = ?"
_DICT = "SELECT dict FROM archive_dicts WHERE id = ?"


def _sql(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _settle(path: Path) -> None:
    """Rewrite the file compactly with an empty WAL, so each live blob is in it exactly once."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


async def _build(path: Path) -> None:
    """Sessions and old versions archived plain; 40 expired memories share a dictionary."""
    async with opener(path) as ab:
        for i in range(5):
            s = await ab.sessions.create(app="helpdesk", user=f"u{i}", session_id=f"s{i}")
            for n in range(3):
                s = await ab.sessions.append_event(
                    s.id,
                    Event(author="user", content={"text": f"message {n} of session {i}"}),
                    expected_revision=s.revision,
                )
            await ab.sessions.terminate(s.id)
        for i in range(4):
            for v in range(5):
                await ab.memory.put("user:alice:notes", f"note{i}", {"text": f"draft {v} of {i}"})
        for i in range(40):
            await ab.memory.put(
                f"user:u{i % 5}:episodes",
                f"e{i}",
                {"text": f"episode {i}: a trip to the sea", "n": i},
                type="episodic",
                ttl=0.05,
            )
        await asyncio.sleep(0.08)
        report = await ab.archival.run()
        assert report.entries == 5 + 4 + 40
    _settle(path)


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archived") / "agent.db"
    asyncio.run(_build(path))
    return path


@pytest.fixture
def db(archived: Path, tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    shutil.copyfile(archived, path)
    return path


def _flip_one_bit(path: Path, blob: bytes, read_back: str, key: int, rng: random.Random) -> int:
    """Flip one bit of ``blob`` where it lies in the file's bytes; return the blob offset.

    A blob longer than a page goes on overflow pages, so a window of 32 bytes
    around the chosen byte is looked for; pages keep stale copies of cells in
    their free space (and other rows may share the window), so each place it
    occurs is tried until the row read back through SQLite has changed.
    """
    data = bytearray(path.read_bytes())
    for _ in range(50):
        offset, mask = rng.randrange(len(blob)), 1 << rng.randrange(8)
        start = max(0, min(offset - 16, len(blob) - 32))
        window = blob[start : start + 32]
        at = data.find(window)
        while at >= 0:
            data[at + offset - start] ^= mask
            path.write_bytes(bytes(data))
            if _sql(path, read_back, (key,)) != [(blob,)]:
                return offset
            data[at + offset - start] ^= mask
            at = data.find(window, at + 1)
    path.write_bytes(bytes(data))
    raise AssertionError("the blob's bytes were not found in the file")


def _finding_names(path: Path, needle: str) -> bool:
    (result,) = run_checks(path, only=[CHECK]).results
    assert result.status == "findings", result
    return any(needle in f for f in result.findings)


async def _restore_fails_and_changes_nothing(path: Path, entry_id: int) -> CorruptArchiveError:
    async with opener(path) as ab:
        before = await snapshot(ab)
        with pytest.raises(CorruptArchiveError) as ei:
            await ab.archival.restore(entry_id)
        with pytest.raises(CorruptArchiveError):
            await ab.archival.show(entry_id)
        assert await snapshot(ab) == before
    return ei.value


# -- item 4: checksums -----------------------------------------------------------------


def test_a_clean_archive_passes_check_with_every_row_checksummed(archived: Path) -> None:
    (result,) = run_checks(archived, only=[CHECK]).results
    assert result.status == "ok", result
    assert result.summary.startswith("49 archive row(s) and 1 dictionary verified")
    (result,) = run_checks(archived, only=[CHECK], quick=True).results
    assert result.status == "ok" and "stored bytes only" in result.summary
    assert run_checks(archived).is_ok  # the schema check agrees with the new migration


async def test_check_sees_one_consistent_archive_while_runs_and_restores_go_on(
    db_path: Path,
) -> None:
    """Rows and dictionaries are read in one snapshot: a live archive never looks corrupt."""
    results = []
    async with opener(db_path) as ab:
        stop = asyncio.Event()

        async def churn() -> None:
            try:
                for round_ in range(6):
                    for i in range(40):
                        await ab.memory.put(
                            f"user:u{i % 4}", f"r{round_}k{i}", {"i": i}, type="episodic", ttl=0.01
                        )
                    s = await ab.sessions.create(app="a", user="u", session_id=f"race{round_}")
                    await ab.sessions.terminate(s.id)
                    await asyncio.sleep(0.02)
                    await ab.archival.run()
                    for entry in (await ab.archival.list(limit=1000))[::7]:
                        await ab.archival.restore(entry.id)
            finally:
                stop.set()

        async def check() -> None:
            while not stop.is_set():
                results.append(await asyncio.to_thread(run_checks, db_path, only=[CHECK]))

        await asyncio.gather(churn(), check())
    assert len(results) >= 3
    assert all(r.results[0].status == "ok" for r in results), [r.results[0] for r in results]
    assert run_checks(db_path).is_ok


async def test_every_single_bit_flip_is_caught_by_restore_and_by_check(
    archived: Path, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    entries = _sql(archived, "SELECT id, kind, dict_id, payload FROM archive ORDER BY id")
    by_kind: dict[str, list[tuple]] = {}
    for row in entries:
        by_kind.setdefault(row[1], []).append(row)
    assert by_kind["memory"][0][2] is not None, "the memories share a dictionary"
    assert all(r[2] is None for r in by_kind["session"] + by_kind["versions"])
    ((dict_id, dict_bytes),) = _sql(archived, "SELECT id, dict FROM archive_dicts")

    # 5 sessions, 5 dictionary-compressed memories, 4 versions rows, 4 flips in the dictionary.
    targets = (
        [("row", r) for r in rng.sample(by_kind["session"], 5)]
        + [("row", r) for r in rng.sample(by_kind["memory"], 5)]
        + [("row", r) for r in rng.sample(by_kind["versions"], 4)]
        + [("dict", r) for r in rng.sample(by_kind["memory"], 4)]
    )
    for n, (what, (entry_id, kind, _, payload)) in enumerate(targets):
        path = tmp_path / f"flip{n}.db"
        shutil.copyfile(archived, path)
        if what == "row":
            offset = _flip_one_bit(path, payload, _PAYLOAD, entry_id, rng)
            needle = f"archive entry {entry_id} "
        else:
            offset = _flip_one_bit(path, dict_bytes, _DICT, dict_id, rng)
            needle = f"dictionary {dict_id} "
        label = f"{what} flip {n} at byte {offset} ({kind} entry {entry_id})"
        assert _sql(path, "PRAGMA integrity_check") == [("ok",)], label  # SQLite sees nothing
        error = await _restore_fails_and_changes_nothing(path, entry_id)
        assert error.code == "archive.corrupt" and error.entry_id == entry_id, label
        assert f"archive entry {entry_id}" in error.message, label
        assert _finding_names(path, needle), label


async def test_a_flip_in_the_archive_row_fields_is_caught_too(db: Path) -> None:
    # dict_id pointing at no dictionary, and a ref that no longer matches the rows.
    (entry_id, ref) = _sql(db, "SELECT id, ref FROM archive WHERE kind = 'memory' LIMIT 1")[0]
    _sql(db, "UPDATE archive SET dict_id = dict_id + 1 WHERE id = ?", (entry_id,))
    await _restore_fails_and_changes_nothing(db, entry_id)
    assert _finding_names(db, f"archive entry {entry_id} ")
    _sql(
        db, "UPDATE archive SET dict_id = dict_id - 1, ref = ? WHERE id = ?", (ref + "x", entry_id)
    )
    error = await _restore_fails_and_changes_nothing(db, entry_id)
    assert "ref" in error.message
    assert _finding_names(db, f"archive entry {entry_id} ")


async def test_rows_archived_before_checksums_still_restore_and_check_says_so(db: Path) -> None:
    _sql(db, "UPDATE archive SET payload_sha256 = NULL, raw_sha256 = NULL WHERE kind != 'memory'")
    (result,) = run_checks(db, only=[CHECK]).results
    assert result.status == "ok", result
    assert "9 row(s) carry no checksum (archived by an older abathur)" in result.summary
    (session_id,) = _sql(db, "SELECT id FROM archive WHERE kind = 'session' LIMIT 1")[0]
    async with opener(db) as ab:
        report = await ab.archival.restore(session_id)
        assert report.kind == "session" and report.rows == 4
    # Without a checksum corruption can go unseen, but never as a raw ZstdError or JSON error.
    _sql(db, "UPDATE archive SET payload = x'00ff00ff' WHERE kind = 'versions'")
    (versions_id,) = _sql(db, "SELECT id FROM archive WHERE kind = 'versions' LIMIT 1")[0]
    error = await _restore_fails_and_changes_nothing(db, versions_id)
    assert "does not decompress" in error.message
    assert _finding_names(db, f"archive entry {versions_id} ")


def test_check_verifies_what_it_can_in_a_file_not_yet_migrated(db: Path) -> None:
    # The file as an older abathur left it: no checksum columns at all.
    latest = migrations.available()[-1].version
    conn = apsw.Connection(str(db))
    try:
        for table, column in (
            ("archive", "payload_sha256"),
            ("archive", "raw_sha256"),
            ("archive_dicts", "sha256"),
        ):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # our own names
        conn.execute(f"PRAGMA user_version = {latest - 1}")
    finally:
        conn.close()
    (result,) = run_checks(db, only=[CHECK]).results
    assert result.status == "ok", result
    assert "49 row(s) carry no checksum (archived by an older abathur)" in result.summary
    _sql(db, "UPDATE archive SET payload = x'28b52ffd00' WHERE kind = 'session'")
    (result,) = run_checks(db, only=[CHECK]).results
    assert result.status == "findings" and len(result.findings) == 5, result
    # A frame cut short after its header: zstd returns nothing, the size says why.
    assert all("decompresses to 0 bytes, not the" in f for f in result.findings), result


def test_the_migration_adds_the_checksum_columns(archived: Path) -> None:
    latest = migrations.available()[-1].version
    assert _sql(archived, "PRAGMA user_version") == [(latest,)]
    columns = {r[0] for r in _sql(archived, "SELECT name FROM pragma_table_info('archive')")}
    assert {"payload_sha256", "raw_sha256"} <= columns
    hashes = _sql(archived, "SELECT payload, payload_sha256 FROM archive")
    assert all(hashlib.sha256(p).hexdigest() == h for p, h in hashes)
    ((data, digest),) = _sql(archived, "SELECT dict, sha256 FROM archive_dicts")
    assert hashlib.sha256(data).hexdigest() == digest


# -- item 2: a zstd bomb ---------------------------------------------------------------


def _bomb(size: int) -> bytes:
    """``size`` zero bytes as one zstd frame whose header records the size (a few KiB)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


@pytest.mark.parametrize("with_checksum", [True, False], ids=["crafted-checksum", "older-row"])
async def test_a_zstd_bomb_is_refused_within_the_recorded_size(
    db: Path, with_checksum: bool
) -> None:
    bomb = _bomb(64 << 20)
    assert len(bomb) < 8 << 10
    (entry_id, raw_bytes) = _sql(
        db, "SELECT id, raw_bytes FROM archive WHERE kind = 'session' LIMIT 1"
    )[0]
    digest = hashlib.sha256(bomb).hexdigest() if with_checksum else None
    _sql(
        db,
        "UPDATE archive SET payload = ?, stored_bytes = ?, payload_sha256 = ?, raw_sha256 = ? "
        "WHERE id = ?",
        (bomb, len(bomb), digest, digest, entry_id),
    )
    tracemalloc.start()
    try:
        error = await _restore_fails_and_changes_nothing(db, entry_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"more than the {raw_bytes} bytes it records" in error.message
    assert peak < 16 << 20, f"peak {peak} bytes while refusing a 64 MiB bomb"
    assert _finding_names(db, f"archive entry {entry_id} ")


async def test_a_recorded_size_above_the_hard_cap_is_refused_before_decompressing(
    db: Path,
) -> None:
    (entry_id,) = _sql(db, "SELECT id FROM archive WHERE kind = 'session' LIMIT 1")[0]
    _sql(db, "UPDATE archive SET raw_bytes = ? WHERE id = ?", (1 << 40, entry_id))
    error = await _restore_fails_and_changes_nothing(db, entry_id)
    assert "above the limit" in error.message


async def test_an_item_larger_than_an_archive_row_may_hold_stays_hot(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limit is 1 GiB of JSON; the rule is the same at any size.
    monkeypatch.setattr("abathur.archival.runs.MAX_RAW_BYTES", 2000)
    async with opener(db_path) as ab:
        small = await ab.sessions.create(app="a", user="u", session_id="small")
        big = await ab.sessions.create(app="a", user="u", session_id="big")
        await ab.sessions.append_event(big.id, Event(author="user", content={"text": "x" * 3000}))
        for s in (small, big):
            await ab.sessions.terminate(s.id)
        report = await ab.archival.run()
        assert [e.ref for e in await ab.archival.list()] == ["small"]
        assert (await ab.sessions.get("big")).status == "terminated"
        assert any("1 item(s) left hot" in n and "session big" in n for n in report.notes)


# -- item 1: names from a payload never reach SQL ------------------------------------------


def _craft(db: Path, entry_id: int, doc: dict[str, Any]) -> None:
    """Replace an entry's payload with ``doc``, checksums and sizes made to match."""
    raw = json.dumps(doc).encode()
    blob = zstandard.ZstdCompressor().compress(raw)
    _sql(
        db,
        "UPDATE archive SET payload = ?, dict_id = NULL, raw_bytes = ?, stored_bytes = ?, "
        "payload_sha256 = ?, raw_sha256 = ? WHERE id = ?",
        (
            blob,
            len(raw),
            len(blob),
            hashlib.sha256(blob).hexdigest(),
            hashlib.sha256(raw).hexdigest(),
            entry_id,
        ),
    )


HOSTILE = [
    "id\"; ATTACH DATABASE '{tmp}/p.db' AS p; CREATE TABLE p.x(a); --",
    "\"; ATTACH DATABASE '{tmp}/p.db' AS p; --",
    "state = 'pwned', \"revision",
    "load_extension('{tmp}/evil')",
    "a'b",
    "app;user",
    "ID",
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("table", ["sessions", "events"])
async def test_hostile_column_names_in_a_payload_are_refused(
    db: Path, tmp_path: Path, table: str, hostile: str
) -> None:
    name = hostile.format(tmp=tmp_path)
    entry_id, ref = _sql(db, "SELECT id, ref FROM archive WHERE kind = 'session' LIMIT 1")[0]
    async with opener(db) as ab:
        doc = (await ab.archival.show(entry_id)).tables
    tables = {
        t: {"columns": list(rows[0]), "rows": [list(r.values()) for r in rows]}
        for t, rows in doc.items()
    }
    tables[table]["columns"][-1] = name
    _craft(db, entry_id, {"v": 1, "tables": tables})
    error = await _restore_fails_and_changes_nothing(db, entry_id)
    assert "unknown column" in error.message and ref in error.message
    assert not (tmp_path / "p.db").exists()
    assert _finding_names(db, f"archive entry {entry_id} ")


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"v": 1, "tables": {"sessions; DROP TABLE memories; --": {}}}, "unknown table"),
        ({"v": 2, "tables": {}}, "format version"),
        ({"v": 1, "tables": {"sessions": {"columns": ["id"], "rows": [[{"x": 1}]]}}}, "value"),
        ({"v": 1, "tables": {"sessions": {"columns": ["id"], "rows": [[1, 2]]}}}, "row"),
        ({"v": 1, "tables": {"sessions": {"columns": ["id"], "rows": [[2**70]]}}}, "value"),
        ({"v": 1, "tables": {"sessions": {"columns": ["id", "id"], "rows": []}}}, "twice"),
        ([1, 2, 3], "not an object"),
    ],
)
async def test_malformed_payloads_are_a_typed_error(db: Path, doc: Any, words: str) -> None:
    (entry_id,) = _sql(db, "SELECT id FROM archive WHERE kind = 'session' LIMIT 1")[0]
    _craft(db, entry_id, doc)
    error = await _restore_fails_and_changes_nothing(db, entry_id)
    assert words in error.message
    assert isinstance(error, AbathurError)


async def test_a_deeply_nested_payload_is_a_typed_error(db: Path) -> None:
    (entry_id,) = _sql(db, "SELECT id FROM archive WHERE kind = 'session' LIMIT 1")[0]
    raw = b'{"v":1,"tables":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    blob = zstandard.ZstdCompressor().compress(raw)
    _sql(
        db,
        "UPDATE archive SET payload = ?, dict_id = NULL, raw_bytes = ?, payload_sha256 = ?, "
        "raw_sha256 = ? WHERE id = ?",
        (
            blob,
            len(raw),
            hashlib.sha256(blob).hexdigest(),
            hashlib.sha256(raw).hexdigest(),
            entry_id,
        ),
    )
    error = await _restore_fails_and_changes_nothing(db, entry_id)
    assert "not valid JSON" in error.message


async def test_a_payload_with_columns_in_another_order_restores(db: Path) -> None:
    (entry_id, ref) = _sql(db, "SELECT id, ref FROM archive WHERE kind = 'session' LIMIT 1")[0]
    async with opener(db) as ab:
        doc = (await ab.archival.show(entry_id)).tables
    tables = {
        t: {
            "columns": list(reversed(rows[0])),
            "rows": [list(reversed(r.values())) for r in rows],
        }
        for t, rows in doc.items()
    }
    _craft(db, entry_id, {"v": 1, "tables": tables})
    async with opener(db, NOW_POLICIES) as ab:
        await ab.archival.restore(entry_id)
        back = await ab.sessions.get(ref)
        assert back.status == "terminated" and len(back.events) == 3
