"""The hash-chained audit log detects edited, removed and truncated records."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from abathur import Abathur, audit


async def write_records(ab: Abathur, n: int) -> None:
    for i in range(n):
        await ab.db.write(
            lambda c, i=i: audit.append(c, "memory.put", "memory", f"ns/k{i}", {"version": i})
        )


def tamper(path: Path, sql: str) -> None:
    conn = apsw.Connection(str(path))
    try:
        conn.execute(sql)
    finally:
        conn.close()


async def test_an_untouched_chain_verifies(ab: Abathur) -> None:
    await write_records(ab, 5)
    report = await ab.audit.verify()
    assert report.is_ok and report.records == 5 and report.problems == []


async def test_an_empty_chain_verifies(ab: Abathur) -> None:
    report = await ab.audit.verify()
    assert report.is_ok and report.records == 0


async def test_records_are_listed_in_order_and_filtered(ab: Abathur) -> None:
    await write_records(ab, 3)
    records = await ab.audit.records(entity="memory")
    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.detail for r in records] == [{"version": 0}, {"version": 1}, {"version": 2}]
    only = await ab.audit.records(entity_id="ns/k1")
    assert [r.seq for r in only] == [2]
    assert await ab.audit.records(entity="session") == []
    assert [r.seq for r in await ab.audit.records(after_seq=1, limit=1)] == [2]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE audit_log SET detail = '{\"version\":99}' WHERE seq = 2", "record 2 was altered"),
        ("UPDATE audit_log SET action = 'memory.delete' WHERE seq = 1", "record 1 was altered"),
        ("DELETE FROM audit_log WHERE seq = 3", "records 3..3 are missing"),
        ("DELETE FROM audit_log WHERE seq = 5", "the newest records were removed"),
        ("UPDATE audit_head SET hash = 'x'", "head"),
    ],
)
async def test_tampering_is_detected(db_path: Path, sql: str, expected: str) -> None:
    async with Abathur.open(db_path) as ab:
        await write_records(ab, 5)
    tamper(db_path, sql)
    async with Abathur.open(db_path) as ab:
        report = await ab.audit.verify()
    assert not report.is_ok
    assert any(expected in p for p in report.problems), report.problems


async def test_a_rolled_back_write_leaves_no_record(ab: Abathur) -> None:
    def record_then_fail(conn: apsw.Connection) -> None:
        audit.append(conn, "memory.put", "memory", "ns/k", {})
        raise RuntimeError("the change itself failed")

    with pytest.raises(RuntimeError):
        await ab.db.write(record_then_fail)
    assert await ab.audit.records() == []
    assert (await ab.audit.verify()).is_ok
