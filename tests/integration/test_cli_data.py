"""``abathur memory``, ``abathur session`` and ``abathur task``: the data, shown.

Real subprocesses on one populated file (read-only commands: the file is shared
by the module, and a test proves nothing wrote to it). Tables for a person,
one JSON document with ``--json``; values are JSON in both, cut only in tables.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import apsw
import pytest

from abathur import Abathur, Event
from abathur.backends.sqlite import migrations
from tests.fuzz.strategies import fingerprint
from tests.helpers import abathur, digest, ok_json

FRENCH = {"value": "Français 🇫🇷", "note": "l'été"}
# A large nested value: wider than any table cell, deeper than a one-liner reads.
BIG = {
    "levels": {"a": {"b": {"c": {"d": ["deep", {"e": None, "f": True, "g": 1.5}]}}}},
    "rows": [{"id": i, "name": f"row {i}", "tags": ["x", "y"]} for i in range(200)],
}
# Names sort: helpdesk/s-busy has more events than a page; s-other is in another app.
EVENTS = 30


async def _populate(path: Path) -> None:
    async with Abathur.open(path, embedder="none", embed_worker=False) as ab:
        await ab.memory.put(
            "user:alice:preferences", "language", {"value": "French"}, metadata={"source": "chat"}
        )
        await ab.memory.put("user:alice:preferences", "language", FRENCH)
        await ab.memory.put("user:alice:preferences", "theme", "dark", type="procedural")
        await ab.memory.put("user:alice", "tea", "green\ntea", type="episodic")
        await ab.memory.put("user:alice", "gone", 1)
        await ab.memory.delete("user:alice", "gone")
        await ab.memory.put("user:alicia", "tea", "black")
        await ab.memory.put("user:bob", "big", BIG)
        for i in range(12):
            await ab.memory.put("team:ops", f"k{i:02}", i)

        await ab.sessions.create(
            app="helpdesk",
            user="alice",
            session_id="s-busy",
            state={"user:lang": "fr", "app:tier": "gold", "topic": None},
        )
        for i in range(EVENTS):
            await ab.sessions.append_event(
                "s-busy",
                Event(
                    author="user" if i % 2 == 0 else "agent",
                    content={"text": f"message {i} — ça va?"},
                    state_delta={"topic": "billing"} if i == 3 else {},
                ),
            )
        await ab.sessions.create(app="helpdesk", user="bob", session_id="s-bob")
        await ab.sessions.terminate("s-bob")
        await ab.sessions.create(app="shop", user="alice", session_id="s-other")

        done = await ab.tasks.create(session_id="s-busy", prompt="summarise\nthe ticket")
        await ab.tasks.update(done.id, status="running")
        await ab.tasks.update(done.id, status="succeeded", result={"summary": "résumé ✓"})
        failed = await ab.tasks.create(session_id="s-busy", prompt="call the bank")
        await ab.tasks.update(failed.id, status="running")
        await ab.tasks.update(failed.id, status="failed", error="timed out")
        await ab.tasks.create(session_id="s-other", prompt="ship the order", task_id="t-last")


@pytest.fixture(scope="module")
def data_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-data") / "agent.db"
    asyncio.run(_populate(path))
    return path


def run(db: Path, *args: str) -> Any:
    return abathur(*args, "--db", str(db), cwd=db.parent)


def as_json(db: Path, *args: str) -> dict[str, Any]:
    data = ok_json(run(db, *args, "--json"))
    assert data["path"] == str(db)
    return data


def failed(db: Path, *args: str, code: int = 3) -> Any:
    done = run(db, *args)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done


# -- memory ---------------------------------------------------------------------------


def test_memory_namespaces_with_counts(data_db: Path) -> None:
    data = as_json(data_db, "memory", "namespaces")
    assert data["namespaces"] == [
        {"name": "team:ops", "count": 12},
        {"name": "user:alice", "count": 1},  # 'gone' is deleted
        {"name": "user:alice:preferences", "count": 2},
        {"name": "user:alicia", "count": 1},
        {"name": "user:bob", "count": 1},
    ]
    assert data["has_more"] is False
    # A prefix matches whole segments: user:alice never lists user:alicia.
    scoped = as_json(data_db, "memory", "namespaces", "user:alice")
    assert [n["name"] for n in scoped["namespaces"]] == ["user:alice", "user:alice:preferences"]
    # The bare group shows the same overview.
    assert as_json(data_db, "memory")["namespaces"] == data["namespaces"]

    done = run(data_db, "memory", "namespaces", "user", "--limit", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["namespace", "memories"]
    assert lines[1].split() == ["user:alice", "1"]
    assert lines[2].split() == ["user:alice:preferences", "2"]
    assert "more namespaces exist" in done.stdout


def test_memory_list_table_and_json(data_db: Path) -> None:
    data = as_json(data_db, "memory", "list", "user:alice")
    assert [(m["namespace"], m["key"]) for m in data["memories"]] == [
        ("user:alice", "tea"),
        ("user:alice:preferences", "language"),
        ("user:alice:preferences", "theme"),
    ]
    language = data["memories"][1]
    assert language["value"] == FRENCH and language["version"] == 2
    assert set(language) == {
        "namespace", "key", "value", "type", "metadata", "version", "status", "superseded_by",
        "created_at", "updated_at", "expires_at",
    }  # fmt: skip
    assert (data["has_more"], data["next_offset"]) == (False, None)

    done = run(data_db, "memory", "list", "user:alice")
    assert done.returncode == 0, done.stderr
    # Values as JSON: strings keep their quotes, a newline stays one escaped line,
    # unicode is printed as itself; never a Python repr.
    assert '"green\\ntea"' in done.stdout
    assert json.dumps(FRENCH, ensure_ascii=False) in done.stdout
    assert '"dark"' in done.stdout
    assert "{'value'" not in done.stdout
    assert len(done.stdout.splitlines()) == 1 + 3 + 1  # header, rows, the count line

    typed = as_json(data_db, "memory", "list", "user", "--type", "procedural")
    assert [m["key"] for m in typed["memories"]] == ["theme"]


def test_memory_list_pages_with_limit_and_offset(data_db: Path) -> None:
    first = as_json(data_db, "memory", "list", "team:ops", "--limit", "5")
    assert [m["key"] for m in first["memories"]] == [f"k{i:02}" for i in range(5)]
    assert (first["has_more"], first["next_offset"]) == (True, 5)
    last = as_json(data_db, "memory", "list", "team:ops", "--limit", "5", "--offset", "10")
    assert [m["key"] for m in last["memories"]] == ["k10", "k11"]
    assert (last["has_more"], last["next_offset"]) == (False, None)
    exact = as_json(data_db, "memory", "list", "team:ops", "--limit", "12")
    assert len(exact["memories"]) == 12 and exact["has_more"] is False

    done = run(data_db, "memory", "list", "team:ops", "--limit", "5")
    assert "more exist: --offset 5" in done.stdout


def test_memory_list_include_deleted(data_db: Path) -> None:
    data = as_json(data_db, "memory", "list", "user:alice", "--include-deleted")
    assert [(m["key"], m["status"]) for m in data["memories"]] == [
        ("gone", "deleted"),
        ("tea", "live"),
        ("language", "live"),
        ("theme", "live"),
    ]
    assert data["include_deleted"] is True
    done = run(data_db, "memory", "list", "user:alice", "--include-deleted")
    assert done.returncode == 0, done.stderr
    header, gone = done.stdout.splitlines()[:2]
    assert header.split()[:5] == ["namespace", "key", "type", "version", "status"]
    assert gone.split()[:5] == ["user:alice", "gone", "semantic", "2", "deleted"]


def test_memory_get_prints_the_value_whole_as_json(data_db: Path) -> None:
    data = as_json(data_db, "memory", "get", "user:bob", "big")
    assert data["memory"]["value"] == BIG  # never cut in --json

    done = run(data_db, "memory", "get", "user:bob", "big")
    assert done.returncode == 0, done.stderr
    head, value = done.stdout.split("\nvalue\n", 1)
    assert json.loads(value) == BIG  # the human output holds it whole too
    assert "namespace  user:bob" in head and "version    1" in head

    done = run(data_db, "memory", "get", "user:alice:preferences", "language")
    assert json.loads(done.stdout.split("\nvalue\n", 1)[1]) == FRENCH
    assert "Français 🇫🇷" in done.stdout


def test_memory_list_cuts_a_large_value_in_the_table_only(data_db: Path) -> None:
    done = run(data_db, "memory", "list", "user:bob")
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[1]
    assert row.endswith("…") and len(row) < 200
    assert as_json(data_db, "memory", "list", "user:bob")["memories"][0]["value"] == BIG


def test_memory_get_a_version_and_history(data_db: Path) -> None:
    first = as_json(
        data_db, "memory", "get", "user:alice:preferences", "language", "--version", "1"
    )
    assert first["memory"]["value"] == {"value": "French"}
    assert first["memory"]["metadata"] == {"source": "chat"}
    # A deleted memory: absent for get, its versions still in history and by number.
    tomb = as_json(data_db, "memory", "get", "user:alice", "gone", "--version", "2")
    assert tomb["memory"]["status"] == "deleted"

    history = as_json(data_db, "memory", "history", "user:alice", "gone")
    assert [(m["version"], m["status"]) for m in history["versions"]] == [
        (1, "live"),
        (2, "deleted"),
    ]
    done = run(data_db, "memory", "history", "user:alice:preferences", "language")
    assert done.returncode == 0, done.stderr
    assert "2 version(s)" in done.stdout
    assert '{"value": "French"}' in done.stdout and "Français" in done.stdout


def test_memory_not_found_is_exit_3_with_the_typed_error(data_db: Path) -> None:
    done = failed(data_db, "memory", "get", "user:alice", "gone")
    assert "[memory.not_found]" in done.stderr and "memory history" in done.stderr
    done = failed(data_db, "memory", "get", "user:alice", "tea", "--version", "9")
    assert "[memory.not_found]" in done.stderr and "no version 9" in done.stderr
    done = failed(data_db, "memory", "history", "user:nobody", "x")
    assert "[memory.not_found]" in done.stderr
    # With --json the error is the one document on stdout.
    done = failed(data_db, "memory", "get", "user:alice", "gone", "--json")
    assert json.loads(done.stdout)["error"]["code"] == "memory.not_found"


def test_memory_bad_arguments(data_db: Path) -> None:
    # The library's validation: a typed error, exit 3.
    done = failed(data_db, "memory", "list", "user::x")
    assert "[memory.invalid_namespace]" in done.stderr
    done = failed(data_db, "memory", "get", "user:alice", " padded ")
    assert "[invalid_id]" in done.stderr
    # click's: a usage error, exit 2.
    failed(data_db, "memory", "get", "user:alice", "tea", "--version", "0", code=2)
    failed(data_db, "memory", "list", "user", "--type", "nonsense", code=2)
    failed(data_db, "memory", "list", "user", "--limit", "0", code=2)
    failed(data_db, "memory", "list", code=2)


# -- session --------------------------------------------------------------------------


def test_session_list_every_app_and_filters(data_db: Path) -> None:
    data = as_json(data_db, "session", "list")
    # Most recently updated first; every app without --app.
    assert [s["id"] for s in data["sessions"]] == ["s-other", "s-bob", "s-busy"]
    busy = data["sessions"][2]
    assert (busy["app"], busy["user"], busy["status"], busy["revision"]) == (
        "helpdesk", "alice", "active", EVENTS,
    )  # fmt: skip
    assert busy["state"] == {"app:tier": "gold", "user:lang": "fr", "topic": "billing"}
    assert "events" not in busy
    assert as_json(data_db, "session")["sessions"] == data["sessions"]

    def ids(*args: str) -> list[str]:
        return [s["id"] for s in as_json(data_db, "session", "list", *args)["sessions"]]

    assert ids("--app", "helpdesk") == ["s-bob", "s-busy"]
    assert ids("--user", "alice") == ["s-other", "s-busy"]
    assert ids("--app", "helpdesk", "--user", "alice") == ["s-busy"]
    assert ids("--status", "terminated") == ["s-bob"]
    assert ids("--app", "nobody") == []

    page = as_json(data_db, "session", "list", "--limit", "2")
    assert len(page["sessions"]) == 2 and page["has_more"] is True

    done = run(data_db, "session", "list", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:4] == ["id", "app", "user", "status"]
    assert "more exist" in done.stdout
    failed(data_db, "session", "list", "--status", "sleeping", code=2)
    assert "[invalid_id]" in failed(data_db, "session", "list", "--app", " x").stderr


def test_session_show_state_and_last_events(data_db: Path) -> None:
    data = as_json(data_db, "session", "show", "s-busy", "--last", "5")
    session = data["session"]
    assert [e["seq"] for e in session["events"]] == list(range(EVENTS - 4, EVENTS + 1))
    assert session["events"][-1]["content"] == {"text": f"message {EVENTS - 1} — ça va?"}
    assert data["has_more_events"] is True
    everything = as_json(data_db, "session", "show", "s-busy", "--last", str(EVENTS))
    assert len(everything["session"]["events"]) == EVENTS
    assert everything["has_more_events"] is False

    done = run(data_db, "session", "show", "s-busy")  # the default: the last 20
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "session   s-busy" in out and "status    active" in out
    assert '"gold"' in out and '"billing"' in out  # state values as JSON
    assert '{"text": "message 29 — ça va?"}' in out
    assert "message 9 " not in out  # older than the last 20
    assert "older ones exist: --last 40" in out

    none = run(data_db, "session", "show", "s-other")
    assert "events: none" in none.stdout and "state: empty" in none.stdout


def test_session_show_not_found_and_bad_arguments(data_db: Path) -> None:
    done = failed(data_db, "session", "show", "nope")
    assert "[session.not_found]" in done.stderr
    failed(data_db, "session", "show", "s-busy", "--last", "-1", code=2)
    failed(data_db, "session", "show", code=2)


# -- task -----------------------------------------------------------------------------


def test_task_list_every_session_and_one(data_db: Path) -> None:
    data = as_json(data_db, "task", "list")
    tasks = data["tasks"]
    assert [t["prompt"] for t in tasks] == [
        "ship the order",
        "call the bank",
        "summarise\nthe ticket",
    ]
    assert tasks[2]["result"] == {"summary": "résumé ✓"} and tasks[1]["error"] == "timed out"
    assert as_json(data_db, "task")["tasks"] == tasks

    of_session = as_json(data_db, "task", "list", "--session", "s-busy")
    assert [t["status"] for t in of_session["tasks"]] == ["succeeded", "failed"]  # oldest first
    only = as_json(data_db, "task", "list", "--status", "failed")
    assert [t["prompt"] for t in only["tasks"]] == ["call the bank"]
    page = as_json(data_db, "task", "list", "--limit", "1")
    assert [t["id"] for t in page["tasks"]] == ["t-last"] and page["has_more"] is True

    done = run(data_db, "task", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["id", "session", "status", "created", "updated", "prompt", "result"]
    assert len(lines) == 1 + 3 + 1  # a prompt's line break does not break its row
    assert "summarise the ticket" in done.stdout
    assert '{"summary": "résumé ✓"}' in done.stdout and "error: timed out" in done.stdout


def test_task_list_unknown_session_and_bad_arguments(data_db: Path) -> None:
    assert "[session.not_found]" in failed(data_db, "task", "list", "--session", "nope").stderr
    failed(data_db, "task", "list", "--status", "done", code=2)
    failed(data_db, "task", "list", "--limit", "x", code=2)


# -- everything together --------------------------------------------------------------


def test_search_memories_prints_values_as_json(data_db: Path) -> None:
    args = ["--memories", "--prefix", "user:alice", "language", "--mode", "keyword"]
    done = run(data_db, "search", *args)
    assert done.returncode == 0, done.stderr
    assert '{"value": "Français 🇫🇷", "note": "l\'été"}' in done.stdout
    assert "{'value'" not in done.stdout
    assert 'for "language"' in done.stdout


def test_a_missing_file_is_exit_3_and_is_not_created(tmp_path: Path) -> None:
    for args in (["memory"], ["memory", "list", "user"], ["session", "show", "s"], ["task"]):
        done = abathur(*args, "--db", "missing.db", cwd=tmp_path)
        assert done.returncode == 3, (args, done.stderr)
        assert "[db.error]" in done.stderr and "abathur init" in done.stderr
    assert not list(tmp_path.iterdir())


def _data(db: Path) -> dict[str, tuple[int, str]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return fingerprint(conn)
    finally:
        conn.close()


def test_the_data_commands_change_no_data(data_db: Path) -> None:
    # Like every API call, theirs are timed in the metrics table (abathur.analytics);
    # the data itself is only read.
    before = _data(data_db)
    for args in (["memory"], ["session"], ["task"], ["memory", "get", "user:bob", "big"]):
        assert run(data_db, *args).returncode == 0
    assert _data(data_db) == before
    assert {"memories", "sessions", "events", "tasks"} <= set(before)


def test_options_before_the_subcommand_reach_it(data_db: Path, tmp_path: Path) -> None:
    # cwd holds no database: the subcommand can only find the file through the group.
    cwd = tmp_path
    listed = ok_json(abathur("memory", "--db", str(data_db), "--json", "list", "team:ops", cwd=cwd))
    assert len(listed["memories"]) == 12
    shown = ok_json(abathur("session", "--json", "--db", str(data_db), "show", "s-bob", cwd=cwd))
    assert shown["session"]["status"] == "terminated"
    # An option after the subcommand wins.
    done = abathur("task", "--db", str(data_db), "list", "--db", "missing.db", cwd=cwd)
    assert done.returncode == 3 and "missing.db" in done.stderr
    # An option before the subcommand beats $ABATHUR_DB, as it does before any command.
    env = {"ABATHUR_DB": str(tmp_path / "elsewhere.db")}
    listed = ok_json(
        abathur("memory", "--db", str(data_db), "--json", "list", "team:ops", cwd=cwd, env=env)
    )
    assert len(listed["memories"]) == 12
    assert not list(cwd.iterdir())


@pytest.mark.parametrize(
    "command",
    [
        ["memory", "namespaces"],
        ["memory", "list"],
        ["memory", "get"],
        ["memory", "history"],
        ["session", "list"],
        ["session", "show"],
        ["task", "list"],
    ],
    ids=" ".join,
)
def test_every_subcommand_has_help_with_examples(command: list[str], tmp_path: Path) -> None:
    done = abathur(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--db" in done.stdout and "--json" in done.stdout
    assert f"abathur {' '.join(command)} --db" in done.stdout.split("Examples:", 1)[1]


def test_an_old_file_is_refused_not_migrated(tmp_path: Path) -> None:
    old_db = tmp_path / "old.db"  # what an older abathur made: only migration 1
    conn = apsw.Connection(str(old_db))
    try:
        migrations.apply(conn, migrations.available()[:1])
    finally:
        conn.close()
    before = digest(old_db)
    for args in (["memory"], ["session", "list"], ["task"]):
        done = abathur(*args, "--db", str(old_db), cwd=old_db.parent)
        assert done.returncode == 3, (args, done.stderr)
        assert "[db.schema]" in done.stderr and "abathur migrate" in done.stderr
    assert digest(old_db) == before
    assert sorted(p.name for p in old_db.parent.iterdir()) == ["old.db"]  # no backup copy either
