"""``abathur purge`` as a real subprocess: confirmation, dry run, JSON, errors, and a
file that still passes ``abathur check`` afterwards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import apsw
import pytest

from abathur import Abathur, Event
from tests.helpers import abathur, digest, ok_json


async def fill(path: Path) -> None:
    async with Abathur.open(path, embedder="none", embed_worker=False) as ab:
        for user in ("alice", "bob"):
            await ab.memory.put(f"user:{user}:prefs", "lang", f"{user} speaks French")
            s = await ab.sessions.create(app="helpdesk", user=user, state={"user:tier": 1})
            await ab.sessions.append_event(s.id, Event(author="user", content=f"hi {user}"))
            await ab.tasks.create(session_id=s.id, prompt=f"help {user}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    asyncio.run(fill(path))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefix", "user:alice"], "add --yes"),
        (["--app", "helpdesk", "--yes"], "--app and --user go together"),
        (["--yes"], "say what to purge"),
    ],
)
def test_a_purge_without_its_confirmation_or_subject_is_a_usage_error(
    db: Path, args: list[str], message: str
) -> None:
    before = digest(db)
    done = abathur("purge", "--db", str(db), *args, cwd=db.parent)
    assert done.returncode == 2 and message in done.stderr
    assert digest(db) == before


def rows(path: Path) -> dict[str, list[tuple]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # Our own table names. (metrics: every command's own timings land there.)
        return {
            t: conn.execute(f'SELECT * FROM "{t}"').fetchall()
            for t in ("memories", "sessions", "events", "tasks", "user_state", "audit_log")
        }
    finally:
        conn.close()


def test_a_dry_run_reports_and_changes_nothing(db: Path) -> None:
    before = rows(db)
    data = ok_json(
        abathur(
            "purge",
            "--db",
            str(db),
            "--prefix",
            "user:alice",
            "--app",
            "helpdesk",
            "--user",
            "alice",
            "--dry-run",
            "--json",
            cwd=db.parent,
        )
    )
    assert data["dry_run"] is True
    memory, sessions = data["reports"]
    assert (memory["scope"], memory["counts"]["memories"], memory["audit_seq"]) == (
        "memory",
        1,
        None,
    )
    assert sessions["counts"] == {
        "sessions": 1,
        "events": 1,
        "tasks": 1,
        "user_state": 1,
        "archive": 0,
    }
    assert rows(db) == before
    human = abathur("purge", "--db", str(db), "--prefix", "user:alice", "--dry-run", cwd=db.parent)
    assert human.returncode == 0 and "would erase" in human.stdout


def test_a_purge_erases_and_the_file_still_checks_clean(db: Path) -> None:
    data = ok_json(
        abathur(
            "purge",
            "--db",
            str(db),
            "--prefix",
            "user:alice",
            "--app",
            "helpdesk",
            "--user",
            "alice",
            "--yes",
            "--json",
            cwd=db.parent,
        )
    )
    memory, sessions = data["reports"]
    assert memory["counts"]["memories"] == 1 and sessions["counts"]["events"] == 1
    # memory.put; session.create, event.append, task.create
    assert memory["redacted"] == 1 and sessions["redacted"] == 3
    assert isinstance(sessions["audit_seq"], int)
    check = ok_json(abathur("check", "--db", str(db), "--json", cwd=db.parent))
    assert check["is_ok"] is True
    assert b"alice" not in db.read_bytes()
    again = ok_json(
        abathur(
            "purge", "--db", str(db), "--prefix", "user:alice", "--yes", "--json", cwd=db.parent
        )
    )
    assert again["reports"][0]["counts"]["memories"] == 0


def test_a_bad_prefix_is_a_typed_error(db: Path) -> None:
    done = abathur(
        "purge", "--db", str(db), "--prefix", "user::alice", "--yes", "--json", cwd=db.parent
    )
    assert done.returncode == 3
    assert json.loads(done.stdout)["error"]["code"] == "memory.invalid_namespace"
    missing = abathur(
        "purge", "--db", str(db.parent / "nope.db"), "--everything", "--yes", cwd=db.parent
    )
    assert missing.returncode == 3 and "no database" in missing.stderr
