"""The database layer: pragmas, sqlite-vec, transactions, migrations, errors."""

from __future__ import annotations

import asyncio
from importlib.metadata import version as package_version
from pathlib import Path

import apsw
import pytest

from abathur import Abathur, Settings
from abathur.backends.sqlite import Database, check_environment, migrations
from abathur.backends.sqlite import connection as db_connection
from abathur.errors import (
    ClosedError,
    DatabaseBusyError,
    DatabaseError,
    IncompatibleEnvironmentError,
    InvalidInputError,
    SchemaError,
)

pytestmark = pytest.mark.sqlite_only("the SQLite Database: connections, pragmas, migrations, WAL")

PRAGMAS = [
    "journal_mode",
    "synchronous",
    "foreign_keys",
    "busy_timeout",
    "wal_autocheckpoint",
    "cache_size",
    "temp_store",
    "mmap_size",
]
# What DESIGN.md §2 asks for, as SQLite reports it back.
EXPECTED = {
    "journal_mode": "wal",
    "synchronous": 1,  # NORMAL
    "foreign_keys": 1,
    "busy_timeout": 5000,
    "wal_autocheckpoint": 1000,
    "cache_size": -64000,
    "temp_store": 2,  # MEMORY
    "mmap_size": 268435456,
}


def read_pragmas(conn: apsw.Connection) -> dict[str, object]:
    # Names come from the constant above, never from a caller.
    return {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in PRAGMAS}


async def test_pragmas_on_every_reader_and_the_writer(ab: Abathur) -> None:
    # Hold every reader at once so each pooled connection is checked, not one reused.
    results = await asyncio.gather(
        *(ab.db.read(lambda tx: read_pragmas(tx.conn)) for _ in range(ab.settings.readers))
    )
    assert len(results) == ab.settings.readers
    for got in results:
        assert got == EXPECTED
    assert await ab.db.write(lambda tx: read_pragmas(tx.conn)) == EXPECTED


async def test_synchronous_full_is_configurable(db_path: Path) -> None:
    async with Abathur.open(db_path, synchronous="FULL") as ab:
        assert (await ab.db.read(lambda tx: read_pragmas(tx.conn)))["synchronous"] == 2


async def test_sqlite_vec_loaded_on_readers_and_writer(ab: Abathur) -> None:
    def vec(conn: apsw.Connection) -> str:
        return conn.execute("SELECT vec_version()").fetchall()[0][0]

    readers = await asyncio.gather(
        *(ab.db.read(lambda tx: vec(tx.conn)) for _ in range(ab.settings.readers))
    )
    assert set(readers) == {"v" + ab.versions.sqlite_vec}
    assert await ab.db.write(lambda tx: vec(tx.conn)) == "v" + ab.versions.sqlite_vec


def test_environment_versions() -> None:
    versions = check_environment()
    assert tuple(int(p) for p in versions.sqlite.split(".")[:3]) >= (3, 51, 3)
    # The extension SQLite loaded is the installed package's (any version in range).
    assert versions.sqlite_vec == package_version("sqlite-vec")
    assert versions.apsw.startswith(versions.sqlite)


def test_old_sqlite_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # We cannot install an old SQLite next to apsw's bundled one, so we make
    # apsw report one: the check must refuse it by version, before any open.
    monkeypatch.setattr(db_connection.apsw, "sqlite_lib_version", lambda: "3.51.2")
    with pytest.raises(IncompatibleEnvironmentError) as excinfo:
        check_environment()
    assert excinfo.value.code == "db.incompatible_environment"
    assert "3.51.2" in str(excinfo.value)


def test_unloadable_sqlite_vec_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(db_connection.sqlite_vec, "loadable_path", lambda: str(tmp_path / "nope"))
    with pytest.raises(IncompatibleEnvironmentError, match="sqlite-vec"):
        check_environment()


async def test_readers_are_read_only(ab: Abathur) -> None:
    with pytest.raises(DatabaseError) as excinfo:
        await ab.db.read(lambda c: c.conn.execute("INSERT INTO meta VALUES ('k', 'v')"))
    assert excinfo.value.code == "db.error"
    assert isinstance(excinfo.value.__cause__, apsw.ReadOnlyError)


