"""Backups: online copy, manifest, verify, retention and restore, on real files."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apsw
import pytest
import zstandard

from abathur import (
    Abathur,
    CorruptBackupError,
    DatabaseError,
    DatabaseInUseError,
    InvalidInputError,
)
from abathur.backends.sqlite import check_environment, migrations
from abathur.ops import schema
from abathur.ops.backup import (
    Backup,
    Manifest,
    Retention,
    create_backup,
    list_backups,
    plan_retention,
    prune_backups,
    verify_backup,
)
from abathur.ops.integrity import run_checks
from abathur.ops.restore import is_in_use, restore_backup
from tests.backup_files import files_in, held_open, read_manifest, sha, write_manifest

pytestmark = pytest.mark.sqlite_only("the online backup API, pages and PRAGMAs of a SQLite file")

# -- helpers --------------------------------------------------------------------------


def rows(path: Path) -> dict[str, list[tuple]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
            for t in schema.user_tables(conn)
        }
    finally:
        conn.close()


# -- creating -------------------------------------------------------------------------


async def test_a_backup_is_a_compressed_copy_with_a_manifest(live: Path, made: Backup) -> None:
    m = made.manifest
    assert m is not None
    backups = live.parent.parent / "backups"
    assert sorted(p.name for p in backups.iterdir()) == sorted(
        [made.data_path.name, made.manifest_path.name]
    ), "no temporary file, -wal or -shm is left behind"
    assert made.data_path.name == f"{made.name}.db.zst" and made.name.startswith("agent-")
    assert m.file == made.data_path.name
    assert m.sha256 == sha(made.data_path)
    assert m.compressed_bytes == made.data_path.stat().st_size < m.raw_bytes
    raw = zstandard.ZstdDecompressor().decompress(made.data_path.read_bytes())
    assert len(raw) == m.raw_bytes and hashlib.sha256(raw).hexdigest() == m.raw_sha256
    env = check_environment()
    assert (m.sqlite_version, m.sqlite_vec_version) == (env.sqlite, env.sqlite_vec)
    assert m.user_version == migrations.available()[-1].version
    assert m.source == str(live.absolute())
    assert m.row_counts == {t: len(r) for t, r in rows(live).items()}
    assert m.row_counts["memories"] == 2
    async with Abathur.open(live, embed_worker=False) as ab:
        head = await ab.db.read(
            lambda c: c.conn.execute("SELECT seq, hash FROM audit_head").fetchall()
        )
    assert [(m.audit_head_seq, m.audit_head_hash)] == head
    assert abs(m.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert read_manifest(made)["format"] == "abathur-backup/1"


def test_the_default_destination_is_backups_beside_the_database(live: Path) -> None:
    made = create_backup(live)
    assert made.data_path.parent == live.parent / "backups"


def test_a_missing_database_is_not_backed_up(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as ei:
        create_backup(tmp_path / "missing.db", dest=tmp_path / "b")
    assert ei.value.code == "db.error" and "nothing to back up" in ei.value.message
    assert not (tmp_path / "b").exists()


async def test_a_backup_taken_while_the_database_is_open_holds_its_rows(live: Path) -> None:
    async with Abathur.open(live, embed_worker=False) as ab:
        await ab.memory.put("user:bob", "lang", {"value": "de"})
        made = await asyncio.to_thread(create_backup, live, dest=live.parent / "b")
        expected = await ab.db.read(
            lambda c: c.conn.execute("SELECT count(*) FROM memories").fetchall()[0][0]
        )
    assert made.manifest is not None and made.manifest.row_counts["memories"] == expected == 3


# -- verifying and rejecting ------------------------------------------------------------


def test_verify_passes_a_good_backup(made: Backup) -> None:
    verified = verify_backup(made.data_path)
    assert verified.manifest == made.manifest
    assert len(verified.checks) == 5 and "integrity_check" in verified.checks
    assert "schema matches the migrations" in verified.checks
    # The manifest file names the same backup.
    assert verify_backup(made.manifest_path).manifest == made.manifest
    assert sorted(p.name for p in made.data_path.parent.iterdir()) == sorted(
        [made.data_path.name, made.manifest_path.name]
    )


def _truncate(b: Backup) -> None:
    data = b.data_path.read_bytes()
    b.data_path.write_bytes(data[: len(data) // 2])


def _flip_a_bit(b: Backup) -> None:
    data = bytearray(b.data_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    b.data_path.write_bytes(bytes(data))


def _flip_a_bit_and_fix_the_checksum(b: Backup) -> None:
    # Damage the manifest cannot catch: the zstd frame checksum and the raw sha256 do.
    _flip_a_bit(b)
    write_manifest(b, {**read_manifest(b), "sha256": sha(b.data_path)})


def _wrong_checksum(b: Backup) -> None:
    write_manifest(b, {**read_manifest(b), "sha256": "0" * 64})


def _counts_do_not_match(b: Backup) -> None:
    m = read_manifest(b)
    write_manifest(b, {**m, "row_counts": {**m["row_counts"], "memories": 3}})


def _garbage_manifest(b: Backup) -> None:
    b.manifest_path.write_text("{not json")


def _manifest_without_a_field(b: Backup) -> None:
    m = read_manifest(b)
    del m["raw_sha256"]
    write_manifest(b, m)


def _no_manifest(b: Backup) -> None:
    b.manifest_path.unlink()


def _repack(b: Backup, raw: bytes) -> None:
    """Replace the database inside and make every checksum match again."""
    m = read_manifest(b)
    packed = zstandard.ZstdCompressor().compress(bytes(raw))
    b.data_path.write_bytes(packed)
    write_manifest(
        b,
        {
            **m,
            "sha256": hashlib.sha256(packed).hexdigest(),
            "compressed_bytes": len(packed),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "raw_bytes": len(raw),
        },
    )


def _damaged_database_inside(b: Backup) -> None:
    # A consistent-looking backup of a damaged file: every checksum matches.
    raw = bytearray(zstandard.ZstdDecompressor().decompress(b.data_path.read_bytes()))
    page = read_manifest(b)["page_size"]
    raw[page * 2 + 8 : page * 2 + 72] = b"\xff" * 64  # page 3: a b-tree page
    _repack(b, bytes(raw))


def _not_a_database_inside(b: Backup) -> None:
    _repack(b, b"just some text, not SQLite" * 1000)


CORRUPTIONS = [
    pytest.param(_truncate, "truncated", "is truncated", id="truncated"),
    pytest.param(_flip_a_bit, "checksum", "does not match its manifest's sha256", id="bit-flip"),
    pytest.param(
        _flip_a_bit_and_fix_the_checksum, ("decompress", "checksum"), "", id="bit-flip-resummed"
    ),
    pytest.param(_wrong_checksum, "checksum", "sha256", id="wrong-checksum"),
    pytest.param(_counts_do_not_match, "mismatch", "memories: 2 rows (manifest 3)", id="counts"),
    pytest.param(_garbage_manifest, "manifest", "is unreadable", id="garbage-manifest"),
    pytest.param(_manifest_without_a_field, "manifest", "raw_sha256", id="manifest-field"),
    pytest.param(_no_manifest, "missing", "is missing", id="no-manifest"),
    pytest.param(_damaged_database_inside, "integrity", "fails integrity_check", id="integrity"),
    pytest.param(_not_a_database_inside, "integrity", "is not an SQLite database", id="not-sqlite"),
]


@pytest.mark.parametrize(("damage", "reason", "words"), CORRUPTIONS)
def test_a_damaged_backup_is_rejected_by_verify(
    made: Backup, damage, reason: str | tuple[str, ...], words: str
) -> None:
    damage(made)
    with pytest.raises(CorruptBackupError) as ei:
        verify_backup(made.data_path)
    assert ei.value.code == "backup.corrupt"
    assert ei.value.reason in ((reason,) if isinstance(reason, str) else reason)
    assert words in ei.value.message
    assert ei.value.to_dict()["reason"] == ei.value.reason
    assert not [p for p in made.data_path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("damage", "reason", "words"), CORRUPTIONS)
def test_a_damaged_backup_is_never_restored_and_the_database_is_untouched(
    live: Path, made: Backup, damage, reason: str | tuple[str, ...], words: str
) -> None:
    damage(made)
    before = files_in(live.parent)
    with pytest.raises(CorruptBackupError) as ei:
        restore_backup(made.data_path, target=live)
    assert ei.value.code == "backup.corrupt"
    assert files_in(live.parent) == before, "the database must stay byte for byte as it was"


def test_a_file_not_named_like_a_backup_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "agent.db"
    other.write_bytes(b"")
    with pytest.raises(InvalidInputError) as ei:
        verify_backup(other)
    assert ei.value.code == "invalid_input" and "is not a backup" in ei.value.message


# -- restoring --------------------------------------------------------------------------


async def test_restore_to_a_new_file(live: Path, made: Backup, tmp_path: Path) -> None:
    target = tmp_path / "restored.db"
    result = restore_backup(made.data_path, target=target)
    assert result.replaced is None and not result.forced
    assert result.check.is_ok and result.check.quick
    assert rows(target) == rows(live)
    assert run_checks(target).is_ok


async def test_restore_over_a_database_keeps_the_old_one_aside(live: Path, made: Backup) -> None:
    old_rows = rows(live)
    async with Abathur.open(live, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "after-the-backup", {"v": 1})
    newer_rows = rows(live)
    assert newer_rows != old_rows

    result = restore_backup(made.data_path, target=live)
    assert rows(live) == old_rows
    assert result.replaced is not None
    assert result.replaced.name.startswith("agent.db.replaced-")
    assert rows(result.replaced) == newer_rows, "the replaced file keeps every committed row"
    # The swap leaves no temporary file and no -wal of the old file beside the new one.
    leftovers = {p.name for p in live.parent.iterdir()} - {live.name, result.replaced.name}
    assert leftovers <= {"agent.db-wal", "agent.db-shm"}  # the read-only check's own
    async with Abathur.open(live, embed_worker=False) as ab:
        assert await ab.memory.get("user:alice", "after-the-backup") is None
        assert (await ab.audit.verify()).is_ok


async def test_restore_refuses_a_database_open_in_this_process(live: Path, made: Backup) -> None:
    async with Abathur.open(live, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "live", {"v": 1})
        before = files_in(live.parent)
        with pytest.raises(DatabaseInUseError) as ei:
            await asyncio.to_thread(
                restore_backup, made.data_path, target=live, lock_timeout_ms=100
            )
        assert ei.value.code == "db.in_use" and "--force" in ei.value.message
        assert files_in(live.parent) == before
        assert await asyncio.to_thread(is_in_use, live)
    assert not is_in_use(live)


def test_restore_refuses_a_database_open_in_another_process(live: Path, made: Backup) -> None:
    with held_open(live):
        before = files_in(live.parent)
        with pytest.raises(DatabaseInUseError) as ei:
            restore_backup(made.data_path, target=live, lock_timeout_ms=100)
        assert ei.value.code == "db.in_use"
        assert files_in(live.parent) == before
    result = restore_backup(made.data_path, target=live)
    assert result.check.is_ok and not result.forced


def test_force_replaces_a_database_in_use_and_keeps_its_wal_aside(live: Path, made: Backup) -> None:
    with held_open(live):
        assert (live.parent / "agent.db-wal").exists()
        result = restore_backup(made.data_path, target=live, force=True, lock_timeout_ms=100)
    assert result.forced and result.check.is_ok and result.replaced is not None
    assert result.replaced.with_name(result.replaced.name + "-wal").exists()


def test_restore_refuses_to_replace_a_file_that_is_not_a_database(
    made: Backup, tmp_path: Path
) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("precious notes")
    with pytest.raises(DatabaseError) as ei:
        restore_backup(made.data_path, target=target)
    assert ei.value.code == "db.error" and "--force" in ei.value.message
    assert target.read_text() == "precious notes"
    result = restore_backup(made.data_path, target=target, force=True)
    assert result.replaced is not None and result.replaced.read_text() == "precious notes"


def test_restore_into_a_missing_directory_is_an_error(made: Backup, tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as ei:
        restore_backup(made.data_path, target=tmp_path / "nope" / "x.db")
    assert "directory does not exist" in ei.value.message


# -- under load -------------------------------------------------------------------------


async def test_a_backup_under_four_busy_writers_restores_every_row_committed_before_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    committed: list[tuple[int, int]] = []
    async with Abathur.open(path, embed_worker=False) as ab:
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            n = 0
            while not stop.is_set():
                await ab.memory.put("load", f"w{w}-{n}", {"w": w, "n": n})
                committed.append((w, n))  # after put returned: committed
                n += 1

        writers = [asyncio.create_task(writer(w)) for w in range(4)]
        await asyncio.sleep(0.3)
        before_backup = list(committed)
        made = await asyncio.to_thread(create_backup, path, dest=tmp_path / "backups")
        during_backup = len(committed) - len(before_backup)
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*writers)

    target = tmp_path / "restored.db"
    result = restore_backup(made.data_path, target=target)
    assert result.check.is_ok
    assert run_checks(target).is_ok
    conn = apsw.Connection(str(target), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        restored = {
            (v["w"], v["n"])
            for (text,) in conn.execute("SELECT value FROM memories WHERE namespace = 'load'")
            for v in [json.loads(text)]
        }
    finally:
        conn.close()
    assert len(before_backup) > 20, "the writers were busy before the backup"
    assert during_backup > 0, "the writers kept committing while the backup ran"
    assert set(before_backup) <= restored
    assert restored <= set(committed)
    # One snapshot: each writer's rows in the copy are exactly its first k writes.
    for w in range(4):
        ns = sorted(n for ww, n in restored if ww == w)
        assert ns == list(range(len(ns)))


# -- listing and retention ------------------------------------------------------------


def test_list_shows_backups_newest_first_and_flags_broken_ones(live: Path) -> None:
    dest = live.parent / "b"
    first = create_backup(live, dest=dest)
    second = create_backup(live, dest=dest)
    assert [b.name for b in list_backups(dest)] == [second.name, first.name]
    _truncate(first)
    listed = {b.name: b.problem for b in list_backups(dest)}
    assert listed[second.name] is None
    assert "the manifest says" in listed[first.name]
    assert list_backups(dest, database="other.db") == []
    assert list_backups(live.parent / "nowhere") == []


# The grandfather-father-son rules alone: no newest-two or minimum-age safety
# (tests/unit/test_backup_retention.py covers those).
GFS_ONLY = {"newest": 0, "min_age_days": 0}


def at(day: datetime, name: str | None = None) -> Backup:
    label = name or day.strftime("%Y%m%dT%H%M")
    manifest = Manifest.model_construct(created_at=day)
    return Backup(Path(f"/b/{label}.manifest.json"), Path(f"/b/{label}.db.zst"), manifest)


def names(plan) -> tuple[list[str], list[str]]:
    return [b.name for b, _ in plan.keep], [b.name for b in plan.delete]


def test_retention_keeps_the_newest_of_each_day_week_and_month() -> None:
    start = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    # One nightly backup for 120 days, plus an extra one on the last day.
    backups = [at(start + timedelta(days=d)) for d in range(120)]
    extra = at(start + timedelta(days=119, hours=12))
    plan = plan_retention([*backups, extra], Retention(daily=7, weekly=4, monthly=6, **GFS_ONLY))
    kept = {b.name: why for b, why in plan.keep}
    days = sorted({b.created_at.date() for b, _ in plan.keep})
    # 7 days (the last day's newest only), 4 ISO weeks' Sundays, 4 month ends + 1 (Jan..Apr 30).
    assert extra.name in kept and backups[-1].name not in kept
    assert [d.isoformat() for d in days[-7:]] == [
        (start + timedelta(days=d)).date().isoformat() for d in range(113, 120)
    ]
    assert kept[extra.name] == ["daily", "weekly", "monthly"]
    monthly = sorted(n for n, why in kept.items() if "monthly" in why)
    assert [n[:8] for n in monthly] == ["20260131", "20260228", "20260331", "20260430"]
    weekly = [n for n, why in kept.items() if "weekly" in why]
    assert len(weekly) == 4
    assert len(plan.keep) + len(plan.delete) == 121
    assert len(plan.keep) == len(set(kept)) < 7 + 4 + 6


def test_retention_counts_periods_that_have_backups_and_always_keeps_the_new_one() -> None:
    old = [at(datetime(2025, m, 1, tzinfo=UTC)) for m in (1, 2, 3)]
    new = at(datetime(2026, 5, 1, tzinfo=UTC))
    plan = plan_retention([*old, new], Retention(daily=2, weekly=0, monthly=0, **GFS_ONLY))
    # Months without backups in between do not use up the two daily slots.
    assert names(plan) == (["20260501T0000", "20250301T0000"], ["20250201T0000", "20250101T0000"])
    nothing = plan_retention(
        [*old, new], Retention(0, 0, 0, **GFS_ONLY), protect=[new.manifest_path]
    )
    assert names(nothing) == (
        ["20260501T0000"],
        ["20250301T0000", "20250201T0000", "20250101T0000"],
    )
    assert nothing.keep[0][1] == ["new"]


def test_retention_never_touches_a_broken_backup() -> None:
    broken = Backup(Path("/b/x.manifest.json"), Path("/b/x.db.zst"), None, "unreadable")
    plan = plan_retention(
        [broken, at(datetime(2026, 1, 1, tzinfo=UTC))], Retention(0, 0, 0, **GFS_ONLY)
    )
    assert broken not in plan.delete and all(b is not broken for b, _ in plan.keep)


def test_retention_rejects_negative_counts() -> None:
    with pytest.raises(InvalidInputError) as ei:
        Retention(daily=-1)
    assert ei.value.code == "invalid_input" and "daily" in ei.value.message


def test_prune_deletes_what_the_plan_says_and_dry_run_deletes_nothing(live: Path) -> None:
    dest = live.parent / "b"
    made = [create_backup(live, dest=dest) for _ in range(3)]
    # Move the first two back in time (the manifest's checksums cover the data file only).
    for b, days in zip(made[:2], (40, 1), strict=True):
        m = read_manifest(b)
        m["created_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
        write_manifest(b, m)
    everything = sorted(p.name for p in dest.iterdir())
    plan = prune_backups(dest, Retention(daily=1, weekly=0, monthly=0, **GFS_ONLY), dry_run=True)
    assert names(plan) == ([made[2].name], [made[1].name, made[0].name])
    assert sorted(p.name for p in dest.iterdir()) == everything
    plan = prune_backups(dest, Retention(daily=2, weekly=0, monthly=2, **GFS_ONLY))
    assert [b.name for b in plan.delete] == []
    plan = prune_backups(
        dest, Retention(daily=1, weekly=0, monthly=0, **GFS_ONLY), protect=[made[0].manifest_path]
    )
    assert [b.name for b in plan.delete] == [made[1].name]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [
            made[0].data_path.name,
            made[0].manifest_path.name,
            made[2].data_path.name,
            made[2].manifest_path.name,
        ]
    )


def test_a_dry_run_plans_as_if_a_new_backup_were_there(live: Path) -> None:
    dest = live.parent / "b"
    made = create_backup(live, dest=dest)
    plan = prune_backups(
        dest,
        Retention(daily=1, weekly=0, monthly=0, **GFS_ONLY),
        dry_run=True,
        assume_new_at=datetime.now(UTC) + timedelta(seconds=1),
    )
    assert names(plan) == (["(new)"], [made.name])
    assert made.manifest_path.exists()
    with pytest.raises(InvalidInputError):
        prune_backups(dest, Retention(), assume_new_at=datetime.now(UTC))


def test_a_work_directory_that_cannot_be_written_is_not_blamed_on_the_backup(
    made: Backup, tmp_path: Path
) -> None:
    with pytest.raises(DatabaseError) as ei:
        verify_backup(made.data_path, work_dir=tmp_path / "no" / "such" / "dir")
    assert type(ei.value) is DatabaseError and ei.value.code == "db.error"
    assert "cannot verify backup" in ei.value.message
