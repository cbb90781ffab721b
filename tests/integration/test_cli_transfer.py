"""``abathur export`` and ``abathur import`` as real subprocesses: an exact round trip
through files and pipes, an idempotent re-import, and a bad line that names itself and
leaves the database as it was."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from abathur import Abathur
from tests.helpers import abathur, ok_json
from tests.transfer_files import HEADER, end, fill, memory_line

# Two SQLite files named relative to the command's directory (a.db, b.db): the
# reports' paths, the files' rows read with apsw, abathur check on them.
pytestmark = pytest.mark.sqlite_only(
    "two SQLite files by relative name: their paths, their rows read with apsw"
)

TABLES = ("memories", "sessions", "events", "tasks", "app_state", "user_state", "audit_log")


def dump(path: Path) -> dict[str, list[tuple]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # Table names are this module's constants.
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in TABLES
        }
    finally:
        conn.close()


def run_bytes(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    return subprocess.run(
        [sys.executable, "-m", "abathur", *args],
        cwd=cwd,
        env=base,
        input=stdin,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "a.db"

    async def make() -> None:
        async with Abathur.open(path, embedder="none") as ab:
            await fill(ab)

    asyncio.run(make())
    return path


def test_export_import_export_is_byte_identical(filled: Path, tmp_path: Path) -> None:
    first = run_bytes("export", "--db", "a.db", "-", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert b"exported" in first.stderr  # the summary goes to stderr when the data is on stdout
    (tmp_path / "f.jsonl").write_bytes(first.stdout)
    report = ok_json(abathur("import", "--db", "b.db", "f.jsonl", "--json", cwd=tmp_path))
    assert report["path"] == str(tmp_path / "b.db") and report["file"] == "f.jsonl"
    assert report["imported"]["sessions"] == 3 and report["imported"]["memories"] > 0
    second = ok_json(abathur("export", "--db", "b.db", "g.jsonl", "--json", cwd=tmp_path))
    assert second["counts"] == report["imported"]
    assert (tmp_path / "g.jsonl").read_bytes() == first.stdout
    assert ok_json(abathur("check", "--db", "b.db", "--json", cwd=tmp_path))


def test_a_pipe_from_export_to_import(filled: Path, tmp_path: Path) -> None:
    data = run_bytes("export", "--db", "a.db", "--prefix", "user:alice", "-", cwd=tmp_path).stdout
    done = run_bytes("import", "--db", "b.db", "-", cwd=tmp_path, stdin=data)
    assert done.returncode == 0, done.stderr
    assert b"imported" in done.stdout and b"skipped   0 already present" in done.stdout
    again = run_bytes("export", "--db", "b.db", "--prefix", "user:alice", "-", cwd=tmp_path)
    assert again.stdout == data


def test_a_second_import_changes_nothing_and_says_skipped(filled: Path, tmp_path: Path) -> None:
    assert abathur("export", "--db", "a.db", "f.jsonl", cwd=tmp_path).returncode == 0
    first = ok_json(abathur("import", "--db", "b.db", "f.jsonl", "--json", cwd=tmp_path))
    before = dump(tmp_path / "b.db")
    done = abathur("import", "--db", "b.db", "f.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    total = sum(
        first["imported"][k] for k in ("memories", "sessions", "tasks", "app_state", "user_state")
    )
    assert f"skipped   {total} already present" in done.stdout
    assert dump(tmp_path / "b.db") == before


def test_a_bad_line_exits_3_naming_it_and_changes_nothing(filled: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join([HEADER, memory_line(), memory_line(namespace="user::x"), end(2)]) + "\n"
    )
    before = dump(filled)
    done = abathur("import", "--db", "a.db", "bad.jsonl", "--json", cwd=tmp_path)
    assert done.returncode == 3
    assert "bad.jsonl line 3:" in done.stderr and "Traceback" not in done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "import.invalid_line" and error["line"] == 3
    assert error["reason"] == "memory.invalid_namespace"
    assert dump(filled) == before


def test_usage_and_missing_files(filled: Path, tmp_path: Path) -> None:
    done = abathur("export", "--db", "a.db", "-", "--json", cwd=tmp_path)
    assert done.returncode == 2 and "needs a FILE" in done.stderr
    done = run_bytes(
        "export",
        "--db",
        "a.db",
        "--prefix",
        b"user:\xff".decode("utf-8", "surrogateescape"),
        "-",
        cwd=tmp_path,
    )
    assert done.returncode == 3 and b"Traceback" not in done.stderr
    assert b"lone surrogate" in done.stderr and done.stdout == b""
    done = abathur("export", "--db", "missing.db", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 3 and "no database" in done.stderr
    assert not (tmp_path / "missing.db").exists()
    done = abathur("import", "--db", "b.db", "nothing.jsonl", "--json", cwd=tmp_path)
    assert done.returncode == 3
    assert json.loads(done.stdout)["error"]["code"] == "invalid_input"
    assert not (tmp_path / "b.db").exists()
