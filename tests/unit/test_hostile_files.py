"""Files made by an attacker: hostile names and SQL in backups and databases (issue 11, item 1).

Each backup here is built the way an attacker would build it: take a real
backup, add an object whose name (or body) carries SQL, recompress, and make
every checksum in the manifest match again. Before the fix, ``backup verify``
formatted such names into SQL, and apsw ran every statement in the string:
the ATTACH payloads below created a file outside the backup directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest
import sqlite_vec
import zstandard

from abathur import (
    Abathur,
    CorruptBackupError,
    DatabaseError,
    DatabaseInUseError,
    InvalidInputError,
)
from abathur.backends.sqlite import untrusted
from abathur.ops import schema
from abathur.ops.backup import Backup, create_backup, verify_backup
from abathur.ops.integrity import rebuild_derived_indexes, run_checks
from abathur.ops.restore import restore_backup
from tests.backup_files import files_in, held_open

pytestmark = pytest.mark.sqlite_only("hostile SQLite files: schema tricks, the authorizer")

Mutation = Callable[[apsw.Connection, Path], None]

# live (a populated file) and made (its backup) come from tests/unit/conftest.py.


def _attach(pwned: Path) -> str:
    return f"ATTACH DATABASE '{pwned}' AS p; CREATE TABLE p.owned(a)"


def _table_name(conn: apsw.Connection, pwned: Path) -> None:
    # Starts with a real table's name, so the first statement of the string is valid.
    name = f'meta"; {_attach(pwned)}; --'
    conn.execute(f'CREATE TABLE "{name.replace(chr(34), chr(34) * 2)}" (a)')


def _table_name_single_quotes(conn: apsw.Connection, pwned: Path) -> None:
    name = f"meta'); {_attach(pwned)}; --"
    conn.execute(f'CREATE TABLE "{name}" (a)')


def _table_name_load_extension(conn: apsw.Connection, pwned: Path) -> None:
    name = f"meta\"; SELECT load_extension('{pwned}'); --"
    conn.execute(f'CREATE TABLE "{name.replace(chr(34), chr(34) * 2)}" (a)')


def _column_name(conn: apsw.Connection, pwned: Path) -> None:
    column = f'a"; {_attach(pwned)}; --'
    conn.execute(f'CREATE TABLE evil ("{column.replace(chr(34), chr(34) * 2)}" TEXT)')


def _index_name(conn: apsw.Connection, pwned: Path) -> None:
    name = f'i"; {_attach(pwned)}; --'
    conn.execute(f'CREATE INDEX "{name.replace(chr(34), chr(34) * 2)}" ON memories (key)')


def _trigger_name(conn: apsw.Connection, pwned: Path) -> None:
    name = f't"; {_attach(pwned)}; --'
    conn.execute(
        f'CREATE TRIGGER "{name.replace(chr(34), chr(34) * 2)}" AFTER INSERT ON memories '
        "BEGIN DELETE FROM audit_log; END"
    )


def _view_calling_load_extension(conn: apsw.Connection, pwned: Path) -> None:
    conn.execute(f"CREATE VIEW memories_view AS SELECT load_extension('{pwned}') AS x")


def _shadow_lookalike(conn: apsw.Connection, pwned: Path) -> None:
    # Named like an FTS5 shadow table, to hide among the module's own tables.
    name = f'memories_fts_x"; {_attach(pwned)}; --'
    conn.execute(f'CREATE TABLE "{name.replace(chr(34), chr(34) * 2)}" (a)')


def _trigger_on_a_shadow_table(conn: apsw.Connection, pwned: Path) -> None:
    conn.execute(
        "CREATE TRIGGER quiet AFTER INSERT ON memories_fts_data BEGIN DELETE FROM memories; END"
    )


def _hostile_vec0_table(conn: apsw.Connection, pwned: Path) -> None:
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    name = f'v"; {_attach(pwned)}; --'
    conn.execute(
        f'CREATE VIRTUAL TABLE "{name.replace(chr(34), chr(34) * 2)}" USING vec0(e float[4])'
    )


def _sqlite_named_trigger(conn: apsw.Connection, pwned: Path) -> None:
    # sqlite_* names are reserved, but a file can hold anything in sqlite_schema.
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "INSERT INTO sqlite_schema (type, name, tbl_name, rootpage, sql) VALUES "
        "('trigger', 'sqlite_hidden', 'memories', 0, "
        "'CREATE TRIGGER sqlite_hidden AFTER INSERT ON memories BEGIN DELETE FROM audit_log; END')"
    )
    conn.execute("PRAGMA writable_schema = OFF")


PAYLOADS = [
    pytest.param(_table_name, id="table-name-attach"),
    pytest.param(_table_name_single_quotes, id="table-name-quotes"),
    pytest.param(_table_name_load_extension, id="table-name-load-extension"),
    pytest.param(_column_name, id="column-name"),
    pytest.param(_index_name, id="index-name"),
    pytest.param(_trigger_name, id="trigger-name"),
    pytest.param(_view_calling_load_extension, id="view-load-extension"),
    pytest.param(_shadow_lookalike, id="shadow-lookalike"),
    pytest.param(_trigger_on_a_shadow_table, id="trigger-on-shadow"),
    pytest.param(_hostile_vec0_table, id="vec0-name"),
    pytest.param(_sqlite_named_trigger, id="sqlite-named-trigger"),
]


def _counts_as_the_attacker_writes_them(conn: apsw.Connection) -> dict[str, int]:
    # The attacker makes the manifest agree with any counting: every real table.
    return {
        name: conn.execute(
            f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"'
        ).fetchall()[0][0]
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'"
            " AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        if "vec" not in name and "fts" not in name
    }


def craft(made: Backup, mutate: Mutation, pwned: Path, work: Path) -> None:
    """Rewrite ``made`` with ``mutate`` applied, every checksum in its manifest matching."""
    raw_path = work / "crafted.db"
    raw_path.write_bytes(zstandard.ZstdDecompressor().decompress(made.data_path.read_bytes()))
    conn = apsw.Connection(str(raw_path))
    try:
        mutate(conn, pwned)
        counts = _counts_as_the_attacker_writes_them(conn)
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    raw = raw_path.read_bytes()
    packed = zstandard.ZstdCompressor().compress(raw)
    made.data_path.write_bytes(packed)
    manifest = json.loads(made.manifest_path.read_text())
    manifest.update(
        sha256=hashlib.sha256(packed).hexdigest(),
        compressed_bytes=len(packed),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        raw_bytes=len(raw),
        row_counts={**manifest["row_counts"], **counts},
    )
    made.manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("mutate", PAYLOADS)
def test_a_hostile_backup_is_rejected_by_verify_and_runs_nothing(
    made: Backup, mutate: Mutation, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned.db"
    craft(made, mutate, pwned, tmp_path)
    assert not pwned.exists()
    with pytest.raises(CorruptBackupError) as ei:
        verify_backup(made.data_path)
    # A trigger on a shadow table is refused by SQLite's defensive mode
    # itself: the schema does not even parse, so integrity_check fails first.
    assert ei.value.reason in ("schema", "integrity"), ei.value.message
    assert not pwned.exists(), "SQL from the backup ran during verify"
    # Nothing left in the backup directory but the backup itself.
    assert not [p for p in made.data_path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("mutate", PAYLOADS)
def test_a_hostile_backup_is_never_restored(
    live: Path, made: Backup, mutate: Mutation, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned.db"
    craft(made, mutate, pwned, tmp_path)
    before = files_in(live.parent)
    with pytest.raises(CorruptBackupError):
        restore_backup(made.data_path, target=live)
    assert not pwned.exists(), "SQL from the backup ran during restore"
    assert files_in(live.parent) == before


@pytest.mark.parametrize("mutate", PAYLOADS)
def test_check_of_a_hostile_database_reports_it_and_runs_nothing(
    live: Path, mutate: Mutation, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned.db"
    conn = apsw.Connection(str(live))
    try:
        mutate(conn, pwned)
    finally:
        conn.close()
    report = run_checks(live)
    assert not pwned.exists(), "SQL from the database's schema ran during check"
    found = next(r for r in report.results if r.name == "schema")
    assert found.status == "findings", found.summary
    assert not report.is_ok


@pytest.mark.parametrize("mutate", PAYLOADS)
def test_a_hostile_database_is_not_backed_up(live: Path, mutate: Mutation, tmp_path: Path) -> None:
    # A backup verify would reject is refused when it is made, loudly.
    pwned = tmp_path / "pwned.db"
    conn = apsw.Connection(str(live))
    try:
        mutate(conn, pwned)
    finally:
        conn.close()
    with pytest.raises(DatabaseError, match="run 'abathur check'"):
        create_backup(live, dest=tmp_path / "backups")
    assert not pwned.exists()
    assert not list((tmp_path / "backups").iterdir())


def test_a_hostile_vector_registry_name_is_a_finding_not_sql(live: Path, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.db"
    conn = apsw.Connection(str(live))
    try:
        conn.execute(
            "INSERT INTO vector_tables (name, kind, dims, chunk_size, generation, dead_rows, "
            "created_at) VALUES (?, 'memory', 8, 8, 1, 0, 0)",
            (f'x"; {_attach(pwned)}; --',),
        )
    finally:
        conn.close()
    report = run_checks(live)
    assert not pwned.exists()
    found = next(r for r in report.results if r.name == "vectors")
    assert any("not a table abathur makes" in f for f in found.findings), found.findings


def test_rebuilding_indexes_uses_only_the_migrations_fts_tables(live: Path, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.db"
    conn = apsw.Connection(str(live))
    try:
        name = f'f"; {_attach(pwned)}; --'
        conn.execute(f'CREATE VIRTUAL TABLE "{name.replace(chr(34), chr(34) * 2)}" USING fts5(x)')
    finally:
        conn.close()
    rebuilt = rebuild_derived_indexes(live, rebuilders={"memories_fts": lambda c: 0})
    assert not pwned.exists()
    assert all("ATTACH" not in name for name in rebuilt)


def test_the_untrusted_connection_denies_every_write_and_attach(live: Path) -> None:
    before = files_in(live.parent)
    conn = untrusted.open_untrusted(live)
    try:
        for statement in (
            "ATTACH DATABASE ':memory:' AS p",
            "CREATE TABLE t (a)",
            "DELETE FROM memories",
            "UPDATE memories SET key = 'x'",
            "INSERT INTO meta (key, value) VALUES ('a', 'b')",
            "PRAGMA user_version = 9",
            "PRAGMA writable_schema = ON",
            "SELECT load_extension('x')",
            "BEGIN IMMEDIATE",
        ):
            with pytest.raises(apsw.Error):
                conn.execute(statement).fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert schema.object_problems(conn) == []
    finally:
        conn.close()
    assert files_in(live.parent) == before, "an untrusted connection wrote to the directory"


# -- item 2: unbounded decompression ----------------------------------------------------

BOMB_BYTES = 64 << 20  # 64 MiB of zeros: about 2 KiB of zstd


def _bomb(made: Backup, *, claim: str) -> None:
    """Replace the data with a zstd bomb; the manifest claims its own size, or the real one."""
    manifest = json.loads(made.manifest_path.read_text())
    compressor = zstandard.ZstdCompressor(level=19)
    with made.data_path.open("wb") as out, compressor.stream_writer(out) as writer:
        zeros = bytes(1 << 20)
        for _ in range(BOMB_BYTES >> 20):
            writer.write(zeros)  # no size in the frame header: only the stream tells
    packed = made.data_path.read_bytes()
    manifest.update(sha256=hashlib.sha256(packed).hexdigest(), compressed_bytes=len(packed))
    if claim == "huge":
        manifest.update(raw_bytes=1 << 50)  # a petabyte: more than any disk here has
    made.manifest_path.write_text(json.dumps(manifest))


class Watcher:
    """Polls a directory from a thread: every name seen and the largest size, while it runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names: set[str] = set()
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.directory.iterdir():
                self.names.add(p.name)
                with contextlib.suppress(FileNotFoundError):
                    self.largest = max(self.largest, p.stat().st_size)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("claim", ["own-size", "huge"])