async def test_write_rolls_back_on_any_error(ab: Abathur) -> None:
    def insert_then_fail(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('half', 'done')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await ab.db.write(lambda tx: insert_then_fail(tx.conn))
    rows = await ab.db.read(
        lambda c: c.conn.execute("SELECT * FROM meta WHERE key = 'half'").fetchall()
    )
    assert rows == []
    # The writer is usable afterwards (no transaction left open).
    await ab.db.write(lambda c: c.conn.execute("INSERT INTO meta VALUES ('after', 'ok')"))


async def test_raw_driver_errors_are_translated(ab: Abathur) -> None:
    with pytest.raises(DatabaseError) as excinfo:
        await ab.db.write(lambda c: c.conn.execute("INSERT INTO no_such_table VALUES (1)"))
    assert not isinstance(excinfo.value, apsw.Error)
    assert "no_such_table" in str(excinfo.value)


async def test_busy_writer_elsewhere_is_a_typed_retryable_error(db_path: Path) -> None:
    async with Abathur.open(db_path, busy_timeout_ms=50) as ab:
        other = apsw.Connection(str(db_path))
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DatabaseBusyError) as excinfo:
                await ab.db.write(lambda c: c.conn.execute("INSERT INTO meta VALUES ('x', 'y')"))
            assert excinfo.value.retryable
        finally:
            other.execute("ROLLBACK")
            other.close()
        await ab.db.write(lambda c: c.conn.execute("INSERT INTO meta VALUES ('x', 'y')"))


async def test_an_open_waits_out_a_lock_held_for_a_moment(db_path: Path) -> None:
    # A connection in exclusive locking mode holds the file, as one switching
    # it to WAL or recovering its WAL does for a moment. Opening must wait
    # (busy_timeout_ms), not fail on its very first read of the header: two
    # `abathur smoke` runs opening one file together did.
    async with Abathur.open(db_path, embed_worker=False):
        pass
    other = apsw.Connection(str(db_path))
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, lambda: (other.execute("COMMIT"), other.close()))
    async with Abathur.open(db_path, embed_worker=False, busy_timeout_ms=5000) as ab:
        assert await ab.db.schema_version() > 0


