"""``abathur health`` statuses and thresholds; ``abathur metrics`` in valid Prometheus text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import apsw
import pytest

from abathur import Abathur, InvalidInputError
from abathur.ops.backup import create_backup
from abathur.ops.health import Thresholds, health
from abathur.ops.metrics import Metric, Sample, collect, render, write_textfile
from tests.helpers import populate
from tests.prometheus import parse_exposition, value, values

pytestmark = pytest.mark.sqlite_only("health and metrics read a SQLite file, its WAL and PRAGMAs")

HOUR = 3600.0

# -- a small parser for the Prometheus text exposition format (0.0.4) ------------------


# -- health ---------------------------------------------------------------------------


@pytest.fixture
async def populated(db_path: Path) -> Path:
    await populate(db_path)
    return db_path


def item(report, name: str):
    (found,) = [i for i in report.items if i.name == name]
    return found


async def test_a_fresh_backed_up_database_is_healthy(populated: Path) -> None:
    create_backup(populated)
    report = health(populated)
    assert report.status == "ok" and report.is_ok
    assert [i.name for i in report.items][:3] == ["database", "wal", "backup"]
    assert item(report, "disk").status == "ok"
    assert set(report.versions) == {"abathur", "sqlite", "sqlite_vec", "apsw", "aiosqlite"}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["status"] == "ok" and data["path"] == str(populated.absolute())


async def test_backup_age_turns_warn_then_fail(populated: Path) -> None:
    made = create_backup(populated)
    taken = made.created_at.timestamp()
    ages = {h: health(populated, clock=lambda h=h: taken + h * HOUR) for h in (1, 30, 100)}
    assert [item(ages[h], "backup").status for h in (1, 30, 100)] == ["ok", "warn", "fail"]
    assert ages[100].status == "fail", "the worst item decides"
    assert made.name in item(ages[30], "backup").detail


async def test_without_a_backup_the_clock_starts_at_the_first_write(populated: Path) -> None:
    now = time.time()
    assert item(health(populated), "backup").status == "ok"
    late = item(health(populated, clock=lambda: now + 30 * HOUR), "backup")
    assert late.status == "warn" and "no backup in" in late.detail


async def test_an_old_embedding_queue_is_a_warning(populated: Path) -> None:
    # populate() runs no embedding worker: its jobs wait in the queue.
    create_backup(populated)
    now = time.time()
    fresh = item(health(populated), "queue")
    assert fresh.status == "ok" and fresh.value == 1 and "1 job(s) waiting" in fresh.detail
    stale = item(health(populated, clock=lambda: now + 2 * HOUR), "queue")
    assert stale.status == "warn" and "oldest 2.0 h old" in stale.detail
    deep = health(populated, thresholds=Thresholds(queue_warn_depth=0, queue_fail_depth=1))
    assert item(deep, "queue").status == "fail"


def test_an_empty_database_without_a_backup_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = wal").fetchall()
    conn.close()
    report = health(path, clock=lambda: time.time() + 1000 * HOUR)
    assert item(report, "backup").status == "ok"
    assert item(report, "database").status == "warn", "schema version 0 is not this abathur's"


async def test_an_unreadable_backup_is_a_warning(populated: Path) -> None:
    made = create_backup(populated)
    create_backup(populated).manifest_path.write_text("{")
    found = item(health(populated), "backup")
    assert found.status == "warn" and "1 unreadable backup(s)" in found.detail
    assert made.name in found.detail, "the newest readable one is still reported"


async def test_wal_and_disk_thresholds(populated: Path) -> None:
    async with Abathur.open(populated, embed_worker=False) as ab:
        await ab.memory.put("user:x", "k", {"v": 1})  # the WAL holds this until close
        tight = Thresholds(wal_warn_bytes=1, wal_fail_bytes=1 << 40, disk_warn_free_ratio=1.0)
        report = health(populated, thresholds=tight)
    assert item(report, "wal").status == "warn" and item(report, "wal").value > 0
    assert item(report, "disk").status == "warn"
    failing = health(populated, thresholds=Thresholds(disk_fail_free_ratio=1.0))
    assert item(failing, "disk").status == "fail" and failing.status == "fail"


def test_a_missing_database_fails(tmp_path: Path) -> None:
    report = health(tmp_path / "missing.db")
    assert report.status == "fail"
    assert item(report, "database").status == "fail"
    assert "no database at" in item(report, "database").detail
    assert not (tmp_path / "missing.db").exists()


# -- metrics --------------------------------------------------------------------------


async def test_metrics_are_valid_exposition_with_the_expected_numbers(populated: Path) -> None:
    made = create_backup(populated)
    async with Abathur.open(populated, embed_worker=False) as ab:
        await ab.memory.put("user:alice", "howto", {"steps": []}, type="procedural")
        await ab.memory.put("user:alice", "gone", {"v": 1})
        await ab.memory.delete("user:alice", "gone")
        await ab.memory.put("user:alice", "old", {"v": 1}, type="episodic", ttl=0.001)
        session = (await ab.sessions.list(app="app", user="alice"))[0]
        await ab.sessions.terminate(session.id)
        info = await ab.db.info()
    time.sleep(0.01)
    families = parse_exposition(render(collect(populated)))
    assert value(families, "abathur_up") == 1
    assert values(families, "abathur_memories", "type") == {
        "semantic": 1,  # lang (v2); 'gone' is deleted
        "procedural": 1,
        "episodic": 0,  # expired
    }
    assert values(families, "abathur_sessions", "status")["terminated"] == 1
    assert set(values(families, "abathur_sessions", "status")) == {
        "created",
        "active",
        "paused",
        "terminated",
        "archived",
    }
    # Real tables only: vec0's storage is an index, not data (Database.info counts it).
    # 'metrics' gains the call latencies Abathur writes as it closes, after info was taken.
    rows = values(families, "abathur_table_rows", "table")
    assert rows.pop("metrics") >= info.row_counts["metrics"]
    assert rows == {
        t: n for t, n in info.row_counts.items()
        if not t.startswith("memories_vec_") and t != "metrics"
    }
    assert value(families, "abathur_embedding_queue_depth") == 3  # lang v2, howto, old
    assert value(families, "abathur_audit_records") == info.row_counts["audit_log"]
    assert value(families, "abathur_last_backup_timestamp_seconds") == pytest.approx(
        made.created_at.timestamp()
    )
    assert value(families, "abathur_backups") == 1
    assert value(families, "abathur_database_size_bytes") == populated.stat().st_size
    assert families["abathur_info"]["samples"][0][0]["sqlite_version"]
    for family in families.values():
        assert family["help"] and family["type"] == "gauge"
        for labels, _ in family["samples"]:
            assert labels["database"] == str(populated.absolute())


async def test_label_values_are_escaped(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird\\dir\nname'
    odd.mkdir()
    path = odd / "agent.db"
    await populate(path)
    families = parse_exposition(render(collect(path)))
    assert {labels["database"] for f in families.values() for labels, _ in f["samples"]} == {
        str(path.absolute())
    }


def test_an_unreadable_database_is_up_0_not_an_error(tmp_path: Path) -> None:
    families = parse_exposition(render(collect(tmp_path / "missing.db")))
    assert value(families, "abathur_up") == 0
    assert "abathur_memories" not in families


def test_render_escapes_help_and_formats_numbers() -> None:
    text = render(
        [
            Metric("a_total", "Line one\nback\\slash", "counter", [Sample(1.5), Sample(2.0)]),
            Metric("b", "Odd values.", "gauge", [Sample(float("nan")), Sample(float("inf"))]),
        ]
    )
    assert text.splitlines() == [
        "# HELP a_total Line one\\nback\\\\slash",
        "# TYPE a_total counter",
        "a_total 1.5",
        "a_total 2",
        "# HELP b Odd values.",
        "# TYPE b gauge",
        "b NaN",
        "b +Inf",
    ]
    parse_exposition(text)


def test_invalid_metric_and_label_names_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        Metric("1bad", "x", "gauge", [])
    with pytest.raises(InvalidInputError):
        Metric("ok", "x", "gauge", [Sample(1, {"bad-label": "v"})])


def test_the_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "abathur.prom"
    target.write_text("old\n")
    write_textfile(target, "abathur_up 1\n")
    assert target.read_text() == "abathur_up 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["abathur.prom"]
    with pytest.raises(InvalidInputError):
        write_textfile(tmp_path / "missing-dir" / "x.prom", "x 1\n")
    assert [p.name for p in tmp_path.iterdir()] == ["abathur.prom"]
