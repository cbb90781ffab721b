"""The ``abathur`` command, run as a real subprocess (``python -m abathur``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import apsw
import click
import pytest

from abathur.backends.sqlite import migrations
from abathur.cli import main
from tests.helpers import abathur, digest, ok_json

LATEST = migrations.available()[-1].version
# list_commands/get_command, not main.commands: the group imports a command when used.
COMMANDS = main.list_commands(click.Context(main))
COMMAND = {name: main.get_command(click.Context(main), name) for name in COMMANDS}


def user_version(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("PRAGMA user_version").fetchall()[0][0]
    finally:
        conn.close()


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    """A file an older abathur made: only migration 1 applied."""
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    try:
        migrations.apply(conn, migrations.available()[:1])
    finally:
        conn.close()
    return path


@pytest.fixture
def live_old_db(tmp_path: Path) -> Iterator[Path]:
    """A migration-1 file in WAL mode, held open so its ``-wal`` holds committed pages."""
    path = tmp_path / "live.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    migrations.apply(conn, migrations.available()[:1])
    try:
        yield path
    finally:
        conn.close()


# -- help ---------------------------------------------------------------------------


def test_top_level_help_lists_commands_and_exit_codes(tmp_path: Path) -> None:
    done = abathur("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "Exit codes:" in done.stdout
    for line in ("0  ok", "1  findings", "2  usage error", "3  operational error"):
        assert line in done.stdout
    for command in ("init", "migrate", "info", "demo"):
        assert command in COMMANDS
        assert f"  {command} " in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command: str, tmp_path: Path) -> None:
    done = abathur(command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Examples:" in done.stdout
    examples = done.stdout.split("Examples:", 1)[1]
    assert f"abathur {command}" in examples
    assert "--db" in done.stdout and "--json" in done.stdout
    assert not list(tmp_path.iterdir()), "--help must not create a database"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme_tour(command: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    assert f"abathur {command} --db" in readme


# Commands that need an argument besides --db (restore FILE), or a subject and a
# confirmation (purge --prefix ... --yes: tests/integration/test_cli_purge.py), are
# covered by their own tests; so is the server, which prints no document
# (mcp: tests/integration/test_mcp_stdio.py).
NO_ARGUMENT_COMMANDS = [
    name for name in COMMANDS
    if not any(p.required for p in COMMAND[name].params if isinstance(p, click.Argument))
    and name not in ("purge", "mcp")
]


@pytest.mark.parametrize("command", NO_ARGUMENT_COMMANDS)
def test_every_command_prints_one_json_document(command: str, tmp_path: Path) -> None:
    ok_json(abathur("init", "--db", "agent.db", "--json", cwd=tmp_path))
    data = ok_json(abathur(command, "--db", "agent.db", "--json", cwd=tmp_path))
    assert isinstance(data, dict) and data["path"] == str(tmp_path / "agent.db")
    assert all(key == key.lower() and " " not in key for key in data)


def test_usage_error_exits_2(tmp_path: Path) -> None:
    done = abathur("info", "--no-such-option", cwd=tmp_path)
    assert done.returncode == 2
    assert "No such option" in done.stderr


# -- init and info ------------------------------------------------------------------


def test_init_creates_the_file_and_reports_versions(tmp_path: Path) -> None:
    data = ok_json(abathur("init", "--db", "agent.db", "--json", cwd=tmp_path))
    assert data["path"] == str(tmp_path / "agent.db")
    assert data["created"] is True
    assert data["schema_version"] == LATEST
    assert set(data["versions"]) == {"sqlite", "sqlite_vec", "apsw", "aiosqlite"}
    assert user_version(tmp_path / "agent.db") == LATEST


def test_init_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    ok_json(abathur("init", "--db", "agent.db", "--json", cwd=tmp_path))
    again = ok_json(abathur("init", "--db", "agent.db", "--json", cwd=tmp_path))
    assert (again["created"], again["migrated_from"], again["backup"]) == (False, None, None)
    assert not list(tmp_path.glob("*.bak"))


def test_init_human_output(tmp_path: Path) -> None:
    done = abathur("init", "--db", "agent.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "agent.db") in done.stdout
    assert "created" in done.stdout
    assert "sqlite-vec" in done.stdout and "aiosqlite" in done.stdout


def test_db_defaults_to_abathur_db_env_then_cwd(tmp_path: Path) -> None:
    ok_json(abathur("init", "--json", cwd=tmp_path, env={"ABATHUR_DB": "from-env.db"}))
    assert (tmp_path / "from-env.db").exists()
    ok_json(abathur("init", "--json", cwd=tmp_path))
    assert (tmp_path / "abathur.db").exists()


def test_info_reports_sizes_schema_and_row_counts(tmp_path: Path) -> None:
    ok_json(abathur("init", "--db", "agent.db", "--json", cwd=tmp_path))
    data = ok_json(abathur("info", "--db", "agent.db", "--json", cwd=tmp_path))
    assert data["size_bytes"] == (tmp_path / "agent.db").stat().st_size > 0
    assert data["wal_bytes"] >= 0
    assert data["schema_version"] == data["latest_schema_version"] == LATEST
    assert set(data["versions"]) == {"sqlite", "sqlite_vec", "apsw", "aiosqlite"}
    for table in ("sessions", "events", "memories", "tasks", "audit_log"):
        assert data["row_counts"][table] == 0
    human = abathur("info", "--db", "agent.db", cwd=tmp_path)
    assert human.returncode == 0
    assert "sessions" in human.stdout and "schema version" in human.stdout


def test_info_does_not_migrate_an_old_file(old_db: Path) -> None:
    data = ok_json(abathur("info", "--db", str(old_db), "--json", cwd=old_db.parent))
    assert (data["schema_version"], data["latest_schema_version"]) == (1, LATEST)
    assert "tasks" not in data["row_counts"]
    assert user_version(old_db) == 1
    assert not list(old_db.parent.glob("*.bak"))


def test_info_on_a_missing_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    done = abathur("info", "--db", "missing.db", cwd=tmp_path)
    assert done.returncode == 3
    assert "[db.error]" in done.stderr and "abathur init" in done.stderr
    assert not list(tmp_path.iterdir())


# -- migrate ------------------------------------------------------------------------


def test_migrate_dry_run_on_a_missing_file_plans_everything_and_creates_nothing(
    tmp_path: Path,
) -> None:
    data = ok_json(abathur("migrate", "--db", "new.db", "--dry-run", "--json", cwd=tmp_path))
    assert (data["exists"], data["current_version"], data["target_version"]) == (False, 0, LATEST)
    assert [m["version"] for m in data["pending"]] == list(range(1, LATEST + 1))
    assert data["pending"][0]["name"] == "initial"
    assert data["applied"] == []
    assert not list(tmp_path.iterdir())


def test_migrate_dry_run_on_an_old_file_leaves_it_byte_for_byte(old_db: Path) -> None:
    before = digest(old_db)
    done = abathur("migrate", "--db", str(old_db), "--dry-run", cwd=old_db.parent)
    assert done.returncode == 0, done.stderr
    assert "002_tasks" in done.stdout and "dry run" in done.stdout
    assert digest(old_db) == before
    assert sorted(p.name for p in old_db.parent.iterdir()) == ["old.db"]


def test_migrate_dry_run_reads_a_live_wal_without_touching_the_file(live_old_db: Path) -> None:
    wal = live_old_db.with_name("live.db-wal")
    before = (digest(live_old_db), digest(wal))
    data = ok_json(
        abathur("migrate", "--db", str(live_old_db), "--dry-run", "--json", cwd=live_old_db.parent)
    )
    # The schema is only in the WAL so far: reading it proves the plan looked there.
    assert data["current_version"] == 1
    assert [m["name"] for m in data["pending"]] == [m.name for m in migrations.available()[1:]]
    assert (digest(live_old_db), digest(wal)) == before


def test_migrate_upgrades_an_old_file_and_keeps_a_backup_beside_it(old_db: Path) -> None:
    data = ok_json(abathur("migrate", "--db", str(old_db), "--json", cwd=old_db.parent))
    assert data["current_version"] == 1
    assert data["applied"] == [
        {"version": m.version, "name": m.name} for m in migrations.available()[1:]
    ]
    assert data["schema_version"] == LATEST == user_version(old_db)
    backup = Path(data["backup"])
    assert backup.parent == old_db.parent
    assert backup.name.startswith("old.db.pre-v1-") and backup.name.endswith(".bak")
    assert user_version(backup) == 1

    again = ok_json(abathur("migrate", "--db", str(old_db), "--json", cwd=old_db.parent))
    assert (again["pending"], again["applied"], again["backup"]) == ([], [], None)


def test_migrate_creates_a_missing_file(tmp_path: Path) -> None:
    done = abathur("migrate", "--db", "new.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "001_initial" in done.stdout
    assert user_version(tmp_path / "new.db") == LATEST
    assert not list(tmp_path.glob("*.bak")), "a new file has nothing to back up"


# -- errors -------------------------------------------------------------------------


@pytest.fixture
def future_db(tmp_path: Path) -> Path:
    """A file from a newer abathur: user_version 999."""
    path = tmp_path / "future.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    return path


@pytest.mark.parametrize("args", [("migrate",), ("migrate", "--dry-run"), ("init",)])
def test_a_newer_schema_exits_3_with_its_code(future_db: Path, args: tuple[str, ...]) -> None:
    before = digest(future_db)
    done = abathur(*args, "--db", str(future_db), cwd=future_db.parent)
    assert done.returncode == 3
    assert "abathur: error [db.schema]" in done.stderr
    assert "999" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert digest(future_db) == before


def test_an_error_with_json_prints_one_error_document(future_db: Path) -> None:
    done = abathur("migrate", "--db", str(future_db), "--json", cwd=future_db.parent)
    assert done.returncode == 3
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "db.schema"
    assert error["retryable"] is False
    assert "999" in error["message"]
    assert "[db.schema]" in done.stderr


@pytest.mark.parametrize("command", ["init", "migrate", "demo"])
def test_a_missing_directory_exits_3_without_a_traceback(command: str, tmp_path: Path) -> None:
    done = abathur(command, "--db", "no/such/dir/agent.db", cwd=tmp_path)
    assert done.returncode == 3
    assert "abathur: error [db.error]" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "no").exists()


# -- demo ---------------------------------------------------------------------------


def test_demo_runs_twice_on_the_same_file(tmp_path: Path) -> None:
    first = ok_json(abathur("demo", "--db", "demo.db", "--json", cwd=tmp_path))
    second = ok_json(abathur("demo", "--db", "demo.db", "--json", cwd=tmp_path))

    session = second["session"]
    assert (session["app"], session["user"]) == ("demo", "alice")
    assert session["id"] != first["session"]["id"], "each run starts a fresh session"
    assert len(session["events"]) >= 3
    assert [e["seq"] for e in session["events"]] == list(range(1, len(session["events"]) + 1))
    assert session["revision"] == len(session["events"])

    # The memory gains new versions on every run; its history keeps them all.
    versions = [m["version"] for m in second["history"]]
    assert versions == sorted(versions) and len(versions) > len(first["history"])
    assert second["memory"]["version"] == versions[-1] > first["memory"]["version"]
    assert all(ns.startswith("user:alice") for ns in second["namespaces"])
    assert second["memories"] and all(
        m["namespace"].startswith("user:alice") for m in second["memories"]
    )


def test_demo_human_output(tmp_path: Path) -> None:
    done = abathur("demo", "--db", "demo.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for text in ("session", "alice", "history", "user:alice"):
        assert text in done.stdout
