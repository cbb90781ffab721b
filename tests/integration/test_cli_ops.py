"""The operations commands as an operator runs them: real files, real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest

from abathur.ops.backup import Backup
from tests.backup_files import held_open, tamper_with_a_memory
from tests.helpers import abathur, digest, ok_json, populate
from tests.prometheus import parse_exposition, value, values


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    await populate(path)
    return path


def files_beside(path: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(path.parent.iterdir()) if p.is_file()}


# -- check ----------------------------------------------------------------------------


def test_check_a_clean_database_exits_0(db: Path) -> None:
    data = ok_json(abathur("check", "--db", str(db), "--json", cwd=db.parent))
    assert data["is_ok"] is True and data["finding_count"] == 0
    assert data["path"] == str(db)
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert statuses["integrity"] == statuses["audit_chain"] == "ok"
    human = abathur("check", "--db", str(db), "--quick", cwd=db.parent)
    assert human.returncode == 0, human.stderr
    assert "quick_check: ok" in human.stdout and "clean: no findings" in human.stdout


def test_check_findings_exit_1_and_name_the_problem(db: Path) -> None:
    conn = apsw.Connection(str(db))
    conn.execute("UPDATE memories SET metadata = '{oops' WHERE version = 1")
    conn.execute("UPDATE audit_log SET action = 'forged' WHERE seq = 1")
    conn.close()
    before = digest(db)
    done = abathur("check", "--db", str(db), "--json", cwd=db.parent)
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["json_columns"]["status"] == "findings"
    assert "memories.metadata" in by_name["json_columns"]["findings"][0]
    # The audit covers content too (issue 11): the edited memory is a finding there as well.
    assert by_name["audit_chain"]["findings"] == [
        "record 1 was altered (its hash does not match its content)",
        "memory user:alice/lang v1 was changed after audit record 4 wrote it "
        "(its content does not match the record's hash)",
    ]
    assert data["finding_count"] == 3
    assert digest(db) == before, "check never repairs"
    human = abathur("check", "--db", str(db), "--only", "audit_chain", cwd=db.parent)
    assert human.returncode == 1
    assert "FINDINGS" in human.stdout and "nothing was repaired" in human.stdout


def test_check_that_cannot_run_exits_3(tmp_path: Path) -> None:
    # 3, as for every command (issue 12): 2 is a usage error.
    done = abathur("check", "--db", "missing.db", cwd=tmp_path)
    assert done.returncode == 3
    assert "abathur: error [db.error]: no database at" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


def test_check_fix_backs_up_then_rebuilds_a_broken_fts_index(db: Path) -> None:
    conn = apsw.Connection(str(db))
    conn.execute("DELETE FROM memories_fts")
    conn.close()
    broken = abathur("check", "--db", str(db), "--only", "fts_index", cwd=db.parent)
    assert broken.returncode == 1 and "missing from memories_fts" in broken.stdout
    data = ok_json(abathur("check", "--db", str(db), "--fix", "--json", cwd=db.parent))
    assert data["rebuilt"] == ["chunks_fts", "memories_fts"] and data["is_ok"] is True
    backup = Path(data["backup"])
    assert backup.parent == db.parent / "backups"
    ok_json(abathur("backup", "verify", str(backup), "--json", cwd=db.parent))


def test_check_fix_rebuilds_nothing_on_a_clean_file(db: Path) -> None:
    data = ok_json(abathur("check", "--db", str(db), "--fix", "--json", cwd=db.parent))
    assert data["rebuilt"] == [] and "backup" not in data
    assert not (db.parent / "backups").exists(), "no backup without anything to fix"


# -- backup, list, verify, restore -------------------------------------------------------


def test_backup_list_verify_restore_round_trip(db: Path) -> None:
    made = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    assert made["path"] == str(db) and made["dry_run"] is False
    backup = Path(made["backup"]["file"])
    assert backup.parent == db.parent / "backups" and backup.exists()
    manifest = made["backup"]["manifest"]
    assert manifest["row_counts"]["memories"] == 2
    assert made["retention"]["delete"] == []
    assert made["retention"]["keep"][0]["because"] == [
        "new",
        "newest",
        "young",
        "daily",
        "weekly",
        "monthly",
    ]

    listed = ok_json(abathur("backup", "list", "--db", str(db), "--json", cwd=db.parent))
    assert [b["name"] for b in listed["backups"]] == [made["backup"]["name"]]
    human = abathur("backup", "list", "--db", str(db), cwd=db.parent)
    assert made["backup"]["name"] in human.stdout and " ok" in human.stdout

    verified = ok_json(abathur("backup", "verify", str(backup), "--json", cwd=db.parent))
    assert verified["is_ok"] is True and verified["manifest"]["sha256"] == manifest["sha256"]

    copy = db.parent / "copy.db"
    restored = ok_json(
        abathur("restore", str(backup), "--db", str(db), "--to", str(copy), "--json", cwd=db.parent)
    )
    assert restored["target"] == str(copy) and restored["replaced"] is None
    assert restored["check"]["is_ok"] is True
    assert ok_json(abathur("check", "--db", str(copy), "--json", cwd=db.parent))["is_ok"]

    # Over the live file: the old one is kept aside.
    human = abathur("restore", str(backup), "--db", str(db), cwd=db.parent)
    assert human.returncode == 0, human.stderr
    assert "old file kept as" in human.stdout and "agent.db.replaced-" in human.stdout
    assert list(db.parent.glob("agent.db.replaced-*"))


def test_a_second_backup_the_same_day_keeps_the_first(db: Path) -> None:
    """Issue 12: the newest two and backups under a day old survive retention."""
    first = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    second = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    assert second["retention"]["delete"] == []
    kept = ok_json(abathur("backup", "--db", str(db), "--no-prune", "--json", cwd=db.parent))
    assert kept["retention"] is None
    dry = ok_json(abathur("backup", "--db", str(db), "--dry-run", "--json", cwd=db.parent))
    assert dry["backup"] is None and dry["retention"]["delete"] == [], "all are under a day old"
    no_age = ("--min-age-days", "0")
    dry = ok_json(abathur("backup", "--db", str(db), "--dry-run", *no_age, "--json", cwd=db.parent))
    # The new one and the newest existing one stay; the older two would go.
    assert sorted(dry["retention"]["delete"]) == sorted(
        [first["backup"]["name"], second["backup"]["name"]]
    )
    assert len(list((db.parent / "backups").glob("*.db.zst"))) == 3, "dry run deletes nothing"
    third = ok_json(abathur("backup", "--db", str(db), *no_age, "--json", cwd=db.parent))
    assert sorted(third["retention"]["delete"]) == sorted(dry["retention"]["delete"])
    names = {p.name for p in (db.parent / "backups").glob("*.db.zst")}
    assert names == {Path(b["backup"]["file"]).name for b in (kept, third)}


def test_a_corrupt_backup_is_rejected_and_the_database_untouched(db: Path) -> None:
    made = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    backup = Path(made["backup"]["file"])
    data = bytearray(backup.read_bytes())
    data[len(data) // 3] ^= 0x40
    backup.write_bytes(bytes(data))
    before = files_beside(db)

    verify = abathur("backup", "verify", str(backup), cwd=db.parent)
    assert verify.returncode == 1
    assert "abathur: error [backup.corrupt]:" in verify.stderr and "sha256" in verify.stderr

    done = abathur("restore", str(backup), "--db", str(db), "--json", cwd=db.parent)
    assert done.returncode == 3
    error = json.loads(done.stdout)["error"]
    assert (error["code"], error["reason"]) == ("backup.corrupt", "checksum")
    assert "Traceback" not in done.stderr
    assert files_beside(db) == before
    listed = abathur("backup", "list", "--db", str(db), cwd=db.parent)
    assert listed.returncode == 0, "list only checks sizes; verify finds the flipped bit"


def test_restore_refuses_a_database_another_process_has_open(db: Path) -> None:
    made = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    backup = made["backup"]["file"]
    with held_open(db):
        before = files_beside(db)
        done = abathur("restore", backup, "--db", str(db), cwd=db.parent)
        assert done.returncode == 3
        assert "abathur: error [db.in_use]:" in done.stderr and "--force" in done.stderr
        assert files_beside(db) == before
    assert abathur("restore", backup, "--db", str(db), cwd=db.parent).returncode == 0


def test_restore_removes_the_temps_of_a_killed_restore_and_says_so(db: Path) -> None:
    made = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    stale = db.parent / f".{db.name}.restore-20261122T020000.000000Z.tmp"
    stale.write_bytes(b"half a database")
    (db.parent / (stale.name + "-journal")).write_bytes(b"its journal")
    copy = db.parent / "copy.db"
    done = abathur(
        "restore",
        made["backup"]["file"],
        "--db",
        str(db),
        "--to",
        str(copy),
        "--json",
        cwd=db.parent,
    )
    data = ok_json(done)
    assert sorted(Path(p).name for p in data["removed_temps"]) == [
        stale.name,
        stale.name + "-journal",
    ]
    assert not stale.exists() and "temps.removed_stale" in done.stderr
    human = abathur(
        "restore", made["backup"]["file"], "--db", str(db), "--to", str(copy), cwd=db.parent
    )
    assert human.returncode == 0 and "removed stale temps" not in human.stdout
    assert not [p for p in db.parent.iterdir() if p.name.startswith(".")]


def test_authenticated_backups_from_the_command_line(db: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "backup.key"
    key_file.parent.mkdir()
    made_key = ok_json(abathur("backup", "keygen", str(key_file), "--json", cwd=db.parent))
    key = key_file.read_text().strip()
    assert made_key["key_file"] == str(key_file) and len(key) == 64
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = abathur("backup", "keygen", str(key_file), cwd=db.parent)
    assert again.returncode == 3 and "never overwritten" in again.stderr
    assert key_file.read_text().strip() == key
    env = {"ABATHUR_BACKUP_KEY_FILE": str(key_file)}
    runs = [again]

    def run(*args: str, keyed: bool = True):
        done = abathur(*args, cwd=db.parent, env=env if keyed else None)
        runs.append(done)
        return done

    made = ok_json(run("backup", "--db", str(db), "--json"))
    key_id = made["key_id"]
    assert key_id == made_key["key_id"]
    assert made["authenticated"] is True and made["backup"]["manifest"]["hmac"]
    assert made["backup"]["manifest"]["format"] == "abathur-backup/2"
    backup = Path(made["backup"]["file"])
    human = run("backup", "--db", str(db), "--no-prune")
    assert f"hmac-sha256 with key {key_id}" in human.stdout

    verified = ok_json(run("backup", "verify", str(backup), "--json"))
    assert (verified["authenticated"], verified["key_id"]) == (True, key_id)
    assert verified["authentication"] == f"hmac-sha256 with key {key_id}"
    lines = run("backup", "verify", str(backup)).stdout
    assert f"authentication  hmac-sha256 with key {key_id}" in lines

    no_key = run("backup", "verify", str(backup), keyed=False)
    assert no_key.returncode == 3
    assert "abathur: error [backup.key]:" in no_key.stderr
    assert "cannot be authenticated" in no_key.stderr
    lost_key = run("backup", "verify", str(backup), "--allow-unauthenticated", keyed=False)
    assert lost_key.returncode == 0, lost_key.stderr
    assert "only checksummed" in lost_key.stdout
    copy = tmp_path / "lost-key.db"
    refused = run("restore", str(backup), "--db", str(db), "--to", str(copy), keyed=False)
    assert refused.returncode == 3 and "[backup.key]" in refused.stderr and not copy.exists()
    restored = run(
        "restore",
        str(backup),
        "--db",
        str(db),
        "--to",
        str(copy),
        "--allow-unauthenticated",
        keyed=False,
    )
    assert restored.returncode == 0, restored.stderr

    tamper_with_a_memory(
        Backup(backup.with_name(made["backup"]["name"] + ".manifest.json"), backup, None), tmp_path
    )
    before = files_beside(db)
    rejected = run("backup", "verify", str(backup), "--json")
    assert rejected.returncode == 1
    error = json.loads(rejected.stdout)["error"]
    assert (error["code"], error["reason"]) == ("backup.corrupt", "authentication")
    restored = run("restore", str(backup), "--db", str(db), "--allow-unauthenticated")
    assert restored.returncode == 3 and "HMAC does not match" in restored.stderr
    assert files_beside(db) == before
    unkeyed = run("backup", "verify", str(backup), keyed=False)
    assert unkeyed.returncode == 3, "without the key it cannot be trusted either"

    for done in runs:
        assert key not in done.stdout and key not in done.stderr, "the key is never printed"
        assert "Traceback" not in done.stderr


def test_without_a_key_verify_says_only_checksummed_and_a_weak_key_is_refused(db: Path) -> None:
    made = ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    assert made["authenticated"] is False and made["key_id"] is None
    done = abathur("backup", "verify", made["backup"]["file"], cwd=db.parent)
    assert done.returncode == 0, done.stderr
    assert "authentication  none: only checksummed (no backup key configured)" in done.stdout
    weak = "ab" * 16
    refused = abathur("backup", "--db", str(db), cwd=db.parent, env={"ABATHUR_BACKUP_KEY": weak})
    assert refused.returncode == 3
    assert "abathur: error [backup.key]:" in refused.stderr and "at least 32" in refused.stderr
    assert weak not in refused.stderr + refused.stdout


# -- health and metrics ---------------------------------------------------------------


def test_health_ok_and_fail(db: Path) -> None:
    ok_json(abathur("backup", "--db", str(db), "--json", cwd=db.parent))
    data = ok_json(abathur("health", "--db", str(db), "--json", cwd=db.parent))
    assert data["status"] == "ok"
    assert [i["name"] for i in data["items"]][:3] == ["database", "wal", "backup"]
    missing = abathur("health", "--db", "missing.db", cwd=db.parent)
    assert missing.returncode == 3  # reported as a fail, then exit 3 as every command (issue 12)
    assert "FAIL" in missing.stdout and "no database at" in missing.stdout
    assert not (db.parent / "missing.db").exists()


def test_metrics_print_and_write_a_textfile(db: Path) -> None:
    done = abathur("metrics", "--db", str(db), cwd=db.parent)
    assert done.returncode == 0, done.stderr
    families = parse_exposition(done.stdout)
    assert value(families, "abathur_up") == 1
    assert values(families, "abathur_memories", "type")["semantic"] == 1
    assert value(families, "abathur_last_backup_timestamp_seconds") == 0

    target = db.parent / "textfile" / "abathur.prom"
    target.parent.mkdir()
    data = ok_json(
        abathur("metrics", "--db", str(db), "--textfile", str(target), "--json", cwd=db.parent)
    )
    assert data["textfile"] == str(target)
    assert parse_exposition(target.read_text()).keys() == families.keys()
    assert [p.name for p in target.parent.iterdir()] == ["abathur.prom"]