def test_a_decompression_bomb_stops_at_the_manifest_size(made: Backup, claim: str) -> None:
    _bomb(made, claim=claim)
    assert made.data_path.stat().st_size < 64 << 10
    raw_bytes = json.loads(made.manifest_path.read_text())["raw_bytes"]
    with (
        Watcher(made.data_path.parent) as watcher,
        pytest.raises((CorruptBackupError, DatabaseError)) as ei,
    ):
        verify_backup(made.data_path)
    if claim == "huge":
        assert "free" in ei.value.message  # refused before writing: not enough space
        assert watcher.largest < 1 << 20
    else:
        assert ei.value.code == "backup.corrupt"
        assert "stopped there" in ei.value.message
        # At most one chunk (1 MiB) past what the manifest promised was ever written.
        assert watcher.largest <= raw_bytes + (1 << 20)
    assert not [p for p in made.data_path.parent.iterdir() if p.name.startswith(".")]


def test_restore_refuses_a_database_in_use_before_writing_anything(
    live: Path, made: Backup
) -> None:
    with held_open(live):
        before = files_in(live.parent)
        with Watcher(live.parent) as watcher, pytest.raises(DatabaseInUseError):
            restore_backup(made.data_path, target=live, lock_timeout_ms=50)
        # Refused on the lock alone: nothing was ever decompressed beside the live file.
        assert watcher.names <= set(before), watcher.names - set(before)
        assert files_in(live.parent) == before