def make_v1_file(path: Path) -> None:
    """A database as migration 1 alone made it, holding one session."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = wal")
    migrations.apply(conn, migrations.available()[:1])
    conn.execute(
        "INSERT INTO sessions (id, app, user, status, state, revision, created_at, updated_at) "
        "VALUES ('s1', 'app', 'alice', 'active', '{\"k\":1}', 3, 1.0, 2.0)"
    )
    conn.close()


async def test_upgrade_from_migration_1_keeps_data_and_backs_up(db_path: Path) -> None:
    make_v1_file(db_path)
    async with Abathur.open(db_path) as ab:
        assert ab.db.migrated_from == 1
        version = await ab.db.read(lambda c: c.conn.execute("PRAGMA user_version").fetchall()[0][0])
        assert version == len(migrations.available())
        tasks = await ab.db.read(
            lambda c: c.conn.execute(
                "SELECT name FROM sqlite_schema WHERE name = 'tasks'"
            ).fetchall()
        )
        assert tasks == [("tasks",)]
        row = await ab.db.read(
            lambda c: c.conn.execute("SELECT id, state, revision FROM sessions").fetchall()
        )
        assert row == [("s1", '{"k":1}', 3)]
        backup = ab.db.premigration_backup
    assert backup is not None and backup.exists()
    copy = apsw.Connection(str(backup), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert copy.execute("PRAGMA user_version").fetchall() == [(1,)]
        assert copy.execute("SELECT id FROM sessions").fetchall() == [("s1",)]
    finally:
        copy.close()


async def test_fresh_file_is_not_backed_up(db_path: Path) -> None:
    async with Abathur.open(db_path) as ab:
        assert ab.db.migrated_from == 0
        assert ab.db.premigration_backup is None
    assert sorted(p.name for p in db_path.parent.glob("*.bak")) == []


async def test_failed_migration_leaves_previous_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_v1_file(db_path)
    broken = migrations.Migration(
        2, "broken", "CREATE TABLE t2 (x); INSERT INTO nowhere VALUES (1);"
    )
    monkeypatch.setattr(
        migrations, "available", lambda: [migrations.Migration(1, "initial", ""), broken]
    )
    with pytest.raises(DatabaseError, match="migration 002_broken"):
        await Abathur.open(db_path)
    conn = apsw.Connection(str(db_path))
    try:
        assert conn.execute("PRAGMA user_version").fetchall() == [(1,)]
        assert conn.execute("SELECT name FROM sqlite_schema WHERE name = 't2'").fetchall() == []
    finally:
        conn.close()


async def test_schema_newer_than_code_is_refused_untouched(db_path: Path) -> None:
    async with Abathur.open(db_path):
        pass
    conn = apsw.Connection(str(db_path))
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = db_path.read_bytes()
    with pytest.raises(SchemaError) as excinfo:
        await Abathur.open(db_path)
    assert excinfo.value.code == "db.schema"
    assert "999" in str(excinfo.value)
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("bad", [":memory:", "", "file:x.db?mode=memory", "."])
async def test_non_file_paths_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        await Database.open(bad)


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as excinfo:
        await Abathur.open(tmp_path / "no" / "such" / "dir" / "a.db")
    assert "opening" in str(excinfo.value)


async def test_invalid_settings_are_typed_errors(db_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="readers"):
        await Abathur.open(db_path, readers=0)
    with pytest.raises(InvalidInputError, match="synchronous"):
        await Abathur.open(db_path, settings=Settings(), synchronous="OFF")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABATHUR_DB", "/tmp/from-env.db")
    monkeypatch.setenv("ABATHUR_SYNCHRONOUS", "FULL")
    settings = Settings()
    assert str(settings.db) == "/tmp/from-env.db"
    assert settings.synchronous == "FULL"
    assert Settings(synchronous="NORMAL").synchronous == "NORMAL"  # argument beats env


async def test_closed_database_raises_closed_error(db_path: Path) -> None:
    ab = await Abathur.open(db_path)
    await ab.close()
    await ab.close()  # idempotent
    assert ab.is_closed
    with pytest.raises(ClosedError) as excinfo:
        await ab.db.read(lambda c: c.conn.execute("SELECT 1").fetchall())
    assert excinfo.value.code == "closed"
    with pytest.raises(ClosedError):
        await ab.db.write(lambda c: c.conn.execute("SELECT 1").fetchall())


async def test_close_lets_queued_writes_finish(db_path: Path) -> None:
    ab = await Abathur.open(db_path)
    writes = [
        asyncio.ensure_future(
            ab.db.write(
                lambda c, i=i: c.conn.execute("INSERT INTO meta VALUES (?, 'v')", (f"k{i}",))
            )
        )
        for i in range(20)
    ]
    await asyncio.sleep(0)  # let every write reach the writer's queue
    await ab.close()
    await asyncio.gather(*writes)
    async with Abathur.open(db_path) as again:
        count = await again.db.read(
            lambda c: c.conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchall()
        )
    assert count == [(20,)]


async def test_unclosed_database_warns(db_path: Path) -> None:
    ab = await Abathur.open(db_path)
    db = ab.db
    with pytest.warns(ResourceWarning, match="never closed"):
        db.__del__()
    await ab.close()


async def test_close_checkpoints_and_removes_the_wal(db_path: Path) -> None:
    async with Abathur.open(db_path) as ab:
        await ab.db.write(lambda c: c.conn.execute("INSERT INTO meta VALUES ('w', 'v')"))
        await ab.db.read(lambda c: c.conn.execute("SELECT 1").fetchall())
        assert Path(f"{db_path}-wal").exists()
    assert not Path(f"{db_path}-wal").exists()
    assert not Path(f"{db_path}-shm").exists()


async def test_a_file_that_is_not_a_database_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 200)
    before = path.read_bytes()
    with pytest.raises(DatabaseError) as excinfo:
        await Abathur.open(path)
    assert not isinstance(excinfo.value, IncompatibleEnvironmentError)
    assert "not a database" in str(excinfo.value)
    assert path.read_bytes() == before
