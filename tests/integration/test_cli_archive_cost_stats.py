"""``abathur archive``, ``cost`` and ``stats`` as real subprocesses, on a database built by
benchmarks/build_100k.py (scaled down): an archive run killed midway loses nothing and
archives nothing twice, and restoring every entry gives back the original rows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from benchmarks.build_100k import build

from abathur import Abathur
from abathur.ops.integrity import run_checks
from tests.helpers import abathur, ok_json

HOT_TABLES = ("sessions", "events", "memories")


def dump(path: Path) -> dict[str, list[tuple]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # Table names are this module's constants.
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in HOT_TABLES
        }
    finally:
        conn.close()


def count(path: Path, sql: str) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute(sql).fetchall()[0][0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small copy of the 100k fixture: cold sessions, expired, deleted and rewritten memories."""
    path = tmp_path_factory.mktemp("a100") / "agent.db"
    build(path, memories=600, sessions=30, events=5, vectors=False)
    return path


@pytest.fixture
def db(built: Path, tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    path.write_bytes(built.read_bytes())
    return path


@pytest.mark.sqlite_only("reads the SQLite file with apsw mid-run and runs abathur check")
def test_a_killed_run_loses_nothing_and_a_second_run_finishes_it(db: Path) -> None:
    before = dump(db)
    plan = ok_json(abathur("archive", "run", "--db", str(db), "--dry-run", "--json", cwd=db.parent))
    total = plan["entries"]
    assert dump(db) == before, "a dry run changes nothing"
    by_policy = {p["policy"]: p["items"] for p in plan["policies"]}
    assert by_policy["sessions"] == 18 and by_policy["memories"] > 0
    assert by_policy["versions"] == 30 and by_policy["tombstones"] > 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    env.update(ABATHUR_ARCHIVE_BATCH_SIZE="2", ABATHUR_ARCHIVE_PAUSE_MS="40")
    proc = subprocess.Popen(
        [sys.executable, "-m", "abathur", "archive", "run", "--db", str(db), "--json"],
        cwd=db.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if count(db, "SELECT count(*) FROM archive") >= 6:
                    break
            except apsw.Error:
                pass  # the file is being created or locked for a moment
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL, "the run was killed midway, not finished"
    done_before_kill = count(db, "SELECT count(*) FROM archive")
    assert 6 <= done_before_kill < total

    second = ok_json(abathur("archive", "run", "--db", str(db), "--json", cwd=db.parent))
    assert second["resumed_after"] == 1
    assert done_before_kill + second["entries"] == total
    assert count(db, "SELECT count(*) FROM archive") == total
    # Nothing twice: one entry per session and per whole memory.
    assert (
        count(
            db,
            "SELECT count(*) - count(DISTINCT kind || ref) FROM archive WHERE kind != 'versions'",
        )
        == 0
    )
    assert (
        ok_json(abathur("archive", "run", "--db", str(db), "--json", cwd=db.parent))["entries"] == 0
    )
    assert run_checks(db).is_ok
    assert abathur("check", "--db", str(db), cwd=db.parent).returncode == 0

    async def restore_all() -> None:
        async with Abathur.open(db, embedder="none", embed_worker=False) as ab:
            # Whole memories before old versions: versions slot back under their memory.
            for kind in ("session", "memory", "versions"):
                for entry in await ab.archival.list(kind=kind, limit=10_000):
                    await ab.archival.restore(entry.id)

    asyncio.run(restore_all())
    assert dump(db) == before, "every row came back, field for field"
    assert count(db, "SELECT count(*) FROM archive") == 0
    assert run_checks(db).is_ok


def test_archive_list_show_restore_on_the_command_line(db: Path) -> None:
    first = ok_json(abathur("archive", "run", "--db", str(db), "--json", cwd=db.parent))
    assert first["bytes_before"] > 0 and first["wal_bytes_after"] == 0
    human = abathur("archive", "--db", str(db), "--kind", "session", "--limit", "3", cwd=db.parent)
    assert human.returncode == 0 and human.stdout.count(" session ") == 3
    listed = ok_json(
        abathur("archive", "list", "--db", str(db), "--kind", "session", "--json", cwd=db.parent)
    )["entries"]
    assert len(listed) == 18
    entry = listed[0]
    shown = ok_json(
        abathur("archive", "show", "--db", str(db), str(entry["id"]), "--json", cwd=db.parent)
    )
    assert shown["entry"]["ref"] == entry["ref"]
    assert len(shown["tables"]["events"]) == 5
    assert shown["tables"]["sessions"][0]["status"] == "terminated"
    text = abathur("archive", "show", "--db", str(db), str(entry["id"]), cwd=db.parent).stdout
    assert "events (5 row(s))" in text

    restored = ok_json(
        abathur("archive", "restore", "--db", str(db), str(entry["id"]), "--json", cwd=db.parent)
    )
    assert (restored["kind"], restored["ref"], restored["rows"]) == ("session", entry["ref"], 6)
    again = abathur(
        "archive", "restore", "--db", str(db), str(entry["id"]), "--json", cwd=db.parent
    )
    assert again.returncode == 3
    assert json.loads(again.stdout)["error"]["code"] == "archive.not_found"
    assert "abathur: error [archive.not_found]" in again.stderr
    missing = abathur("archive", "run", "--db", str(db.parent / "nope.db"), cwd=db.parent)
    assert missing.returncode == 3 and not (db.parent / "nope.db").exists()


def test_cost_report_and_stats_on_the_command_line(tmp_path: Path) -> None:
    ok_json(abathur("demo", "--db", "d.db", "--json", cwd=tmp_path))
    report = ok_json(
        abathur(
            "cost",
            "report",
            "--db",
            "d.db",
            "--since",
            "1h",
            "--by",
            "user",
            "--json",
            cwd=tmp_path,
        )
    )
    assert report["by"] == "user" and report["total"]["calls"] >= 1
    # The demo's memories are alice's; what the smoke suite embeds is charged to nobody.
    assert "alice" in [g["key"] for g in report["groups"]]
    assert report["context_calls"] == 1 and report["context_tokens"] > 0
    assert report["total"]["cost_usd"] == 0.0 and report["unpriced"] == []
    human = abathur("cost", "--db", "d.db", cwd=tmp_path)
    assert human.returncode == 0
    for text in ("spend", "cache", "tokens served", "advice:", "bundled/all-MiniLM-L6-v2"):
        assert text in human.stdout
    bad = abathur("cost", "report", "--db", "d.db", "--since", "soon", cwd=tmp_path)
    assert bad.returncode == 3 and "[invalid_input]" in bad.stderr

    stats = ok_json(abathur("stats", "--db", "d.db", "--json", cwd=tmp_path))
    calls = {c["name"]: c for c in stats["calls"]}
    assert calls["memory.put"]["calls"] >= 4, "the demo process flushed its calls on close"
    assert stats["memories"] >= 4 and stats["sessions_by_status"].get("active", 0) >= 1
    assert stats["growth"][0]["sparkline"].endswith("█")
    human = abathur("stats", "--db", "d.db", "--days", "7", cwd=tmp_path).stdout
    for text in ("memories", "p95 ms", "memory.put", "top writes", "user:alice"):
        assert text in human


def test_a_corrupt_archive_row_is_a_typed_error_and_a_check_finding(db: Path) -> None:
    ok_json(abathur("archive", "run", "--db", str(db), "--json", cwd=db.parent))
    conn = apsw.Connection(str(db))
    try:
        # A damaged payload: its last 4 bytes lost (a torn write), nothing else touched.
        (entry_id,) = conn.execute(
            "SELECT id FROM archive WHERE kind = 'session' ORDER BY id LIMIT 1"
        ).fetchall()[0]
        conn.execute(
            "UPDATE archive SET payload = substr(payload, 1, length(payload) - 4) WHERE id = ?",
            (entry_id,),
        )
    finally:
        conn.close()
    before = dump(db)
    for command in ("restore", "show"):
        done = abathur("archive", command, "--db", str(db), str(entry_id), "--json", cwd=db.parent)
        assert done.returncode == 3, done.stderr
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "archive.corrupt" and error["entry_id"] == entry_id
        assert f"archive entry {entry_id} " in error["message"]
        assert "Traceback" not in done.stderr
        assert f"abathur: error [archive.corrupt]: archive entry {entry_id}" in done.stderr
    assert dump(db) == before, "a refused restore changes nothing"

    check = abathur("check", "--db", str(db), "--json", cwd=db.parent)
    assert check.returncode == 1, check.stderr
    (found,) = [c for c in json.loads(check.stdout)["checks"] if c["name"] == "archive_payloads"]
    assert found["status"] == "findings"
    (finding,) = found["findings"]
    assert finding.startswith(f"archive entry {entry_id} (session ")
    assert "does not match its checksum" in finding
