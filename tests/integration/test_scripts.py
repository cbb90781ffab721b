"""scripts/: the nightly jobs, restore.sh, the crontab and the systemd units, each run
for real in a temporary directory with the venv's ``abathur`` on PATH."""

from __future__ import annotations

import configparser
import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from abathur import Abathur
from abathur.ops.backup import create_backup
from tests.helpers import digest, populate

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

pytestmark = pytest.mark.sqlite_only(
    "the scripts back up, archive and restore one SQLite file, and check it with apsw"
)


def script_env(*, with_abathur: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    env["PATH"] = f"{VENV_BIN}:{SYSTEM_PATH}" if with_abathur else SYSTEM_PATH
    return env


def run(
    name: str,
    *args: str,
    cwd: Path,
    stdin: str = "",
    with_abathur: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / name), *args],
        cwd=cwd,
        env={**script_env(with_abathur=with_abathur), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line(done: subprocess.CompletedProcess) -> str:
    """The nightly scripts print exactly one line, on stderr, and nothing on stdout."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


def memories(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT count(*) FROM memories").fetchall()[0][0]
    finally:
        conn.close()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    await populate(path)
    return path


def backups(db: Path) -> list[Path]:
    return sorted((db.parent / "backups").glob("*.db.zst"))


def test_every_script_is_executable_bash_that_parses() -> None:
    for name in ("nightly-backup.sh", "nightly-archival.sh", "restore.sh"):
        path = SCRIPTS / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n")
        subprocess.run(["bash", "-n", str(path)], check=True)
        helped = subprocess.run([str(path), "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and helped.stdout.startswith(f"{name}: ")
        assert "Usage: " in helped.stdout and "Exit codes" in helped.stdout


# -- nightly-backup.sh --------------------------------------------------------------------


def test_nightly_backup_checkpoints_backs_up_and_verifies(db: Path) -> None:
    # A writer that never checkpoints leaves committed pages in the WAL.
    holder = apsw.Connection(str(db))
    try:
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("INSERT INTO meta (key, value) VALUES ('test.nightly', 'x')")
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 0

        done = run("nightly-backup.sh", "--db", "agent.db", cwd=db.parent)
        assert done.returncode == 0, done.stderr
        line = one_line(done)
        assert line.startswith("abathur-nightly-backup: ok db=agent.db backup=")
        assert "checkpoint=done" in line and "pruned=0" in line
        assert "auth=none stale_temps=0" in line, "no backup key: only checksummed"
        assert wal.stat().st_size == 0, "wal_checkpoint(TRUNCATE) did not run"
    finally:
        holder.close()
    (made,) = backups(db)
    assert f"backup={made} " in line
    listed = subprocess.run(
        [str(VENV_BIN / "abathur"), "backup", "verify", "--db", str(db), str(made)],
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert listed.returncode == 0, listed.stderr


def test_nightly_backup_applies_retention_in_dest(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "elsewhere"
    keep = ("--dest", str(dest), "--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0")
    # No minimum age: three runs in a row, and retention still keeps the newest two.
    young = {"ABATHUR_BACKUP_MIN_AGE_DAYS": "0"}
    for _ in range(2):
        done = run("nightly-backup.sh", "--db", str(db), *keep, cwd=db.parent, env=young)
        assert done.returncode == 0, done.stderr
        assert "pruned=0" in one_line(done)
    third = run("nightly-backup.sh", "--db", str(db), *keep, cwd=db.parent, env=young)
    assert third.returncode == 0, third.stderr
    line = one_line(third)
    assert "pruned=1" in line
    kept = sorted(dest.glob("*.db.zst"))
    assert len(kept) == 2 and f"backup={kept[-1]} " in line
    assert not (db.parent / "backups").exists()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "FAILED at setup: no database at agent.db"),
        ("garbage", "FAILED at checkpoint"),
    ],
)
def test_nightly_backup_failure_is_one_line_and_non_zero(
    tmp_path: Path, setup: str, expected: str
) -> None:
    if setup == "garbage":
        (tmp_path / "agent.db").write_bytes(b"this is not a database" * 100)
    done = run("nightly-backup.sh", "--db", "agent.db", cwd=tmp_path)
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(f"abathur-nightly-backup: {expected}"), line
    assert not (tmp_path / "backups").exists()


def test_nightly_backup_without_abathur_on_path_fails_clearly(db: Path) -> None:
    done = run("nightly-backup.sh", "--db", str(db), cwd=db.parent, with_abathur=False)
    assert done.returncode == 1
    assert "FAILED at setup: no abathur command" in one_line(done)


def test_nightly_jobs_share_one_lock(db: Path) -> None:
    lock = db.with_name(db.name + ".nightly.lock")
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for name in ("nightly-backup.sh", "nightly-archival.sh"):
            done = run(name, "--db", str(db), cwd=db.parent)
            assert done.returncode == 75, (name, done.stderr)
            assert f"skipped: another nightly job holds {lock}" in one_line(done)
    assert not (db.parent / "backups").exists()


def test_nightly_backup_usage_error_exits_2(tmp_path: Path) -> None:
    done = run("nightly-backup.sh", "--bogus", cwd=tmp_path)
    assert done.returncode == 2 and "usage:" in done.stderr


# -- nightly-archival.sh ------------------------------------------------------------------


def test_nightly_archival_dry_run(db: Path) -> None:
    before = digest(db)
    done = run("nightly-archival.sh", "--db", str(db), "--dry-run", cwd=db.parent)
    assert done.returncode == 0, done.stderr
    line = one_line(done)
    assert line.startswith(f"abathur-nightly-archival: ok db={db} dry run ")
    assert digest(db) == before, "a dry run changed the database"


def test_nightly_archival_runs(db: Path) -> None:
    done = run("nightly-archival.sh", "--db", str(db), cwd=db.parent)
    assert done.returncode == 0, done.stderr
    assert one_line(done).startswith(f"abathur-nightly-archival: ok db={db} archived ")


def test_nightly_archival_failure_is_one_line(tmp_path: Path) -> None:
    done = run("nightly-archival.sh", "--db", "missing.db", cwd=tmp_path)
    assert done.returncode == 1
    assert one_line(done) == "abathur-nightly-archival: FAILED at setup: no database at missing.db"


# -- restore.sh ---------------------------------------------------------------------------


@pytest.fixture
async def backed_up(db: Path) -> tuple[Path, Path]:
    """A database, a backup of it, and then one more memory written after the backup."""
    backup = create_backup(db).data_path
    async with Abathur.open(db, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "after-the-backup", "lost by the restore")
    return db, backup


def test_restore_with_yes_verifies_restores_and_checks(backed_up: tuple[Path, Path]) -> None:
    db, backup = backed_up
    count = memories(db)
    done = run("restore.sh", "--db", str(db), "--yes", str(backup), cwd=db.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert memories(db) == count - 1, "the memory written after the backup is still there"
    assert f"abathur-restore: restored {db} from {backup}; check clean" in done.stderr
    assert "clean: no findings" in done.stdout
    assert list(db.parent.glob("agent.db.replaced-*")), "the replaced file was not kept aside"


def test_restore_asks_and_does_nothing_unless_told_yes(backed_up: tuple[Path, Path]) -> None:
    db, backup = backed_up
    before = digest(db)
    for answer in ("no\n", ""):
        done = run("restore.sh", "--db", str(db), str(backup), cwd=db.parent, stdin=answer)
        assert done.returncode == 2, done.stderr
        assert "not confirmed" in done.stderr and "Type yes" in done.stderr
        assert digest(db) == before
    done = run("restore.sh", "--db", str(db), str(backup), cwd=db.parent, stdin="yes\n")
    assert done.returncode == 0, done.stderr


def test_restore_refuses_a_damaged_backup(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    db, backup = backed_up
    before = digest(db)
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data))
    done = run("restore.sh", "--db", str(db), "--yes", str(backup), cwd=db.parent)
    assert done.returncode == 1
    assert "the backup failed verification" in done.stderr and "backup.corrupt" in done.stderr
    assert digest(db) == before


def test_restore_usage(tmp_path: Path) -> None:
    assert run("restore.sh", cwd=tmp_path).returncode == 2
    assert run("restore.sh", "a", "b", cwd=tmp_path).returncode == 2


# -- crontab.example ----------------------------------------------------------------------

_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def test_crontab_example_jobs_are_valid_and_real() -> None:
    jobs, env = [], {}
    for line in (SCRIPTS / "crontab.example").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            key, value = line.split("=", 1)
            env[key] = value
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, line
        for field, (low, high) in zip(fields[:5], _RANGES, strict=True):
            assert _FIELD.match(field), f"bad cron field {field!r} in {line!r}"
            for number in map(int, re.findall(r"\d+", field.split("/")[0])):
                assert low <= number <= high, line
        jobs.append(fields[5])
    assert {"PATH", "ABATHUR_DB", "ABATHUR_BACKUP_DIR"} <= env.keys()
    assert len(jobs) == 3
    for command in jobs:
        program, *args = command.split()
        if program.startswith("/opt/abathur/scripts/"):
            assert (SCRIPTS / Path(program).name).is_file(), program
        else:
            assert program == "abathur", command
            subcommand = args[0]
            options = [a for a in args if a.startswith("--")]
            helped = subprocess.run(
                [str(VENV_BIN / "abathur"), subcommand, "--help"],
                capture_output=True,
                text=True,
                env=script_env(),
            )
            assert helped.returncode == 0 and all(o in helped.stdout for o in options)


# -- systemd units ------------------------------------------------------------------------

UNITS = SCRIPTS / "systemd"


def test_systemd_units_pair_up_and_run_real_commands() -> None:
    services = sorted(p.stem for p in UNITS.glob("*.service"))
    timers = sorted(p.stem for p in UNITS.glob("*.timer"))
    assert services == timers == ["abathur-archival", "abathur-backup", "abathur-metrics"]
    for stem in services:
        timer = configparser.ConfigParser(strict=False, interpolation=None)
        timer.read(UNITS / f"{stem}.timer")
        assert timer["Timer"]["Unit"] == f"{stem}.service"
        assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
        service = configparser.ConfigParser(strict=False, interpolation=None)
        service.read(UNITS / f"{stem}.service")
        assert service["Service"]["Type"] == "oneshot"
        program = service["Service"]["ExecStart"].split()[0]
        if program.startswith("/opt/abathur/scripts/"):
            assert (SCRIPTS / Path(program).name).is_file(), program
            assert service["Service"]["SuccessExitStatus"] == "75"
        else:
            assert program == "/opt/abathur/.venv/bin/abathur"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # The units name /opt/abathur; verify them pointing at this checkout instead.
    venv = VENV_BIN.parent
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/abathur/.venv", str(venv))
        (tmp_path / unit.name).write_text(text.replace("/opt/abathur", str(ROOT)))
    done = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
