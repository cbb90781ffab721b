"""One exit-code table for the whole CLI (issue 12), and global options in either place.

0 ok; 1 findings; 2 usage error; 3 operational error (a missing database, a
file that is not one, any AbathurError). The exhaustive walk over every command
of the click group (subcommands included, so a new command is covered as soon
as it is registered) runs in-process with click's CliRunner: three cases times
every command as subprocesses would take minutes on CI. A representative subset
runs as real subprocesses below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import structlog
from click.testing import CliRunner

from abathur import logs
from abathur.cli import main
from abathur.cli.options import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]


def walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


COMMAND_PATHS = list(walk(main))

# The arguments a command needs besides --db to get as far as the database.
# A new command with a required argument fails the walk (exit 2) until it is here.
ARGS: dict[tuple[str, ...], list[str]] = {
    ("archive", "restore"): ["1"],
    ("archive", "show"): ["1"],
    ("backup", "keygen"): ["{tmp}/backup.key"],
    ("backup", "pin"): ["{backup}"],
    ("backup", "unpin"): ["{backup}"],
    ("backup", "verify"): ["{backup}"],
    ("export",): ["{tmp}/out.jsonl"],
    ("mcp",): ["--scope", "user:nobody"],
    ("memory", "get"): ["user:nobody", "key"],
    ("memory", "history"): ["user:nobody", "key"],
    ("memory", "list"): ["user:nobody"],
    ("session", "show"): ["s-nobody"],
    ("import",): ["{export}"],
    ("purge",): ["--prefix", "user:nobody", "--dry-run"],
    ("reindex",): ["--dry-run"],
    ("restore",): ["{backup}"],
    ("search",): ["anything"],
    ("smoke",): ["--category", "connectivity"],
    ("sync",): ["{docs}", "--no-wait"],
    ("unsync",): ["{docs}"],
}
# Commands whose job is to make the database when there is none.
CREATE = {("init",), ("migrate",), ("demo",), ("sync",), ("restore",), ("import",)}
# Commands that never open the database at --db (a backup file or a key file is
# their subject), so neither a missing nor a non-database --db is their problem.
NO_DATABASE = {
    ("backup", "keygen"),
    ("backup", "list"),
    ("backup", "pin"),
    ("backup", "unpin"),
    ("backup", "verify"),
}


def expected(path: tuple[str, ...], case: str) -> int:
    if case == "bad_option":
        return EXIT_USAGE
    if path in NO_DATABASE or (case == "missing" and path in CREATE):
        return EXIT_OK
    return EXIT_ERROR


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real database, a backup of it, an export of it and a directory of docs."""
    base = tmp_path_factory.mktemp("world")
    good = base / "good.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}

    def run(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "abathur", *args, "--json"],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    run("init", "--db", str(good))
    backup = run("backup", "--db", str(good))["backup"]["file"]
    run("export", "--db", str(good), str(base / "data.jsonl"))
    (base / "docs").mkdir()
    (base / "docs" / "a.md").write_text("# A\n\nsome text\n", "utf-8")
    return {"good": str(good), "backup": backup, "export": str(base / "data.jsonl"),
            "docs": str(base / "docs")}  # fmt: skip


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("ABATHUR_")]:
        monkeypatch.delenv(key)
    yield
    # The command configured logging to CliRunner's stream, which is gone now.
    structlog.reset_defaults()
    logs.install_library_defaults()


def test_the_walk_sees_subcommands() -> None:
    # Guard: the walk below would pass vacuously if it found nothing.
    assert {("info",), ("check",), ("backup", "verify"), ("archive", "show")} <= set(COMMAND_PATHS)
    assert len(COMMAND_PATHS) >= 28


