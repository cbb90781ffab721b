"""A PostgreSQL backup runs only SQL abathur's migrations wrote (issue 14).

The dump's script (``pg_restore -f -`` with the restore's own options) is
compared with the one our migrations make at the manifest's schema version
before any of it runs. A crafted dump that reuses our names with other
definitions is refused, with or without a backup key, and its SQL never runs:
the crafted bodies here create a cluster-wide role, which a dropped scratch
database cannot take away, so its absence proves they did not run.
A real embedded PostgreSQL 18 server and the real pg_dump/pg_restore.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from abathur.backends.postgres import migrations
from abathur.backends.postgres import ops as pg
from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.transaction import PgTransaction
from abathur.config import PostgresUrl, Settings
from abathur.errors import CorruptBackupError
from abathur.ops.backup import create_backup, verify_backup
from abathur.ops.backup_key import generate_key_file
from abathur.ops.restore import restore_backup
from tests.backup_files import pack_as_backup
from tests.helpers import abathur
from tests.postgres import drop_database, fresh_database

ROLE = f"abathur_pwned_{os.getpid()}"

# Our kbn_sum_step's signature, another body: it creates ROLE when it runs.
CRAFTED_STEP = f"""
CREATE OR REPLACE FUNCTION kbn_sum_step(state double precision[], r double precision)
RETURNS double precision[] LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    EXECUTE 'CREATE ROLE {ROLE}';
    RETURN ARRAY[state[1] + r, state[2], state[3] + 1];
END
$$
"""
# A trigger on meta running an overload of our function's name: it would run as
# whoever next writes to meta, the application's role.
CRAFTED_TRIGGER = f"""
CREATE FUNCTION kbn_sum_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'CREATE ROLE {ROLE}';
    RETURN NEW;
