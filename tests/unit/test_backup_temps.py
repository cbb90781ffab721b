"""Temps of killed backups (issue 11, item 8): the next run removes them, never a live one's.

Liveness is an flock held by the owner, so these tests use real processes: a
real ``abathur backup`` stopped (SIGSTOP, alive) or killed (SIGKILL) while its
temporary files exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from structlog.testing import capture_logs

from abathur.ops.backup import create_backup, verify_backup
from abathur.ops.integrity import run_checks
from abathur.ops.restore import restore_backup
from abathur.ops.tempfiles import is_temp_name, owned_temp, remove_stale_temps
from tests.helpers import populate

pytestmark = pytest.mark.sqlite_only("temporary files beside a SQLite file and its backups")

# 20,000 incompressible 1.5 KiB vectors: ~30 MiB, so a backup takes long enough
# to be caught with its temporary files on disk.
BULK = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at)
SELECT 'test/bulk', hex(randomblob(16)), 384, randomblob(1536), 0 FROM n
"""


@pytest.fixture
async def big(tmp_path: Path) -> Path:
    path = tmp_path / "db" / "agent.db"
    path.parent.mkdir()
    await populate(path)
    conn = apsw.Connection(str(path))
    try:
        conn.execute(BULK)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return path


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if is_temp_name(p.name))


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}


