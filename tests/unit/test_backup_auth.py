"""Authenticated backups (issue 11, item 3): an HMAC over the manifest, checked on restore.

Every test edits real backup files the way an attacker with write access to
the backup directory would: change a memory value inside the database,
recompress it, and recompute every checksum in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import apsw
import pytest
from structlog.testing import capture_logs

from abathur import BackupKeyError, CorruptBackupError, Settings
from abathur.ops.backup import Backup, create_backup, verify_backup
from abathur.ops.backup_key import load_backup_key, parse_key
from abathur.ops.restore import restore_backup
from tests.backup_files import files_in, read_manifest, tamper_with_a_memory, write_manifest

pytestmark = pytest.mark.sqlite_only("backups of a SQLite file: manifests signed over its copy")

KEY = secrets.token_hex(32)
OTHER_KEY = secrets.token_hex(32)


def keyed(key: str = KEY, **more: object) -> Settings:
    return Settings(backup_key=key, **more)


@pytest.fixture
def signed(live: Path) -> Backup:
    return create_backup(live, dest=live.parent.parent / "backups", settings=keyed())


@pytest.fixture
def unsigned(live: Path) -> Backup:
    return create_backup(live, dest=live.parent.parent / "backups")


def memory_values(path: Path) -> list[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [r[0] for r in conn.execute("SELECT value FROM memories ORDER BY rowid")]
    finally:
        conn.close()


# -- what a backup made with a key looks like ----------------------------------------------


def test_a_backup_made_with_a_key_carries_an_hmac_and_verifies(signed: Backup) -> None:
    m = read_manifest(signed)
    assert m["format"] == "abathur-backup/2"
    assert m["key_id"] == hashlib.sha256(bytes.fromhex(KEY)).hexdigest()[:8]
    assert len(m["hmac"]) == 64
    verified = verify_backup(signed.data_path, settings=keyed())
    assert verified.authenticated is True
    assert verified.authentication == f"hmac-sha256 with key {m['key_id']}"
    assert verified.checks[0] == f"HMAC-SHA256 of the manifest (key {m['key_id']})"
    out = verified.to_dict()
    assert (out["authenticated"], out["key_id"]) == (True, m["key_id"])


def test_a_backup_made_without_a_key_is_format_1_and_only_checksummed(unsigned: Backup) -> None:
    m = read_manifest(unsigned)
    # Exactly the /1 document older abathur versions read: no key_id or hmac keys at all.
    assert m["format"] == "abathur-backup/1" and "hmac" not in m and "key_id" not in m
    verified = verify_backup(unsigned.data_path)
    assert verified.authenticated is False
    assert verified.authentication == "none: only checksummed (no backup key configured)"
    assert verified.to_dict()["authenticated"] is False


# -- tampering ------------------------------------------------------------------------------


def test_an_edited_memory_with_recomputed_checksums_passes_without_a_key(
    unsigned: Backup, tmp_path: Path
) -> None:
    # What item 3 found: checksums alone cannot tell. The result says so.
    tamper_with_a_memory(unsigned, tmp_path)
    verified = verify_backup(unsigned.data_path)
    assert verified.authenticated is False and "only checksummed" in verified.authentication


def test_an_edited_memory_with_recomputed_checksums_is_rejected_with_the_key(
    live: Path, signed: Backup, tmp_path: Path
) -> None:
    tamper_with_a_memory(signed, tmp_path)
    with pytest.raises(CorruptBackupError) as ei:
        verify_backup(signed.data_path, settings=keyed())
    assert ei.value.reason == "authentication" and ei.value.code == "backup.corrupt"
    assert "HMAC does not match" in ei.value.message
    before = files_in(live.parent)
    with pytest.raises(CorruptBackupError) as ei:
        restore_backup(signed.data_path, target=live, settings=keyed())
    assert ei.value.reason == "authentication"
    assert files_in(live.parent) == before, "the database stays byte for byte as it was"
    # Even the explicit override never accepts an HMAC that does not match.
    with pytest.raises(CorruptBackupError):
        verify_backup(signed.data_path, settings=keyed(backup_allow_unauthenticated=True))
    assert not [p for p in signed.data_path.parent.iterdir() if p.name.startswith(".")]


def _edit(field: str, value: object):
    def edit(b: Backup) -> None:
        write_manifest(b, {**read_manifest(b), field: value})

    return pytest.param(edit, id=field)


@pytest.mark.parametrize(
    "edit",
    [
        _edit("created_at", "2030-01-01T00:00:00Z"),
        _edit("source", "/srv/other/agent.db"),
        _edit("abathur_version", "9.9.9"),
        _edit("audit_head_hash", "f" * 64),
        _edit("page_size", 8192),
        _edit("sha256", "0" * 64),
        _edit("hmac", "0" * 64),
    ],
)
def test_any_edit_of_a_manifest_field_fails_authentication(signed: Backup, edit) -> None:
    edit(signed)
    with pytest.raises(CorruptBackupError) as ei:
        verify_backup(signed.data_path, settings=keyed())
    assert ei.value.reason == "authentication"


def test_reformatting_the_manifest_json_changes_nothing(signed: Backup) -> None:
    # The HMAC covers the fields (canonical JSON), not the file's whitespace or key order.
    m = read_manifest(signed)
    signed.manifest_path.write_text(json.dumps(dict(reversed(list(m.items()))), indent=7))
    assert verify_backup(signed.data_path, settings=keyed()).authenticated is True


def test_stripping_the_hmac_is_refused_while_a_key_is_configured(signed: Backup) -> None:
    m = read_manifest(signed)
    del m["hmac"], m["key_id"]
    write_manifest(signed, {**m, "format": "abathur-backup/1"})
    with pytest.raises(CorruptBackupError) as ei:
        verify_backup(signed.data_path, settings=keyed())
    assert ei.value.reason == "authentication" and "has no HMAC" in ei.value.message
    # A genuine backup from before the key existed can still be used, explicitly.
    allowed = verify_backup(signed.data_path, settings=keyed(backup_allow_unauthenticated=True))
    assert allowed.authenticated is False and "--allow-unauthenticated" in allowed.authentication


def test_a_format_2_manifest_without_its_hmac_is_invalid(signed: Backup) -> None:
    m = read_manifest(signed)
    del m["hmac"]
    write_manifest(signed, m)
    with pytest.raises(CorruptBackupError) as ei:
        verify_backup(signed.data_path, settings=keyed())
    assert ei.value.reason == "manifest"


# -- the wrong key, or none -----------------------------------------------------------------


def test_another_key_is_told_apart_from_tampering(live: Path, signed: Backup) -> None:
    mine = read_manifest(signed)["key_id"]
    other = parse_key(OTHER_KEY, source="test").key_id
    with pytest.raises(BackupKeyError) as ei:
        verify_backup(signed.data_path, settings=keyed(OTHER_KEY))
    assert ei.value.code == "backup.key"
    assert f"authenticated with key {mine}" in ei.value.message
    assert f"the configured key is {other}" in ei.value.message
    before = files_in(live.parent)
    with pytest.raises(BackupKeyError):
        restore_backup(signed.data_path, target=live, settings=keyed(OTHER_KEY))
    assert files_in(live.parent) == before


def test_an_authenticated_backup_without_a_key_cannot_be_authenticated(signed: Backup) -> None:
    with pytest.raises(BackupKeyError) as ei:
        verify_backup(signed.data_path)
    assert "no backup key is configured" in ei.value.message
    assert "cannot be authenticated" in ei.value.message
    # The key is lost: the explicit override still restores it, checksummed only.
    allowed = verify_backup(signed.data_path, settings=Settings(backup_allow_unauthenticated=True))
    assert allowed.authenticated is False
    assert "not checked" in allowed.authentication and "only checksummed" in allowed.authentication


def test_an_edited_key_id_is_refused(signed: Backup) -> None:
    write_manifest(signed, {**read_manifest(signed), "key_id": "00000000"})
    with pytest.raises(BackupKeyError):
        verify_backup(signed.data_path, settings=keyed())


# -- the key itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("ab" * 16, "is 16 bytes: it must be at least 32"),
        ("not hex at all, not even close, but long enough to be a key" * 2, "written as hex"),
        ("abc", "written as hex"),
        ("00" * 32, "is not random"),
        ("0102" * 32, "is not random"),
        ("", "written as hex"),
    ],
)
def test_weak_or_malformed_keys_are_refused_before_anything_is_written(
    live: Path, key: str, words: str
) -> None:
    dest = live.parent.parent / "backups"
    with pytest.raises(BackupKeyError) as ei:
        create_backup(live, dest=dest, settings=keyed(key))
    assert words in ei.value.message
    assert key not in ei.value.message or len(key) < 4, "a message never holds the key"
    assert not dest.exists()


def test_the_key_from_a_file_and_both_set_at_once(tmp_path: Path) -> None:
    key_file = tmp_path / "backup.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    with capture_logs() as logs:
        key = load_backup_key(Settings(backup_key_file=key_file))
    assert key is not None and key.key_id == parse_key(KEY, source="t").key_id
    assert not logs
    assert KEY not in repr(key) and KEY not in repr(Settings(backup_key=KEY))
    with pytest.raises(BackupKeyError) as ei:
        load_backup_key(Settings(backup_key_file=key_file, backup_key=KEY))
    assert "set one of them" in ei.value.message
    with pytest.raises(BackupKeyError) as ei:
        load_backup_key(Settings(backup_key_file=tmp_path / "missing.key"))
    assert "cannot read the backup key file" in ei.value.message


def test_a_key_file_others_can_read_is_used_with_a_warning(tmp_path: Path) -> None:
    key_file = tmp_path / "backup.key"
    key_file.write_text(KEY)
    os.chmod(key_file, 0o644)
    with capture_logs() as logs:
        assert load_backup_key(Settings(backup_key_file=key_file)) is not None
    assert [e["event"] for e in logs] == ["backup.key_file_readable_by_others"]
    assert KEY not in repr(logs)


async def test_a_key_kept_beside_the_backups_is_warned_about(live: Path) -> None:
    dest = live.parent.parent / "backups"
    dest.mkdir()
    key_file = dest / "backup.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    with capture_logs() as logs:
        made = create_backup(live, dest=dest, settings=Settings(backup_key_file=key_file))
    assert "backup.key_beside_backups" in [e["event"] for e in logs]
    assert KEY not in repr(logs)
    assert made.manifest is not None and made.manifest.is_authenticated


def test_restore_of_an_authenticated_backup_with_its_key(
    signed: Backup, tmp_path: Path, live: Path
) -> None:
    target = tmp_path / "restored.db"
    result = restore_backup(signed.data_path, target=target, settings=keyed())
    assert result.check.is_ok
    assert memory_values(target) == memory_values(live)
