"""Issue 12: ``abathur smoke`` after a deploy leaves the operator's numbers as they were.

A file with real data (sessions, events, embedded memories, searches in the
usage ledger, flushed call metrics) is measured through the CLI an operator
reads (``stats --json``, ``cost --json``, ``info --json``, the vector tables'
live and dead slots), a real ``abathur smoke`` subprocess runs against it,
and everything is measured again. The one difference allowed is the audit
log's: the run's records stay in the hash chain, redacted, and three purge
records say a run was erased (module docstring of abathur.ops.smoke).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest

from abathur import Abathur, Event
from abathur.ops.integrity import run_checks

# Fields of 'stats --json' that move with the clock or the file's pages, not with the data.
_VOLATILE_STATS = {
    "generated_at",
    "calls_since",
    "db_bytes",
    "wal_bytes",
    "free_bytes",
    "archive_bytes",
    "queue_oldest_age_s",
}


def cli(*args: str, db: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    done = subprocess.run(
        [sys.executable, "-m", "abathur", *args, "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=db.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def vec0_chunks(db: Path) -> dict[str, int]:
    """Chunks in each vec0 table's storage: a chunk left behind is a trace too."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {
            name: conn.execute(f'SELECT count(*) FROM "{name}_chunks"').fetchall()[0][0]
            for (name,) in conn.execute("SELECT name FROM vector_tables ORDER BY name")
        }
    finally:
        conn.close()


def audit_head(db: Path) -> int:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT max(seq) FROM audit_log").fetchall()[0][0] or 0)
    finally:
        conn.close()


def audit_after(db: Path, seq: int) -> list[tuple[str, str, int]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(
            "SELECT action, entity_id, redacted FROM audit_log WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
    finally:
        conn.close()


def snapshot(db: Path) -> dict[str, Any]:
    stats = cli("stats", db=db)
    cost = cli("cost", db=db)
    info = cli("info", db=db)
    vectors = cli("reindex", "--compact", "--dry-run", db=db)
    return {
        "stats": {k: v for k, v in stats.items() if k not in _VOLATILE_STATS},
        "cost": {k: v for k, v in cost.items() if k not in ("since", "until")},
        "rows": info["row_counts"],
        "vector_tables": vectors["tables"],
        "vec0_chunks": vec0_chunks(db),
    }


@pytest.fixture
async def app_db(tmp_path: Path) -> Path:
    """A file an application has used for a while: every number above is non-zero."""
    path = tmp_path / "agent.db"
    async with Abathur.open(path, embed_worker=False) as ab:
        for user in ("alice", "bob"):
            s = await ab.sessions.create(app="helpdesk", user=user)
            for i in range(3):
                s = await ab.sessions.append_event(
                    s.id,
                    Event(author="user", content={"text": f"hi {i}"}),
                    expected_revision=s.revision,
                )
            await ab.tasks.create(session_id=s.id, prompt="summarise")
            ns = f"user:{user}:preferences"
            await ab.memory.put(ns, "language", {"value": "French"})
            await ab.memory.put(ns, "drink", "green tea every morning")
            await ab.embeddings.drain()
            await ab.memory.put(ns, "drink", "black coffee, no sugar")  # a dead vector slot
            await ab.memory.search("what does she drink", prefix=ns, k=2)
            await ab.memory.get(ns, "language")
        await ab.embeddings.drain()
    return path


@pytest.mark.sqlite_only("reads vec0 chunks and rows of the SQLite file with apsw")
async def test_a_smoke_run_leaves_stats_costs_rows_and_vectors_as_they_were(app_db: Path) -> None:
    before = snapshot(app_db)
    head = audit_head(app_db)
    # The numbers an operator would miss if smoke left nothing to compare.
    assert before["stats"]["calls"] and before["stats"]["top_writes"]
    assert before["cost"]["total"]["calls"] > 0 and before["rows"]["usage_ledger"] > 0
    assert any(t["dead_rows"] for t in before["vector_tables"])

    smoke = cli("smoke", db=app_db)
    assert smoke["is_ok"] is True, [c for c in smoke["cases"] if c["status"] != "passed"]

    after = snapshot(app_db)
    # The audit chain keeps the run's records, redacted, and the two purge records.
    rows_before, rows_after = dict(before.pop("rows")), dict(after.pop("rows"))
    added = audit_after(app_db, head)
    assert rows_after.pop("audit_log") - rows_before.pop("audit_log") == len(added)
    assert rows_after == rows_before
    purges = [action for action, _, _ in added if action.endswith(".purge")]
    assert sorted(purges) == ["documents.purge", "memory.purge", "sessions.purge"]
    unredacted = [(a, e) for a, e, redacted in added if not redacted and not a.endswith(".purge")]
    assert unredacted == [], "every record of the run is redacted"
    assert after["vector_tables"] == before["vector_tables"]
    assert after == before
    check = run_checks(app_db)
    assert check.is_ok, [(r.name, r.findings) for r in check.results if r.findings]
