"""What the fuzzer found, each pinned by a plain deterministic test.

1. ``abathur check`` reported a vector whose delete was merely deferred
   (``vector_deletes``: search already skips it, the embedding worker removes
   it in its next batch) as an orphan. A process without a worker (every CLI
   command) leaves such deletes behind, so ``abathur unsync`` or a memory
   delete followed by ``abathur check`` gave a false finding and exit 1.
2. ``abathur health --db missing-dir/agent.db`` died with a FileNotFoundError
   traceback (the disk item asked for the usage of a directory that does not
   exist), though health reports problems as ``fail`` items and never raises.
3. Others were input validation, pinned in tests/unit/test_hostile_input.py:
   ``--db`` (or ``Abathur.open``) with a name too long, or too long once
   SQLite adds ``-journal`` (an empty file was left behind), and ``abathur
   archive show 9223372036854775808`` (OverflowError).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from abathur import Abathur
from abathur.ops.health import health
from abathur.ops.integrity import run_checks


def _pending_deletes(path: Path) -> int:
    import apsw

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT count(*) FROM vector_deletes").fetchall()[0][0]
    finally:
        conn.close()


@pytest.mark.sqlite_only("counts vec0's deferred deletes in the SQLite file, runs abathur check")
async def test_a_deferred_vector_delete_is_not_an_orphan(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha beta\n")
    path = tmp_path / "agent.db"
    async with Abathur.open(path, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "lang", "French")
        await ab.documents.sync(docs)
        await ab.embeddings.drain()
        await ab.memory.delete("user:alice", "lang")
        await ab.documents.forget(docs)
    assert _pending_deletes(path) == 2  # one memory vector, one chunk vector, still deferred
    report = run_checks(path)
    bad = [(r.name, r.findings) for r in report.results if r.status not in ("ok", "skipped")]
    assert report.is_ok, bad


def test_health_of_a_file_in_a_missing_directory_reports_instead_of_raising(
    tmp_path: Path,
) -> None:
    report = health(tmp_path / "missing-dir" / "agent.db")
    items = {item.name: item for item in report.items}
    assert report.status == "fail"
    assert items["disk"].status == "fail" and "missing-dir" in items["disk"].detail