@pytest.mark.parametrize("case", ["missing", "not_a_database", "bad_option"])
@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_follows_the_exit_code_table(
    path: tuple[str, ...], case: str, world: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "agent.db"
    if case == "not_a_database":
        db.write_text("these are my notes, not a database\n", "utf-8")
    elif case == "bad_option":
        db = Path(world["good"])
    args = [a.format(tmp=tmp_path, **world) for a in ARGS.get(path, [])]
    argv = [*path, "--db", str(db), *args]
    if case == "bad_option":
        argv.append("--no-such-option")
    if path == ("backup", "unpin"):  # only a pinned backup can be unpinned
        assert CliRunner().invoke(main, ["backup", "pin", world["backup"]]).exit_code == EXIT_OK
    result = CliRunner().invoke(main, argv)
    want = expected(path, case)
    assert result.exit_code == want, (argv, result.output[-800:])
    assert "Traceback" not in result.output
    if want == EXIT_ERROR:
        # The database is the problem, and the message says so.
        assert re.search(r"abathur: error \[db\.\w+\]", result.stderr), result.stderr
    if want == EXIT_USAGE:
        assert "No such option" in result.stderr and "--no-such-option" in result.stderr


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    return subprocess.run(
        [sys.executable, "-m", "abathur", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["info", "check", "health", "stats", "metrics", "smoke"])
def test_a_missing_database_and_a_text_file_exit_3_in_a_real_process(
    command: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n", "utf-8")
    for db, message in (("missing.db", "no database at"), ("notes.txt", "not (an SQLite|a) data")):
        done = run(command, "--db", db, cwd=tmp_path)
        assert done.returncode == EXIT_ERROR, (command, db, done.stdout, done.stderr)
        assert "abathur: error [db.error]" in done.stderr
        assert re.search(message, done.stderr), done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "missing.db").exists()


def test_metrics_still_says_abathur_up_0_when_it_exits_3(tmp_path: Path) -> None:
    # A scrape or a textfile collector sees the database is down, and cron sees exit 3.
    done = run("metrics", "--db", "missing.db", cwd=tmp_path)
    assert done.returncode == EXIT_ERROR
    assert re.search(r'^abathur_up\{database="[^"]*missing\.db"\} 0$', done.stdout, re.M)
    textfile = tmp_path / "abathur.prom"
    done = run("metrics", "--db", "missing.db", "--textfile", str(textfile), cwd=tmp_path)
    assert done.returncode == EXIT_ERROR and "[db.error]" in done.stderr
    assert re.search(r"^abathur_up\{.*\} 0$", textfile.read_text("utf-8"), re.M)
    # With --json stdout is still one document: the metrics; the error is on stderr.
    done = run("health", "--db", "missing.db", "--json", cwd=tmp_path)
    assert done.returncode == EXIT_ERROR and "[db.error]" in done.stderr
    assert json.loads(done.stdout)["status"] == "fail"


def test_usage_errors_are_2_in_a_real_process(tmp_path: Path) -> None:
    for argv in (["--no-such-option"], ["no-such-command"], ["info", "--db"], ["archive", "show"]):
        done = run(*argv, cwd=tmp_path)
        assert done.returncode == EXIT_USAGE, (argv, done.stderr)
        assert "Usage:" in done.stderr or "Error:" in done.stderr


def test_the_table_is_in_the_help_and_the_readme(tmp_path: Path) -> None:
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0
    epilog = done.stdout.split("Exit codes", 1)[1]
    readme = (ROOT / "README.md").read_text("utf-8").split("## Exit codes", 1)[1].split("\n## ")[0]
    for code, words in (
        (EXIT_OK, "ok"),
        (EXIT_FINDINGS, "findings"),
        (EXIT_USAGE, "usage error"),
        (EXIT_ERROR, "operational error"),
    ):
        assert re.search(rf"^\s+{code}\s+{words}", epilog, re.M), epilog
        assert re.search(rf"^\| {code} \| {words}", readme, re.M), readme
    assert "missing" in readme or "no database" in readme


# -- global options before or after the command ------------------------------------


@pytest.mark.parametrize(
    "command", [["info"], ["stats"], ["check"], ["backup", "list"], ["archive", "list"]]
)
def test_db_and_json_before_the_command_and_log_level_after_it(
    command: list[str], world: dict[str, str], tmp_path: Path
) -> None:
    good = world["good"]
    before = run("--db", good, "--json", *command, cwd=tmp_path)
    after = run(*command, "--db", good, "--json", "--log-level", "warning", cwd=tmp_path)
    for done in (before, after):
        assert done.returncode == EXIT_OK, (command, done.stderr)
        data = json.loads(done.stdout)
        assert data.get("path", data.get("database")) in (good, None)
    assert json.loads(before.stdout).keys() == json.loads(after.stdout).keys()
    # The command's own --db wins over the one before it, and both beat $ABATHUR_DB.
    mixed = run("--db", "missing.db", *command, "--db", good, "--json", cwd=tmp_path)
    assert mixed.returncode == EXIT_OK, mixed.stderr
    env = run("--db", good, *command, "--json", cwd=tmp_path, env={"ABATHUR_DB": "missing.db"})
    assert env.returncode == EXIT_OK, env.stderr
    assert not (tmp_path / "missing.db").exists()


def test_a_groups_db_reaches_its_subcommand(world: dict[str, str], tmp_path: Path) -> None:
    done = run("backup", "--db", world["good"], "verify", world["backup"], "--json", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    listed = run("archive", "--db", world["good"], "--json", "list", cwd=tmp_path)
    assert listed.returncode == EXIT_OK, listed.stderr
    assert isinstance(json.loads(listed.stdout), dict)


def test_log_level_in_either_place_and_the_commands_own_wins(
    world: dict[str, str], tmp_path: Path
) -> None:
    # embedder.loaded is a debug line (issue 12): absent at the default level.
    search = ["search", "--db", world["good"], "hi", "--memories", "--prefix", "user:a"]
    default = run(*search, cwd=tmp_path)
    assert default.returncode == EXIT_OK, default.stderr
    assert "embedder.loaded" not in default.stderr
    after = run(*search, "--log-level", "debug", cwd=tmp_path)
    assert after.returncode == EXIT_OK and "embedder.loaded" in after.stderr
    before = run("--log-level", "debug", *search, cwd=tmp_path)
    assert before.returncode == EXIT_OK and "embedder.loaded" in before.stderr
    both = run("--log-level", "debug", *search, "--log-level", "warning", cwd=tmp_path)
    assert both.returncode == EXIT_OK and "embedder.loaded" not in both.stderr