@contextlib.contextmanager
def backup_caught_mid_way(db: Path, dest: Path) -> Iterator[subprocess.Popen]:
    """A real ``abathur backup`` process, stopped (SIGSTOP) while it writes its raw copy."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "abathur", "backup", "--db", str(db), "--dest", str(dest)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        # The raw copy growing: its process has created (and locked) its temps.
        while not any(dest.glob(".*.db.tmp")) or not any(
            p.stat().st_size for p in dest.glob(".*.db.tmp")
        ):
            assert proc.poll() is None, f"the backup ended first: {proc.communicate()}"
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.002)
        proc.send_signal(signal.SIGSTOP)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_a_killed_backup_leaves_temps_and_the_next_backup_removes_them(big: Path) -> None:
    dest = big.parent.parent / "backups"
    with backup_caught_mid_way(big, dest) as proc:
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait(timeout=30)
    left = temps(dest)
    assert left, "a kill -9 mid-way leaves its temporary files behind"
    assert not list(dest.glob("*.manifest.json")), "and no backup"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "abathur",
            "backup",
            "--db",
            str(big),
            "--dest",
            str(dest),
            "--json",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert sorted(Path(p).name for p in data["removed_temps"]) == left
    assert "temps.removed_stale" in done.stderr, "and logs it"
    assert temps(dest) == []
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [Path(data["backup"]["file"]).name, Path(data["backup"]["manifest_file"]).name]
    )
    human = subprocess.run(
        [sys.executable, "-m", "abathur", "backup", "--db", str(big), "--dest", str(dest)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert human.returncode == 0 and "removed stale temps" not in human.stdout, "nothing left"


def test_the_temps_of_a_live_backup_in_another_process_are_never_removed(big: Path) -> None:
    dest = big.parent.parent / "backups"
    with backup_caught_mid_way(big, dest) as proc:
        theirs = temps(dest)
        # Another backup runs (and sweeps) while the first is alive but stopped.
        mine = create_backup(big, dest=dest)
        assert mine.removed_temps == ()
        assert remove_stale_temps(dest) == []
        assert set(theirs) <= set(temps(dest)), "the live backup's files are all still there"
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert temps(dest) == []
    made = sorted(dest.glob("*.db.zst"))
    assert len(made) == 2 and all(verify_backup(p).manifest for p in made)


@pytest.mark.parametrize(
    "name",
    [
        ".agent-20261122T020000.000000Z.db.tmp",
        ".agent-20261122T020000.000000Z.db.tmp-journal",
        ".agent-20261122T020000.000000Z.db.zst.tmp",
        ".agent-20261122T020000.000000Z.manifest.json.tmp",
        ".agent-20261122T020000.000000Z.db.zst.verify-4242-123456789.tmp",
        ".agent-20261122T020000.000000Z.db.zst.verify-4242-123456789.tmp-wal",
        ".agent.db.restore-20261122T020000.000000Z.tmp",
        ".agent.db.restore-20261122T020000.000000Z.tmp-shm",
        ".agent.db.restore-20261122T020000.000000Z.tmp-lock",
    ],
)
def test_every_kind_of_temp_left_by_a_dead_owner_is_removed(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"x" * 100)
    assert [p.name for p in remove_stale_temps(tmp_path)] == [name]
    assert not list(tmp_path.iterdir())


def test_files_abathur_did_not_make_are_left_alone(tmp_path: Path) -> None:
    names = [
        ".agent.db.tmp",  # no timestamp: not one of ours
        ".notes.tmp",
        "agent-20261122T020000.000000Z.db.tmp",  # not hidden
        ".agent.db-journal",
        "agent.db",
    ]
    for n in names:
        (tmp_path / n).write_bytes(b"keep")
    (tmp_path / ".agent-20261122T020000.000000Z.db.tmp").mkdir()  # a directory, not a temp
    link = tmp_path / ".agent-20261122T020000.000000Z.db.zst.tmp"
    link.symlink_to(tmp_path / "agent.db")
    assert remove_stale_temps(tmp_path) == []
    assert all((tmp_path / n).exists() for n in names) and link.is_symlink()


def test_a_temp_held_in_this_process_is_kept_and_removed_when_released(tmp_path: Path) -> None:
    path = tmp_path / ".agent-20261122T020000.000000Z.db.zst.tmp"
    with owned_temp(path):
        path.write_bytes(b"in progress")
        (tmp_path / (path.name + "-journal")).write_bytes(b"its journal")
        assert remove_stale_temps(tmp_path) == []
        assert path.read_bytes() == b"in progress"
        # Renamed into place, its lock is still held until the block ends.
        path.rename(tmp_path / "agent-20261122T020000.000000Z.db.zst")
        assert remove_stale_temps(tmp_path) == []
        assert (tmp_path / (path.name + "-lock")).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent-20261122T020000.000000Z.db.zst"]


def test_a_temp_whose_lock_outlived_its_owner_goes_with_the_lock(tmp_path: Path) -> None:
    path = tmp_path / ".agent-20261122T020000.000000Z.db.tmp"
    for p in (path, tmp_path / (path.name + "-journal"), tmp_path / (path.name + "-lock")):
        p.write_bytes(b"left by kill -9")
    assert len(remove_stale_temps(tmp_path)) == 3
    assert not list(tmp_path.iterdir())


def test_verify_removes_stale_temps_in_its_directory_and_says_so(big: Path) -> None:
    made = create_backup(big)
    stale = made.data_path.parent / f".{made.data_path.name}.verify-1-2.tmp"
    stale.write_bytes(b"from a verify killed yesterday")
    verified = verify_backup(made.data_path)
    assert verified.removed_temps == (stale,)
    assert verified.to_dict()["removed_temps"] == [str(stale)]
    assert not stale.exists()


def test_a_backup_also_removes_a_killed_restores_temp_beside_the_database(big: Path) -> None:
    stale = big.parent / f".{big.name}.restore-20261122T020000.000000Z.tmp"
    stale.write_bytes(b"half a restore")
    made = create_backup(big)
    assert made.removed_temps == (stale,) and not stale.exists()


def test_locked_temps_do_not_change_the_backup_files_permissions(big: Path) -> None:
    umask = os.umask(0o022)
    try:
        made = create_backup(big)
    finally:
        os.umask(umask)
    assert made.data_path.stat().st_mode & 0o777 == 0o644
    assert made.manifest_path.stat().st_mode & 0o777 == 0o644


def test_a_stopped_holder_of_the_directory_lock_delays_a_backup_but_never_blocks_it(
    big: Path,
) -> None:
    dest = big.parent.parent / "backups"
    dest.mkdir()
    stale = dest / ".agent-20261122T020000.000000Z.db.tmp"
    stale.write_bytes(b"left by kill -9")
    fd = os.open(dest, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a sweep would, then stopped or hung
        started = time.monotonic()
        with capture_logs() as logs:
            made = create_backup(big, dest=dest)
        assert time.monotonic() - started < 30
    finally:
        os.close(fd)
    assert "temps.directory_lock_busy" in [e["event"] for e in logs]
    assert made.removed_temps == () and stale.exists(), "no sweep without the lock"
    assert verify_backup(made.data_path).removed_temps == (stale,)


def test_check_removes_stale_temps_beside_the_file_and_in_its_backups_and_says_so(
    big: Path,
) -> None:
    made = create_backup(big)
    beside = big.parent / f".{big.name}.restore-20261122T020000.000000Z.tmp"
    in_backups = made.data_path.parent / f".{made.data_path.name}.verify-1-2.tmp"
    for stale in (beside, in_backups):
        stale.write_bytes(b"left by kill -9")
    big.parent.joinpath(beside.name + "-journal").write_bytes(b"")
    report = run_checks(big, only=["integrity"])
    assert set(report.removed_temps) >= {beside, in_backups}
    assert str(beside) in report.to_dict()["removed_temps"]
    assert not beside.exists() and not in_backups.exists()
    assert not (big.parent / (beside.name + "-journal")).exists()
    assert made.data_path.exists() and made.manifest_path.exists()


def test_restore_removes_a_killed_restores_temps_and_reports_them(big: Path) -> None:
    made = create_backup(big)
    stale = big.parent / f".{big.name}.restore-20261122T020000.000000Z.tmp"
    stale.write_bytes(b"half a restore")
    restored = restore_backup(made.data_path, target=big)
    assert stale in restored.removed_temps and not stale.exists()
    assert str(stale) in restored.to_dict()["removed_temps"]
