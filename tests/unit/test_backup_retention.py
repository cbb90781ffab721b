"""Retention safety (issue 12): the newest two, the young and the pinned backups are kept.

Real files and a real ``abathur`` subprocess for the CLI scenario; plans are
checked on in-memory backups where only their times matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from abathur import Abathur, InvalidInputError
from abathur.config import Settings
from abathur.ops.backup import (
    Backup,
    Manifest,
    Retention,
    create_backup,
    list_backups,
    pin_backup,
    plan_retention,
    prune_backups,
    unpin_backup,
    verify_backup,
)

pytestmark = pytest.mark.sqlite_only("retention of backups of a SQLite file")

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def at(when: datetime, name: str | None = None) -> Backup:
    label = name or when.strftime("%Y%m%dT%H%M")
    manifest = Manifest.model_construct(created_at=when)
    return Backup(Path(f"/b/{label}.manifest.json"), Path(f"/b/{label}.db.zst"), manifest)


def names(plan) -> tuple[list[str], list[str]]:
    return [b.name for b, _ in plan.keep], [b.name for b in plan.delete]


def reasons(plan) -> dict[str, list[str]]:
    return {b.name: why for b, why in plan.keep}


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    async with Abathur.open(path, embedder="none") as ab:
        await ab.memory.put("user:alice", "lang", "fr")
    return path


def age(backup: Backup, days: float) -> None:
    """Move a backup back in time (the manifest's checksums cover the data file only)."""
    data = json.loads(backup.manifest_path.read_text())
    data["created_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    backup.manifest_path.write_text(json.dumps(data))


# -- the rules, one by one -------------------------------------------------------------


def test_the_newest_two_are_never_deleted() -> None:
    old = [at(NOW - timedelta(days=d)) for d in (30, 31, 32)]
    plan = plan_retention(old, Retention(0, 0, 0, min_age_days=0), now=NOW)
    assert names(plan) == (["20260516T1200", "20260515T1200"], ["20260514T1200"])
    assert all(why == ["newest"] for why in reasons(plan).values())
    none = plan_retention(old, Retention(0, 0, 0, newest=0, min_age_days=0), now=NOW)
    assert names(none)[0] == []


def test_backups_younger_than_the_minimum_age_are_never_deleted() -> None:
    backups = [at(NOW - timedelta(hours=h)) for h in (1, 5, 23, 25, 49)]
    plan = plan_retention(backups, Retention(0, 0, 0, newest=0, min_age_days=1), now=NOW)
    kept, deleted = names(plan)
    assert kept == ["20260615T1100", "20260615T0700", "20260614T1300"]
    assert deleted == ["20260614T1100", "20260613T1100"]
    assert reasons(plan)["20260614T1300"] == ["young"]
    half = plan_retention(backups, Retention(0, 0, 0, newest=0, min_age_days=0.25), now=NOW)
    assert names(half)[0] == ["20260615T1100", "20260615T0700"]


def test_a_pinned_backup_is_never_deleted(tmp_path: Path) -> None:
    old = at(NOW - timedelta(days=400), "pinned")
    pinned = Backup(old.manifest_path, old.data_path, old.manifest, pin={"label": "pre-v2"})
    rest = [at(NOW - timedelta(days=d)) for d in (1, 2, 3)]
    plan = plan_retention([pinned, *rest], Retention(0, 0, 0, newest=0, min_age_days=0), now=NOW)
    assert names(plan) == (["pinned"], [b.name for b in rest])
    assert reasons(plan)["pinned"] == ["pinned"]


def test_retention_rejects_a_bad_newest_or_minimum_age() -> None:
    for bad in ({"newest": -1}, {"newest": True}, {"min_age_days": -0.5}, {"min_age_days": "1"}):
        with pytest.raises(InvalidInputError):
            Retention(**bad)
    with pytest.raises(InvalidInputError):
        Retention(min_age_days=float("nan"))


def test_the_minimum_age_is_a_setting_with_a_one_day_default(
    monkeypatch, db: Path, tmp_path: Path
) -> None:
    assert Settings().backup_min_age_days == 1.0 == Retention().min_age_days
    monkeypatch.setenv("ABATHUR_BACKUP_MIN_AGE_DAYS", "3")
    assert Settings().backup_min_age_days == 3.0
    # The CLI reads it: a backup 2 days old is young under a 3-day minimum.
    dest = tmp_path / "b"
    old = create_backup(db, dest=dest)
    age(old, 2)
    keep = ("--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0")
    for _ in range(2):
        assert run("backup", "--db", str(db), "--dest", str(dest), *keep).returncode == 0
    made = run(
        "backup",
        "--db",
        str(db),
        "--dest",
        str(dest),
        *keep,
        "--json",
        env={"ABATHUR_BACKUP_MIN_AGE_DAYS": "3"},
    )
    assert made.returncode == 0, made.stderr
    assert reasons_of(json.loads(made.stdout))[old.name] == ["young"]
    bad = run(
        "backup", "--db", str(db), "--dest", str(dest), env={"ABATHUR_BACKUP_MIN_AGE_DAYS": "-1"}
    )
    assert bad.returncode == 3 and "backup_min_age_days" in bad.stderr, bad.stderr


# -- pins on real files ----------------------------------------------------------------


def test_pin_is_a_sidecar_listed_with_the_backup_and_verify_still_passes(
    db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "b"
    made = create_backup(db, dest=dest)
    manifest_before = made.manifest_path.read_bytes()
    pinned = pin_backup(made.data_path, label="before the v2 migration")
    assert pinned.pin is not None and pinned.pin["label"] == "before the v2 migration"
    assert made.manifest_path.read_bytes() == manifest_before, "the manifest is untouched"
    (listed,) = list_backups(dest)
    assert listed.pin is not None and listed.pin["label"] == "before the v2 migration"
    assert listed.to_dict()["pin"]["label"] == "before the v2 migration"
    verify_backup(made.data_path)  # raises if anything changed
    unpinned = unpin_backup(made.manifest_path)
    assert unpinned.pin is None and list_backups(dest)[0].pin is None
    with pytest.raises(InvalidInputError):
        unpin_backup(made.manifest_path)  # not pinned


def test_pin_refuses_a_bad_label_and_a_missing_backup(db: Path, tmp_path: Path) -> None:
    made = create_backup(db, dest=tmp_path / "b")
    for bad in ("", " padded ", "new\nline", "x" * 201, 5):
        with pytest.raises(InvalidInputError):
            pin_backup(made.data_path, label=bad)  # type: ignore[arg-type]
    assert list_backups(tmp_path / "b")[0].pin is None, "a refused pin wrote nothing"
    with pytest.raises(InvalidInputError):
        pin_backup(tmp_path / "b" / "nothing.db.zst")


def test_prune_keeps_an_old_pinned_backup_and_deletes_the_unpinned(
    db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "b"
    made = [create_backup(db, dest=dest) for _ in range(4)]
    for b, days in zip(made, (60, 50, 40, 0), strict=True):
        age(b, days)
    pin_backup(made[0].data_path, label="keep me")
    plan = prune_backups(dest, Retention(daily=1, weekly=0, monthly=0, newest=1, min_age_days=1))
    assert sorted(b.name for b in plan.delete) == sorted([made[1].name, made[2].name])
    left = {b.name for b in list_backups(dest)}
    assert left == {made[0].name, made[3].name}
    assert not list(dest.glob(f"{made[1].name}*")), "a deleted backup leaves no file"


# -- the scenario of the issue ----------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abathur", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_a_second_backup_the_same_day_keeps_the_first(db: Path, tmp_path: Path) -> None:
    """A manual backup before a risky change survives the nightly one (default retention)."""
    dest = tmp_path / "b"
    first = run("backup", "--db", str(db), "--dest", str(dest), "--json")
    assert first.returncode == 0, first.stderr
    manual = json.loads(first.stdout)["backup"]["name"]
    nightly = run("backup", "--db", str(db), "--dest", str(dest), "--json")
    assert nightly.returncode == 0, nightly.stderr
    retention = json.loads(nightly.stdout)["retention"]
    assert retention["delete"] == []
    assert {k["name"] for k in retention["keep"]} >= {manual}
    assert manual in {b.name for b in list_backups(dest)}


def test_backup_keep_with_a_label_pins_and_list_shows_it(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "b"
    made = run(
        "backup",
        "--db",
        str(db),
        "--dest",
        str(dest),
        "--keep",
        "--label",
        "pre-migration",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    name = json.loads(made.stdout)["backup"]["name"]
    listed = run("backup", "list", "--db", str(db), "--dest", str(dest), "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["backups"]
    assert entry["name"] == name and entry["pin"]["label"] == "pre-migration"
    table = run("backup", "list", "--db", str(db), "--dest", str(dest))
    assert "pinned: pre-migration" in table.stdout
    # Old enough and not among the newest: retention still keeps it, as pinned.
    (backup,) = list_backups(dest)
    age(backup, 400)
    for _ in range(2):
        assert run("backup", "--db", str(db), "--dest", str(dest)).returncode == 0
    pruned = run(
        "backup",
        "--db",
        str(db),
        "--dest",
        str(dest),
        "--min-age-days",
        "0",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
        "--json",
    )
    assert pruned.returncode == 0, pruned.stderr
    assert reasons_of(json.loads(pruned.stdout))[name] == ["pinned"]
    unpin = run("backup", "unpin", "--db", str(db), str(backup.data_path), "--json")
    assert unpin.returncode == 0, unpin.stderr
    assert json.loads(unpin.stdout)["backup"]["pin"] is None
    # --label alone pins too.
    labelled = run(
        "backup", "--db", str(db), "--dest", str(dest), "--label", "x", "--no-prune", "--json"
    )
    assert json.loads(labelled.stdout)["backup"]["pin"]["label"] == "x"


def reasons_of(data: dict) -> dict[str, list[str]]:
    return {k["name"]: k["because"] for k in data["retention"]["keep"]}


def test_backup_label_rejected_is_a_usage_error_and_takes_no_backup(
    db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "b"
    bad = run("backup", "--db", str(db), "--dest", str(dest), "--label", "a\tb")
    assert bad.returncode in (2, 3), bad.stderr
    assert not dest.exists() or not list(dest.iterdir())
