"""A full disk during a backup (issue 11, item 10): backup.no_space, sizes named, nothing left.

The disk is a real, small tmpfs mounted for the test (root only; skipped with
the reason otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

from abathur import BackupSpaceError
from abathur.backends.sqlite.backup import copy_online
from abathur.config import Settings
from abathur.ops.backup import create_backup, verify_backup
from abathur.stores.ops import StorageFullError
from tests.helpers import populate

pytestmark = pytest.mark.sqlite_only("SQLITE_FULL and the space a SQLite file's backup needs")

PAGE = 4096


def _bulk(path: Path, rows: int) -> None:
    """Add ``rows`` incompressible 1.5 KiB blobs, so compression saves nothing."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows) "
            "INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at) "
            "SELECT 'test/bulk', hex(randomblob(16)), 384, randomblob(1536), 0 FROM n",
            {"rows": rows},
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "db" / "agent.db"
    path.parent.mkdir()
    await populate(path)
    _bulk(path, 1000)
    return path


Mount = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Mount]:
    """Mount a tmpfs of a given size (bytes); unmounted after the test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        size = -(-size // PAGE) * PAGE
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def db_bytes(db: Path) -> int:
    return db.stat().st_size


def test_too_little_space_fails_up_front_and_writes_nothing(db: Path, small_disk: Mount) -> None:
    disk = small_disk(db_bytes(db) // 2)
    free = shutil.disk_usage(disk).free
    with pytest.raises(BackupSpaceError) as ei:
        create_backup(db, dest=disk)
    e = ei.value
    assert e.code == "backup.no_space"
    assert (e.directory, e.needed, e.free) == (str(disk), db_bytes(db), free)
    assert f"({db_bytes(db)} bytes)" in e.message and f"({free} bytes) are free" in e.message
    assert str(disk) in e.message
    assert e.to_dict()["needed_bytes"] == db_bytes(db)
    assert list(disk.iterdir()) == []


def test_running_out_mid_way_is_no_space_and_leaves_nothing(db: Path, small_disk: Mount) -> None:
    # Room for the raw copy but not for the compressed file beside it.
    disk = small_disk(db_bytes(db) * 3 // 2)
    with pytest.raises(BackupSpaceError) as ei:
        create_backup(db, dest=disk)
    e = ei.value
    assert e.code == "backup.no_space" and e.directory == str(disk)
    assert "filled up during the backup of agent.db" in e.message
    assert e.free == shutil.disk_usage(disk).free and e.needed > db_bytes(db)
    assert list(disk.iterdir()) == [], "no temp, no -journal, no half backup"


def test_sqlite_running_out_while_copying_is_no_space_too(db: Path, small_disk: Mount) -> None:
    # The copy step itself (SQLITE_FULL, once "FullError: not an error"), below the
    # up-front check that normally stops it first.
    disk = small_disk(db_bytes(db) // 2)
    raw = disk / ".agent-20261122T020000.000000Z.db.tmp"
    with pytest.raises(StorageFullError):
        copy_online(db, raw, Settings())


def test_cli_reports_no_space_with_its_code_and_sizes(db: Path, small_disk: Mount) -> None:
    disk = small_disk(db_bytes(db) // 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    done = subprocess.run(
        [sys.executable, "-m", "abathur", "backup", "--db", str(db), "--dest", str(disk), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "abathur: error [backup.no_space]: not enough space in" in done.stderr
    assert "Traceback" not in done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "backup.no_space" and error["needed_bytes"] == db_bytes(db)
    assert list(disk.iterdir()) == []


def test_verify_without_room_to_decompress_is_no_space(
    db: Path, small_disk: Mount, tmp_path: Path
) -> None:
    made = create_backup(db, dest=tmp_path / "backups")
    assert made.manifest is not None
    disk = small_disk(made.manifest.raw_bytes // 2)
    with pytest.raises(BackupSpaceError) as ei:
        verify_backup(made.data_path, work_dir=disk)
    assert ei.value.needed == made.manifest.raw_bytes
    assert list(disk.iterdir()) == []