# -- item 9: restore through a symlink --------------------------------------------------


async def test_restore_through_a_symlink_replaces_the_real_file(
    live: Path, made: Backup, tmp_path: Path
) -> None:
    async with Abathur.open(live, embedder="none") as ab:
        await ab.memory.put("user:alice", "after-backup", {"value": "newer"})
    link = tmp_path / "current.db"
    link.symlink_to(live)
    result = restore_backup(made.data_path, target=link)
    assert link.is_symlink() and link.resolve() == live.resolve()
    assert result.target == live.resolve()
    assert result.replaced is not None and not result.replaced.is_symlink()
    assert result.replaced.parent == live.parent
    # The real file holds the backup; the copy kept aside holds what was replaced.
    async with Abathur.open(link, embedder="none") as ab:
        assert await ab.memory.get("user:alice", "after-backup") is None
    async with Abathur.open(result.replaced, embedder="none") as ab:
        kept = await ab.memory.get("user:alice", "after-backup")
        assert kept is not None and kept.value == {"value": "newer"}


def test_restore_through_a_symlink_loop_is_refused_and_changes_nothing(
    made: Backup, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(InvalidInputError, match="symlink loop"):
        restore_backup(made.data_path, target=a)
    assert a.is_symlink() and b.is_symlink()
    assert os.readlink(a) == str(b) and os.readlink(b) == str(a)