END
$$;
CREATE TRIGGER meta_audit BEFORE INSERT ON meta FOR EACH ROW EXECUTE FUNCTION kbn_sum_step()
"""


def role_exists(server: str) -> bool:
    with psycopg.connect(server) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchall())


def scratch_databases(server: str) -> list[str]:
    with psycopg.connect(server) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname ~ '_(verify|restore)_'"
            )
        ]


def precious(url: str) -> list[tuple[int]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT x FROM precious").fetchall()


@pytest.fixture
def server(pg_server: str) -> Iterator[str]:
    yield pg_server
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")  # our own constant name


@pytest.fixture
def source(server: str) -> Iterator[str]:
    """A database migrated by this abathur, with a row in meta (restored by COPY)."""
    url = fresh_database(server)
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.migrate(conn)
        conn.execute("INSERT INTO meta (key, value) VALUES ('note', 'kept')")
    yield url
    drop_database(server, url)


@pytest.fixture
def target(server: str) -> Iterator[str]:
    """A database the refused restores must leave as it was."""
    url = fresh_database(server)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (x int)")
        conn.execute("INSERT INTO precious VALUES (42)")
    yield url
    drop_database(server, url)


def refused(data_path: Path, server: str, target: str, settings: Settings) -> list[str]:
    """verify and restore both refuse ``data_path``; the messages, target and roles checked."""
    messages = []
    for attempt in (
        lambda: verify_backup(data_path, settings=settings, server=PostgresUrl(target)),
        lambda: restore_backup(data_path, target=PostgresUrl(target), settings=settings),
    ):
        with pytest.raises(CorruptBackupError) as bad:
            attempt()
        assert bad.value.reason == "schema", bad.value.message
        assert "none of it was run" in bad.value.message
        messages.append(bad.value.message)
    assert precious(target) == [(42,)]
    assert scratch_databases(server) == []
    assert not role_exists(server)
    return messages


def test_a_function_of_ours_with_another_body_is_refused_and_never_runs(
    server: str, source: str, target: str, tmp_path: Path
) -> None:
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(CRAFTED_STEP)
    # The crafted body does what it says when it runs (then undone: roles are transactional).
    with psycopg.connect(source) as conn:
        conn.execute("SELECT kbn_sum(x) FROM (VALUES (1.0::float8)) AS v(x)")
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchall()
        conn.rollback()
    assert not role_exists(server)

    # Without a key, and with one: a key says who made a backup, not what it holds.
    key_file = tmp_path / "keys" / "backup.key"
    key_file.parent.mkdir()
    generate_key_file(key_file)
    for settings in (Settings(), Settings(backup_key_file=key_file)):
        # The names are ours, so the backup of the tampered database is made...
        made = create_backup(PostgresUrl(source), dest=tmp_path / "b", settings=settings)
        # ...and refused before any of it runs.
        for message in refused(made.data_path, server, target, settings):
            assert "FUNCTION kbn_sum_step(double precision[], double precision)" in message
            assert "IMMUTABLE" in message  # the first line that differs: ours is IMMUTABLE


def test_an_altered_column_default_is_refused(
    server: str, source: str, target: str, tmp_path: Path
) -> None:
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("ALTER TABLE meta ALTER COLUMN value SET DEFAULT 'x'")
    made = create_backup(PostgresUrl(source), dest=tmp_path)
    for message in refused(made.data_path, server, target, Settings()):
        assert "TABLE meta" in message and "DEFAULT" in message
    # The same through the real command: a typed error, nothing restored.
    done = abathur("restore", "--db", target, str(made.data_path), "--json", cwd=tmp_path)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["code"], error["reason"]) == ("backup.corrupt", "schema")
    assert "TABLE meta" in error["message"]
    assert precious(target) == [(42,)] and scratch_databases(server) == []


def _pack(raw: Path, honest_manifest: Path, directory: Path) -> Path:
    """``raw`` (a pg_dump archive) as a backup, with the manifest of an honest one."""
    return pack_as_backup(raw, honest_manifest, directory, "crafted-20260101T000000.000000Z")


def test_an_extra_trigger_is_refused_and_never_runs(
    server: str, source: str, target: str, tmp_path: Path
) -> None:
    honest = create_backup(PostgresUrl(source), dest=tmp_path / "honest")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(CRAFTED_TRIGGER)
    raw = tmp_path / "crafted.dump"
    dbarg, env = pg._libpq_args(PostgresUrl(source))
    subprocess.run(
        [str(pg.find_tool("pg_dump", 18)), f"--dbname={dbarg}", "-Fc", "-Z0", f"--file={raw}"],
        env=env,
        check=True,
    )
    # The archive is potent: restored by a plain pg_restore, the trigger runs on the next write.
    bare = fresh_database(server)
    try:
        dbarg, env = pg._libpq_args(PostgresUrl(bare))
        subprocess.run(
            [str(pg.find_tool("pg_restore")), f"--dbname={dbarg}", "--no-owner", str(raw)],
            env=env,
            check=True,
            capture_output=True,
        )
        assert not role_exists(server)
        with psycopg.connect(bare, autocommit=True) as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('next', 'write')")
        assert role_exists(server)
    finally:
        drop_database(server, bare)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")  # our own constant name

    # The comparison itself names the first object that differs (the overload comes first).
    with pytest.raises(CorruptBackupError) as compared:
        pg.check_schema_matches(
            raw,
            PostgresUrl(target),
            Settings(),
            version=migrations.latest_version(),
            what="the crafted dump",
            tag="verify_x",
        )
    assert compared.value.reason == "schema"
    assert "FUNCTION kbn_sum_step()" in compared.value.message

    data_path = _pack(raw, honest.manifest_path, tmp_path / "honest")
    for message in refused(data_path, server, target, Settings()):
        assert "TRIGGER" in message or "kbn_sum_step()" in message


def test_an_honest_backup_with_vector_tables_verifies_and_restores(
    server: str, source: str, tmp_path: Path
) -> None:
    settings = Settings()
    with psycopg.connect(source, autocommit=True) as conn:
        search = PgTransaction(conn, PgContext(source, settings)).search
        with conn.transaction():
            search.create_vector_table("memories_vec", "memory", 384, 64, now=1.0)
            search.create_vector_table("chunks_vec", "chunk", 5000, 64, now=1.0)  # no HNSW
    made = create_backup(PostgresUrl(source), dest=tmp_path)
    verified = verify_backup(made.data_path, server=PostgresUrl(source))
    compared = next(c for c in verified.checks if c.startswith("schema: every statement"))
    assert "chunks_vec, memories_vec" in compared
    restored_to = fresh_database(server)
    try:
        result = restore_backup(made.data_path, target=PostgresUrl(restored_to), force=True)
        assert result.check.is_ok, result.check
        with psycopg.connect(restored_to) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'note'").fetchall() == [
                ("kept",)
            ]
            assert conn.execute("SELECT name, dims FROM vector_tables ORDER BY 1").fetchall() == [
                ("chunks_vec", 5000),
                ("memories_vec", 384),
            ]
    finally:
        drop_database(server, restored_to)
        with psycopg.connect(server, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE '%replaced%'"
            ).fetchall():
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # names from the catalog
    assert scratch_databases(server) == []


def test_sql_written_into_an_honest_archive_is_refused_and_never_runs(
    server: str, source: str, target: str, tmp_path: Path
) -> None:
    """The search path pg_restore sets first, replaced in the file (same length, so the
    archive stays well formed): its table of contents, all --list shows, is unchanged."""
    honest = create_backup(PostgresUrl(source), dest=tmp_path / "honest")
    raw = tmp_path / "honest.dump"
    dbarg, env = pg._libpq_args(PostgresUrl(source))
    subprocess.run(
        [str(pg.find_tool("pg_dump", 18)), f"--dbname={dbarg}", "-Fc", "-Z0", f"--file={raw}"],
        env=env,
        check=True,
    )
    search_path = b"SELECT pg_catalog.set_config('search_path', '', false);"
    payload = f"CREATE ROLE {ROLE};".encode().ljust(len(search_path))
    archive = raw.read_bytes()
    assert archive.count(search_path) == 1
    crafted = tmp_path / "crafted.dump"
    crafted.write_bytes(archive.replace(search_path, payload))
    listing = pg.read_archive(crafted, what="the crafted dump")
    assert [e.line for e in listing] == [e.line for e in pg.read_archive(raw, what="the dump")]
    assert pg.check_archive(listing) == []  # the table of contents alone would let it through

    # The archive is potent: a plain pg_restore runs it before anything else.
    bare = fresh_database(server)
    try:
        dbarg, env = pg._libpq_args(PostgresUrl(bare))
        subprocess.run(
            [str(pg.find_tool("pg_restore")), f"--dbname={dbarg}", "--no-owner", str(crafted)],
            env=env,
            check=False,
            capture_output=True,
        )
        assert role_exists(server)
    finally:
        drop_database(server, bare)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")  # our own constant name

    data_path = _pack(crafted, honest.manifest_path, tmp_path / "honest")
    for message in refused(data_path, server, target, Settings()):
        assert f"CREATE ROLE {ROLE}" in message and "the script header" in message
